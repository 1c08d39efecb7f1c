"""Who is calling: the Concord session behind the request's cookie, or, on a Hugging Face Space that enables it,
Hugging Face OAuth.

Off Spaces, Concord signs people in itself (studio.server: the login page and ``POST /login``) and Gradio asks
``signed_in_user`` who each HTTP request belongs to, so a request without a live session reaches no route but the
login. Handlers then resolve the account from the same cookie with ``current_user`` (never from a username), so an
action taken on a session that ended a moment ago still gets nothing.

On a Space whose README front matter says ``hf_oauth: true``, Hugging Face sets ``OAUTH_CLIENT_ID``; the studio then
shows a ``gr.LoginButton`` instead, and an HF account works here only once an admin has linked it to a Concord user
(``User.hf_username``). Nobody is created on first sign-in: this is an expert tool. The first admin is linked at
start from the Space variable ``CONCORD_ADMIN_HF_USERNAME`` (studio.app.launch_studio).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import gradio as gr
from fastapi import HTTPException
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from studio.access import PermissionDenied, Service, Unavailable

log = logging.getLogger(__name__)

SESSION_CHECK_REUSE_S = 1.0
"""How long a handler trusts its own request's session check (``current_user``)."""


def hf_oauth_enabled() -> bool:
    """Running on a Space with OAuth on, as Gradio tells a Space (``SYSTEM=spaces``); elsewhere Gradio would mock
    OAuth with the machine's own HF token, so the studio keeps its password login there."""
    on_space = os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))
    return on_space and bool(os.environ.get("OAUTH_CLIENT_ID"))


def session_token(service: Service, request: Any) -> str | None:
    """The session token in the request's cookie (a ``gr.Request`` or a Starlette request), if any."""
    try:
        cookies = dict(request.cookies)
    except (AttributeError, TypeError):
        return None
    return cookies.get(service.login.cookie_name) or None


def current_user(service: Service, request: gr.Request, profile: gr.OAuthProfile | None) -> int:
    """The Concord account behind a request; PermissionDenied (saying what to do) for anyone else."""
    if hf_oauth_enabled():
        if profile is None:
            raise PermissionDenied("Sign in with Hugging Face first.")
        return service.user_for_hf(profile.username)
    token = session_token(service, request)
    # The same HTTP request's session check (signed_in_user), when it was made a moment ago: a submit looked its
    # session up twice, about 5 % of its server time. A queued event that waited longer looks it up again.
    checked, user_id, at = getattr(getattr(request, "state", None), "concord_session", (None, None, 0.0))
    if token and checked == token and time.monotonic() - at < SESSION_CHECK_REUSE_S:
        return user_id
    return service.session_user(token)


def signed_in_user(service: Service) -> Callable[[Request], Awaitable[str | None]]:
    """Gradio's ``auth_dependency``: the username of the request's live session, or None (Gradio then refuses
    the request, and studio.server shows the login page instead of the studio)."""

    async def resolve(request: Request) -> str | None:
        token = session_token(service, request)
        try:
            found = await run_in_threadpool(service.signed_in, token) if token else None
        except OperationalError as error:  # the database restarting: said in words, as a handler would say it
            log.error("the database did not answer a session check: %s", error.orig)
            raise HTTPException(503, detail=str(Unavailable())) from error
        if found:
            request.state.concord_session = (token, found[0], time.monotonic())  # for current_user, see there
        return found[1] if found else None

    return resolve
