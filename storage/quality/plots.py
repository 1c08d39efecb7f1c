"""The quality report's plots: matplotlib Figures made from ``build_report``'s dict, as PNG files or for the studio.

Figures are bare ``matplotlib.figure.Figure`` objects: they draw with Agg and leave pyplot's global state alone, so
a server can make them from several threads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _label(rater: dict[str, Any]) -> str:
    """A rater as a plot names them: the username a lead's report carries (studio.leads.with_names), else the
    pseudonym."""
    return rater.get("name") or rater["pseudonym"]


def _plot_over_time(report: dict[str, Any], figure) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    points = report["agreement_over_time"]
    ends = pd.to_datetime([point["end"] for point in points])
    figure.set_size_inches(8, 4.5)
    ax = figure.subplots()
    lowest = 0.0
    for name, colour in (("alpha_ordinal", "tab:blue"), ("alpha_nominal", "tab:orange")):
        value, low, high = (np.array([p[name][key] for p in points], dtype=float) for key in ("value", "low", "high"))
        ax.plot(ends, value, "o-", color=colour, label=name.replace("_", " ") + " (95% CI)")
        ax.fill_between(ends, low, high, color=colour, alpha=0.15, linewidth=0)
        lowest = np.nanmin([lowest, *low, *value])
    # Krippendorff's guide: 0.8 to rely on the data, 0.667 for tentative conclusions.
    for level, text in ((0.8, "reliable"), (0.667, "tentative")):
        ax.axhline(level, color="grey", linestyle=":", linewidth=1)
        ax.annotate(text, (1, level), xycoords=("axes fraction", "data"), ha="right", va="bottom", color="grey")
    ax.xaxis.set_major_formatter(ConciseDateFormatter(AutoDateLocator()))
    if ends.min() == ends.max():  # one point: matplotlib would spread the axis over years around it
        ax.set_xlim(ends.min() - pd.Timedelta(hours=12), ends.max() + pd.Timedelta(hours=12))
    ax.set(ylim=(lowest - 0.05, 1), ylabel="Krippendorff's alpha", title="Agreement over time",
           xlabel=f"time of the last judgment in each chunk of about {points[0]['n_items']} pairs")  # fmt: skip
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)


def _plot_calibration(report: dict[str, Any], figure) -> None:
    from matplotlib import colormaps

    raters = report["raters"]
    kinds = sorted(raters[0]["calibration_by_kind"])
    cells = [[(r["calibration_accuracy"], r["calibration_n"])] for r in raters]
    for row, r in zip(cells, raters, strict=True):
        row += [(r["calibration_by_kind"][k]["accuracy"], r["calibration_by_kind"][k]["n"]) for k in kinds]
    accuracy = np.array([[value for value, _ in row] for row in cells], dtype=float)  # None -> NaN
    figure.set_size_inches(3 + 1.2 * (len(kinds) + 1), 1.8 + 0.45 * len(raters))
    ax = figure.subplots()
    cmap = colormaps["RdYlGn"].with_extremes(bad="lightgrey")  # grey: no calibration answer of that kind
    image = ax.imshow(accuracy, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (y, x), value in np.ndenumerate(accuracy):
        ax.text(x, y, "-" if np.isnan(value) else f"{value:.0%}\nn={cells[y][x][1]}", ha="center", va="center",
                fontsize=8)  # fmt: skip
    ax.set_xticks(range(len(kinds) + 1), ["all"] + [k.replace("_", "\n") for k in kinds])
    ax.set_yticks(range(len(raters)), [_label(r) for r in raters])
    for label, r in zip(ax.get_yticklabels(), raters, strict=True):
        label.set_color("tab:red" if "low_calibration" in r["flags"] else "black")
    ax.xaxis.tick_top()
    ax.set_title("Calibration accuracy by kind (red: flagged for low calibration)")
    figure.colorbar(image, ax=ax, format="{x:.0%}", label="accuracy")


def _plot_position(report: dict[str, Any], figure) -> None:
    raters, thresholds = report["raters"], report["thresholds"]
    y = np.arange(len(raters))
    rate = np.array([r["left_rate"] for r in raters], dtype=float)
    low, high = np.array([r["left_rate_ci"] for r in raters], dtype=float).T
    biased = np.array(["position_bias" in r["flags"] for r in raters])
    figure.set_size_inches(8, 1.8 + 0.3 * len(raters))
    ax = figure.subplots()
    ax.axvspan(thresholds["left_rate_low"], thresholds["left_rate_high"], color="tab:green", alpha=0.12,
               label="accepted range")  # fmt: skip
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    groups = ((~biased, "tab:blue", "rater (95% CI)"), (biased, "tab:red", "flagged for position bias"))
    for mask, colour, label in groups:
        if mask.any():
            ax.errorbar(rate[mask], y[mask], xerr=[rate[mask] - low[mask], high[mask] - rate[mask]], fmt="o",
                        color=colour, capsize=3, label=label)  # fmt: skip
    ax.set_yticks(y, [_label(r) for r in raters])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="share of decided judgments choosing the response shown on the left",
           title="Position bias")  # fmt: skip
    ax.xaxis.set_major_formatter("{x:.0%}")
    figure.legend(loc="outside lower center", ncols=3)
    ax.grid(axis="x", alpha=0.3)


PLOTS = {
    "agreement_over_time": (_plot_over_time, lambda report: report["agreement_over_time"]),
    "calibration_by_kind": (_plot_calibration, lambda report: [r for r in report["raters"] if r["calibration_n"]]),
    "position_bias": (_plot_position, lambda report: [r for r in report["raters"] if r["left_rate"] is not None]),
}
"""Each plot's name, its drawing function, and the part of the report it needs (nothing there: no plot)."""


def report_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The report's plots as ``{name: Figure}``, or ``{name: None}`` for a plot with nothing to show yet."""
    from matplotlib.figure import Figure

    figures = {}
    for name, (plot, data) in PLOTS.items():
        figures[name] = None
        if data(report):
            figures[name] = Figure(layout="constrained")
            plot(report, figures[name])
    return figures


def plot_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the report's plots as PNGs under ``out_dir``; a plot with nothing to show yet is left out."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in report_figures(report).items():
        if figure is None:
            log.info("plot %s left out: nothing to show yet", name)
            continue
        figure.savefig(out_dir / f"{name}.png", dpi=110)
        written.append(out_dir / f"{name}.png")
    return written
