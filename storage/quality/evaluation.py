"""Model identity in the quality engine: win rates by model, agreement by model pairing, and the evaluation report
(Bradley-Terry ratings overall and per category) with its tables and plot. Pure functions over a frame of votes.

The frame (``storage.frames.model_judgment_frame_for``) has one row per current judgment: ``item``, ``rater``,
``preference`` (-2 A much better .. 2 B much better), ``model_a``, ``model_b``, ``category`` (the prompt's domain)
and ``calibration``. Each judgment is one vote, as in Chatbot Arena; calibration items and pairs of a model with
itself are left out. A vote's outcome is its sign: A won, a tie, or B won; "much better" counts as better.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from storage.quality.judge import judge_figures, judge_line
from storage.quality.judgments import first_judgments
from storage.quality.ratings import rate_models

UNCATEGORISED = "(no category)"


def _plain(value: Any) -> Any:
    """JSON-ready: arrays and numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not np.isfinite(value) else value


def votes(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's votes between two different models, with ``outcome`` 1 (A won), 0.5 (tie) or 0 (B won)."""
    kept = frame[~frame["calibration"].astype(bool) & (frame["model_a"] != frame["model_b"])].copy()
    kept["outcome"] = np.select([kept["preference"] < 0, kept["preference"] == 0], [1.0, 0.5], 0.0)
    kept["category"] = kept["category"].fillna(UNCATEGORISED)
    return kept


def win_rates_by_model(kept: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model: votes, wins, ties, losses and the win rate (ties half) with a 95% Wilson interval."""
    sides = pd.concat([
        pd.DataFrame({"model": kept["model_a"], "score": kept["outcome"]}),
        pd.DataFrame({"model": kept["model_b"], "score": 1 - kept["outcome"]}),
    ])  # fmt: skip
    rows = []
    for model, scores in sides.groupby("model")["score"]:
        n, won = len(scores), float(scores.sum())
        low, high = proportion_confint(won, n, method="wilson")
        rows.append({"model": model, "votes": n, "wins": int((scores == 1).sum()), "ties": int((scores == 0.5).sum()),
                     "losses": int((scores == 0).sum()), "win_rate": won / n, "low": low, "high": high})  # fmt: skip
    return sorted(rows, key=lambda row: -row["win_rate"])


def agreement_by_pairing(kept: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model pairing: pairs judged by two raters or more, and the share of rater pairs that agree on A, tie or
    B on them (each rater's first judgment of a pair, as the campaign's agreement counts)."""
    first = first_judgments(kept.assign(direction=np.sign(kept["preference"])))
    first = first.assign(
        pairing=[" vs ".join(sorted(p)) for p in zip(first["model_a"], first["model_b"], strict=True)]
    )
    rows = []
    for pairing, group in first.groupby("pairing"):
        counts = group.groupby(["item", "direction"]).size().unstack(fill_value=0)
        raters = counts.sum(axis=1)
        counts, raters = counts[raters >= 2], raters[raters >= 2]
        agreeing, pairs = (counts * (counts - 1) / 2).to_numpy().sum(), (raters * (raters - 1) / 2).sum()
        rows.append({"pairing": pairing, "n_items": len(raters), "n_judgments": len(group),
                     "raw_agreement": agreeing / pairs if pairs else None})  # fmt: skip
    return rows


def model_figures(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The quality report's ``models`` section, or None when the campaign's pairs are not between models."""
    kept = votes(frame)
    if kept.empty:
        return None
    return _plain({"win_rates": win_rates_by_model(kept), "agreement_by_pairing": agreement_by_pairing(kept)})


def evaluation_report(frame: pd.DataFrame, *, judge: tuple[str, pd.DataFrame] | None = None, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Ratings over every vote and per category (a category needs votes between two models or more); with ``judge``
    (a reward-model run's name and its scored pairs, storage.quality.judge) that judge's figures beside them."""
    kept = votes(frame)
    if kept.empty:
        raise ValueError("no votes between two different models yet: pair responses of two models or more, judge them")
    overall = rate_models(kept["model_a"], kept["model_b"], kept["outcome"], n_boot=n_boot, seed=seed)
    categories = {}
    for category, group in kept.groupby("category") if kept["category"].nunique() > 1 else ():
        if len(set(group["model_a"]) | set(group["model_b"])) >= 2:
            categories[category] = rate_models(group["model_a"], group["model_b"], group["outcome"], n_boot=n_boot,
                                               seed=seed)  # fmt: skip
    judged = None
    if judge is not None:
        run, pairs = judge
        judged = {"run": run} | judge_figures(kept, pairs, overall, n_boot=n_boot, seed=seed)
    return _plain({"overall": overall, "categories": categories, "n_raters": int(kept["rater"].nunique()),
                   "n_pairs": int(kept["item"].nunique()), "by_model": win_rates_by_model(kept),
                   "judge": judged})  # fmt: skip


def _cell(rate, low, high, votes_) -> str:
    if rate is None or votes_ == 0:
        return "-"
    return f"{rate:.0%} [{low:.0%}, {high:.0%}] n={votes_:.0f}"


def render_ratings(ratings: dict[str, Any], console, title: str) -> None:
    """One rating table and its win-rate matrix on a rich Console."""
    from rich.table import Table

    table = Table("rank", "model", "rating [95% CI]", "Davidson [95% CI]", "votes", "win rate", title=title,
                  caption=f"{ratings['n_votes']} votes; Bradley-Terry, ties half a win; {ratings['n_boot']} bootstrap "
                  "replicates; rank: 1 + models whose lower bound is above this one's upper bound")  # fmt: skip
    for r in ratings["ratings"]:
        table.add_row(str(r["rank"]), r["model"], f"{r['rating']:.0f} [{r['low']:.0f}, {r['high']:.0f}]",
                      f"{r['davidson']:.0f} [{r['davidson_low']:.0f}, {r['davidson_high']:.0f}]", str(r["votes"]),
                      f"{r['win_rate']:.0%}")  # fmt: skip
    console.print(table)
    w = ratings["win_rate"]
    matrix = Table("row beats column", *ratings["models"], title=f"{title}: win rates (ties half) [95% CI]")
    for a, model in enumerate(ratings["models"]):
        matrix.add_row(model, *(_cell(w["rate"][a][b], w["low"][a][b], w["high"][a][b], w["votes"][a][b])
                                for b in range(len(ratings["models"]))))  # fmt: skip
    console.print(matrix)


def _separation(ratings: dict[str, Any]) -> str:
    s, tie = ratings["separation"], ratings["tie_model"]
    first, second = s["models"]
    if s["separated"]:
        verdict = f"{first} and {second}: their intervals are apart."
    elif s["votes_needed"] is None:
        verdict = f"{first} and {second} are rated the same: no number of votes is estimated to part them."
    else:
        verdict = (f"{first} and {second}: intervals overlap; about {s['votes_needed']:,} votes in all "
                   f"({s['more_votes']:,} more, in the same mix of pairings) should part them.")  # fmt: skip
    return f"{verdict} Davidson's tie parameter nu = {tie['nu']:.2f} (ties {tie['tie_rate']:.0%} of votes)."


def render_models(models: dict[str, Any] | None, console) -> None:
    """The quality report's ``models`` section as two tables."""
    from rich.table import Table

    if not models:
        return
    table = Table("model", "votes", "wins", "ties", "losses", "win rate [95% CI]", title="Win rate by model",
                  caption="each current judgment is a vote; ties count half; Wilson intervals")  # fmt: skip
    for r in models["win_rates"]:
        table.add_row(r["model"], str(r["votes"]), str(r["wins"]), str(r["ties"]), str(r["losses"]),
                      f"{r['win_rate']:.0%} [{r['low']:.0%}, {r['high']:.0%}]")  # fmt: skip
    console.print(table)
    pairings = Table("pairing", "pairs judged by 2+", "judgments", "raw agreement", title="Agreement by model pairing")
    for r in models["agreement_by_pairing"]:
        agreement = "-" if r["raw_agreement"] is None else f"{r['raw_agreement']:.0%}"
        pairings.add_row(r["pairing"], str(r["n_items"]), str(r["n_judgments"]), agreement)
    console.print(pairings)


def render_evaluation(report: dict[str, Any], console) -> None:
    """The evaluation report as tables: overall, then per category."""
    console.rule(f"Evaluation {report.get('campaign', '')}".strip())
    console.print(f"{report['n_pairs']} pairs judged by {report['n_raters']} raters.")
    render_ratings(report["overall"], console, "Ratings")
    console.print(_separation(report["overall"]))
    for category, ratings in report["categories"].items():
        render_ratings(ratings, console, f"Category {category}")
    if report.get("judge"):
        render_ratings(report["judge"]["ratings"], console, f"Judge {report['judge']['run']} (reward model)")
        console.print(judge_line(report["judge"]))


def plot_evaluation(report: dict[str, Any], path: Path) -> Path:
    """Ratings with their intervals, and the win-rate matrix, as one PNG."""
    figure = evaluation_figure(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def evaluation_figure(report: dict[str, Any]):
    """Ratings with their intervals beside the win-rate matrix: a matplotlib Figure (the studio shows it as is)."""
    from matplotlib.figure import Figure

    overall = report["overall"]
    models, rows = overall["models"], overall["ratings"]
    figure = Figure(figsize=(12, 0.5 * len(models) + 3))
    left, right = figure.subplots(1, 2)
    y = np.arange(len(models))[::-1]
    rating = np.array([r["rating"] for r in rows])
    errors = [rating - [r["low"] for r in rows], np.array([r["high"] for r in rows]) - rating]
    left.errorbar(rating, y, xerr=errors, fmt="o", capsize=4)
    left.set(yticks=y, yticklabels=models, xlabel="Bradley-Terry rating (95% bootstrap interval)", title="Ratings")
    left.grid(alpha=0.3)
    rate = np.array(overall["win_rate"]["rate"], dtype=float)
    image = right.imshow(rate, vmin=0, vmax=1, cmap="RdBu")
    right.set(xticks=range(len(models)), yticks=range(len(models)), xticklabels=models, yticklabels=models,
              title="Win rate of row against column (ties half)")  # fmt: skip
    right.tick_params(axis="x", labelrotation=45)
    for (a, b), value in np.ndenumerate(rate):
        if not np.isnan(value):
            right.text(b, a, f"{value:.0%}", ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=right)
    figure.tight_layout()
    return figure
