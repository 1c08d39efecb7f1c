"""Users: creation, password checks (argon2 via argon2-cffi), role, activation and password changes, the first admin.

Every change that should end what an account's open sessions may do (role, deactivation, password) revokes them
(storage.sessions.revoke_sessions); erasure does too (storage.erasure). A password someone else has seen (an admin's
reset) is set with ``must_change``: the next sign-in has to replace it (``change_password``) before a session opens.
"""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from storage.models import AuditEvent, Role, User, UserCreate
from storage.sessions import revoke_sessions

# OWASP's argon2id setting for a server (19 MiB, 2 passes, 1 lane): about 25 ms of one core per sign-in. argon2-cffi's
# default (64 MiB, 3 passes, 4 lanes) took about 170 ms, and 200 raters signing in together outran 2 cores. Hashes made
# with other settings still verify, and are rehashed with these at their next sign-in (``rehash_password``).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024  # longer is refused unhashed: no one's password is, and hashing megabytes costs


@cache
def _dummy_hash() -> str:
    """An argon2 hash of a random secret nobody knows, with the same parameters as real ones."""
    return _hasher.hash(secrets.token_urlsafe(16))


def create_user(*, session: Session, user: UserCreate, actor_id: int | None = None) -> User:
    """Add a user with a hashed password; the username must be free."""
    if session.exec(select(User.id).where(User.username == user.username)).first() is not None:
        raise ValueError(f"username {user.username!r} is taken")
    row = User.model_validate(user, update={"password_hash": _hasher.hash(user.password)})
    session.add(row)
    session.flush()
    session.add(AuditEvent(actor_id=actor_id, action="user.create", target=row.username, details={"role": row.role}))
    return row


def authenticate(*, session: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, or None. Writes nothing (``rehash_password`` does, when due).

    An unknown name, a deactivated or an erased account costs one argon2 verification, against a dummy hash, just
    as a real account does: how long a refusal takes must not tell which usernames exist.
    """
    user = session.exec(select(User).where(User.username == username)).first()
    usable = user is not None and user.active and user.password_hash.startswith("$argon2")
    try:
        _hasher.verify(user.password_hash if usable else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    return user if usable else None


def rehash_password(*, session: Session, user_id: int, password: str) -> None:
    """After a successful sign-in: rehash the password if argon2's parameters have changed since it was set."""
    user = session.get(User, user_id)
    if user is not None and _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        session.flush()


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise ValueError(f"no user with id {user_id}")
    return user


def set_role(*, session: Session, user_id: int, role: Role, actor_id: int | None) -> User:
    """Change the account's role; if it changed, its sessions end, so the new role starts from a fresh sign-in."""
    user = _user(session, user_id)
    details = {"from": user.role, "to": role}
    if user.role != role:
        user.role = role
        revoke_sessions(session=session, user=user)
    session.add(AuditEvent(actor_id=actor_id, action="user.role", target=user.username, details=details))
    session.flush()
    return user


def set_active(*, session: Session, user_id: int, active: bool, actor_id: int | None) -> User:
    """(De)activate the account; a deactivation ends its sessions at once. Audited when it changes anything."""
    user = _user(session, user_id)
    if user.active != active:
        user.active = active
        action = "user.activate" if active else "user.deactivate"
        session.add(AuditEvent(actor_id=actor_id, action=action, target=user.username))
        revoke_sessions(session=session, user=user)
    session.flush()
    return user


def check_new_password(password: str) -> None:
    """ValueError, in words for the person, when ``password`` cannot be a password here."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"a password has at most {MAX_PASSWORD_CHARS} characters")


def set_password(
    *, session: Session, user_id: int, password: str, actor_id: int | None, must_change: bool = False
) -> User:
    """Set a new password; every session of the account ends. ``must_change``: the next sign-in must replace it (a
    one-time password an admin hands over). Audited, without it."""
    check_new_password(password)
    user = _user(session, user_id)
    user.password_hash = _hasher.hash(password)
    user.must_change_password = must_change
    session.add(AuditEvent(actor_id=actor_id, action="user.password", target=user.username,
                           details={"one_time": must_change}))  # fmt: skip
    revoke_sessions(session=session, user=user)
    return user


def change_password(
    *, session: Session, user_id: int, old: str, new: str, keep_token_hash: str | None = None
) -> User:
    """The person's own change: the current password must be right and the new one differ from it. Every other
    session ends; the one named by ``keep_token_hash`` (the one they changed it from) goes on. Audited."""
    user = _user(session, user_id)
    try:
        _hasher.verify(user.password_hash, old)
    except (VerificationError, InvalidHashError):
        raise ValueError("the current password is wrong") from None
    check_new_password(new)
    if new == old:
        raise ValueError("the new password must differ from the current one")
    user.password_hash = _hasher.hash(new)
    user.must_change_password = False
    session.add(AuditEvent(actor_id=user.id, action="user.password_change", target=user.username))
    revoke_sessions(session=session, user=user, keep_token_hash=keep_token_hash)
    return user


def new_password() -> str:
    return secrets.token_urlsafe(12)


def ensure_admin(*, session: Session) -> tuple[str, str] | None:
    """On a database with no admin, create one with a random password and return (username, password) once."""
    if session.exec(select(User.id).where(User.role == Role.admin)).first() is not None:
        return None
    password = new_password()
    create_user(session=session, user=UserCreate(username="admin", password=password, role=Role.admin))
    return "admin", password
