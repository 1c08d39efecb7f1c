"""The studio: `build_app(service)` lays out the tabs; every decision lives in the service.

Start it with `launch_studio(service, ...)`, as launch.py and the tests do: Gradio 6 takes a page's script, styles
and login in `launch()`, not in `gr.Blocks()`, so `LAUNCH_KWARGS` carries the rater script (drafts, keyboard
shortcuts, paste events: static/studio.js) and styles to it, and studio.server's `launch_kwargs` Concord's own
login and sessions, the permission-checked export download and the upload limit. On a Space with `hf_oauth: true`
the login is Hugging Face OAuth instead (studio.login).
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr

from storage.db import data_dir
from studio import server
from studio.blocks import Blocks
from studio.leads import LeadService
from studio.login import current_user, hf_oauth_enabled
from studio.service import PermissionDenied, StudioService
from studio.tabs.account import build_account_tab
from studio.tabs.compare import build_compare_tab
from studio.tabs.history import build_history_tab
from studio.tabs.lead import build_lead_tabs, lead_visibility
from studio.tabs.rater import RATER_EVENTS
from studio.tabs.write import build_write_tab

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LAUNCH_KWARGS: dict[str, Any] = {
    "head": f"<script>{(STATIC / 'studio.js').read_text(encoding='utf-8')}</script>",
    "css": (STATIC / "studio.css").read_text(encoding="utf-8"),
    # Gradio's run history keeps every call's inputs and outputs (prompts, reasoning) in the browser and can replay
    # them: not on a machine raters may share, and never a second submit by replay.
    "run_history": False,
}
DEFAULT_CONCURRENCY = 8
QUEUE_STATUS_SECONDS = 2.0
"""How often a waiting event hears its place in the queue (see build_app)."""
QUEUE_POLL_SECONDS = 0.01
"""How often Gradio's idle queue looks for a new event (see build_app)."""
GC_YOUNG_ALLOCATIONS = 50_000
"""Allocations between two collections of Python's youngest generation in the serving process (700 by default)."""


def build_app(service: StudioService, *, exports_dir: Path, concurrency: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """The studio, queued: rater tabs for everyone, Lead and Users tabs shown by role; the user is the one the login
    resolved (``studio.login.current_user``). Exports made in the studio are written under ``exports_dir``."""
    leads = LeadService(service.engine, login=service.login)
    with Blocks(title="Concord") as app:
        with gr.Row(equal_height=True, elem_id="concord-header"):
            gr.Markdown("## Concord", scale=1)
            whoami = gr.Markdown(elem_id="concord-user", scale=2)
            campaign = gr.Dropdown(
                label="Campaign", show_label=False, container=False, choices=[], scale=2, elem_id="concord-campaign"
            )
            if hf_oauth_enabled():
                gr.LoginButton(scale=1)
            else:  # studio.server's route: ends this session, then shows the login page
                gr.Button("Log out", link="logout", link_target="_self", size="sm", scale=0, min_width=90,
                          elem_id="concord-logout")  # fmt: skip
        with gr.Tabs():
            with gr.Tab("Compare", id="compare") as compare:
                build_compare_tab(service, campaign, compare)
            with gr.Tab("Write", id="write") as write:
                build_write_tab(service, campaign, write)
            with gr.Tab("History", id="history") as history:
                build_history_tab(service, history)
            lead_tabs = build_lead_tabs(leads, exports_dir)
            if not hf_oauth_enabled():  # a Hugging Face sign-in has no Concord password
                with gr.Tab("Account", id="account", elem_id="account-tab"):
                    build_account_tab(service)

        def on_load(request: gr.Request, profile: gr.OAuthProfile | None):
            try:
                user_id = current_user(service, request, profile)
                choices = service.campaigns_for(user_id=user_id)
            except PermissionDenied as refused:
                return {whoami: str(refused), campaign: gr.Dropdown(choices=[], value=None)}
            name = request.username or (profile.username if profile else "")
            first = choices[0][1] if choices else None
            return {
                whoami: f"Signed in as **{name}** · campaign:",
                campaign: gr.Dropdown(choices=choices, value=first),
                **lead_visibility(leads, user_id, lead_tabs),
            }

        app.load(on_load, outputs=[whoami, campaign, *lead_tabs], api_name="campaigns", **RATER_EVENTS)
    # Rater events share one queue group ("rater", RATER_EVENTS) and lead events another ("lead", two at a time), so
    # a judgment submit never waits behind a slow quality report or export; any other event runs `concurrency` at once.
    # After every event Gradio's queue summarises its last GRADIO_ANALYTICS_MAX_EVENTS (10,000) events with pandas,
    # for a monitoring page the studio does not serve: a share of each submit's CPU that grew with the events kept.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    # Queue positions go to waiting events every QUEUE_STATUS_SECONDS: by default Gradio sends one to every waiting
    # event each time any event starts, so a submit's cost grew with the raters waiting (50 raters: about 4 ms).
    app.queue(default_concurrency_limit=concurrency, status_update_rate=QUEUE_STATUS_SECONDS)
    # Gradio's queue looks for new events every millisecond while it has none: 5 % of a core on an idle server, and
    # about as much of a busy one's, whose submits run outside the queue. Every 10 ms a queued event (a page's first
    # item, a lead's report) waits 5 ms more on average.
    app._queue.sleep_when_free = QUEUE_POLL_SECONDS
    return app


def launch_studio(
    service: StudioService, *, concurrency: int = DEFAULT_CONCURRENCY, **launch_kwargs: Any
) -> gr.Blocks:
    """Build, queue and launch the studio with its script, styles and login; returns the running app."""
    exports_dir = data_dir() / "exports"
    app = build_app(service, exports_dir=exports_dir, concurrency=concurrency)
    if hf_oauth_enabled() and (first_admin := os.environ.get("CONCORD_ADMIN_HF_USERNAME", "").strip()):
        if service.link_first_admin(first_admin):
            log.info("linked the first admin to the Hugging Face account %r", first_admin)
    # No allowed_paths: Gradio's file route serves nothing from the data folder; exports download through
    # studio.server's permission-checked route.
    block = not launch_kwargs.pop("prevent_thread_lock", False)
    app.launch(show_error=True, prevent_thread_lock=True, **server.launch_kwargs(service), **LAUNCH_KWARGS,
               **launch_kwargs)  # fmt: skip
    if not hf_oauth_enabled():
        server.check_login_on_the_loop(app.server_app)
    if block:
        # The server's heap as built (Gradio, FastAPI, SQLAlchemy, the app) is left out of every later collection, and
        # the youngest generation is collected less often: in a minute of 50 raters the collector had taken about 5 s
        # of the server's 60 s of CPU, full collections walking that heap again and again; since, about 0.6 s
        # (docs/benchmarks.md, "garbage collector").
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_ALLOCATIONS)
        app.block_thread()
    return app
