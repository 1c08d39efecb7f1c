"""The campaign quality report: every metric of the quality engine in one JSON-ready dict, and as tables.

``build_report`` takes the judgment and calibration frames of ``storage.frames`` (plain DataFrames: this module
never touches the database). Agreement, agreement over time and the disagreements list use the regular items
only: calibration items are judged by many raters against a known answer and would outweigh the campaign's own.
Per-rater figures use every judgment, calibration answers included.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from statsmodels.stats.proportion import proportion_confint

from storage.quality.agreement import campaign_agreement
from storage.quality.consensus import item_consensus
from storage.quality.evaluation import render_models
from storage.quality.flags import REASONS, STATUSES, FlagArguments, flag_raters
from storage.quality.judgments import COLUMNS, first_judgments, judgment_frame
from storage.quality.plots import plot_report  # noqa: F401  (the report's plots live beside it; kept importable here)
from storage.quality.raters import calibration_frame, rater_table

log = logging.getLogger(__name__)

REPORT_COLUMNS = (*COLUMNS, "server_time", "pseudonym")
CHUNK_ITEMS = 50  # fewest items per agreement-over-time point: fewer leave alpha's interval too wide to read
MAX_CHUNKS = 12
N_DISAGREEMENTS = 20
STATISTICS = ("alpha_ordinal", "alpha_nominal", "fleiss_kappa", "raw_agreement")


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN and <NA> to None, times to ISO 8601."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def _estimates(agreement) -> dict[str, dict[str, float]]:
    return {name: asdict(getattr(agreement, name)) for name in STATISTICS}


def _summary(frame: pd.DataFrame, table: pd.DataFrame, kinds: pd.Series, consensus) -> dict[str, Any]:
    n_decided = int(table["n_decided"].sum())
    n_left = int(round((table["left_rate"] * table["n_decided"]).sum()))
    repeated = table["n_repeated"].sum()
    text = frame["reasoning"].str.strip()
    return {
        "n_judgments": len(frame),
        "n_items": frame["item"].nunique(),
        "n_raters": len(table),
        "n_calibration_judgments": int(frame["item"].isin(kinds.index).sum()),
        "first_judgment": frame["server_time"].min(),
        "last_judgment": frame["server_time"].max(),
        "tie_rate": (frame["preference"] == 0).mean(),
        "both_bad_rate": frame["both_bad"].mean(),
        "left_rate": n_left / n_decided if n_decided else math.nan,
        "position_p": binomtest(n_left, n_decided).pvalue if n_decided else math.nan,
        "median_time_s": frame["time_on_task_s"].median(),
        "n_repeated": int(repeated),
        "consistency": (table["consistency"] * table["n_repeated"]).sum() / repeated if repeated else math.nan,
        "median_reasoning_chars": text.str.len().median(),
        "duplicate_reasoning_rate": text[text != ""].duplicated(keep=False).mean(),
        # Dawid-Skene's estimate of how the regular items' true labels split between A, tie and B.
        "class_shares": consensus[["p_a", "p_tie", "p_b"]].mean().set_axis(["a", "tie", "b"]).to_dict(),
    }


def _over_time(frame: pd.DataFrame, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Alpha over chunks of items taken in the order they got their last judgment, each item with all its raters."""
    done = first_judgments(frame).groupby("item")["server_time"].agg(["max", "size"])
    done = done[done["size"] >= 2].sort_values("max")
    chunks = np.array_split(done.index.to_numpy(), min(MAX_CHUNKS, max(1, len(done) // CHUNK_ITEMS)))
    points = []
    for items in chunks if len(done) else []:
        # Pairwise Cohen's kappa is not reported per chunk: a min_shared above any count skips it.
        agreement = campaign_agreement(frame[frame["item"].isin(items)], n_boot=n_boot, seed=seed, min_shared=10**9)
        times = done.loc[items, "max"]
        estimates = _estimates(agreement)
        alphas = {name: estimates[name] for name in ("alpha_ordinal", "alpha_nominal")}
        points.append({"start": times.min(), "end": times.max(), "n_items": len(items), **alphas})
    return points


def _raters(frame: pd.DataFrame, table: pd.DataFrame, flags: pd.DataFrame, cohen: pd.DataFrame, kinds) -> list:
    answers = frame[frame["item"].isin(kinds.index)]
    kind_n = pd.crosstab(answers["rater"], answers["item"].map(kinds))
    n_left = (table["left_rate"] * table["n_decided"]).round().fillna(0).astype(int)
    decided = table["n_decided"].where(table["n_decided"] > 0)
    low, high = proportion_confint(n_left, decided, method="beta")  # Clopper-Pearson, like the binomial test
    pseudonyms = frame.groupby("rater")["pseudonym"].first()
    rows = []
    for rater, row in table.to_dict("index").items():
        by_kind = {
            kind: {"accuracy": row.get(f"calibration_{kind}", math.nan), "n": kind_n.get(kind, {}).get(rater, 0)}
            for kind in sorted(set(kinds))
        }
        general = {key: value for key, value in row.items() if key not in {f"calibration_{k}" for k in by_kind}}
        rows.append(
            {
                "rater": rater,
                "pseudonym": pseudonyms[rater],
                **general,
                "left_rate_ci": [low[rater], high[rater]],
                "calibration_by_kind": by_kind,
                "mean_cohen_kappa": cohen[rater].mean() if rater in cohen else math.nan,
                "status": flags.at[rater, "status"],
                "flags": [reason for reason in REASONS if flags.at[rater, reason]],
                "pending": [reason for reason in REASONS if flags.at[rater, f"{reason}_pending"]],
                "p_corrected": {reason: flags.at[rater, f"{reason}_p_corrected"] for reason in REASONS},
            }
        )
    # Flagged raters first, then those awaiting evidence, the least reliable first within each: what a lead reads
    # first is what needs a look.
    return sorted(rows, key=lambda r: (STATUSES.index(r["status"]), r["reliability"]))


def _tested(r: dict, reason: str) -> bool:
    value = r["p_corrected"][reason]
    return value is not None and not math.isnan(value)


CORRECTION_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "fdr_bh": "Benjamini-Hochberg", "none": "no"}


def _p(r: dict, reason: str, a: FlagArguments) -> str:
    if not _tested(r, reason):
        return "not tested yet"
    corrected = "uncorrected" if a.correction == "none" else f"{CORRECTION_NAMES[a.correction]}-corrected"
    return f"{corrected} p={r['p_corrected'][reason]:.2g}"


def _share(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def _points(gap: float) -> str:
    return f"{gap * 100:.0f} percentage points"


_REASONS = {
    "low_calibration": lambda r, a: (
        f"calibration accuracy {r['calibration_recent_accuracy']:.0%} over the last {r['calibration_recent_n']:.0f} "
        f"answers, below {a.min_calibration_accuracy:.0%} (binomial test, {_p(r, 'low_calibration', a)})"
    ),
    "position_bias": lambda r, a: (
        f"chose the left response in {r['left_rate']:.0%} of {r['n_decided']:.0f} decided judgments, outside "
        f"{a.left_rate_low:.0%}-{a.left_rate_high:.0%} (binomial test, {_p(r, 'position_bias', a)})"
    ),
    "length_bias": lambda r, a: (
        f"chose the longer response in {_share(r.get('longer_rate'))} of {r.get('n_length', 0):.0f} decided "
        f"judgments, the other raters in {_share(r.get('longer_rate_others'))}: more than {_points(a.max_length_gap)} "
        f"apart (binomial test, {_p(r, 'length_bias', a)})"
    ),
    "many_ties": lambda r, a: (
        f"called {r['tie_rate']:.0%} of {r['n_judgments']:.0f} judgments a tie, above {a.max_tie_rate:.0%} and the "
        f"other raters' {_share(r['tie_rate_others'])} (binomial test, {_p(r, 'many_ties', a)})"
    ),
    "too_fast": lambda r, a: (
        f"median {r['median_time_s']:.0f} s per judgment, {r['time_ratio']:.0%} of the campaign median, below "
        f"{a.too_fast_fraction:.0%} (Mann-Whitney test against the other raters' times, {_p(r, 'too_fast', a)})"
    ),
    "low_competence": lambda r, a: (
        f"agreed with the other raters' majority on {_share(r['peer_agreement'])} of {r['n_peer_items']:.0f} items, "
        f"more than {_points(a.max_agreement_gap)} below their {_share(r['peer_agreement_others'])} "
        f"(Fisher's exact test, {_p(r, 'low_competence', a)})"
    ),
}


def flag_rules(thresholds: dict[str, Any]) -> list[str]:
    """How the engine decides, in words, from a report's ``thresholds``: what a screen states must be what it does."""
    t = thresholds
    rules = [
        f"Low calibration: accuracy over the last {t['calibration_window']} calibration answers below "
        f"{t['min_calibration_accuracy']:.0%}, from {t['min_calibration_items']} answers on.",
        f"Position bias: the left response chosen in under {t['left_rate_low']:.0%} or over {t['left_rate_high']:.0%}"
        " of decided judgments.",
        f"Length bias: the longer response chosen more than {_points(t['max_length_gap'])} more (or less) often than "
        "by the other raters.",
        f"Many ties: more than {t['max_tie_rate']:.0%} of judgments called a tie, and more than by the other raters.",
        f"Low competence: agreement with the other raters' majority more than {_points(t['max_agreement_gap'])} "
        "below theirs.",
        f"Too fast: median time under {t['too_fast_fraction']:.0%} of the campaign median, and faster than the other "
        "raters (Mann-Whitney test).",
        "A rater is flagged only when the data show them past the line, not merely near it: a one-sided binomial test "
        "against the line itself (too fast and low competence: Mann-Whitney and Fisher's exact tests against the other"
        f" raters), at p < {t['alpha']:g} after "
        f"{CORRECTION_NAMES[t['correction']]} correction across the raters tested. Every test but calibration needs "
        f"{t['min_judgments']} judgments. A rater past a line without that evidence yet, or with fewer judgments, "
        "is shown as 'not enough evidence yet', not flagged.",
    ]
    if t.get("probation"):
        rules.append(
            f"Probation (a quick check, no test): a rater below {t['min_calibration_accuracy']:.0%} over the last "
            f"{t['calibration_window']} calibration answers, from {t['probation_min_answers']} answers on, sees only "
            "calibration items until back at or above it."
        )
    return rules


def _waiting(r: dict, a: FlagArguments) -> list[str]:
    """Why a rater's status is not enough evidence yet, in words."""
    reasons = [
        f"{_REASONS[reason](r, a)}: {'not significant yet' if _tested(r, reason) else 'too little evidence to test'}"
        for reason in r["pending"]
    ]
    if r["n_judgments"] < a.min_judgments:
        reasons.insert(0, f"{r['n_judgments']} judgments so far; the tests need {a.min_judgments}")
    return reasons


def _disagreements(frame: pd.DataFrame, consensus: pd.DataFrame) -> list[dict[str, Any]]:
    """The regular items with the lowest agreement (the widest spread of preferences first on a tie), with votes."""
    first = first_judgments(frame)
    spread = first.groupby("item")["preference"].std().rename("spread")
    shared = consensus[consensus["n_raters"] >= 2].join(spread).reset_index()
    order = ["agreement", "spread", "n_raters", "item"]
    worst = shared.sort_values(order, ascending=[True, False, False, True]).head(N_DISAGREEMENTS)
    votes = first[first["item"].isin(worst["item"])].groupby("item")[["pseudonym", "preference"]]
    votes = votes.apply(lambda rows: dict(zip(rows["pseudonym"], rows["preference"], strict=True)))
    columns = ["item", "n_raters", "agreement", "majority", "weighted", "mean_preference"]
    return [{**row, "votes": votes[row["item"]]} for row in worst[columns].to_dict("records")]


def build_report(
    judgments: pd.DataFrame,
    calibration: pd.DataFrame | None,
    *,
    flag_args: FlagArguments | None = None,
    calibration_window: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The quality report of one campaign's judgments (``storage.frames.judgment_frame_for``), JSON-ready.

    ``calibration_window``: calibration accuracy is judged over each rater's last this many calibration answers.

    Sections: ``summary`` (counts, tie/both-bad rates, campaign position bias, time, consistency, reasoning,
    Dawid-Skene class shares), ``agreement`` (alpha ordinal/nominal, Fleiss' kappa, raw agreement, each
    ``{value, low, high}``), ``agreement_over_time`` (alpha per chunk of items), ``raters`` (one dict per rater,
    flagged first: the ``rater_table`` columns, ``left_rate_ci``, ``calibration_by_kind`` ``{kind: {accuracy, n}}``,
    ``mean_cohen_kappa``, ``status``, ``flags``, ``pending``: reasons past their threshold without the evidence yet,
    ``p_corrected``), ``disagreements`` (lowest-agreement pairs with votes by pseudonym), ``thresholds`` (flag
    arguments, calibration window), ``flags`` (flagged raters, readable reasons) and ``not_enough_evidence`` (the
    raters whose status says so, and why). ``flag_rules(report["thresholds"])`` says the rules in words. NaN is None.
    """
    args = flag_args or FlagArguments()
    frame = judgment_frame(judgments, columns=COLUMNS)
    if missing := [name for name in REPORT_COLUMNS if name not in frame.columns]:
        raise ValueError(f"judgments: missing column(s) {', '.join(missing)}; expected {', '.join(REPORT_COLUMNS)}")
    if frame.empty:
        raise ValueError("judgments: no rows, nothing to report on")
    kinds = calibration_frame(calibration)["kind"]
    table = rater_table(frame, calibration=calibration, calibration_window=calibration_window)
    flags = flag_raters(table, args)
    regular = frame[~frame["item"].isin(kinds.index)]
    agreement = campaign_agreement(regular, n_boot=n_boot, seed=seed)
    consensus = item_consensus(regular)
    counts = {"n_items": agreement.n_items, "fleiss_raters": agreement.fleiss_raters}
    report = {
        "summary": _summary(frame, table, kinds, consensus),
        "agreement": {**_estimates(agreement), **counts, "fleiss_items": agreement.fleiss_items, "n_boot": n_boot},
        "agreement_over_time": _over_time(regular, n_boot, seed),
        "raters": _raters(frame, table, flags, agreement.cohen, kinds),
        "disagreements": _disagreements(regular, consensus),
        "thresholds": {**asdict(args), "calibration_window": calibration_window},
    }
    report["flags"] = [
        {"rater": r["rater"], "pseudonym": r["pseudonym"], "reasons": [_REASONS[f](r, args) for f in r["flags"]]}
        for r in report["raters"]
        if r["flags"]
    ]
    report["not_enough_evidence"] = [
        {"rater": r["rater"], "pseudonym": r["pseudonym"], "reasons": _waiting(r, args)}
        for r in report["raters"]
        if r["status"] == STATUSES[1]
    ]
    return _plain(report)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _direction(value: int | None) -> str:
    return {-1: "A", 0: "tie", 1: "B"}.get(value, "-")


def _interval(estimate: dict[str, float | None]) -> str:
    if estimate["low"] is None:
        return _num(estimate["value"])
    return f"{_num(estimate['value'])} [{_num(estimate['low'])}, {_num(estimate['high'])}]"


def _render_campaign(report: dict[str, Any], console) -> None:
    from rich.table import Table

    s, agreement = report["summary"], report["agreement"]
    summary = Table("judgments", "items", "raters", "calibration", "ties", "both bad", "left (p)", "median time",
                    "consistency", "reasoning", title="Campaign")  # fmt: skip
    summary.add_row(
        str(s["n_judgments"]), str(s["n_items"]), str(s["n_raters"]), str(s["n_calibration_judgments"]),
        _pct(s["tie_rate"]), _pct(s["both_bad_rate"]), f"{_pct(s['left_rate'])} ({_num(s['position_p'], '.2g')})",
        f"{_num(s['median_time_s'], '.0f')} s", f"{_pct(s['consistency'])} of {s['n_repeated']} repeats",
        f"{_num(s['median_reasoning_chars'], '.0f')} chars, {_pct(s['duplicate_reasoning_rate'])} copied",
    )  # fmt: skip
    console.print(summary)
    caption = (
        f"{agreement['n_items']} regular items judged by 2+ raters; Fleiss' kappa over the {agreement['fleiss_items']}"
        f" judged by {agreement['fleiss_raters']}; {agreement['n_boot']} bootstrap replicates"
    )
    table = Table("statistic", "value [95% CI]", title="Agreement", caption=caption)
    for name in STATISTICS:
        table.add_row(name.replace("_", " "), _interval(agreement[name]))
    console.print(table)
    over_time = Table("last judgment", "items", "alpha ordinal [95% CI]", "alpha nominal", title="Agreement over time")
    for point in report["agreement_over_time"]:
        over_time.add_row(point["end"][:16], str(point["n_items"]), _interval(point["alpha_ordinal"]),
                          _interval(point["alpha_nominal"]))  # fmt: skip
    console.print(over_time)


RATER_CAPTION = (
    "calibration: accuracy (over the recent window) /answers, overall then by kind; left: share of decided judgments "
    "choosing the left response (binomial p); copied: share of reasonings that appear verbatim in another judgment; "
    "peer agr.: agreement with the other raters' majority; kappa: mean pairwise Cohen's kappa; reliab.: Dawid-Skene"
)


STYLES = {STATUSES[0]: "red", STATUSES[1]: "yellow", STATUSES[2]: None}


def _render_raters(report: dict[str, Any], console) -> None:
    from rich.table import Table

    kinds = sorted(report["raters"][0]["calibration_by_kind"]) if report["raters"] else []
    columns = ("left (p)", "ties", "both bad", "consist.", "median s", "reasoning", "copied", "peer agr.", "kappa")
    table = Table(
        "rater", "judg.", "calib. (recent)", *kinds, *columns, "reliab.", title="Raters", caption=RATER_CAPTION
    )
    for r in report["raters"]:
        by_kind = [
            f"{_pct(r['calibration_by_kind'][k]['accuracy'])} /{r['calibration_by_kind'][k]['n']}" for k in kinds
        ]
        table.add_row(
            r["pseudonym"], str(r["n_judgments"]),
            f"{_pct(r['calibration_accuracy'])} ({_pct(r['calibration_recent_accuracy'])}) /{r['calibration_n']}",
            *by_kind, f"{_pct(r['left_rate'])} ({_num(r['position_p'], '.2g')})", _pct(r["tie_rate"]),
            _pct(r["both_bad_rate"]), _pct(r["consistency"]), _num(r["median_time_s"], ".0f"),
            _num(r["median_reasoning_chars"], ".0f"), _pct(r["duplicate_reasoning_rate"]), _pct(r["peer_agreement"]),
            _num(r["mean_cohen_kappa"]), _num(r["reliability"]), style=STYLES[r["status"]],
        )  # fmt: skip
    console.print(table)
    rules = "\n".join(flag_rules(report["thresholds"]))
    flags = Table("rater", "status", "why", title="Flagged raters, then raters without enough evidence yet",
                  caption=rules)  # fmt: skip
    for status, key in ((STATUSES[0], "flags"), (STATUSES[1], "not_enough_evidence")):
        for row in report[key]:
            flags.add_row(row["pseudonym"], status, "\n".join(row["reasons"]), style=STYLES[status])
    console.print(flags if report["flags"] or report["not_enough_evidence"] else "No rater flagged.")
    worst = Table("pair", "raters", "agreement", "majority", "weighted", "votes", title="Lowest-agreement pairs",
                  caption="votes on the scale -2 (A much better) .. +2 (B much better)")  # fmt: skip
    for d in report["disagreements"]:
        votes = ", ".join(f"{who} {vote:+d}" for who, vote in d["votes"].items())
        worst.add_row(str(d["item"]), str(d["n_raters"]), _pct(d["agreement"]), _direction(d["majority"]),
                      _direction(d["weighted"]), votes)  # fmt: skip
    console.print(worst)


def render_report(report: dict[str, Any], console) -> None:
    """Print a report from ``build_report`` on a rich ``Console`` as tables, flagged raters in red, those without
    enough evidence yet in yellow, with the rules that decide."""
    console.rule(f"Quality report {report.get('campaign', '')}".strip())
    _render_campaign(report, console)
    _render_raters(report, console)
    render_models(report.get("models"), console)
