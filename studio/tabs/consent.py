"""The consent panel a rater tab shows instead of its task until the rater accepts the campaign's consent text."""

from __future__ import annotations

import gradio as gr

from studio.service import ConsentRequired


class ConsentPanel:
    """The text (markdown, HTML sanitised) and an Accept button; the version read travels in a ``gr.State``."""

    def __init__(self, prefix: str) -> None:
        self.version = gr.State(None)
        with gr.Column(visible=False, elem_id=f"{prefix}-consent", elem_classes="concord-panel") as self.box:
            self.title = gr.Markdown("### Consent")
            self.text = gr.Markdown(sanitize_html=True, elem_id=f"{prefix}-consent-text")
            self.accept = gr.Button("I accept", variant="primary", elem_id=f"{prefix}-consent-accept")

    def ask(self, required: ConsentRequired) -> dict:
        return {
            self.box: gr.update(visible=True),
            self.title: f"### Before your first item: consent (version {required.version})",
            self.text: required.text,
            self.version: required.version,
        }

    def hide(self) -> dict:
        return {self.box: gr.update(visible=False)}

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.box, self.title, self.text, self.version]
