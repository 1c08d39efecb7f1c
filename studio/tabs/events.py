"""What the lead and admin tabs share: their own concurrency group, and refusals said in words.

A refused or invalid action is said beside the form (``said_beside``): the form stays as it was, nothing is covered
with Gradio's red error badges, and what was typed is still there to fix. A permission refusal is an error (a
toast; API callers get an exception), since nothing on the form can fix it. Neither logs a traceback: a person's
mistake is not a server fault.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
from sqlalchemy.exc import OperationalError

from storage.imports import ImportFailed
from studio.access import PermissionDenied, Unavailable
from studio.validation import ValidationFailed

log = logging.getLogger(__name__)

LEAD_EVENTS = {"concurrency_id": "lead", "concurrency_limit": 2}
"""Every lead and admin event: two at a time in a queue of their own, so a slow export never holds up a submit."""

Profile = gr.OAuthProfile | None
"""How a handler asks for the Hugging Face sign-in (``studio.login.current_user``); Gradio fills it in, or None."""

USER_ERRORS = (PermissionDenied, ValidationFailed, ImportFailed, LookupError, Unavailable)
FORM_ERRORS = (ValidationFailed, ImportFailed, LookupError)  # what a person fixes on the form itself


def _text(error: Exception) -> str:
    if isinstance(error, gr.Error):
        return error.message
    return error.args[0] if isinstance(error, LookupError) and error.args else str(error)


@contextmanager
def shown_to_user(*also: type[Exception]) -> Iterator[None]:
    """Turn a refused or invalid action (and errors of the ``also`` types) into a ``gr.Error`` saying why, verbatim."""
    try:
        yield
    except (*USER_ERRORS, *also) as error:
        raise gr.Error(_text(error), print_exception=False) from error
    except OperationalError as error:  # a read cut off by a lost connection: said in words, never the SQL
        log.error("the database did not answer: %s", error.orig)
        raise gr.Error(str(Unavailable()), print_exception=False) from error


def cleared_on_campaign_change(campaign: gr.Dropdown, cleared: dict) -> None:
    """Show ``cleared`` (``{component: value}``) when the lead picks another campaign: what a page read of the last
    one goes, so that no figure or pair is read under the wrong campaign's name."""
    campaign.change(lambda: cleared, outputs=list(cleared), api_visibility="private", queue=False)


def refusal(error: Exception | str) -> str:
    """A refusal as the Markdown of a status line."""
    return f"**Not done:** {error if isinstance(error, str) else _text(error)}"


def said_beside(status: gr.Markdown, *also: type[Exception]) -> Callable:
    """Decorate a handler that returns ``{component: value}``: a form error (and errors of the ``also`` types) comes
    back as ``{status: why}`` with every other output left as it was; a success clears ``status`` unless the handler
    set it. Permission refusals still raise (``shown_to_user``)."""

    def decorate(handler: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(handler)
        def run(*args: Any, **kwargs: Any) -> dict:
            try:
                result = handler(*args, **kwargs)
            except gr.Error as error:
                if isinstance(error.__cause__, PermissionDenied):
                    raise
                return {status: refusal(error)}
            except (*FORM_ERRORS, *also) as error:
                return {status: refusal(error)}
            return {status: "", **result}

        return run

    return decorate


def status_line(elem_id: str) -> gr.Markdown:
    """Where a form's refusals and results are said, beside its button."""
    return gr.Markdown(elem_id=elem_id, elem_classes=["concord-status"])


def need_campaign(campaign_id: int | None) -> int:
    if campaign_id in (None, ""):
        raise gr.Error("Pick a campaign first.", print_exception=False)
    return campaign_id
