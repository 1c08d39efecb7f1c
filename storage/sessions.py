"""Login sessions and the login throttle: who a cookie belongs to, and how many passwords were refused lately.

A session row is keyed by a hash of its token (the caller hashes it with the server's secret) and bound to the
account id and the account's ``session_epoch`` at sign-in. It resolves only while it has not expired, the account
is active and its epoch is unchanged, so bumping the epoch (``revoke_sessions``) ends every session of the account
at once, including one whose sign-in was checked just before the bump. Data access only: these functions flush,
the caller commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Row, bindparam, delete, update
from sqlmodel import Session, col, select

from storage.models import LoginFailure, LoginSession, User

LOGIN_ACTIONS = ("user.login", "user.login_failed")
"""The audit actions of sign-ins; their details hold the client address (erasure drops it)."""


def open_session(
    *, session: Session, user_id: int, epoch: int, token_hash: str, now: datetime, lifetime: timedelta, address: str
) -> LoginSession:
    """A new session for the account until ``now + lifetime``, valid while its epoch is still ``epoch``; rows that
    have expired are dropped on the way."""
    session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
    row = LoginSession(
        token_hash=token_hash, user_id=user_id, epoch=epoch, address=address[:64], created_at=now,
        expires_at=now + lifetime,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


_SESSION_USER = (
    select(User.id, User.username)
    .join(LoginSession, col(LoginSession.user_id) == User.id)
    .where(
        LoginSession.token_hash == bindparam("token_hash"),
        LoginSession.expires_at > bindparam("now"),
        col(LoginSession.epoch) == col(User.session_epoch),
        User.active,
    )
)
"""Built once (every request asks it), its values bound at the call."""


def session_user(*, session: Session, token_hash: str, now: datetime) -> Row | None:
    """(``id``, ``username``) of the active account a session token belongs to, or None: unknown, expired or revoked.
    Columns, not the account: every request asks it, and loading a whole User cost more than the query."""
    return session.exec(_SESSION_USER, params={"token_hash": token_hash, "now": now}).first()


def close_session(*, session: Session, token_hash: str) -> None:
    """End one session (log out)."""
    session.execute(delete(LoginSession).where(LoginSession.token_hash == token_hash))


def revoke_sessions(*, session: Session, user: User, keep_token_hash: str | None = None) -> None:
    """End every session of the account: on deactivation, erasure, a role or a password change. The one session
    ``keep_token_hash`` names (a person changing their own password) moves to the new epoch instead."""
    user.session_epoch = (user.session_epoch or 0) + 1
    session.add(user)
    others = delete(LoginSession).where(LoginSession.user_id == user.id)
    if keep_token_hash is not None:
        others = others.where(LoginSession.token_hash != keep_token_hash)
        session.execute(
            update(LoginSession)
            .where(LoginSession.user_id == user.id, LoginSession.token_hash == keep_token_hash)
            .values(epoch=user.session_epoch),
            execution_options={"synchronize_session": False},
        )
    session.execute(others)
    session.flush()


def record_failure(*, session: Session, username: str, address: str, at: datetime, keep: timedelta) -> None:
    """Count one refused password against the name typed and the address; failures older than ``keep`` go."""
    session.execute(delete(LoginFailure).where(LoginFailure.at < at - keep))
    session.add(LoginFailure(username=username[:64], address=address[:64], at=at))
    session.flush()


def clear_failures(*, session: Session, username: str) -> None:
    """A successful sign-in takes the account's earlier failures off its count (the address keeps counting them,
    so one good account cannot reset an address that guesses at others)."""
    session.execute(
        update(LoginFailure).where(LoginFailure.username == username[:64]).values(cleared=True),
        execution_options={"synchronize_session": False},
    )


def recent_failures(*, session: Session, since: datetime, username: str | None = None, address: str | None = None):
    """Times of the failures since ``since`` for this account name (uncleared ones) or this address, oldest first."""
    query = select(LoginFailure.at).where(LoginFailure.at > since).order_by(col(LoginFailure.at))
    if username is not None:
        query = query.where(LoginFailure.username == username[:64], col(LoginFailure.cleared).is_(False))
    if address is not None:
        query = query.where(LoginFailure.address == address[:64])
    return list(session.exec(query).all())
