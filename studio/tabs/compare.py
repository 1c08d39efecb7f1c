"""Compare: the prompt, two anonymous responses side by side, a 5-point choice, rubric scores and reasoning."""

from __future__ import annotations

import time

import gradio as gr

from studio.service import StudioService
from studio.validation import JudgmentAnswer, ValidationFailed

CHOICES = [
    ("Left much better", -2),
    ("Left better", -1),
    ("Tie", 0),
    ("Right better", 1),
    ("Right much better", 2),
]
MAX_CRITERIA = 6


def build_compare_tab(service: StudioService, campaign: gr.Dropdown) -> None:
    task = gr.State(None)  # (PairTask, shown_at)
    status = gr.Markdown("Pick a campaign and press *Next item*.")
    prompt = gr.Chatbot(label="Prompt", height=220)
    with gr.Row(equal_height=True):
        left = gr.Textbox(label="Left response", lines=10, interactive=False)
        right = gr.Textbox(label="Right response", lines=10, interactive=False)
    choice = gr.Radio(CHOICES, label="Which response is better?")
    both_bad = gr.Checkbox(label="Both responses are bad")
    with gr.Row():
        scores = [gr.Slider(1, 5, value=3, step=1, visible=False) for _ in range(MAX_CRITERIA)]
    reasoning = gr.Textbox(label="Reasoning", lines=4, placeholder="Why is one response better? Be specific.")
    confidence = gr.Slider(1, 5, value=3, step=1, label="Confidence")
    with gr.Row():
        next_button = gr.Button("Next item")
        submit = gr.Button("Submit", variant="primary")
    form = [choice, both_bad, *scores, reasoning, confidence]

    def show(pair_task) -> dict:
        if pair_task is None:
            return {
                task: None,
                status: "Nothing left to judge in this campaign. Thank you!",
                prompt: [],
                left: "",
                right: "",
                **{s: gr.Slider(visible=False) for s in scores},
            }
        sliders = {s: gr.Slider(visible=False) for s in scores}
        for slider, name in zip(scores, pair_task.rubric, strict=False):
            sliders[slider] = gr.Slider(label=name, value=3, visible=True)
        return {
            task: (pair_task, time.monotonic()),
            status: f"Guidelines version {pair_task.guidelines_version}",
            prompt: pair_task.messages,
            left: pair_task.left_text,
            right: pair_task.right_text,
            choice: None,
            both_bad: False,
            reasoning: "",
            confidence: 3,
            **sliders,
        }

    def on_next(campaign_id, request: gr.Request):
        if campaign_id is None:
            raise gr.Error("Pick a campaign first.")
        return show(service.next_pair(service.user_id(request.username), campaign_id))

    def on_submit(request: gr.Request, current, campaign_id, choice_value, bad, *rest):  # Gradio injects it first
        if current is None:
            raise gr.Error("There is no item on screen: press Next item.")
        pair_task, shown_at = current
        *score_values, text, conf = rest
        rater = service.user_id(request.username)
        try:
            answer = JudgmentAnswer(
                choice=choice_value,
                both_bad=bad,
                reasoning=text,
                criteria=dict(zip(pair_task.rubric, (int(v) for v in score_values), strict=False)),
                confidence=int(conf),
                time_on_task_s=time.monotonic() - shown_at,
            )
            service.submit_judgment(rater, pair_task.assignment_id, answer)
        except ValidationFailed as error:
            raise gr.Error(str(error)) from error
        return show(service.next_pair(rater, campaign_id))

    outputs = [task, status, prompt, left, right, *form]
    next_button.click(on_next, inputs=campaign, outputs=outputs, api_name="next_pair")
    submit.click(on_submit, inputs=[task, campaign, *form], outputs=outputs, api_name="submit_judgment")
