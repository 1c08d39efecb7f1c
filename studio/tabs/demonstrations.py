"""Demonstrations: a lead reads what raters wrote (plain text), with each claim checked against the response text,
and accepts or rejects it with a note. Only accepted demonstrations go into SFT exports by default; imported writing
goes unless rejected. A rejected demonstration written here frees its place, and its prompt goes to another writer.
Writers are shown by name (exports keep pseudonyms)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from studio.leads import LeadService
from studio.login import current_user
from studio.reviews import DemonstrationDetail
from studio.tabs.adjudication import conversation_text, first_cell
from studio.tabs.events import (
    LEAD_EVENTS,
    Profile,
    cleared_on_campaign_change,
    need_campaign,
    said_beside,
    shown_to_user,
    status_line,
)

FILTERS = [("not reviewed yet", "unreviewed"), ("accepted", "accepted"), ("rejected", "rejected"), ("all", "all")]
LIST_COLUMNS = ["id", "prompt", "writer", "status", "claims", "revised"]
CLAIM_COLUMNS = ["claim", "writer's check", "source", "in the response?", "why"]


def demonstrations_frame(rows) -> pd.DataFrame:
    """DemonstrationSummary rows as a table."""
    table = [[d.demonstration_id, d.prompt_preview, d.writer, d.status, d.n_claims, d.revised] for d in rows]
    return pd.DataFrame(table, columns=LIST_COLUMNS)


def claims_frame(detail: DemonstrationDetail) -> pd.DataFrame:
    """Each claim with the writer's verification and whether the response holds it."""
    rows = [[c.claim, c.status, c.source or "", "yes" if c.in_text else "NO", c.detail] for c in detail.claims]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def standing(detail: DemonstrationDetail) -> str:
    """Who wrote it, how, what the claims check found and the newest review, in Markdown."""
    who = f"**{detail.writer}**" + (f" ({detail.pseudonym} in exports)" if detail.pseudonym else " (imported)")
    parts = [f"**Demonstration {detail.demonstration_id}** by {who}, guideline version "
             f"{detail.guideline_version or '-'}, {detail.time_on_task_s:.0f} s writing, "
             f"{detail.pasted_chars} characters pasted."]  # fmt: skip
    if missing := [c for c in detail.claims if not c.in_text]:
        parts.append(f"**{len(missing)} of {len(detail.claims)} claims not found in the response:** read them below.")
    verdict = detail.verdict
    if verdict is None:
        parts.append("Not reviewed yet.")
    else:
        note = f": “{verdict.note}”" if verdict.note else "."
        parts.append(f"**{verdict.status.capitalize()}** by {verdict.reviewer or 'unknown'} on "
                     f"{verdict.reviewed_at:%Y-%m-%d %H:%M}{note}")  # fmt: skip
    return " ".join(parts)


def _reading_view() -> tuple:
    summary = gr.Markdown(elem_id="demonstrations-standing")
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(label="Prompt", lines=6, max_lines=14, interactive=False, elem_id="demonstrations-prompt")
        text = gr.Textbox(label="Written response", lines=6, max_lines=14, interactive=False,
                          elem_id="demonstrations-text")  # fmt: skip
    claims = gr.Dataframe(headers=CLAIM_COLUMNS, label="Claims, checked against the response text", interactive=False,
                          wrap=True, column_widths=["30%", "12%", "18%", "10%", "30%"],
                          elem_id="demonstrations-claims")  # fmt: skip
    return summary, prompt, text, claims


def build_demonstrations_tab(leads: LeadService, campaign: gr.Dropdown) -> None:
    with gr.Row():
        show = gr.Radio(FILTERS, value="unreviewed", label="Show", scale=3, elem_id="demonstrations-filter")
        listing = gr.Button("List demonstrations", variant="primary", scale=0, min_width=220,
                            elem_id="demonstrations-list")  # fmt: skip
    table = gr.Dataframe(headers=LIST_COLUMNS, label="Demonstrations (click one to open it)", interactive=False,
                         max_height=240, elem_id="demonstrations-table")  # fmt: skip
    with gr.Row():
        chosen = gr.Number(None, label="Demonstration id", placeholder="click one above, or type its id", precision=0,
                           scale=3, elem_id="demonstrations-id")  # fmt: skip
        open_one = gr.Button("Open", scale=0, min_width=220, elem_id="demonstrations-open")
    summary, prompt, text, claims = _reading_view()
    note = gr.Textbox(label="Note to the writer (required to reject)", lines=2, elem_id="demonstrations-note")
    with gr.Row(equal_height=True):
        accept = gr.Button("Accept", variant="primary", scale=0, min_width=140, elem_id="demonstrations-accept")
        reject = gr.Button("Reject", variant="stop", scale=0, min_width=140, elem_id="demonstrations-reject")
        status = status_line("demonstrations-status")

    @said_beside(status)
    def on_list(campaign_id, shown, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(leads, request, profile)
            rows = leads.demonstrations(actor, need_campaign(campaign_id), shown or "unreviewed")
        return {table: demonstrations_frame(rows)}

    def shown(detail: DemonstrationDetail) -> dict:
        return {summary: standing(detail), prompt: conversation_text(detail.messages), text: detail.text,
                claims: claims_frame(detail), note: detail.verdict.note if detail.verdict else ""}  # fmt: skip

    @said_beside(status)
    def on_open(demonstration_id, request: gr.Request, profile: Profile) -> dict:
        if demonstration_id is None:
            raise gr.Error("Enter a demonstration id, or click one in the list.")
        with shown_to_user():
            detail = leads.demonstration(current_user(leads, request, profile), int(demonstration_id))
        return shown(detail)

    def on_review(accepted: bool):  # one handler for both buttons
        @said_beside(status)
        def handler(campaign_id, filtered, demonstration_id, why, request: gr.Request, profile: Profile) -> dict:
            if demonstration_id is None:
                raise gr.Error("Open a demonstration first.")
            with shown_to_user():
                actor = current_user(leads, request, profile)
                leads.review_demonstration(actor, int(demonstration_id), accept=accepted, note=why)
                detail = leads.demonstration(actor, int(demonstration_id))
            done = f"Demonstration {int(demonstration_id)} {'accepted' if accepted else 'rejected'}."
            if not accepted and detail.pseudonym is not None:  # written here: storage.demonstrations.holding_a_place
                done += " Its prompt goes back to the queue for another writer."
            listed = on_list(campaign_id, filtered, request, profile)
            return {**shown(detail), **listed, status: done}

        return handler

    detail = [summary, prompt, text, claims, note, status]
    listing.click(on_list, [campaign, show], [table, status], api_name="lead_demonstrations", **LEAD_EVENTS)
    show.change(on_list, [campaign, show], [table, status], api_visibility="private", **LEAD_EVENTS)
    table.select(first_cell, outputs=chosen, api_visibility="private", **LEAD_EVENTS).then(
        on_open, chosen, detail, api_visibility="private", **LEAD_EVENTS
    )
    open_one.click(on_open, chosen, detail, api_name="lead_demonstration", **LEAD_EVENTS)
    empty = {summary: "", prompt: "", text: "", claims: pd.DataFrame(columns=CLAIM_COLUMNS), note: "", status: "",
             table: pd.DataFrame(columns=LIST_COLUMNS), chosen: None}  # fmt: skip
    cleared_on_campaign_change(campaign, empty)
    for button, accepted in ((accept, True), (reject, False)):
        button.click(on_review(accepted), [campaign, show, chosen, note], [*detail, table],
                     api_name=f"lead_{'accept' if accepted else 'reject'}_demonstration", **LEAD_EVENTS)  # fmt: skip
