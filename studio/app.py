"""The studio: `build_app(service)` lays out the tabs; every decision lives in the service."""

from __future__ import annotations

import gradio as gr

from studio.service import StudioService
from studio.tabs.compare import build_compare_tab
from studio.tabs.write import build_write_tab


def build_app(service: StudioService) -> gr.Blocks:
    """The rater studio; the user is the one Gradio's login resolved (``request.username``)."""
    with gr.Blocks(title="Concord") as app:
        with gr.Row():
            gr.Markdown("## Concord")
            campaign = gr.Dropdown(label="Campaign", choices=[], interactive=True, scale=2)
        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                build_compare_tab(service, campaign)
            with gr.Tab("Write", id="write"):
                build_write_tab(service, campaign)

        def on_load(request: gr.Request):
            choices = service.campaigns_for(request.username)
            return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

        app.load(on_load, outputs=campaign, api_name="campaigns")
    return app
