"""The lead and admin pages: a Lead tab (its own campaign picker over Campaigns, Quality, Adjudication,
Demonstrations, Export, Generate, Evaluation and Runs; a lead with no campaign is told how to get one) and a Users tab.
Both start hidden; the app's load handler shows them by role with ``lead_visibility``.

Hiding is for tidiness only: every handler asks the service, which refuses whoever may not act.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.leads import LeadService
from studio.login import current_user
from studio.tabs.adjudication import build_adjudication_tab
from studio.tabs.campaigns import build_campaigns_tab
from studio.tabs.demonstrations import build_demonstrations_tab
from studio.tabs.evaluation import build_evaluation_tab, build_generate_tab
from studio.tabs.events import LEAD_EVENTS, Profile, shown_to_user
from studio.tabs.export import build_export_tab
from studio.tabs.quality import build_quality_tab
from studio.tabs.runs import build_runs_tab
from studio.tabs.users import build_users_tab

NO_CAMPAIGN = (
    "**You lead no campaign yet.** Create one under *Campaigns*: fill in the settings, name it and press *Create as "
    "a new campaign*, then import prompts or pairs into it. Or ask an admin to make you a lead of an existing one."
)


def build_lead_tabs(leads: LeadService, exports_dir: Path) -> list[gr.Tab]:
    """Call inside the app's ``gr.Tabs()``; returns ``[lead_tab, users_tab]`` for ``lead_visibility``."""
    with gr.Tab("Lead", id="lead", visible=False, elem_id="lead-tab") as lead_tab:
        campaign = gr.Dropdown(
            label="Campaign you lead",
            choices=[],
            allow_custom_value=True,  # the service, not the choice list, decides who may touch which campaign
            elem_id="lead-campaign",
        )
        hint = gr.Markdown(visible=False, elem_id="lead-hint")
        with gr.Tabs() as sections:
            with gr.Tab("Campaigns", id="lead-campaigns", elem_id="lead-campaigns-tab"):
                build_campaigns_tab(leads, campaign)
            with gr.Tab("Quality", id="lead-quality", elem_id="lead-quality-tab"):
                build_quality_tab(leads, campaign)
            with gr.Tab("Adjudication", id="lead-adjudication", elem_id="lead-adjudication-tab"):
                build_adjudication_tab(leads, campaign)
            with gr.Tab("Demonstrations", id="lead-demonstrations", elem_id="lead-demonstrations-tab"):
                build_demonstrations_tab(leads, campaign)
            with gr.Tab("Export", id="lead-export", elem_id="lead-export-tab"):
                build_export_tab(leads, campaign, exports_dir)
            with gr.Tab("Generate", id="lead-generate", elem_id="lead-generate-tab"):
                generate_specs = build_generate_tab(leads, campaign)
            with gr.Tab("Evaluation", id="lead-evaluation", elem_id="lead-evaluation-tab"):
                build_evaluation_tab(leads, campaign)
            with gr.Tab("Runs", id="lead-runs", elem_id="lead-runs-tab"):
                build_runs_tab(leads, campaign, generate_specs, sections)
    with gr.Tab("Users", id="users", visible=False, elem_id="users-tab") as users_tab:
        build_users_tab(leads, users_tab)

    def on_open(current, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            choices = leads.led_campaigns(current_user(leads, request, profile))
        ids = [value for _, value in choices]
        value = current if current in ids else (ids[0] if ids else None)
        return {campaign: gr.Dropdown(choices=choices, value=value), hint: gr.Markdown(NO_CAMPAIGN, visible=not ids)}

    lead_tab.select(on_open, inputs=campaign, outputs=[campaign, hint], api_name="lead_campaigns", **LEAD_EVENTS)
    return [lead_tab, users_tab]


def lead_visibility(leads: LeadService, user_id: int, tabs: list[gr.Tab]) -> dict:
    """``{tab: update}`` for the app's load handler (``user_id`` from ``studio.login.current_user``): the Lead tab
    for leads and admins, Users for admins only."""
    lead_tab, users_tab = tabs
    admin = leads.is_admin(user_id)
    return {lead_tab: gr.Tab(visible=admin or leads.is_lead(user_id)), users_tab: gr.Tab(visible=admin)}
