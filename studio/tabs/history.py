"""History: the rater's own past judgments and demonstrations, searched, reopened and revised (studio.history).

The search takes words from the prompt or the rater's own reasoning or response, a campaign and a range of days;
the list shows the newest 50 matches, each the current version. Choosing one reopens it beside the list: a
judgment as the rater saw it (the same sides, their answer filled in), a demonstration with its text, claims and
a lead's review (accepted or rejected, with the lead's note: the list shows the verdict too).
Saving appends a revision that supersedes it; the list and the form then show the new version. Calibration items
look like any other here (their expected answer is never shown), and a revision never changes a calibration score.

Keyboard (static/studio.js; ``?`` shows ``KEYS``): / search (Enter searches, Esc leaves it), O the list (Space opens
the item there, the arrow keys the previous or next one), and on a reopened judgment the keys of Compare (1-5, B,
A S D F H J K L then 0-5, R, Esc, Shift+1-5); Ctrl+Enter saves the revision.
"""

from __future__ import annotations

import time

import gradio as gr

from storage.demonstrations import Verdict
from studio.history import DemonstrationView, HistoryItem, JudgmentView
from studio.login import current_user
from studio.render import conversation_html, pane_html
from studio.service import StudioService
from studio.tabs.compare import CHOICES, CONFIDENCE, CRITERION_KEYS, LABELS, MAX_CRITERIA, SCORES
from studio.tabs.events import Profile, said_beside, shown_to_user
from studio.tabs.rater import COUNT_JS, RATER_EVENTS, count_line, help_overlay
from studio.tabs.write import CLAIM_COLUMNS
from studio.validation import JudgmentAnswer, claims_from_rows

ALL = 0  # the campaign filter's "every campaign"
KEYS = [
    ("/", "search: words from the prompt or from your reasoning or response; Enter searches"),
    ("Esc", "leave the search box (or the reasoning, or the response)"),
    ("O", "the list of results: Space opens the item there, ↑ ↓ open the previous or next one"),
    ("1 – 5 · B · Shift + 1 – 5", "on a reopened judgment: choice, both bad, confidence, as in Compare"),
    ("A S D F H J K L, then 0 – 5", "score a rubric criterion (0: not rated)"),
    ("R", "edit the reasoning; Esc leaves the box"),
    ("Ctrl + Enter", "save the revision (also while writing); the original stays on record"),
    ("?", "this list (Esc closes it)"),
]
HINT = "**/** search · **O** list, **Space ↑ ↓** open · **1–5 B R** as in Compare · **Ctrl+Enter** save · **?** keys"


def line(item: HistoryItem) -> str:
    """One entry of the list: when, where, what the rater answered, and the prompt's start."""
    answer = LABELS[item.choice] if item.kind == "judgment" else "written: " + " ".join(item.text.split())[:40]
    revised = " · revised" if item.revised else ""
    reviewed = f" · {item.review}" if item.review else ""
    return f"{item.at:%Y-%m-%d %H:%M} · {item.campaign} · {answer}{revised}{reviewed} · {item.prompt[:70]}"


def verdict_line(verdict: Verdict | None) -> str:
    """What a lead said of this version of the rater's demonstration, in Markdown."""
    if verdict is None:
        return "Not reviewed by a lead yet."
    said = f" Their note: “{verdict.note}”" if verdict.note else ""
    again = " A revision goes back to the leads for review." if verdict.status == "rejected" else ""
    return f"**{verdict.status.capitalize()}** by a lead on {verdict.reviewed_at:%Y-%m-%d}.{said}{again}"


def build_history_tab(service: StudioService, tab: gr.Tab) -> None:
    """The History tab; ``tab`` is the ``gr.Tab`` it is built in (opening it lists the rater's latest work)."""
    opened = gr.State(None)  # (JudgmentView | DemonstrationView, monotonic time it was opened)
    with gr.Row(equal_height=True, elem_id="history-filters"):
        search = gr.Textbox(label="Search (/)", placeholder="words in the prompt or in your reasoning or response",
                            scale=3, elem_id="history-search")  # fmt: skip
        campaign = gr.Dropdown(label="Campaign", choices=[("All campaigns", ALL)], value=ALL, scale=2,
                               elem_id="history-campaign")  # fmt: skip
        since = gr.Textbox(label="From", placeholder="YYYY-MM-DD", scale=1, min_width=110, elem_id="history-since")
        until = gr.Textbox(label="To", placeholder="YYYY-MM-DD", scale=1, min_width=110, elem_id="history-until")
        go = gr.Button("Search", scale=0, min_width=90, elem_id="history-go")
    status = gr.Markdown("", elem_id="history-status", elem_classes="concord-rater-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            results = gr.Radio([], label="Newest first", elem_id="history-list")
        with gr.Column(scale=3, visible=False, elem_id="history-task") as pair_form:
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=400, elem_classes="concord-reading"):
                    prompt = gr.HTML(elem_id="history-prompt")
                    with gr.Row(equal_height=True, elem_classes="concord-responses"):
                        left, right = gr.HTML(elem_id="history-left"), gr.HTML(elem_id="history-right")
                    choice = gr.Radio(CHOICES, label="Which response is better?", elem_id="history-choice")
                with gr.Column(scale=1, min_width=300, elem_classes="concord-answer"):
                    both_bad = gr.Checkbox(label="Both responses are bad", elem_id="history-both-bad")
                    with gr.Column(elem_classes="concord-rubric"):
                        scores = [gr.Radio(SCORES, visible=False, elem_id=f"history-score-{i}",
                                           elem_classes="concord-score") for i in range(MAX_CRITERIA)]  # fmt: skip
                    reasoning = gr.Textbox(label="Reasoning", lines=3, max_lines=8, elem_id="history-reasoning")
                    count = gr.Markdown(elem_classes="concord-count")
                    confidence = gr.Radio(CONFIDENCE, label="Confidence", elem_id="history-confidence")
                    save = gr.Button("Save revision", variant="primary", elem_id="history-submit")
        with gr.Column(scale=3, visible=False, elem_id="history-demo") as demo_form:
            demo_prompt = gr.HTML(elem_id="history-demo-prompt")
            verdict = gr.Markdown(elem_id="history-demo-verdict")
            editor = gr.Textbox(label="Your response", lines=8, max_lines=20, elem_id="history-editor")
            claims = gr.Dataframe(headers=CLAIM_COLUMNS, datatype="str", type="array", column_count=3,
                                  interactive=True, label="Factual claims", elem_id="history-claims")  # fmt: skip
            save_demo = gr.Button("Save revision", variant="primary", elem_id="history-demo-submit")
    gr.Markdown(HINT, elem_classes="concord-keys")
    help_overlay("history", KEYS)
    minimum = gr.Number(visible="hidden", precision=0)
    form = [choice, both_bad, *scores, reasoning, confidence]

    def listed(rater: int, text: str, campaign_id: int | None, first: str, last: str, value: str | None) -> dict:
        items = service.history(rater, text=text or "", campaign_id=campaign_id or None, since=first, until=last)
        choices = [(line(item), f"{item.kind}:{item.item_id}") for item in items]
        found = f"{len(items)} item{'s' * (len(items) != 1)}" + (" (the newest 50)" if len(items) == 50 else "")
        return {results: gr.Radio(choices=choices, value=value), status: found if items else "Nothing found."}

    def show_judgment(view: JudgmentView) -> dict:
        rubric = {score: gr.Radio(visible=False, value=None) for score in scores}
        for score, name, letter in zip(scores, view.rubric, CRITERION_KEYS, strict=False):
            label = f"{name} ({letter}){' *' if view.criteria_required else ''}"
            rubric[score] = gr.Radio(label=label, value=view.criteria.get(name, 0), visible=True)
        return rubric | {
            opened: (view, time.monotonic()), pair_form: gr.Column(visible=True), demo_form: gr.Column(visible=False),
            prompt: conversation_html(view.messages), left: pane_html("Left response", view.left_text),
            right: pane_html("Right response", view.right_text), choice: view.choice, both_bad: view.both_bad,
            reasoning: view.reasoning, confidence: view.confidence, minimum: view.min_reasoning_chars,
            count: count_line(view.reasoning, view.min_reasoning_chars),
        }  # fmt: skip

    def show_demonstration(view: DemonstrationView) -> dict:
        rows = [[c.get("claim", ""), c.get("status", ""), c.get("source") or ""] for c in view.claims]
        return {
            opened: (view, time.monotonic()), pair_form: gr.Column(visible=False), demo_form: gr.Column(visible=True),
            demo_prompt: conversation_html(view.messages), verdict: verdict_line(view.verdict), editor: view.text,
            claims: rows or [["", "", ""]],
        }  # fmt: skip

    def reopen(rater: int, value: str) -> dict:
        kind, item_id = value.split(":")
        if kind == "judgment":
            return show_judgment(service.open_judgment(rater, int(item_id)))
        return show_demonstration(service.open_demonstration(rater, int(item_id)))

    @said_beside(status)
    def on_show(request: gr.Request, profile: Profile, text, campaign_id, first, last):
        with shown_to_user():
            rater = current_user(service, request, profile)
            names = [("All campaigns", ALL), *service.campaigns_for(user_id=rater)]
            return {campaign: gr.Dropdown(choices=names)} | listed(rater, text, campaign_id, first, last, None)

    @said_beside(status)
    def on_search(request: gr.Request, profile: Profile, text, campaign_id, first, last):
        with shown_to_user():
            return listed(current_user(service, request, profile), text, campaign_id, first, last, None)

    @said_beside(status)
    def on_open(request: gr.Request, profile: Profile, value):
        if not value:
            return {}
        with shown_to_user():
            return reopen(current_user(service, request, profile), value)

    def revise(rater: int, view: JudgmentView | DemonstrationView, spent: float, values: tuple) -> str:
        """Save the form as a new version of ``view``'s item; returns the new version's list value."""
        if isinstance(view, DemonstrationView):
            written, rows = values[len(form) :]
            claimed = claims_from_rows(rows)
            new_id = service.revise_demonstration(
                rater, view.demonstration_id, text=written or "", claims=claimed, time_on_task_s=spent
            )
            return f"demonstration:{new_id}"
        choice_value, bad, *score_values, why, conf = values[: len(form)]
        criteria = {n: int(v) if v else None for n, v in zip(view.rubric, score_values, strict=False)}
        answer = JudgmentAnswer(choice_value, bad, criteria, why or "", conf, spent)
        return f"judgment:{service.revise_judgment(rater, view.judgment_id, answer)}"

    @said_beside(status)
    def on_save(request: gr.Request, profile: Profile, current, text, campaign_id, first, last, *values):
        if current is None:
            raise gr.Error("Choose an item from the list first.")
        view, opened_at = current
        with shown_to_user():
            rater = current_user(service, request, profile)
            new = revise(rater, view, time.monotonic() - opened_at, values)
            shown = listed(rater, text, campaign_id, first, last, new) | reopen(rater, new)
        saved = f"✓ Saved as version {shown[opened][0].version}; the earlier one stays on record."
        return shown | {status: saved}

    filters = [search, campaign, since, until]
    outputs = [opened, pair_form, demo_form, prompt, left, right, *form, count, minimum, demo_prompt, verdict, editor]
    outputs += [claims]
    outputs += [results, status, campaign]
    events = {"show_progress_on": status, **RATER_EVENTS}
    tab.select(on_show, filters, outputs, api_visibility="private", **events)
    for trigger in (go.click, search.submit, campaign.input, since.submit, until.submit):
        trigger(on_search, filters, outputs, api_visibility="private", **events)
    results.input(on_open, results, outputs, api_visibility="private", **events)
    for button in (save, save_demo):
        saved = button.click(
            on_save, [opened, *filters, *form, editor, claims], outputs, api_visibility="private", **events
        )
        saved.then(None, js="() => window.concord.ready('history')")  # out of the text, onto the item, as in Compare
    reasoning.input(None, inputs=[reasoning, minimum], outputs=count, js=COUNT_JS)
