"""Write: an SFT demonstration for a prompt, with claim-level verification of its facts."""

from __future__ import annotations

import time

import gradio as gr

from studio.service import StudioService, ValidationFailed

CLAIM_COLUMNS = ["claim", "status (verified / unverifiable / false)", "source"]


def build_write_tab(service: StudioService, campaign: gr.Dropdown) -> None:
    task = gr.State(None)  # (PromptTask, shown_at)
    status = gr.Markdown("Pick a campaign and press *Next prompt*.")
    prompt = gr.Chatbot(label="Prompt", height=220)
    response = gr.Textbox(label="Your response", lines=10, placeholder="Write the response you would want to see.")
    claims = gr.Dataframe(
        headers=CLAIM_COLUMNS,
        datatype=["str", "str", "str"],
        row_count=1,
        column_count=(3, "fixed"),
        label="Factual claims in your response, each verified with a source, unverifiable, or false",
        interactive=True,
    )
    with gr.Row():
        next_button = gr.Button("Next prompt")
        submit = gr.Button("Submit", variant="primary")

    def show(prompt_task) -> dict:
        if prompt_task is None:
            return {task: None, status: "No prompt needs a demonstration right now.", prompt: [], response: ""}
        return {
            task: (prompt_task, time.monotonic()),
            prompt: prompt_task.messages,
            status: "Starting from a model draft: edit it freely." if prompt_task.draft else "Write from scratch.",
            response: prompt_task.draft or "",
            claims: [["", "", ""]],
        }

    def on_next(campaign_id, request: gr.Request):
        if campaign_id is None:
            raise gr.Error("Pick a campaign first.")
        return show(service.next_prompt(service.user_id(request.username), campaign_id))

    def on_submit(current, campaign_id, text, claim_rows, request: gr.Request):
        if current is None:
            raise gr.Error("There is no prompt on screen: press Next prompt.")
        prompt_task, shown_at = current
        rows = claim_rows.values.tolist() if hasattr(claim_rows, "values") else claim_rows
        listed = [{"claim": c, "status": s.strip().lower(), "source": src or None} for c, s, src in rows if c]
        rater = service.user_id(request.username)
        try:
            service.submit_demonstration(
                rater,
                prompt_task.assignment_id,
                text=text,
                claims=listed,
                time_on_task_s=time.monotonic() - shown_at,
                paste_events=[],
            )
        except ValidationFailed as error:
            raise gr.Error(str(error)) from error
        return show(service.next_prompt(rater, campaign_id))

    outputs = [task, status, prompt, response, claims]
    next_button.click(on_next, inputs=campaign, outputs=outputs, api_name="next_prompt")
    submit.click(
        on_submit, inputs=[task, campaign, response, claims], outputs=outputs, api_name="submit_demonstration"
    )
