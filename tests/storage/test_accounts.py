from datetime import timedelta

import pytest
from sqlmodel import Session, select

from storage import accounts, sessions
from storage.accounts import authenticate, create_user, ensure_admin, set_active, set_password, set_role
from storage.db import write_session
from storage.models import AuditEvent, Role, User, UserCreate, utcnow


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


class CountingHasher:
    """Argon2's hasher, counting which hashes it verified against."""

    def __init__(self, hasher):
        self.hasher, self.verified = hasher, []

    def verify(self, hash_, password):
        self.verified.append(hash_)
        return self.hasher.verify(hash_, password)

    def __getattr__(self, name):
        return getattr(self.hasher, name)


def test_an_unknown_inactive_or_erased_account_costs_one_argon2_verification_like_a_real_one(engine, monkeypatch):
    hasher = CountingHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", hasher)
    with write_session(engine) as session, session.begin():
        ada, bo, cy = (create_user(session=session, user=UserCreate(username=name, password="correct horse"))
                       for name in ("ada", "bo", "cy"))  # fmt: skip
        bo.active, cy.password_hash = False, "!erased"  # deactivated; erased (storage.erasure)
    with Session(engine) as session:
        for name in ("ada", "nobody", "bo", "cy"):
            hasher.verified.clear()
            assert authenticate(session=session, username=name, password="wrong horse!") is None
            assert len(hasher.verified) == 1 and hasher.verified[0].startswith("$argon2")
            assert (hasher.verified[0] == ada.password_hash) == (name == "ada")  # the others: the dummy hash
        hasher.verified.clear()
        assert authenticate(session=session, username="bo", password="correct horse") is None  # inactive: refused
        assert hasher.verified == [accounts._dummy_hash()]


def _epoch(engine, user_id: int) -> int:
    with Session(engine) as session:
        return session.get(User, user_id).session_epoch


@pytest.mark.parametrize(
    "change",
    [
        lambda s, uid: set_role(session=s, user_id=uid, role=Role.lead, actor_id=None),
        lambda s, uid: set_active(session=s, user_id=uid, active=False, actor_id=None),
        lambda s, uid: set_password(session=s, user_id=uid, password="a new horse", actor_id=None),
    ],
    ids=["role", "deactivation", "password"],
)
def test_role_activation_and_password_changes_end_the_accounts_sessions(engine, change):
    now = utcnow()
    with write_session(engine) as session, session.begin():
        user_id = create_user(session=session, user=UserCreate(username="ada", password="correct horse")).id
        sessions.open_session(session=session, user_id=user_id, epoch=0, token_hash="h", now=now,
                              lifetime=timedelta(hours=1), address="")  # fmt: skip
    with Session(engine) as session:
        assert sessions.session_user(session=session, token_hash="h", now=now).id == user_id
    with write_session(engine) as session, session.begin():
        change(session, user_id)
    assert _epoch(engine, user_id) == 1
    with Session(engine) as session:
        assert sessions.session_user(session=session, token_hash="h", now=now) is None


def test_a_new_password_works_and_the_old_one_no_longer_does(engine):
    with write_session(engine) as session, session.begin():
        user_id = create_user(session=session, user=UserCreate(username="ada", password="correct horse")).id
        with pytest.raises(ValueError, match="at least 8"):
            set_password(session=session, user_id=user_id, password="short", actor_id=None)
        set_password(session=session, user_id=user_id, password="a new horse", actor_id=None)
    with Session(engine) as session:
        assert authenticate(session=session, username="ada", password="correct horse") is None
        assert authenticate(session=session, username="ada", password="a new horse").id == user_id
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "user.password")).one()
        assert "horse" not in str(event.details)


def test_changing_ones_own_password_needs_the_current_one_and_keeps_only_the_session_it_came_from(engine):
    now, hour = utcnow(), timedelta(hours=1)
    with write_session(engine) as session, session.begin():
        user_id = create_user(session=session, user=UserCreate(username="ada", password="correct horse")).id
        set_password(session=session, user_id=user_id, password="one-time-1", actor_id=None, must_change=True)
        for token in ("here", "elsewhere"):
            sessions.open_session(session=session, user_id=user_id, epoch=1, token_hash=token, now=now, lifetime=hour,
                                  address="")  # fmt: skip
    with Session(engine) as session:
        assert session.get(User, user_id).must_change_password is True
    for old, new, refusal in [("wrong horse", "a new horse", "current password is wrong"),
                              ("one-time-1", "short", "at least 8"),
                              ("one-time-1", "one-time-1", "must differ")]:  # fmt: skip
        with write_session(engine) as session, session.begin(), pytest.raises(ValueError, match=refusal):
            accounts.change_password(session=session, user_id=user_id, old=old, new=new)
    with write_session(engine) as session, session.begin():
        accounts.change_password(session=session, user_id=user_id, old="one-time-1", new="a new horse",
                                 keep_token_hash="here")  # fmt: skip
    with Session(engine) as session:
        user = session.get(User, user_id)
        assert (user.must_change_password, user.session_epoch) == (False, 2)
        assert authenticate(session=session, username="ada", password="one-time-1") is None
        assert authenticate(session=session, username="ada", password="a new horse").id == user_id
        assert sessions.session_user(session=session, token_hash="here", now=now).id == user_id
        assert sessions.session_user(session=session, token_hash="elsewhere", now=now) is None
        actions = session.exec(select(AuditEvent.action).where(AuditEvent.target == "ada")).all()
        assert "user.password_change" in actions


def test_a_hash_made_with_older_argon2_settings_still_signs_in_and_is_rehashed_with_the_current_ones(engine):
    from argon2 import PasswordHasher

    old = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)  # argon2-cffi's default, used before
    with write_session(engine) as session, session.begin():
        ada = create_user(session=session, user=UserCreate(username="ada", password="correct horse"))
        ada.password_hash = old.hash("correct horse")
    with write_session(engine) as session, session.begin():
        user = authenticate(session=session, username="ada", password="correct horse")
        assert user is not None and accounts._hasher.check_needs_rehash(user.password_hash)
        accounts.rehash_password(session=session, user_id=user.id, password="correct horse")
    with Session(engine) as session:
        stored = session.exec(select(User.password_hash)).one()
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and not accounts._hasher.check_needs_rehash(stored)
        assert authenticate(session=session, username="ada", password="correct horse") is not None
