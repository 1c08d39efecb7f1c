"""The admins' actions on accounts: list, create, change role, (de)activate, reset a password, erase. One transaction
each, audited; each but creation ends the account's sessions (storage.accounts, storage.erasure).

An admin may not demote, deactivate or erase their own account: that is how a studio loses its last admin.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlmodel import Session, func, select

from storage import accounts, erasure
from storage.erasure import ErasureReport
from storage.models import ACCOUNT_ROLES, AuditEvent, Role, User, UserCreate, UserPublic
from studio.access import Service
from studio.validation import ValidationFailed, message


def _role(role: str) -> Role:
    if role not in ACCOUNT_ROLES:
        raise ValidationFailed(f"Role must be one of {', '.join(ACCOUNT_ROLES)} (got {role!r}).")
    return Role(role)


def clean_domains(domains: Sequence[str]) -> list[str]:
    """Stripped, without blanks or repeats, in the order given."""
    cleaned = list(dict.fromkeys(d.strip() for d in domains if d and d.strip()))
    if too_long := [d for d in cleaned if len(d) > 64]:
        raise ValidationFailed(f"A domain name has at most 64 characters: {too_long[0][:70]!r} is longer.")
    return cleaned


class AdminService(Service):
    """User management. Each public method takes the acting user's id first and checks that they are an admin."""

    def is_admin(self, actor_id: int) -> bool:
        """Whether to show the admin pages; each admin action checks again."""
        return self._transaction(lambda session: self._role_of(session, actor_id) == Role.admin)

    def is_lead(self, actor_id: int) -> bool:
        """Whether to show the lead pages (leads and admins); each lead action checks the campaign again."""
        return self._transaction(lambda session: self._role_of(session, actor_id) in (Role.lead, Role.admin))

    @staticmethod
    def _role_of(session: Session, user_id: int) -> Role | None:
        user = session.get(User, user_id)
        return Role(user.role) if user is not None and user.active else None

    @staticmethod
    def _user_named(session: Session, username: str) -> User:
        user = session.exec(select(User).where(User.username == username).with_for_update()).first()
        if user is None:
            raise ValidationFailed(f"There is no user named {username!r}.")
        return user

    def _other_user(self, session: Session, actor_id: int, username: str, doing: str) -> User:
        """The admin acting, then the user named ``username``, who must not be the admin themselves."""
        admin = self._admin(session, actor_id)
        user = self._user_named(session, username)
        if user.id == admin.id:
            raise ValidationFailed(f"You cannot {doing} your own account; ask another admin.")
        return user

    def users(self, actor_id: int) -> list[UserPublic]:
        """Every account, by username."""

        def action(session: Session) -> list[UserPublic]:
            self._admin(session, actor_id)
            return [UserPublic.model_validate(u) for u in session.exec(select(User).order_by(User.username))]

        return self._transaction(action)

    def create_user(self, actor_id: int, username: str, role: str = "rater", domains: Sequence[str] = ()) -> str:
        """Create an account and return its generated one-time password, to be shown once: the first sign-in
        replaces it."""
        password = accounts.new_password()

        def action(session: Session) -> None:
            self._admin(session, actor_id)
            try:
                user = UserCreate(
                    username=username, password=password, role=_role(role), domains=clean_domains(domains)
                )
            except ValidationError as error:
                raise ValidationFailed(message(error)) from None
            try:
                created = accounts.create_user(session=session, user=user, actor_id=actor_id)
            except ValueError as error:  # the name is taken
                raise ValidationFailed(f"The {error}; choose another username.") from None
            created.must_change_password = True

        self._transaction(action)
        return password

    def set_role(self, actor_id: int, username: str, role: str) -> UserPublic:
        """Change a user's role (rater, lead, admin); audited."""

        def action(session: Session) -> UserPublic:
            user = self._other_user(session, actor_id, username, "change the role of")
            user = accounts.set_role(session=session, user_id=user.id, role=_role(role), actor_id=actor_id)
            return UserPublic.model_validate(user)

        return self._transaction(action)

    def set_active(self, actor_id: int, username: str, active: bool) -> UserPublic:
        """Reactivate or deactivate an account: a deactivated user cannot log in or act; audited."""

        def action(session: Session) -> UserPublic:
            user = self._other_user(session, actor_id, username, "deactivate or reactivate")
            user = accounts.set_active(session=session, user_id=user.id, active=active, actor_id=actor_id)
            return UserPublic.model_validate(user)

        return self._transaction(action)

    def reset_password(self, actor_id: int, username: str) -> str:
        """Give the account a new generated one-time password, to be shown once: every session of the account ends,
        and the next sign-in must replace it."""
        password = accounts.new_password()

        def action(session: Session) -> None:
            user = self._other_user(session, actor_id, username, "reset the password of")
            accounts.set_password(session=session, user_id=user.id, password=password, actor_id=actor_id,
                                  must_change=True)  # fmt: skip

        self._transaction(action)
        return password

    def erase(self, actor_id: int, username: str, mode: str) -> ErasureReport:
        """Erase a user's data, ``mode`` "remove" or "anonymise" (storage.erasure); audited."""
        if mode not in erasure.MODES:
            raise ValidationFailed(f"Erasure mode must be one of {', '.join(erasure.MODES)} (got {mode!r}).")

        def action(session: Session) -> ErasureReport:
            user = self._other_user(session, actor_id, username, "erase")
            return erasure.erase_user(session=session, user_id=user.id, mode=mode, actor_id=actor_id)

        return self._transaction(action)

    def link_hf(self, actor_id: int, username: str, hf_username: str) -> UserPublic:
        """Let ``username`` sign in with this Hugging Face account on a Space (empty: unlink); audited."""
        hf_username = (hf_username or "").strip() or None

        def action(session: Session) -> UserPublic:
            self._admin(session, actor_id)
            user = self._user_named(session, username)
            if hf_username is not None:
                taken = select(User.username).where(
                    func.lower(User.hf_username) == hf_username.lower(), User.id != user.id
                )
                if (owner := session.exec(taken).first()) is not None:
                    raise ValidationFailed(f"The Hugging Face account {hf_username!r} is already linked to {owner!r}.")
            user.hf_username = hf_username
            session.add(AuditEvent(actor_id=actor_id, action="user.link_hf", target=user.username,
                                   details={"hf_username": hf_username}))  # fmt: skip
            session.flush()
            return UserPublic.model_validate(user)

        return self._transaction(action)
