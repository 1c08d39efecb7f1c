"""What the lead and admin tabs share: their own concurrency group, and user mistakes shown as Gradio errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from storage.imports import ImportFailed
from studio.access import PermissionDenied
from studio.validation import ValidationFailed

LEAD_EVENTS = {"concurrency_id": "lead", "concurrency_limit": 2}
"""Every lead and admin event: two at a time in a queue of their own, so a slow export never holds up a submit."""

Profile = gr.OAuthProfile | None
"""How a handler asks for the Hugging Face sign-in (``studio.login.current_user``); Gradio fills it in, or None."""

USER_ERRORS = (PermissionDenied, ValidationFailed, ImportFailed, LookupError)


@contextmanager
def shown_to_user(*also: type[Exception]) -> Iterator[None]:
    """Turn a refused or invalid action (and errors of the ``also`` types) into a ``gr.Error`` saying why, verbatim."""
    try:
        yield
    except (*USER_ERRORS, *also) as error:
        raise gr.Error(error.args[0] if isinstance(error, LookupError) and error.args else str(error)) from error


def need_campaign(campaign_id: int | None) -> int:
    if campaign_id in (None, ""):
        raise gr.Error("Pick a campaign first.")
    return campaign_id
