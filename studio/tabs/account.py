"""Account: the signed-in person changes their own password (the current one first). Their other sessions end; the
one they changed it from goes on. Logging out is the header's *Log out* (studio.server's ``/logout``)."""

from __future__ import annotations

import gradio as gr

from studio.access import Service
from studio.login import current_user, session_token
from studio.tabs.events import Profile, said_beside, shown_to_user, status_line
from studio.tabs.rater import RATER_EVENTS


def build_account_tab(service: Service) -> None:
    gr.Markdown("Change your password: type the current one, then the new one twice (at least 8 characters).")
    with gr.Column(elem_id="account-form"):
        current = gr.Textbox(label="Current password", type="password", elem_id="account-current")
        fresh = gr.Textbox(label="New password", type="password", elem_id="account-new")
        again = gr.Textbox(label="New password again", type="password", elem_id="account-again")
        with gr.Row(equal_height=True):
            change = gr.Button("Change password", variant="primary", scale=0, min_width=200, elem_id="account-change")
            status = status_line("account-status")

    @said_beside(status)
    def on_change(old, new, repeated, request: gr.Request, profile: Profile) -> dict:
        if (new or "") != (repeated or ""):
            raise gr.Error("The two new passwords differ: type the same one twice.")
        with shown_to_user():
            user = current_user(service, request, profile)
            service.change_password(user, old or "", new or "", session_token(service, request))
        done = "**Password changed.** Your other sessions have ended; this one goes on."
        return {current: "", fresh: "", again: "", status: done}

    change.click(on_change, [current, fresh, again], [current, fresh, again, status], api_name="change_password",
                 **RATER_EVENTS)  # fmt: skip
