"""Compare: the prompt, two anonymous responses side by side, a 5-point choice, rubric scores, reasoning, confidence.

Keyboard (static/studio.js): 1-5 choose Left much better .. Right much better, B both bad, Shift+1-5 confidence,
Ctrl+Enter (Cmd+Enter) submits, N next item, G opens the guidelines. Digits and letters do nothing while the rater
types in a text field; Ctrl+Enter works there too.

Calibration items look exactly like the others. Once one is submitted in a campaign in training mode, it stays on
screen beside a panel with the expected answer (left/right, as the rater saw it) and why, until the rater presses
Next; in audit mode the next item follows as after any other submit.
"""

from __future__ import annotations

import time

import gradio as gr

from studio.login import current_user
from studio.service import CalibrationFeedback, PairTask, Progress, StudioService
from studio.tabs.consent import ConsentPanel
from studio.tabs.events import shown_to_user
from studio.tabs.rater import (
    COUNT_JS,
    RaterHeader,
    TaskSlots,
    as_chat,
    count_line,
    keep_drafts,
    prompt_view,
    refused_submit,
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
MAX_CRITERIA = 8
KEYS = (
    "Keys: **1–5** choose (left much better … right much better) · **B** both bad · **Shift+1–5** confidence · "
    "**Ctrl+Enter** submit · **N** next item · **G** guidelines"
)


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


def build_compare_tab(service: StudioService, campaign: gr.Dropdown, tab: gr.Tab) -> None:
    """The Compare tab; ``tab`` is the ``gr.Tab`` it is built in (opening it loads the rater's item)."""
    task = gr.State(None)  # (PairTask, shown_at, draft key)
    header = RaterHeader("compare")
    consent = ConsentPanel("compare")
    status = gr.Markdown("Pick a campaign above.", elem_id="compare-status")
    with gr.Column(visible=False, elem_id="compare-task") as body:
        prompt = prompt_view("compare-prompt")
        with gr.Row(equal_height=True):
            left = gr.Textbox(label="Left response", lines=6, max_lines=24, interactive=False, elem_id="compare-left")
            right = gr.Textbox(
                label="Right response", lines=6, max_lines=24, interactive=False, elem_id="compare-right"
            )
        choice = gr.Radio(CHOICES, label="Which response is better?", elem_id="compare-choice")
        both_bad = gr.Checkbox(label="Both responses are bad", elem_id="compare-both-bad")
        with gr.Row():
            scores = [
                gr.Slider(1, 5, value=3, step=1, visible=False, elem_id=f"compare-score-{i}")
                for i in range(MAX_CRITERIA)
            ]
        reasoning = gr.Textbox(
            label="Reasoning",
            lines=4,
            placeholder="Why is one response better? Be specific enough that another rater could check it.",
            elem_id="compare-reasoning",
        )
        count = gr.Markdown(elem_id="compare-reasoning-count", elem_classes="concord-count")
        confidence = gr.Radio(CONFIDENCE, value=3, label="Confidence", elem_id="compare-confidence")
    # Beside the Submit and Next buttons, where the rater's eyes are after a submit, not above the fold.
    feedback = gr.Markdown(visible=False, elem_id="compare-feedback", elem_classes="concord-panel")
    with gr.Row():
        next_button = gr.Button("Next item", elem_id="compare-next")
        submit = gr.Button("Submit", variant="primary", visible=False, elem_id="compare-submit")
    gr.Markdown(KEYS, elem_classes="concord-keys")
    key = gr.Textbox(visible="hidden", elem_id="compare-draft-key")
    sent = gr.Textbox(visible="hidden", elem_id="compare-sent")
    minimum = gr.Number(visible="hidden", precision=0, elem_id="compare-min-chars")
    form = [choice, both_bad, *scores, reasoning, confidence]
    slots = TaskSlots("judgment", task, status, body, submit, key, header, consent)

    def show(rater: int, pair_task: PairTask, progress: Progress) -> dict:
        sliders = {slider: gr.Slider(visible=False) for slider in scores}
        for slider, name in zip(scores, pair_task.rubric, strict=False):
            sliders[slider] = gr.Slider(label=name, value=3, visible=True)
        form_values = {choice: None, both_bad: False, reasoning: "", confidence: 3, **sliders}
        view = {prompt: as_chat(pair_task.messages), left: pair_task.left_text, right: pair_task.right_text}
        counter = {count: count_line("", pair_task.min_reasoning_chars), minimum: pair_task.min_reasoning_chars}
        shown = slots.task(pair_task, rater, progress, pair_task.guidelines, pair_task.guidelines_version)
        return shown | view | form_values | counter | {feedback: gr.Markdown(visible=False)}

    outputs = [task, status, body, submit, prompt, left, right, *form, count, minimum, key, feedback]
    outputs += [*header.outputs, *consent.outputs]
    load = wire_loading(
        service,
        slots,
        fetch=service.next_pair,
        show=show,
        controls=(campaign, tab, next_button),
        outputs=outputs,
        noun="pair",
        on_campaign_change=True,
    )

    # Gradio injects request and profile first: they cannot follow *rest.
    def on_submit(request: gr.Request, profile: gr.OAuthProfile | None, current, campaign_id, choice, bad, *rest):
        if current is None:
            raise gr.Error("There is no item on screen: press Next item.")
        (pair_task, shown_at, submitted), (*score_values, text, conf) = current, rest
        criteria = dict(zip(pair_task.rubric, (int(v) for v in score_values), strict=False))
        answer = JudgmentAnswer(choice, bad, criteria, text or "", conf, time.monotonic() - shown_at)
        with shown_to_user():
            rater = current_user(service, request, profile)
        with refused_submit():
            result = service.submit_judgment(rater, pair_task.assignment_id, answer)
        with shown_to_user():
            shown = (
                reviewing(rater, campaign_id, result.feedback) if result.feedback else load(rater, campaign_id, None)
            )
        return shown | {sent: submitted}

    def reviewing(rater: int, campaign_id: int, told: CalibrationFeedback) -> dict:
        """Training mode: the calibration item stays on screen beside its expected answer until the rater goes on."""
        progress = service.progress(rater, campaign_id)
        done = {task: None, key: "", submit: gr.Button(visible=False), status: "Press *Next item* (N) to go on."}
        return done | {feedback: gr.Markdown(feedback_text(told), visible=True)} | header.show(progress, "judgment")

    submit_inputs = [task, campaign, *form]
    submit.click(on_submit, submit_inputs, [*outputs, sent], api_name="submit_judgment", **slots.events())
    restored = keep_drafts(key, sent, form)
    restored.then(None, inputs=[reasoning, minimum], outputs=count, js=COUNT_JS)
    reasoning.input(None, inputs=[reasoning, minimum], outputs=count, js=COUNT_JS)
