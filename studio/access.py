"""What every studio service shares: one retried transaction per action, and who the caller is and may do.

Permissions live here and in the services, never in the UI: Gradio exposes every event handler over HTTP, so a
hidden button protects nothing.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import Engine, func
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from storage import members
from storage.accounts import authenticate
from storage.db import write_session
from storage.models import AuditEvent, Campaign, Role, User

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_SQLSTATES = {"40001", "40P01"}  # PostgreSQL serialisation failure, deadlock detected
ATTEMPTS = 4


class PermissionDenied(PermissionError):
    """The user may not do this: inactive, the wrong role, or the item or campaign is not theirs."""


class Service:
    """The base of the studio's services. Each public method of a subclass is one transaction."""

    def __init__(self, engine: Engine, lease_minutes: int = 30, rng: random.Random | None = None) -> None:
        self.engine = engine
        self.lease = timedelta(minutes=lease_minutes)
        self.rng = rng or random.Random()

    def _transaction(self, action: Callable[[Session], T]) -> T:
        for attempt in itertools.count(1):
            try:
                with write_session(self.engine) as session, session.begin():
                    return action(session)
            except DBAPIError as error:
                if getattr(error.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES or attempt == ATTEMPTS:
                    raise
                log.info("retrying after a transaction conflict (attempt %d): %s", attempt, error.orig)

    def check_login(self, username: str, password: str) -> bool:
        """Gradio's auth hook: an active user with this password."""
        return self._transaction(
            lambda session: authenticate(session=session, username=username, password=password) is not None
        )

    def user_id(self, username: str | None) -> int:
        """The id behind a logged-in username."""
        with Session(self.engine) as session:
            user_id = session.exec(select(User.id).where(User.username == username, User.active)).first()
        if user_id is None:
            raise PermissionDenied("Log in with an active account.")
        return user_id

    def user_for_hf(self, hf_username: str | None) -> int:
        """The id of the active user an admin linked to this Hugging Face account; none is ever created here."""
        if not (hf_username or "").strip():
            raise PermissionDenied("Sign in with Hugging Face first.")
        with Session(self.engine) as session:
            query = select(User.id).where(func.lower(User.hf_username) == hf_username.strip().lower(), User.active)
            user_id = session.exec(query).first()
        if user_id is None:
            raise PermissionDenied(
                f"The Hugging Face account {hf_username!r} is not linked to an active Concord user: "
                "ask an admin to add you."
            )
        return user_id

    def link_first_admin(self, hf_username: str) -> bool:
        """Link the first admin to this Hugging Face account, unless someone already has it: how a Space that signs
        in with HF gets its first user (``CONCORD_ADMIN_HF_USERNAME``). True when it linked."""

        def action(session: Session) -> bool:
            taken = select(User.id).where(func.lower(User.hf_username) == hf_username.strip().lower())
            admin = select(User).where(User.role == Role.admin, col(User.hf_username).is_(None)).order_by(User.id)
            if session.exec(taken).first() is not None or (user := session.exec(admin).first()) is None:
                return False
            user.hf_username = hf_username.strip()
            details = {"hf_username": user.hf_username}
            session.add(AuditEvent(action="user.link_hf", target=user.username, details=details))
            return True

        return self._transaction(action)

    @staticmethod
    def _active_user(session: Session, user_id: int) -> User:
        # Locked: one user's simultaneous requests (a double click, two tabs) must not take two leases.
        user = session.get(User, user_id, with_for_update=True)
        if user is None or not user.active:
            raise PermissionDenied("This account is not active; ask a lead to reactivate it.")
        return user

    @staticmethod
    def _campaign(session: Session, campaign_id: int) -> Campaign:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise LookupError(f"no campaign with id {campaign_id}")
        return campaign

    def _rater_in(self, session: Session, user_id: int, campaign_id: int) -> tuple[User, Campaign]:
        """The active user and the campaign, when the user may work on it."""
        user, campaign = self._active_user(session, user_id), self._campaign(session, campaign_id)
        if not members.may_rate(session=session, user=user, campaign_id=campaign.id):
            raise PermissionDenied("You are not assigned to this campaign.")
        return user, campaign

    def _lead_of(self, session: Session, user_id: int, campaign_id: int) -> tuple[User, Campaign]:
        """The active user and the campaign, when the user runs it (a lead member, or an admin)."""
        user, campaign = self._active_user(session, user_id), self._campaign(session, campaign_id)
        if not members.may_lead(session=session, user=user, campaign_id=campaign.id):
            raise PermissionDenied("Only the campaign's leads and admins can do this.")
        return user, campaign

    def _admin(self, session: Session, user_id: int) -> User:
        user = self._active_user(session, user_id)
        if user.role != Role.admin:
            raise PermissionDenied("Only admins can do this.")
        return user
