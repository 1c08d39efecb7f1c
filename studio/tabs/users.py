"""Users (admins only): every account, creating one (its one-time password shown once), role, (de)activation, a new
one-time password (shown once; the person chooses their own at the next sign-in) and erasure. Every change but
creation ends the account's open sessions. Each panel says beside its buttons what was refused and why."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from storage.models import ACCOUNT_ROLES
from studio.admin import AdminService
from studio.login import current_user
from studio.tabs.events import LEAD_EVENTS, Profile, said_beside, shown_to_user, status_line

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
        role = gr.Dropdown([r.value for r in ACCOUNT_ROLES], value="rater", label="Role", elem_id="users-new-role")
        domains = gr.Textbox(label="Domains (comma-separated)", elem_id="users-new-domains")
    create = gr.Button("Create account", variant="primary", elem_id="users-create")
    status = status_line("users-create-status")
    password = gr.Textbox(label="One-time password: give it to the user now, it is not shown again; they choose "
                          "their own at their first sign-in", interactive=False, buttons=["copy"],
                          elem_id="users-password")  # fmt: skip
    return name, role, domains, create, status, password


def _change_panel() -> tuple:
    gr.Markdown("**Change an account**")
    username = gr.Textbox(label="Username", elem_id="users-username")
    with gr.Row():
        role = gr.Dropdown([r.value for r in ACCOUNT_ROLES], value="rater", label="Role", elem_id="users-role")
        set_role = gr.Button("Set role", elem_id="users-set-role")
    with gr.Row():
        active = gr.Radio([("Active", True), ("Deactivated", False)], value=True, label="Account",
                          elem_id="users-active")  # fmt: skip
        set_active = gr.Button("Apply", elem_id="users-set-active")
    with gr.Row():
        hf_name = gr.Textbox(label="Hugging Face account (sign-in on a Space; empty: unlink)", elem_id="users-hf")
        link_hf = gr.Button("Link", elem_id="users-link-hf")
    reset = gr.Button("New one-time password (ends their sessions)", elem_id="users-reset-password")
    status = status_line("users-change-status")
    return username, role, set_role, active, set_active, hf_name, link_hf, reset, status


def _erase_panel() -> tuple:
    with gr.Accordion("Erase a person's data", open=False, elem_id="users-erase-section"):
        mode = gr.Radio(ERASURE_MODES, value="anonymise", label="Mode", elem_id="users-erase-mode")
        confirm = gr.Checkbox(label="I understand this cannot be undone", elem_id="users-erase-confirm")
        erase = gr.Button("Erase the user named above", variant="stop", elem_id="users-erase")
        status = status_line("users-erase-status")
        erased = gr.Textbox(label="Erasure report", lines=3, interactive=False, elem_id="users-erase-report")
    return mode, confirm, erase, status, erased


def build_users_tab(admin: AdminService, tab: gr.Tab) -> None:
    """The admin page; ``tab`` is the Users tab, whose opening loads the accounts."""
    with gr.Row():
        gr.Markdown("Admins only: accounts, roles and erasure.", elem_id="users-status")
        refresh = gr.Button("Refresh", scale=0, min_width=160, elem_id="users-refresh")
    table = gr.Dataframe(headers=USER_COLUMNS, label="Accounts (click a row to change that user)", interactive=False,
                         max_height=320, elem_id="users-table")  # fmt: skip
    with gr.Row(equal_height=True):
        with gr.Column(variant="panel"):
            new_name, new_role, new_domains, create, created, password = _create_panel()
        with gr.Column(variant="panel"):
            username, role, set_role, active, set_active, hf_name, link_hf, reset, changed = _change_panel()
    mode, confirm, erase, erase_status, erased = _erase_panel()

    def listing(actor_id: int) -> pd.DataFrame:
        return users_frame(admin.users(actor_id))

    def on_refresh(request: gr.Request, profile: Profile):
        with shown_to_user():
            return listing(current_user(admin, request, profile))

    def on_pick(event: gr.SelectData) -> dict:
        name, user_role, user_active = event.row_value[:3]
        return {username: name, role: user_role, active: bool(user_active)}

    @said_beside(created)
    def on_create(name, user_role, domains, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(admin, request, profile)
            secret = admin.create_user(actor, (name or "").strip(), user_role, split_list(domains))
            return {password: secret, table: listing(actor), created: f"Created {user_role} **{name.strip()}**."}

    @said_beside(changed)
    def on_set_role(name, user_role, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(admin, request, profile)
            user = admin.set_role(actor, (name or "").strip(), user_role)
            return {table: listing(actor), changed: f"**{user.username}** is now a {user.role}."}

    @said_beside(changed)
    def on_set_active(name, user_active, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(admin, request, profile)
            user = admin.set_active(actor, (name or "").strip(), bool(user_active))
            state = "active" if user.active else "deactivated"
            return {table: listing(actor), changed: f"**{user.username}** is {state}."}

    @said_beside(changed)
    def on_link_hf(name, hf_username, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            actor = current_user(admin, request, profile)
            user = admin.link_hf(actor, (name or "").strip(), hf_username)
            return {table: listing(actor), changed: f"**{user.username}** signs in as {user.hf_username or 'nobody'}."}

    @said_beside(changed)
    def on_reset(name, request: gr.Request, profile: Profile) -> dict:
        with shown_to_user():
            secret = admin.reset_password(current_user(admin, request, profile), (name or "").strip())
        return {password: secret, changed: f"New one-time password for **{name.strip()}** (beside *Create account*): "
                "give it to them now; they choose their own when they next sign in."}  # fmt: skip

    @said_beside(erase_status)
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
    create.click(on_create, [new_name, new_role, new_domains], [password, table, created],
                 api_name="admin_create_user", **LEAD_EVENTS)  # fmt: skip
    set_role.click(on_set_role, [username, role], [table, changed], api_name="admin_set_role", **LEAD_EVENTS)
    set_active.click(on_set_active, [username, active], [table, changed], api_name="admin_set_active", **LEAD_EVENTS)
    link_hf.click(on_link_hf, [username, hf_name], [table, changed], api_name="admin_link_hf", **LEAD_EVENTS)
    reset.click(on_reset, username, [password, changed], api_name="admin_reset_password", **LEAD_EVENTS)
    erase.click(on_erase, [username, mode, confirm], [erased, table, confirm, username, erase_status],
                api_name="admin_erase", **LEAD_EVENTS)  # fmt: skip
