"""Compare: the prompt, two anonymous responses side by side, a 5-point choice, rubric scores, reasoning, confidence.

One screen at 1280x800 and larger: the prompt and both responses on the left (each scrolling inside its own pane),
the answer on the right, nothing below the fold. Prompts and responses are rendered markdown (studio.render), with
raw text a key (M) or a click (the toggle on each response) away.

Keyboard (static/studio.js; ``?`` shows the list, ``KEYS`` below): 1-5 choose, B both bad, A S D F H J K L then 1-5
score a rubric criterion (0 leaves it not rated), R into the reasoning and Esc out of it, Shift+1-5 confidence,
M raw text, Ctrl+Enter (Cmd+Enter) submits, N next item, G guidelines. Outside text fields every key acts; inside
them only Ctrl+Enter and Esc do. After a submit the view is back at the top of the next item, the focus on the item
itself (not in a text field, so the next 1-5 chooses) and the status line says it was saved.

A rubric criterion starts "not rated" and is stored absent unless the rater scores it: a default is not a rating.
In a campaign that requires every criterion (marked *), an unrated one refuses the submit.

Calibration items look exactly like the others. Once one is submitted in a campaign in training mode, it stays on
screen beside a panel with the expected answer (left/right, as the rater saw it) and why, until the rater presses
Next; in audit mode the next item follows as after any other submit.
"""

from __future__ import annotations

import time

import anyio
import gradio as gr

from studio.login import current_user
from studio.render import conversation_html, pane_html
from studio.service import CalibrationFeedback, PairTask, Progress, StudioService
from studio.tabs.consent import ConsentPanel
from studio.tabs.events import shown_to_user
from studio.tabs.rater import (
    COUNT_JS,
    NOT_SUBMITTED,
    SAVED,
    RaterHeader,
    TaskSlots,
    count_line,
    help_overlay,
    keep_drafts,
    shown_task,
    wire_loading,
)
from studio.validation import JudgmentAnswer

CHOICES = [
    ("Left much better", -2),
    ("Left better", -1),
    ("Tie", 0),
    ("Right better", 1),
    ("Right much better", 2),
]
LABELS = {value: label for label, value in CHOICES}
CONFIDENCE = [("1 · guess", 1), ("2", 2), ("3", 3), ("4", 4), ("5 · certain", 5)]
SCORES = [("–", 0), *((str(n), n) for n in range(1, 6))]  # 0: not rated, stored as absent
CRITERION_KEYS = "ASDFHJKL"  # home row, left to right: one key per criterion
MAX_CRITERIA = len(CRITERION_KEYS)
KEYS = [
    ("1 – 5", "choose: left much better, left better, tie, right better, right much better"),
    ("B", "both responses are bad (on / off)"),
    ("A S D F H J K L, then 1 – 5", "score the 1st, 2nd, 3rd … rubric criterion; then 0 leaves it not rated"),
    ("R", "write the reasoning; Esc leaves the box"),
    ("Shift + 1 – 5", "confidence"),
    ("Ctrl + Enter", "submit (also while writing); the next item opens at its top"),
    ("M", "raw text instead of rendered markdown, and back"),
    ("N", "next item · G guidelines · ? this list (Esc closes it)"),
]
SUBMITS_AT_ONCE = 6
"""Submits that run at once; the others wait their turn, in order, on the server's event loop. Left to Gradio's 40
worker threads, 50 raters' submits all ran at once, taking the interpreter's lock from one another at every
database round trip: a fifth more of the server's CPU a submit and a slower, more scattered answer (50 raters on
PostgreSQL, docs/benchmarks.md "submits at once"). Six keep the database busy while one is in Python."""
HINT = "**1–5** choose · **B** both bad · **A S D…** rubric · **R** reasoning · **Ctrl+Enter** submit · **?** all keys"


def feedback_text(feedback: CalibrationFeedback) -> str:
    """What a rater in training mode reads beside the calibration item they just submitted."""
    verdict = "your answer was accepted" if feedback.answer_accepted else "your answer was not accepted"
    also = [LABELS[value] for value in feedback.accepted if value != feedback.expected]
    accepted = f" (also accepted: {', '.join(also)})" if also else ""
    text = f"**Calibration item:** expected *{LABELS[feedback.expected]}*{accepted}; {verdict}."
    if feedback.explanation.strip():
        a_side = "left" if feedback.a_on_left else "right"
        text += f"\n\n**Why** (response A is the one on the {a_side}): {feedback.explanation}"
    return text


def same_rubric(shown: PairTask, task: PairTask) -> bool:
    """Whether the rubric on screen already has ``task``'s criteria (then only its values are reset)."""
    return shown.rubric == task.rubric and shown.criteria_required == task.criteria_required


def build_compare_tab(service: StudioService, campaign: gr.Dropdown, tab: gr.Tab) -> None:
    """The Compare tab; ``tab`` is the ``gr.Tab`` it is built in (opening it loads the rater's item)."""
    task = gr.State(None)  # (PairTask, shown_at, draft key)
    header = RaterHeader("compare", "Pick a campaign above.", "Next item")
    consent = ConsentPanel("compare")
    with gr.Row(visible=False, equal_height=False, elem_id="compare-task") as body:
        with gr.Column(scale=2, min_width=480, elem_classes="concord-reading"):
            prompt = gr.HTML(elem_id="compare-prompt")
            with gr.Row(equal_height=True, elem_classes="concord-responses"):
                left = gr.HTML(elem_id="compare-left")
                right = gr.HTML(elem_id="compare-right")
            choice = gr.Radio(CHOICES, label="Which response is better?", elem_id="compare-choice")
        with gr.Column(scale=1, min_width=360, elem_classes="concord-answer"):
            both_bad = gr.Checkbox(label="Both responses are bad", elem_id="compare-both-bad")
            with gr.Column(elem_classes="concord-rubric"):  # scrolls inside itself past four or five criteria
                scores = [
                    gr.Radio(
                        SCORES, value=None, visible=False, elem_id=f"compare-score-{i}", elem_classes="concord-score"
                    )
                    for i in range(MAX_CRITERIA)
                ]
            reasoning = gr.Textbox(
                label="Reasoning",
                lines=4,
                max_lines=8,
                placeholder="Why is one response better? Be specific enough that another rater could check it.",
                elem_id="compare-reasoning",
            )
            count = gr.Markdown(elem_id="compare-reasoning-count", elem_classes="concord-count")
            confidence = gr.Radio(CONFIDENCE, value=3, label="Confidence", elem_id="compare-confidence")
            # Where the rater's eyes are after a submit; in training mode it takes the Submit button's place.
            feedback = gr.Markdown(visible=False, elem_id="compare-feedback", elem_classes="concord-panel")
            submit = gr.Button("Submit", variant="primary", visible=False, elem_id="compare-submit")
            gr.Markdown(HINT, elem_classes="concord-keys")
    help_overlay("compare", KEYS)
    key = gr.Textbox(visible="hidden", elem_id="compare-draft-key")
    sent = gr.Textbox(visible="hidden", elem_id="compare-sent")
    minimum = gr.Number(visible="hidden", precision=0, elem_id="compare-min-chars")
    form = [choice, both_bad, *scores, reasoning, confidence]
    slots = TaskSlots("judgment", task, header.status, body, submit, key, header, consent, feedback)

    def show(rater: int, pair_task: PairTask, progress: Progress, current: tuple | None) -> dict:
        rubric = {score: 0 if i < len(pair_task.rubric) else None for i, score in enumerate(scores)}
        if current is None or not same_rubric(current[0], pair_task):
            rubric = rubric_radios(pair_task)
        form_values = {choice: None, both_bad: False, reasoning: "", confidence: 3, **rubric}
        view = {
            prompt: conversation_html(pair_task.messages),
            left: pane_html("Left response", pair_task.left_text),
            right: pane_html("Right response", pair_task.right_text),
        }
        counter = {count: count_line("", pair_task.min_reasoning_chars), minimum: pair_task.min_reasoning_chars}
        shown = slots.task(pair_task, rater, progress, current)
        return shown | view | form_values | counter

    def rubric_radios(pair_task: PairTask) -> dict:
        """The criteria's labels and visibility. Sent only when they change: Gradio keeps a copy of an input component
        in the session for every update of its properties (6.31), so a submit sends values alone."""
        rubric = {score: gr.update(visible=False, value=None) for score in scores}
        required = " *" if pair_task.criteria_required else ""
        for score, name, letter in zip(scores, pair_task.rubric, CRITERION_KEYS, strict=False):
            rubric[score] = gr.update(label=f"{name} ({letter}){required}", value=0, visible=True)
        return rubric

    outputs = [task, header.status, body, submit, prompt, left, right, *form, count, minimum, key, feedback]
    outputs += [*header.outputs, *consent.outputs]
    load, loads = wire_loading(
        service,
        slots,
        fetch=service.next_pair,
        show=show,
        controls=(campaign, tab),
        outputs=outputs,
        noun="pair",
        on_campaign_change=True,
    )

    # Gradio injects request and profile first: they cannot follow *rest. The submit runs outside Gradio's queue (see
    # below), where the browser shows no error's message: a refusal is said on the status line instead, and every
    # other output is left as it is, so the form keeps what the rater wrote.
    def submit_now(request: gr.Request, profile: gr.OAuthProfile | None, current, campaign_id, choice, bad, *rest):
        if current is None:
            return {header.status: f"{NOT_SUBMITTED} There is no item on screen: press Next item."}
        (pair_task, shown_at, submitted), (*score_values, text, conf) = current, rest
        # Values as the browser sent them (no preprocess): the service's check names any that is out of range.
        criteria = {name: v or None for name, v in zip(pair_task.rubric, score_values, strict=False)}
        answer = JudgmentAnswer(choice, bad, criteria, str(text or ""), conf, time.monotonic() - shown_at)
        try:
            with shown_to_user():
                rater = current_user(service, request, profile)
                result = service.submit_judgment(rater, pair_task.assignment_id, answer)
        except gr.Error as refused:
            return {header.status: f"{NOT_SUBMITTED} {refused.message}"}
        try:
            with shown_to_user():
                if result.feedback:
                    return reviewing(rater, campaign_id, result.feedback) | {sent: submitted}
                if result.progress is None:  # a new consent text to accept, or no longer in the campaign: load says
                    shown = load(rater, campaign_id, current)
                else:
                    shown = shown_task(slots, show, rater, result.next_task, result.progress, current)
        except gr.Error as failed:  # saved, but the next item could not be shown
            return {header.status: f"{SAVED} {failed.message}", sent: submitted}
        saved = f"{SAVED} {shown.get(header.status) or 'Here is the next item.'}"
        return shown | {header.status: saved, sent: submitted}

    def reviewing(rater: int, campaign_id: int, told: CalibrationFeedback) -> dict:
        """Training mode: the calibration item stays on screen beside its expected answer until the rater goes on."""
        progress = service.progress(rater, campaign_id)
        going_on = f"{SAVED} Press *Next item* (N) to go on."
        done = {task: None, key: "", submit: gr.update(visible=False), header.status: going_on}
        told_panel = {feedback: gr.update(value=feedback_text(told), visible=True)}
        return done | told_panel | header.show(progress, "judgment")

    turns: list[anyio.CapacityLimiter] = []  # made on the server's event loop, at the first submit

    async def on_submit(request: gr.Request, profile: gr.OAuthProfile | None, *values):
        turns or turns.append(anyio.CapacityLimiter(SUBMITS_AT_ONCE))
        return await anyio.to_thread.run_sync(submit_now, request, profile, *values, limiter=turns[0])

    submit_inputs = [task, campaign, *form]
    # Inputs arrive and outputs leave as the browser has them (text, numbers, choices), so Gradio's preprocess and
    # postprocess (one hand-off to a worker thread per input and per output, about 45 a submit) are left out. The
    # submit skips Gradio's queue: the browser posts it and reads the answer in one request, where a queued event
    # takes two and a stream of messages (about a fifth of a submit's server CPU). What the queue gave it, a bound
    # on submits at once, SUBMITS_AT_ONCE gives.
    submit.click(on_submit, submit_inputs, [*outputs, sent], api_name="submit_judgment", preprocess=False,
                 postprocess=False, queue=False, **slots.events())  # fmt: skip
    restored, *reloaded = keep_drafts(key, sent, form, loads)
    for event in (restored, *reloaded):
        event.then(None, inputs=[reasoning, minimum], outputs=count, js=COUNT_JS)
    restored.then(None, js="() => window.concord.ready('compare')")
    reasoning.input(None, inputs=[reasoning, minimum], outputs=count, js=COUNT_JS)
