import pytest
from sqlmodel import select

from storage.accounts import authenticate, create_user, ensure_admin, set_role
from storage.db import write_session
from storage.models import AuditEvent, Role, User, UserCreate


def test_password_is_hashed_and_checked(engine):
    with write_session(engine) as session, session.begin():
        create_user(session=session, user=UserCreate(username="ada", password="correct horse"))
    with write_session(engine) as session, session.begin():
        user = session.exec(select(User)).one()
        assert "correct horse" not in user.password_hash and user.password_hash.startswith("$argon2")
        assert authenticate(session=session, username="ada", password="correct horse").id == user.id
        assert authenticate(session=session, username="ada", password="wrong horse!") is None
        assert authenticate(session=session, username="nobody", password="correct horse") is None
        user.active = False
    with write_session(engine) as session:
        assert authenticate(session=session, username="ada", password="correct horse") is None


def test_usernames_are_unique_and_pseudonyms_stable(engine):
    with write_session(engine) as session, session.begin():
        a = create_user(session=session, user=UserCreate(username="ada", password="12345678"))
        b = create_user(session=session, user=UserCreate(username="bob", password="12345678"))
        assert a.pseudonym != b.pseudonym and a.pseudonym.startswith("rater-")
        with pytest.raises(ValueError, match="taken"):
            create_user(session=session, user=UserCreate(username="ada", password="12345678"))


def test_bad_user_input_is_rejected():
    with pytest.raises(ValueError, match="password"):
        UserCreate(username="ada", password="short")
    with pytest.raises(ValueError, match="username"):
        UserCreate(username="ada lovelace", password="12345678")


def test_first_admin_is_created_once_and_role_changes_are_audited(engine):
    with write_session(engine) as session, session.begin():
        name, password = ensure_admin(session=session)
        assert ensure_admin(session=session) is None
        admin = authenticate(session=session, username=name, password=password)
        assert admin.role == Role.admin
        rater = create_user(session=session, user=UserCreate(username="ada", password="12345678"))
        set_role(session=session, user_id=rater.id, role=Role.lead, actor_id=admin.id)
    with write_session(engine) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "user.role")).one()
        assert event.actor_id == admin.id and event.details == {"from": "rater", "to": "lead"}
