"""What every studio service shares: one retried transaction per action, who the caller is and what they may do.

Permissions live here and in the services, never in the UI: Gradio exposes every event handler over HTTP, so a
hidden button protects nothing. Who the caller is comes from their session (``session_user``), resolved afresh for
every action: a session belongs to an account id, not a name, and ends when it expires, on logout, or when the
account is deactivated, erased, or has its role or password changed (storage.sessions).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Engine, func
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, col, select

from storage import accounts, members
from storage import sessions as login_sessions
from storage.accounts import MAX_PASSWORD_CHARS
from storage.db import read_session, write_session
from storage.models import AuditEvent, Campaign, Role, User, utcnow
from studio.sessions import SessionArguments, minutes_until, new_token
from studio.validation import ValidationFailed

log = logging.getLogger(__name__)

T = TypeVar("T")

SIGNING_IN = threading.BoundedSemaphore(os.cpu_count() or 1)
"""At most one password check per core at once, taken before a database connection is: a crowd signing in together
waits its turn instead of sharing the cores between dozens of argon2 hashes (each holding its memory) and the
connections raters need for their submits."""

LOCKED_USERS = "locked_users"
"""The session.info key of the accounts this transaction has locked (``Service._active_user``)."""

RETRYABLE_SQLSTATES = {"40001", "40P01"}  # PostgreSQL serialisation failure, deadlock detected
ATTEMPTS = 4


@dataclass(frozen=True)
class LoginOutcome:
    """A login attempt's result: the new session's token, or why not (and, while locked, for how long)."""

    token: str | None = None
    username: str = ""
    refusal: str = ""
    retry_after_s: int = 0
    must_change_password: bool = False  # the password was right but one-time: sign in again with a new one


def _sentence(error: Exception) -> str:
    """storage's lower-case reason as a sentence for the person."""
    text = str(error)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


class Unavailable(RuntimeError):
    """The database could not be reached (it restarted, or dropped the connection) after retrying; nothing was
    written. What a person is told carries no SQL and no driver text."""

    def __init__(self) -> None:
        super().__init__("The database did not answer (it may be restarting); nothing was saved. Try again shortly.")


class PermissionDenied(PermissionError):
    """The user may not do this: inactive, the wrong role, or the item or campaign is not theirs."""


class Service:
    """The base of the studio's services. Each public method of a subclass is one transaction."""

    def __init__(
        self, engine: Engine, lease_minutes: int = 30, rng: random.Random | None = None,
        login: SessionArguments | None = None,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.lease = timedelta(minutes=lease_minutes)
        self.rng = rng or random.Random()
        self._login = login

    @property
    def _sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"  # its OperationalErrors (a locked file) are no lost connection

    @property
    def login(self) -> SessionArguments:
        """Session lifetime, throttle and cookie settings; from the environment unless given."""
        if self._login is None:
            self._login = SessionArguments.from_env()
        return self._login

    def _transaction(self, action: Callable[[Session], T]) -> T:
        for attempt in itertools.count(1):
            try:
                with write_session(self.engine) as session, session.begin():
                    return action(session)
            except DBAPIError as error:
                # A dropped connection rolled the whole transaction back, so the action may run again on a new one.
                lost = error.connection_invalidated or isinstance(error, OperationalError) and not self._sqlite
                if getattr(error.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES and not lost:
                    raise
                if attempt == ATTEMPTS:
                    if lost:
                        log.error("the database did not answer after %d attempts: %s", attempt, error.orig)
                        raise Unavailable() from error
                    raise
                log.info("retrying after a transaction conflict or a lost connection (attempt %d): %s", attempt,
                         error.orig)  # fmt: skip
                time.sleep(0.25 * attempt if lost else 0)  # a restarting server needs a moment

    def log_in(self, username: str, password: str, address: str = "", new_password: str | None = None) -> LoginOutcome:
        """Check a password under the throttle (per account name and per client address); on success open a session
        bound to the account and return its token. Failures are counted and audited; while locked, even the right
        password is refused, unhashed, with how long to wait. A one-time password (an admin's reset) opens no session
        until ``new_password`` replaces it."""
        now, name = utcnow(), username.strip()
        key, address = name.lower()[:64], address[:64]
        with SIGNING_IN, read_session(self.engine) as session:  # reads only: argon2 runs without SQLite's write lock
            locked = self._locked(session, key, address, now)
            if locked is None and len(password) <= MAX_PASSWORD_CHARS:
                user = accounts.authenticate(session=session, username=name, password=password)
                found = None if user is None else (user.id, user.session_epoch, user.username)
                one_time = user is not None and user.must_change_password
            else:
                found, one_time = None, False
        if locked is not None:
            log.warning("login refused while locked: %r from %s", key, address or "an unknown address")
            return LoginOutcome(refusal=locked[0], retry_after_s=max(1, int((locked[1] - now).total_seconds())))
        if one_time and not new_password:
            return LoginOutcome(username=found[2], must_change_password=True,
                                refusal="That was a one-time password: choose a new one to sign in.")  # fmt: skip
        if one_time:
            try:  # the new password is set, and the epoch moves on, before the session opens under it
                found = self._transaction(lambda session: self._replace_one_time(session, found[0], password,
                                                                                 new_password))  # fmt: skip
            except ValueError as error:
                return LoginOutcome(username=name, must_change_password=True, refusal=_sentence(error))
        token = new_token() if found else None

        def record(session: Session) -> None:
            details = {"address": address}
            if found is None:
                window = self.login.window
                login_sessions.record_failure(session=session, username=key, address=address, at=now, keep=window)
                session.add(AuditEvent(action="user.login_failed", target=name[:256], details=details))
                return
            user_id, epoch, _ = found
            hashed, lifetime = self.login.hash_token(token), self.login.lifetime
            login_sessions.clear_failures(session=session, username=key)
            login_sessions.open_session(
                session=session, user_id=user_id, epoch=epoch, token_hash=hashed, now=now, lifetime=lifetime,
                address=address,
            )  # fmt: skip
            accounts.rehash_password(session=session, user_id=user_id, password=password)
            session.add(AuditEvent(actor_id=user_id, action="user.login", target=found[2], details=details))

        self._transaction(record)
        if found is None:
            return LoginOutcome(refusal="Wrong username or password.")
        return LoginOutcome(token=token, username=found[2])

    @staticmethod
    def _replace_one_time(session: Session, user_id: int, old: str, new: str) -> tuple[int, int, str]:
        user = accounts.change_password(session=session, user_id=user_id, old=old, new=new)
        return user.id, user.session_epoch, user.username

    def change_password(self, user_id: int, old: str, new: str, token: str | None = None) -> None:
        """The user's own new password, given the current one; every other session of the account ends, the one
        behind ``token`` (theirs) goes on. ValidationFailed says what was wrong."""
        if len(old) > MAX_PASSWORD_CHARS:
            raise ValidationFailed("The current password is wrong.")
        keep = self.login.hash_token(token) if token else None

        def action(session: Session) -> None:
            self._active_user(session, user_id)
            try:
                accounts.change_password(session=session, user_id=user_id, old=old, new=new, keep_token_hash=keep)
            except ValueError as error:
                raise ValidationFailed(_sentence(error)) from None

        self._transaction(action)

    def _locked(self, session: Session, key: str, address: str, now: datetime) -> tuple[str, datetime] | None:
        """(what to tell the person, until when) while the account name or the address has too many recent
        failures; a failure stops counting once it is older than the window."""
        since, window = now - self.login.window, self.login.window
        checks = [
            ("this account", {"username": key}, self.login.max_failures),
            ("your address", {"address": address}, self.login.max_failures_per_address),
        ]
        for whose, where, limit in checks:
            times = login_sessions.recent_failures(session=session, since=since, **where)
            if len(times) >= limit:
                until = times[len(times) - limit] + window
                wait = minutes_until(until, now)
                return (f"Too many failed logins for {whose}: try again in {wait} minute{'s' * (wait != 1)}.", until)
        return None

    def signed_in(self, token: str | None) -> tuple[int, str] | None:
        """(id, username) of the active account a session token belongs to; None for a missing, expired or
        revoked session."""
        if not token:
            return None
        hashed = self.login.hash_token(token)
        for attempt in (1, 2):  # every request's first statement: the one that meets a connection dropped idle
            try:
                with read_session(self.engine) as session:
                    user = login_sessions.session_user(session=session, token_hash=hashed, now=utcnow())
                    return None if user is None else (user.id, user.username)
            except DBAPIError as error:
                if attempt == 2 or not error.connection_invalidated:
                    raise

    def session_user(self, token: str | None) -> int:
        """The id of the account behind a session token; PermissionDenied once the session has ended."""
        if (found := self.signed_in(token)) is None:
            raise PermissionDenied("Your session has ended (expired, logged out or revoked): reload and log in again.")
        return found[0]

    def log_out(self, token: str | None) -> None:
        """End this one session."""
        if token:
            hashed = self.login.hash_token(token)
            self._transaction(lambda session: login_sessions.close_session(session=session, token_hash=hashed))

    def user_id(self, username: str | None) -> int:
        """The id of the active account with this name (the command line and tests; requests go by session)."""
        with read_session(self.engine) as session:
            user_id = session.exec(select(User.id).where(User.username == username, User.active)).first()
        if user_id is None:
            raise PermissionDenied("Log in with an active account.")
        return user_id

    def user_for_hf(self, hf_username: str | None) -> int:
        """The id of the active user an admin linked to this Hugging Face account; none is ever created here."""
        if not (hf_username or "").strip():
            raise PermissionDenied("Sign in with Hugging Face first.")
        with read_session(self.engine) as session:
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
        # Locked: one user's simultaneous requests (a double click, two tabs) must not take two leases. Once per
        # transaction (each attempt has a new session): a submit asks for its own item, then for the next.
        locked = session.info.setdefault(LOCKED_USERS, {})
        if (user := locked.get(user_id)) is None:
            user = locked[user_id] = session.get(User, user_id, with_for_update=True)
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
