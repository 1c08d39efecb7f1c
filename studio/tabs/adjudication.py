"""Adjudication: the pairs raters disagree on, and the likely label errors (judged pairs whose consensus the reward
model disputes, studio.scoring); open one to read the prompt, both responses and every judgment with its reasoning,
then record a final decision (which exports use in place of the consensus), or make it a calibration item.
Everything raters wrote is shown as plain text; raters by name (exports keep pseudonyms)."""

from __future__ import annotations

import math

import gradio as gr
import pandas as pd

from storage.models import CalibrationKind
from studio.leads import LeadService, PairDetail
from studio.login import current_user
from studio.scoring import LabelErrors
from studio.tabs.events import (
    LEAD_EVENTS,
    Profile,
    cleared_on_campaign_change,
    need_campaign,
    said_beside,
    shown_to_user,
    status_line,
)

SCALE = [("A much better", -2), ("A better", -1), ("Tie", 0), ("B better", 1), ("B much better", 2)]
SCALE_NAMES = dict((value, name) for name, value in SCALE)
PAIR_COLUMNS = ["pair", "prompt", "judgments", "disagreed", "calibration", "adjudicated"]
JUDGMENT_COLUMNS = ["rater", "preference", "both bad", "conf.", "reasoning", "criteria", "time (s)", "left",
                    "guidelines"]  # fmt: skip
KINDS = [kind.value for kind in CalibrationKind]
ERROR_COLUMNS = ["pair", "prompt", "judgments", "raters' mean (-2 A .. +2 B)", "model margin (A - B)",
                 "model's P(A better)", "calibration"]  # fmt: skip


def pairs_frame(pairs) -> pd.DataFrame:
    """PairSummary rows as a table."""
    rows = [[p.pair_id, p.prompt_preview, p.n_judgments, p.disagreed, p.is_calibration, p.adjudicated] for p in pairs]
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def label_errors_view(found: LabelErrors) -> tuple[pd.DataFrame, str]:
    """The disputed pairs as a table (the model's P(A better) is the Bradley-Terry sigmoid of its margin), and what
    they come from."""
    rows = [[d.pair_id, d.prompt_preview, d.n_judgments, round(d.mean_preference, 2), round(d.margin, 3),
             round((1 + math.tanh(d.margin / 2)) / 2, 3), d.is_calibration] for d in found.pairs]  # fmt: skip
    if found.scoring is None:
        return pd.DataFrame(rows, columns=ERROR_COLUMNS), "No reward run has scored this campaign yet."
    scoring = found.scoring
    note = (f"{len(rows)} judged pair(s) whose consensus the reward model of run **{scoring.run}** (scores written "
            f"{scoring.scored_at:%Y-%m-%d %H:%M} UTC) disputes, the most confident first; pairs with a decision are "
            "left out. Click one to open it below.")  # fmt: skip
    return pd.DataFrame(rows, columns=ERROR_COLUMNS), note


def first_cell(event: gr.SelectData):
    """The first cell of the table row clicked: a pair id."""
    return event.row_value[0]


def conversation_text(messages: list[dict]) -> str:
    """The prompt's messages as plain text, one block per turn."""
    return "\n\n".join(f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in messages)


def judgments_frame(detail: PairDetail) -> pd.DataFrame:
    """Each current judgment on the A/B scale, with its reasoning, as a table."""
    rows = [
        [j.rater_name, f"{j.preference:+d} {SCALE_NAMES[j.preference]}", j.both_bad, j.confidence, j.reasoning,
         ", ".join(f"{name} {score}" for name, score in j.criteria.items()), round(j.time_on_task_s),
         j.left.upper(), j.guideline_version]
        for j in detail.judgments
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=JUDGMENT_COLUMNS)


def standing(detail: PairDetail) -> str:
    """What is already known of the pair: prior label, calibration answer and the newest decision, in Markdown."""
    parts = [f"**Pair {detail.pair_id}**, {len(detail.judgments)} current judgment(s)."]
    if detail.prior_preference is not None:
        parts.append(f"Label known at import: {SCALE_NAMES[detail.prior_preference]}.")
    if detail.calibration is not None:
        item = detail.calibration
        parts.append(
            f"Calibration item ({item.kind}): expected {SCALE_NAMES[item.expected]}, accepted {item.accepted}."
        )
    if detail.adjudication is not None:
        d = detail.adjudication
        parts.append(
            f"Decided {SCALE_NAMES[d.preference]}{' (both bad)' if d.both_bad else ''} by {d.decided_by or 'unknown'} "
            f"on {d.decided_at:%Y-%m-%d %H:%M}; its note is in the note box."
        )
    return " ".join(parts)


def _pair_view() -> tuple:
    """One pair as plain text: what is known of it, the prompt, both responses and the judgments."""
    summary = gr.Markdown(elem_id="adjudication-standing")
    prompt = gr.Textbox(label="Prompt", lines=4, max_lines=12, interactive=False, elem_id="adjudication-prompt")
    with gr.Row(equal_height=True):
        response_a = gr.Textbox(label="Response A", lines=8, max_lines=20, interactive=False,
                                elem_id="adjudication-response-a")  # fmt: skip
        response_b = gr.Textbox(label="Response B", lines=8, max_lines=20, interactive=False,
                                elem_id="adjudication-response-b")  # fmt: skip
    judgments = gr.Dataframe(
        headers=JUDGMENT_COLUMNS,
        label="Judgments (preference: -2 A much better .. +2 B much better)",
        interactive=False,
        wrap=True,
        column_widths=["12%", "12%", "6%", "6%", "31%", "13%", "6%", "5%", "9%"],
        elem_id="adjudication-judgments",
    )
    return summary, prompt, response_a, response_b, judgments


def _decision_form() -> tuple:
    with gr.Group():
        decision = gr.Radio(SCALE, label="Final decision", elem_id="adjudication-decision")
        both_bad = gr.Checkbox(label="Both responses are bad", elem_id="adjudication-both-bad")
        note = gr.Textbox(label="Note: why (required)", lines=2, elem_id="adjudication-note")
        with gr.Row(equal_height=True):
            make_calibration = gr.Checkbox(label="Also make it a calibration item", elem_id="adjudication-calibrate")
            kind = gr.Dropdown(KINDS, value=KINDS[0], label="Calibration kind", elem_id="adjudication-kind")
    with gr.Row(equal_height=True):
        record = gr.Button("Record decision", variant="primary", scale=0, min_width=200, elem_id="adjudication-record")
        status = status_line("adjudication-status")
    return decision, both_bad, note, make_calibration, kind, record, status


def _label_errors_section(leads: LeadService, campaign: gr.Dropdown) -> gr.Dataframe:
    """The review queue of likely label errors; returns its table, whose rows open in the pair view."""
    with gr.Accordion("Likely label errors: the reward model disputes the consensus", open=False,
                      elem_id="adjudication-label-errors-section"):  # fmt: skip
        note = gr.Markdown(elem_id="adjudication-label-errors-note")
        listing = gr.Button("List likely label errors", elem_id="adjudication-label-errors-list")
        errors = gr.Dataframe(headers=ERROR_COLUMNS, label="Disputed pairs (click one to open it)", interactive=False,
                              max_height=260, elem_id="adjudication-label-errors")  # fmt: skip

    def on_label_errors(campaign_id, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(leads, request, profile)
            table, text = label_errors_view(leads.label_errors(actor, need_campaign(campaign_id)))
        return {errors: table, note: text}

    listing.click(on_label_errors, campaign, [errors, note], api_name="lead_label_errors", **LEAD_EVENTS)
    cleared_on_campaign_change(campaign, {errors: pd.DataFrame(columns=ERROR_COLUMNS), note: ""})
    return errors


def build_adjudication_tab(leads: LeadService, campaign: gr.Dropdown) -> None:
    with gr.Row():
        only_disagreed = gr.Checkbox(value=True, label="Only pairs raters disagree on", elem_id="adjudication-only")
        listing = gr.Button("List pairs", variant="primary", elem_id="adjudication-list")
    pairs = gr.Dataframe(headers=PAIR_COLUMNS, label="Pairs (click one to open it)", interactive=False,
                         max_height=260, elem_id="adjudication-pairs")  # fmt: skip
    errors = _label_errors_section(leads, campaign)
    with gr.Row():
        pair_id = gr.Number(None, label="Pair id", placeholder="click a pair above, or type its id", precision=0,
                            elem_id="adjudication-pair-id")  # fmt: skip
        open_pair = gr.Button("Open pair", elem_id="adjudication-open")
    opened = status_line("adjudication-open-status")
    summary, prompt, response_a, response_b, judgments = _pair_view()
    decision, both_bad, note, make_calibration, kind, record, status = _decision_form()

    def on_list(campaign_id, disagreed_only, request: gr.Request, profile: Profile):
        with shown_to_user():
            actor = current_user(leads, request, profile)
            return pairs_frame(leads.pairs(actor, need_campaign(campaign_id), only_disagreed=disagreed_only))

    @said_beside(opened)
    def on_open(chosen, request: gr.Request, profile: Profile) -> dict:
        if chosen is None:
            raise gr.Error("Enter a pair id, or click a pair in the list.", print_exception=False)
        with shown_to_user():
            detail = leads.pair_detail(current_user(leads, request, profile), int(chosen))
        latest = detail.adjudication
        return {
            summary: standing(detail),
            prompt: conversation_text(detail.messages),
            response_a: detail.response_a,
            response_b: detail.response_b,
            judgments: judgments_frame(detail),
            decision: latest.preference if latest else None,
            both_bad: latest.both_bad if latest else False,
            note: latest.note if latest else "",
        }

    @said_beside(status)
    def on_record(chosen, preference, bad, text, calibrate, calibration_kind, request: gr.Request,
                  profile: Profile) -> dict:  # fmt: skip
        if chosen is None or preference is None:
            raise gr.Error("Open a pair and choose a final decision first.")
        with shown_to_user():
            actor = current_user(leads, request, profile)
            leads.adjudicate(actor, int(chosen), preference=preference, both_bad=bad, note=text,
                             make_calibration=calibrate, kind=calibration_kind)  # fmt: skip
        decided = f"Recorded: pair {int(chosen)} is {SCALE_NAMES[preference]}{' (both bad)' if bad else ''}."
        return {**on_open(chosen, request, profile), make_calibration: False, status: decided}

    detail_outputs = [summary, prompt, response_a, response_b, judgments, decision, both_bad, note, opened]
    listing.click(on_list, [campaign, only_disagreed], pairs, api_name="lead_disagreements", **LEAD_EVENTS)
    pairs.select(first_cell, outputs=pair_id, api_visibility="private", **LEAD_EVENTS).then(
        on_open, pair_id, detail_outputs, api_visibility="private", **LEAD_EVENTS
    )
    errors.select(first_cell, outputs=pair_id, api_visibility="private", **LEAD_EVENTS).then(
        on_open, pair_id, detail_outputs, api_visibility="private", **LEAD_EVENTS
    )
    open_pair.click(on_open, pair_id, detail_outputs, api_name="lead_pair_detail", **LEAD_EVENTS)
    empty = {summary: "", prompt: "", response_a: "", response_b: "", decision: None, both_bad: False, note: "",
             judgments: pd.DataFrame(columns=JUDGMENT_COLUMNS), pairs: pd.DataFrame(columns=PAIR_COLUMNS),
             pair_id: None, status: "", opened: ""}  # fmt: skip
    cleared_on_campaign_change(campaign, empty)
    record.click(on_record, [pair_id, decision, both_bad, note, make_calibration, kind],
                 [*detail_outputs, make_calibration, status], api_name="lead_adjudicate", **LEAD_EVENTS)  # fmt: skip
