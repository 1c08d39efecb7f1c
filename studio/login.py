"""Who is calling: Gradio's password login, or, on a Hugging Face Space that enables it, Hugging Face OAuth.

On a Space whose README front matter says ``hf_oauth: true``, Hugging Face sets ``OAUTH_CLIENT_ID``; the studio then
shows a ``gr.LoginButton`` instead of the password form, and an HF account works here only once an admin has linked
it to a Concord user (``User.hf_username``). Nobody is created on first sign-in: this is an expert tool. The first
admin is linked at start from the Space variable ``CONCORD_ADMIN_HF_USERNAME`` (studio.app.launch_studio).
"""

from __future__ import annotations

import os

import gradio as gr

from studio.access import PermissionDenied, Service


def hf_oauth_enabled() -> bool:
    """Running on a Space with OAuth on, as Gradio tells a Space (``SYSTEM=spaces``); elsewhere Gradio would mock
    OAuth with the machine's own HF token, so the studio keeps its password login there."""
    on_space = os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))
    return on_space and bool(os.environ.get("OAUTH_CLIENT_ID"))


def current_user(service: Service, request: gr.Request, profile: gr.OAuthProfile | None) -> int:
    """The Concord user behind a request; PermissionDenied (saying what to do) for anyone else."""
    if request.username:
        return service.user_id(request.username)
    if profile is not None:
        return service.user_for_hf(profile.username)
    raise PermissionDenied("Sign in with Hugging Face first." if hf_oauth_enabled() else "Log in first.")
