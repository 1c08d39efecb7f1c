"""Users: creation, password checks (argon2 via argon2-cffi), role changes, the first admin."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from storage.models import AuditEvent, Role, User, UserCreate

_hasher = PasswordHasher()


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
    """The active user with these credentials, or None."""
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def set_role(*, session: Session, user_id: int, role: Role, actor_id: int | None) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise ValueError(f"no user with id {user_id}")
    details = {"from": user.role, "to": role}
    user.role = role
    session.add(AuditEvent(actor_id=actor_id, action="user.role", target=user.username, details=details))
    session.flush()
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
