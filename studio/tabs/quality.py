"""Quality: a campaign's agreement with 95% intervals, its raters (flagged first), the pairs raters disagree on most,
and the report's plots, all from the one report dict of ``storage.quality.report``."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from storage.quality.plots import report_figures
from studio.leads import LeadService
from studio.login import current_user
from studio.tabs.events import (
    LEAD_EVENTS,
    Profile,
    cleared_on_campaign_change,
    need_campaign,
    said_beside,
    shown_to_user,
    status_line,
)

STATISTICS = {
    "alpha_ordinal": "Krippendorff's alpha, ordinal (-2..2)",
    "alpha_nominal": "Krippendorff's alpha, nominal (A / tie / B)",
    "fleiss_kappa": "Fleiss' kappa (A / tie / B)",
    "raw_agreement": "raw agreement",
}
DIRECTIONS = {-1: "A", 0: "tie", 1: "B"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _name(rater: dict[str, Any]) -> str:
    """A rater by name for their leads (studio.leads.with_names), by pseudonym where the report has no name."""
    return rater.get("name") or rater["pseudonym"]


def _status(rater: dict[str, Any], status: str) -> str:
    """The engine's verdict, and whether a lead already excluded the rater (their judgments leave exports)."""
    return f"{status}; excluded" if rater.get("excluded") else status


def agreement_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per agreement statistic: its estimate and 95% bootstrap interval."""
    rows = [
        [label, _num(report["agreement"][name]["value"]), _num(report["agreement"][name]["low"]),
         _num(report["agreement"][name]["high"])]
        for name, label in STATISTICS.items()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["statistic", "estimate", "95% CI low", "95% CI high"])


def summary_table(report: dict[str, Any]) -> pd.DataFrame:
    """The campaign's counts and rates, one per row."""
    s = report["summary"]
    row = {
        "judgments": s["n_judgments"],
        "items": s["n_items"],
        "raters": s["n_raters"],
        "calibration judgments": s["n_calibration_judgments"],
        "ties": _pct(s["tie_rate"]),
        "both bad": _pct(s["both_bad_rate"]),
        "left chosen (p)": f"{_pct(s['left_rate'])} ({_num(s['position_p'], '.2g')})",
        "median time": f"{_num(s['median_time_s'], '.0f')} s",
        "consistency": f"{_pct(s['consistency'])} of {s['n_repeated']} repeats",
        "median reasoning": f"{_num(s['median_reasoning_chars'], '.0f')} chars",
        "reasoning copied": _pct(s["duplicate_reasoning_rate"]),
    }
    return pd.DataFrame({"measure": list(row), "value": [str(value) for value in row.values()]})


def flag_table(report: dict[str, Any]) -> pd.DataFrame:
    """Each flagged rater, then each without enough evidence yet, with the reasons in words against the thresholds."""
    rows = [[_name(flag), _status(flag, "flagged"), "; ".join(flag["reasons"])] for flag in report["flags"]]
    rows += [
        [_name(r), _status(r, "not enough evidence yet"), "; ".join(r["reasons"])]
        for r in report["not_enough_evidence"]
    ]
    return pd.DataFrame(rows, columns=["rater", "status", "why"])


def rater_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per rater, flagged first: calibration accuracy overall and by kind, position bias, time, flags."""
    rows = []
    for r in report["raters"]:
        kinds = r["calibration_by_kind"].items()
        by_kind = {f"calib. {kind}": f"{_pct(cell['accuracy'])} /{cell['n']}" for kind, cell in kinds}
        low, high = r["left_rate_ci"]
        rows.append(
            {
                "rater": _name(r),
                "pseudonym": r["pseudonym"],
                "status": _status(r, r["status"]),
                "judgments": r["n_judgments"],
                "calibration (recent)": f"{_pct(r['calibration_accuracy'])} ({_pct(r['calibration_recent_accuracy'])})"
                f" /{r['calibration_n']}",
                **by_kind,
                "left chosen [95% CI]": f"{_pct(r['left_rate'])} [{_pct(low)}, {_pct(high)}]",
                "position p": _num(r["position_p"], ".2g"),
                "longer chosen (others)": f"{_pct(r.get('longer_rate'))} ({_pct(r.get('longer_rate_others'))})",
                "ties": _pct(r["tie_rate"]),
                "both bad": _pct(r["both_bad_rate"]),
                "median time": f"{_num(r['median_time_s'], '.0f')} s",
                "consistency": _pct(r["consistency"]),
                "reasoning copied": _pct(r["duplicate_reasoning_rate"]),
                "peer agreement": _pct(r["peer_agreement"]),
                "reliability": _num(r["reliability"]),
                "flags": ", ".join(r["flags"]) or "-",
            }
        )
    return pd.DataFrame(rows)


def disagreement_table(report: dict[str, Any]) -> pd.DataFrame:
    """The lowest-agreement pairs with each rater's vote on the -2..2 scale."""
    rows = [
        {
            "pair": d["item"],
            "raters": d["n_raters"],
            "agreement": _pct(d["agreement"]),
            "majority": DIRECTIONS.get(d["majority"], "-"),
            "weighted": DIRECTIONS.get(d["weighted"], "-"),
            "mean preference": _num(d["mean_preference"], "+.2f"),
            "votes": ", ".join(f"{who} {vote:+d}" for who, vote in d["votes"].items()),
        }
        for d in report["disagreements"]
    ]
    columns = ["pair", "raters", "agreement", "majority", "weighted", "mean preference", "votes"]
    return pd.DataFrame(rows, columns=columns)


def _caption(report: dict[str, Any]) -> str:
    """The agreement's basis, then how raters are flagged, in the engine's own words and thresholds."""
    from storage.quality.report import flag_rules  # the statistics load when a lead asks, not when the studio starts

    a = report["agreement"]
    rules = "\n".join(f"- {rule}" for rule in flag_rules(report["thresholds"]))
    return (
        f"**{a['n_items']}** regular items judged by two or more raters; Fleiss' kappa over the {a['fleiss_items']} "
        f"judged by {a['fleiss_raters']}; intervals from {a['n_boot']} bootstrap resamples. Krippendorff's guide: "
        f"0.8 to rely on the data, 0.667 for tentative conclusions.\n\n**How raters are flagged**\n\n{rules}"
    )


def _report_view() -> tuple:
    """The report's captions, tables and plots, empty until a Refresh."""
    with gr.Row():
        with gr.Column(scale=3):
            agreement = gr.Dataframe(label="Agreement (95% CI)", interactive=False, elem_id="quality-agreement")
            status = gr.Markdown(elem_id="quality-status")
        summary = gr.Dataframe(label="Campaign", interactive=False, scale=2, elem_id="quality-summary")
    raters = gr.Dataframe(
        label="Raters (flagged first; calibration accuracy /answers; scroll sideways for more)",
        interactive=False,
        pinned_columns=1,
        elem_id="quality-raters",
    )
    flags = gr.Dataframe(
        label="Flagged raters (exclude one under Campaigns > Members: their pairs go back to the queue), then raters "
        "without enough evidence yet (not flagged)",
        interactive=False,
        wrap=True,
        elem_id="quality-flags",
    )
    disagreements = gr.Dataframe(
        label="Lowest-agreement pairs (votes: -2 A much better .. +2 B much better; open them under Adjudication) · "
        "majority and weighted count every vote, an excluded rater's too: the export leaves theirs out",
        interactive=False,
        wrap=True,
        elem_id="quality-disagreements",
    )
    over_time = gr.Plot(label="Agreement over time", elem_id="quality-plot-over-time")
    calibration = gr.Plot(label="Calibration accuracy by kind", elem_id="quality-plot-calibration")
    position = gr.Plot(label="Position bias", elem_id="quality-plot-position")
    return status, agreement, summary, raters, flags, disagreements, over_time, calibration, position


def build_quality_tab(leads: LeadService, campaign: gr.Dropdown) -> None:
    with gr.Row():
        gr.Markdown("Agreement, raters and disagreements of the selected campaign, computed when you press *Refresh*.")
        refresh = gr.Button("Refresh", variant="primary", scale=0, min_width=160, elem_id="quality-refresh")
    refused = status_line("quality-refused")
    with gr.Column(visible=False, elem_id="quality-report") as shown:  # by a Refresh, until another campaign is picked
        view = _report_view()
    status, agreement, summary, raters, flags, disagreements, over_time, calibration, position = view

    @said_beside(refused, ValueError)  # a campaign with no judgments yet has no report
    def on_refresh(campaign_id, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            report = leads.quality(current_user(leads, request, profile), need_campaign(campaign_id))
        figures = report_figures(report)
        return {
            shown: gr.Column(visible=True),
            status: _caption(report),
            agreement: agreement_table(report),
            summary: summary_table(report),
            raters: rater_table(report),
            flags: flag_table(report),
            disagreements: disagreement_table(report),
            over_time: figures["agreement_over_time"],
            calibration: figures["calibration_by_kind"],
            position: figures["position_bias"],
        }

    outputs = [shown, *view, refused]
    refresh.click(on_refresh, inputs=campaign, outputs=outputs, api_name="lead_quality", **LEAD_EVENTS)
    cleared_on_campaign_change(campaign, {shown: gr.Column(visible=False), refused: ""})
