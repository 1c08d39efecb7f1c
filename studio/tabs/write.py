"""Write: an SFT demonstration for a prompt, with claim-level verification of its facts.

The rater may start from a model draft, lists each factual claim of the response and marks it verified (with a
source), unverifiable or false; a claim marked false blocks the submit. Time on task and paste events (when, and how
many characters; recorded by static/studio.js in a hidden field) go with the demonstration.

Keyboard: Ctrl+Enter (Cmd+Enter) submits, Esc leaves the response box, N next prompt and G the guidelines (outside
text fields), ? the list of keys.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from studio.login import current_user
from studio.service import Progress, PromptTask, StudioService
from studio.tabs.consent import ConsentPanel
from studio.tabs.events import said_beside, shown_to_user
from studio.tabs.rater import (
    NOT_SUBMITTED,
    SAVE_JS,
    RaterHeader,
    TaskSlots,
    as_chat,
    help_overlay,
    keep_drafts,
    prompt_view,
    wire_loading,
)
from studio.validation import claims_from_rows, read_paste_events

CLAIM_COLUMNS = ["claim", "status", "source"]
BLANK_CLAIMS = [["", "", ""] for _ in range(3)]
KEYS = [
    ("Ctrl + Enter", "submit (also while writing)"),
    ("Esc", "leave the response box, so the keys below act"),
    ("N", "next prompt · G guidelines · ? this list (Esc closes it)"),
]
HINT = "Keys: **Ctrl+Enter** submit · **Esc** leave the text · **N** next prompt · **G** guidelines · **?** all keys"


def build_write_tab(service: StudioService, campaign: gr.Dropdown, tab: gr.Tab) -> None:
    """The Write tab; ``tab`` is the ``gr.Tab`` it is built in (opening it leases the rater's prompt)."""
    task = gr.State(None)  # (PromptTask, shown_at, draft key)
    header = RaterHeader("write", "Open this tab to get a prompt.", "Next prompt")
    consent = ConsentPanel("write")
    status = header.status
    with gr.Column(visible=False, elem_id="write-task") as body:
        prompt = prompt_view("write-prompt")
        with gr.Accordion("Model draft", open=False, visible=False, elem_id="write-draft") as draft_box:
            draft = gr.Textbox(show_label=False, lines=6, max_lines=30, interactive=False, elem_id="write-draft-text")
        use_draft = gr.Button("Start from the model draft", size="sm", visible=False, elem_id="write-use-draft")
        response = gr.Textbox(
            label="Your response",
            lines=8,
            max_lines=30,
            placeholder="Write the response you would want to see.",
            elem_id="write-editor",
        )
        claims = gr.Dataframe(
            value=BLANK_CLAIMS,
            headers=CLAIM_COLUMNS,
            datatype="str",
            type="array",
            row_count=3,
            column_count=3,
            column_widths=["55%", "15%", "30%"],
            interactive=True,
            label="Factual claims in your response, one a row · status: verified (give the source), unverifiable, "
            "or false (a false claim blocks the submit: correct or remove it)",
            elem_id="write-claims",
        )
    submit = gr.Button("Submit", variant="primary", visible=False, elem_id="write-submit")
    gr.Markdown(HINT, elem_classes="concord-keys")
    help_overlay("write", KEYS)
    key = gr.Textbox(visible="hidden", elem_id="write-draft-key")
    sent = gr.Textbox(visible="hidden", elem_id="write-sent")
    pastes = gr.Textbox(value="[]", visible="hidden", elem_id="write-pastes")
    slots = TaskSlots("demonstration", task, status, body, submit, key, header, consent)

    def show(rater: int, prompt_task: PromptTask, progress: Progress, current: Any) -> dict:
        has_draft = bool(prompt_task.draft)
        drafting = {draft_box: gr.update(visible=has_draft), use_draft: gr.update(visible=has_draft)}
        fields = {prompt: as_chat(prompt_task.messages), draft: prompt_task.draft or "", response: ""}
        fields |= {claims: BLANK_CLAIMS, pastes: "[]"}
        shown = slots.task(prompt_task, rater, progress, current)
        return shown | drafting | fields

    outputs = [task, status, body, submit, prompt, draft_box, draft, use_draft, response, claims, pastes, key]
    outputs += [*header.outputs, *consent.outputs]
    load, loads = wire_loading(
        service,
        slots,
        fetch=service.next_prompt,
        show=show,
        controls=(campaign, tab),
        outputs=outputs,
        noun="prompt",
        on_campaign_change=False,
    )

    @said_beside(status)  # on the status line, with the rater's text left as it is
    def on_use_draft(current, text) -> dict:
        if current is None or not current[0].draft:
            raise gr.Error("This prompt has no model draft.")
        if (text or "").strip():
            raise gr.Error("Your response is not empty: clear it first to start from the model draft.")
        return {response: current[0].draft}

    def on_submit(current, campaign_id, text, rows, paste_json, request: gr.Request, profile: gr.OAuthProfile | None):
        """As Compare's submit: a refusal is said on the status line and the form keeps what the rater wrote."""
        if current is None:
            return {slots.status: f"{NOT_SUBMITTED} There is no prompt on screen: press Next prompt."}
        prompt_task, shown_at, submitted = current
        try:
            with shown_to_user():
                rater = current_user(service, request, profile)
                claimed, pasted = claims_from_rows(rows), read_paste_events(paste_json)
                service.submit_demonstration(
                    rater, prompt_task.assignment_id, text=text, claims=claimed,
                    time_on_task_s=time.monotonic() - shown_at, paste_events=pasted,
                )  # fmt: skip
        except gr.Error as refused:
            return {slots.status: f"{NOT_SUBMITTED} {refused.message}"}
        with shown_to_user():
            return load(rater, campaign_id, None) | {sent: submitted}

    fields = [response, claims, pastes]
    drafted = use_draft.click(on_use_draft, [task, response], [response, status], api_name="use_draft",
                              **slots.events())  # fmt: skip
    drafted.then(None, inputs=[key, *fields], js=SAVE_JS)
    submit.click(
        on_submit,
        inputs=[task, campaign, *fields],
        outputs=[*outputs, sent],
        api_name="submit_demonstration",
        **slots.events(),
    )
    keep_drafts(key, sent, fields, loads)
