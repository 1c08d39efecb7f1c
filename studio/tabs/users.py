"""Users (admins only): every account, creating one (its password shown once), role, (de)activation, a new password
(shown once) and erasure. Every change but creation ends the account's open sessions."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from storage.models import Role
from studio.admin import AdminService
from studio.login import current_user
from studio.tabs.events import LEAD_EVENTS, Profile, shown_to_user

USER_COLUMNS = ["username", "role", "active", "domains", "pseudonym", "hf_username"]
ERASURE_MODES = [
    ("anonymise: keep their judgments and writing under a new name", "anonymise"),
    ("remove: delete everything they made", "remove"),
]


def users_frame(users) -> pd.DataFrame:
    rows = [[u.username, str(u.role), u.active, ", ".join(u.domains), u.pseudonym, u.hf_username or ""] for u in users]
    return pd.DataFrame(rows, columns=USER_COLUMNS)


def split_list(text: str | None) -> list[str]:
    """A comma-separated list typed in a textbox, blanks dropped."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _create_panel() -> tuple:
    gr.Markdown("**New account**")
    name = gr.Textbox(label="Username", elem_id="users-new-username")
    with gr.Row():
        role = gr.Dropdown([r.value for r in Role], value="rater", label="Role", elem_id="users-new-role")
        domains = gr.Textbox(label="Domains (comma-separated)", elem_id="users-new-domains")
    create = gr.Button("Create account", variant="primary", elem_id="users-create")
    password = gr.Textbox(label="One-time password: give it to the user now, it is not shown again",
                          interactive=False, buttons=["copy"], elem_id="users-password")  # fmt: skip
    return name, role, domains, create, password


def _change_panel() -> tuple:
    gr.Markdown("**Change an account**")
    username = gr.Textbox(label="Username", elem_id="users-username")
    with gr.Row():
        role = gr.Dropdown([r.value for r in Role], value="rater", label="Role", elem_id="users-role")
        set_role = gr.Button("Set role", elem_id="users-set-role")
    with gr.Row():
        active = gr.Radio([("Active", True), ("Deactivated", False)], value=True, label="Account",
                          elem_id="users-active")  # fmt: skip
        set_active = gr.Button("Apply", elem_id="users-set-active")
    with gr.Row():
        hf_name = gr.Textbox(label="Hugging Face account (sign-in on a Space; empty: unlink)", elem_id="users-hf")
        link_hf = gr.Button("Link", elem_id="users-link-hf")
    reset = gr.Button("New password (ends their sessions)", elem_id="users-reset-password")
    return username, role, set_role, active, set_active, hf_name, link_hf, reset


def _erase_panel() -> tuple:
    with gr.Accordion("Erase a person's data", open=False, elem_id="users-erase-section"):
        mode = gr.Radio(ERASURE_MODES, value="anonymise", label="Mode", elem_id="users-erase-mode")
        confirm = gr.Checkbox(label="I understand this cannot be undone", elem_id="users-erase-confirm")
        erase = gr.Button("Erase the user named above", variant="stop", elem_id="users-erase")
        erased = gr.Textbox(label="Erasure report", lines=3, interactive=False, elem_id="users-erase-report")
    return mode, confirm, erase, erased


def build_users_tab(admin: AdminService, tab: gr.Tab) -> None:
    """The admin page; ``tab`` is the Users tab, whose opening loads the accounts."""
    with gr.Row():
        status = gr.Markdown("Admins only: accounts, roles and erasure.", elem_id="users-status")
        refresh = gr.Button("Refresh", scale=0, min_width=160, elem_id="users-refresh")
    table = gr.Dataframe(headers=USER_COLUMNS, label="Accounts (click a row to change that user)", interactive=False,
                         max_height=320, elem_id="users-table")  # fmt: skip
    with gr.Row(equal_height=True):
        with gr.Column(variant="panel"):
            new_name, new_role, new_domains, create, password = _create_panel()
        with gr.Column(variant="panel"):
            username, role, set_role, active, set_active, hf_name, link_hf, reset = _change_panel()
    mode, confirm, erase, erased = _erase_panel()

    def listing(actor_id: int) -> pd.DataFrame:
        return users_frame(admin.users(actor_id))

    def on_refresh(request: gr.Request, profile: Profile):
        with shown_to_user():
            return listing(current_user(admin, request, profile))

    def on_pick(event: gr.SelectData) -> dict:
        name, user_role, user_active = event.row_value[:3]
        return {username: name, role: user_role, active: bool(user_active)}

    def on_create(name, user_role, domains, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(admin, request, profile)
            secret = admin.create_user(actor, (name or "").strip(), user_role, split_list(domains))
            return {password: secret, table: listing(actor), status: f"Created {user_role} **{name.strip()}**."}

    def on_set_role(name, user_role, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(admin, request, profile)
            user = admin.set_role(actor, (name or "").strip(), user_role)
            return {table: listing(actor), status: f"**{user.username}** is now a {user.role}."}

    def on_set_active(name, user_active, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(admin, request, profile)
            user = admin.set_active(actor, (name or "").strip(), bool(user_active))
            state = "active" if user.active else "deactivated"
            return {table: listing(actor), status: f"**{user.username}** is {state}."}

    def on_link_hf(name, hf_username, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(admin, request, profile)
            user = admin.link_hf(actor, (name or "").strip(), hf_username)
            return {table: listing(actor), status: f"**{user.username}** signs in as {user.hf_username or 'nobody'}."}

    def on_reset(name, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            secret = admin.reset_password(current_user(admin, request, profile), (name or "").strip())
            return {password: secret, status: f"New password for **{name.strip()}**: give it to them now."}

    def on_erase(name, erase_mode, confirmed, request: gr.Request, profile: Profile) -> dict:
        if not confirmed:
            raise gr.Error("Tick the confirmation first: erasure cannot be undone.")
        with shown_to_user():
            actor = current_user(admin, request, profile)
            report = admin.erase(actor, (name or "").strip(), erase_mode)
            return {erased: report.summary(), table: listing(actor), confirm: False, username: report.username}

    refresh.click(on_refresh, outputs=table, api_name="admin_users", **LEAD_EVENTS)
    tab.select(on_refresh, outputs=table, api_visibility="private", **LEAD_EVENTS)
    table.select(on_pick, outputs=[username, role, active], api_visibility="private", **LEAD_EVENTS)
    create.click(on_create, [new_name, new_role, new_domains], [password, table, status], api_name="admin_create_user",
                 **LEAD_EVENTS)  # fmt: skip
    set_role.click(on_set_role, [username, role], [table, status], api_name="admin_set_role", **LEAD_EVENTS)
    set_active.click(on_set_active, [username, active], [table, status], api_name="admin_set_active", **LEAD_EVENTS)
    link_hf.click(on_link_hf, [username, hf_name], [table, status], api_name="admin_link_hf", **LEAD_EVENTS)
    reset.click(on_reset, username, [password, status], api_name="admin_reset_password", **LEAD_EVENTS)
    erase.click(on_erase, [username, mode, confirm], [erased, table, confirm, username], api_name="admin_erase",
                **LEAD_EVENTS)  # fmt: skip
