"""What the rater tabs share: their queue group, the progress line and guidelines, safe prompts, kept drafts.

Drafts live in the browser (``static/studio.js``): every input saves the form under a key naming the user and the
item; when an item is shown its draft comes back; a successful submit clears it. So a reload or a network blip
loses nothing, and the server never holds half-written work.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import gradio as gr

from studio.login import current_user
from studio.service import ConsentRequired, Progress, StudioService
from studio.tabs.consent import ConsentPanel
from studio.tabs.events import need_campaign, shown_to_user
from studio.validation import reasoning_length

RATER_EVENTS = {"concurrency_id": "rater", "concurrency_limit": 24}
"""Every rater event: one queue group of its own, so a submit never waits behind lead work (their group, "lead",
runs two at a time). 24 at once stays under Gradio's 40 worker threads and PostgreSQL's pool of 30 connections."""

SAVE_JS = "(key, ...values) => window.concord.save(key, ...values)"
RESTORE_JS = "(key, ...current) => window.concord.restore(key, ...current)"
CLEAR_JS = "(key) => window.concord.clear(key)"
COUNT_JS = "(text, minimum) => window.concord.count(text, minimum)"
SAVED = "✓ Saved."
NOT_SUBMITTED = "⚠ **Not submitted:**"


def draft_key(rater_id: int, kind: str, assignment_id: int) -> str:
    """Where the browser keeps the unsent draft of one assignment of one user."""
    return f"{rater_id}:{kind}:{assignment_id}"


def count_line(text: str, minimum: int) -> str:
    """The live character count under the reasoning; static/studio.js writes the same line as the rater types."""
    n = reasoning_length(text)
    return f"{n} characters" + (f" · at least {minimum}" if minimum else "") + (" ✓" if n >= minimum else "")


def as_chat(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prompt for ``gr.Chatbot`` shown exactly as written: HTML escaped here, and the chatbot renders no markdown.

    Raters judge the text a model saw; rendering it (or stripping the tags a sanitiser removes) would change it.
    ``gr.Chatbot`` does not show system messages, so a system prompt becomes a titled block on the assistant side.
    """
    chat = []
    for message in messages:
        shown = {"role": "assistant" if message.get("role") == "assistant" else "user"}
        shown["content"] = html.escape(str(message.get("content", "")), quote=False)
        if message.get("role") == "system":
            shown |= {"role": "assistant", "metadata": {"title": "System prompt"}}
        chat.append(shown)
    return chat


def prompt_view(elem_id: str) -> gr.Chatbot:
    """The prompt as a conversation, as plain text (see ``as_chat``)."""
    return gr.Chatbot(
        label="Prompt",
        height=None,
        min_height=80,
        max_height=320,
        buttons=["copy_all"],
        render_markdown=False,
        sanitize_html=True,
        allow_tags=False,
        feedback_options=None,
        elem_id=elem_id,
        elem_classes="concord-prompt",
    )


def help_overlay(prefix: str, keys: list[tuple[str, str]]) -> gr.HTML:
    """The list of a tab's keys that ``?`` opens over the page (static/studio.js); a click or Esc closes it."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(what)}</td></tr>" for k, what in keys)
    card = f'<div class="concord-help-card" role="dialog" aria-label="Keys"><h3>Keys</h3><table>{rows}</table></div>'
    return gr.HTML(card, elem_id=f"{prefix}-help")


def keep_drafts(
    key: gr.Textbox, sent: gr.Textbox, fields: list[gr.components.Component], loads: Sequence[Any]
) -> list[Any]:
    """Save ``fields`` in the browser on every input, restore them when ``key`` names an item and after each of
    ``loads`` (a second load of the item on screen, such as two arriving together as the page opens, resets the form
    without changing the key), clear a sent one.

    Returns the restore events, the one on a new item first, for what should follow them."""
    for field in fields:
        field.input(None, inputs=[key, *fields], js=SAVE_JS)
    sent.change(None, inputs=sent, js=CLEAR_JS)
    restore = {"inputs": [key, *fields], "outputs": fields, "js": RESTORE_JS}
    return [key.change(None, **restore), *(loaded.then(None, **restore) for loaded in loads)]


def progress_line(progress: Progress, task: str) -> str:
    """One line of the rater's own figures, for the Compare (``judgment``) or Write (``demonstration``) tab."""
    if task == "judgment":
        today, total, noun = progress.judged_today, progress.judged_total, "judged"
        collected, needed, what = progress.judgments_collected, progress.judgments_needed, "judgments"
    else:
        today, total, noun = progress.written_today, progress.written_total, "written"
        collected, needed, what = progress.demonstrations_collected, progress.demonstrations_needed, "demonstrations"
    share = f" ({min(collected / needed, 1):.0%})" if needed else ""
    parts = [f"**{today}** {noun} today, **{total}** in all", f"campaign: {collected} of {needed} {what}{share}"]
    if task == "demonstration" and progress.written_rejected:
        parts.insert(1, f"**{progress.written_rejected}** rejected by a lead: see History for the note and revise")
    if progress.calibration_answered:
        parts.append(
            f"your calibration: {progress.calibration_correct} of {progress.calibration_answered} right "
            f"(last {progress.calibration_window})"
        )
    if progress.on_probation and task == "judgment":
        parts.append(f"**below {progress.calibration_threshold:.0%}: only calibration items until you pass again**")
    as_of = f" · campaign and calibration figures as of {progress.as_of:%Y-%m-%d %H:%M} UTC" if progress.as_of else ""
    return " · ".join(parts) + as_of


class RaterHeader:
    """The top of a rater tab, on one line so the task below fits the screen: the progress line over the status line
    (what happened, what to do), the Next button, and the guidelines one click away with their version."""

    def __init__(self, prefix: str, waiting: str, next_label: str) -> None:
        with gr.Row(equal_height=False, elem_classes="concord-rater-header"):
            with gr.Column(scale=3, min_width=320):
                self.progress = gr.Markdown("", elem_id=f"{prefix}-progress", elem_classes="concord-progress")
                self.status = gr.Markdown(waiting, elem_id=f"{prefix}-status", elem_classes="concord-rater-status")
            self.next_button = gr.Button(next_label, size="sm", scale=0, min_width=120, elem_id=f"{prefix}-next")
            with gr.Column(scale=2, min_width=280):
                with gr.Accordion("Guidelines", open=False, elem_id=f"{prefix}-guidelines") as self.accordion:
                    # Leads write guidelines in markdown; Gradio sanitises any HTML in them.
                    self.guidelines = gr.Markdown("Guidelines appear with your first item.", sanitize_html=True)

    def show(self, progress: Progress | None, task: str, guidelines: str | None = None, version: int = 0) -> dict:
        shown: dict = {self.progress: progress_line(progress, task) if progress else ""}
        if guidelines is not None:
            label = f"Guidelines (version {version}) · press G"
            shown |= {self.accordion: gr.update(label=label), self.guidelines: guidelines or "No guidelines yet."}
        return shown

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.progress, self.accordion, self.guidelines]


@dataclass(frozen=True)
class TaskSlots:
    """The components of a rater tab that loading a task touches; the tab's own ``show`` fills in the task."""

    kind: str  # judgment | demonstration
    state: gr.State  # (task, shown_at, draft key), or None while no task is on screen
    status: gr.Markdown
    body: gr.Column
    submit: gr.Button
    key: gr.Textbox
    header: RaterHeader
    consent: ConsentPanel
    feedback: gr.Markdown | None = None  # a panel that must not outlive the item it speaks of

    def events(self) -> dict[str, Any]:
        """Options of every server event of the tab. Progress and errors show on the status line only: Gradio would
        otherwise cover every output (the rater's own text too) with an "Error" badge when a submit is refused."""
        return {"show_progress_on": self.status, **RATER_EVENTS}

    def nothing(self, message: str, progress: Progress | None = None) -> dict:
        """No task on screen, and why."""
        hidden = {self.body: gr.update(visible=False), self.submit: gr.update(visible=False)}
        if self.feedback is not None:
            hidden[self.feedback] = gr.update(visible=False)
        shown = {self.state: None, self.status: message, self.key: "", **hidden, **self.consent.hide()}
        return shown | self.header.show(progress, self.kind)

    def task(self, task: Any, rater_id: int, progress: Progress, current: Any) -> dict:
        """The slots of a task now on screen (the tab adds its own fields). When ``current`` (the task it replaces)
        was on screen, the task's panels are already shown: only what changed is sent, as each property update
        costs the server a new component (and Gradio keeps a copy of an input one in the session)."""
        key = draft_key(rater_id, self.kind, task.assignment_id)
        # Time on task counts from the lease, so a reload of the page does not restart it.
        shown_at = time.monotonic() - seconds_since(task.leased_at)
        shown = {self.state: (task, shown_at, key), self.status: "", self.key: key}
        if current is None:
            shown |= {self.body: gr.update(visible=True), self.submit: gr.update(visible=True), **self.consent.hide()}
            if self.feedback is not None:
                shown[self.feedback] = gr.update(visible=False)
        guidelines = (task.guidelines, task.guidelines_version)
        if current is not None and (current[0].guidelines, current[0].guidelines_version) == guidelines:
            return shown | self.header.show(progress, self.kind)
        return shown | self.header.show(progress, self.kind, *guidelines)


def seconds_since(moment: datetime) -> float:
    """Seconds from ``moment`` (stored UTC; SQLite may hand it back without its zone) to now, never negative."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - aware).total_seconds())


NOTHING_LEFT = {
    "judgment": "Nothing left to judge in this campaign. Thank you!",
    "demonstration": "No prompt in this campaign needs a response from you now. Thank you!",
}


def load_task(
    service: StudioService,
    slots: TaskSlots,
    fetch: Callable,
    show: Callable,
    rater: int,
    campaign_id: int | None,
    current: Any,
) -> dict:
    """What a rater tab shows now: the consent to accept, the item already on screen (as it is), a new item, or why
    there is none."""
    if campaign_id is None:
        return slots.nothing("Pick a campaign above.")
    try:
        task = fetch(rater, campaign_id)
    except ConsentRequired as required:
        return slots.nothing("") | slots.consent.ask(required)
    return shown_task(slots, show, rater, task, service.progress(rater, campaign_id), current)


def shown_task(slots: TaskSlots, show: Callable, rater: int, task: Any, progress: Progress, current: Any) -> dict:
    """A task fetched for a rater (None: nothing left) in place of ``current``, the one on screen (or None)."""
    if task is None:
        return slots.nothing(NOTHING_LEFT[slots.kind], progress)
    if current is not None and current[0].assignment_id == task.assignment_id:  # leave the form as it is
        return {slots.status: "This item is yours until you submit it.", **slots.header.show(progress, slots.kind)}
    return show(rater, task, progress, current)


def wire_loading(
    service: StudioService,
    slots: TaskSlots,
    *,
    fetch: Callable[[int, int], Any],
    show: Callable[[int, Any, Progress, Any], dict],
    controls: tuple[gr.Dropdown, gr.Tab],
    outputs: list[gr.components.Component],
    noun: str,
    on_campaign_change: bool,
) -> tuple[Callable[[int, int | None, Any], dict], list[Any]]:
    """Next, the tab's selection, consent and (if asked) a campaign change all load the tab's task (``load_task``).

    A tab that leases on a campaign change holds an item the moment the studio opens; Write leases only when opened,
    so a rater who only compares holds no prompt. Returns ``load(rater_id, campaign_id, current)`` for the submit,
    and the loading events (for ``keep_drafts``). ``show(rater_id, task, progress, current)`` fills in the task;
    ``current`` is what was on screen (or None).
    """
    (campaign, tab), next_button = controls, slots.header.next_button
    load = partial(load_task, service, slots, fetch, show)

    def on_next(campaign_id, current, request: gr.Request, profile: gr.OAuthProfile | None):
        with shown_to_user():
            return load(current_user(service, request, profile), campaign_id, current)

    def on_accept(campaign_id, version, current, request: gr.Request, profile: gr.OAuthProfile | None):
        with shown_to_user():
            rater = current_user(service, request, profile)
            service.accept_consent(rater, need_campaign(campaign_id), version)
            return load(rater, campaign_id, current)

    def on_campaign(campaign_id, current, request: gr.Request, profile: gr.OAuthProfile | None):
        # A tab with a task on screen follows the campaign (the same leased task when it did not change: the page's
        # first campaign change can arrive after the tab was opened); an idle Write tab leases nothing until asked.
        if current is None and not on_campaign_change:
            return slots.nothing(f"Press *Next {noun}* (N) to start.")
        return on_next(campaign_id, current, request, profile)

    def on_tab(campaign_id, current, request: gr.Request, profile: gr.OAuthProfile | None):
        # Gradio selects the first tab as the page opens, before the page's load has picked a campaign: there is
        # nothing to say yet, and an answer arriving after the campaign's item would hide it.
        if campaign_id is None:
            return gr.skip()
        return on_next(campaign_id, current, request, profile)

    inputs, events = [campaign, slots.state], {"outputs": outputs, **slots.events()}
    accept_inputs = [campaign, slots.consent.version, slots.state]
    loads = [
        next_button.click(on_next, inputs=inputs, api_name=f"next_{noun}", **events),
        tab.select(on_tab, inputs=inputs, api_visibility="private", **events),
        campaign.change(on_campaign, inputs=inputs, api_visibility="private", **events),
        slots.consent.accept.click(on_accept, inputs=accept_inputs, api_name=f"accept_consent_{noun}", **events),
    ]
    return load, loads
