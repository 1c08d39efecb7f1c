"""Sessions and logins through the service: bound to the account id, expiring, revoked, throttled and audited."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlmodel import Session, select

from storage.accounts import create_user
from storage.db import write_session
from storage.erasure import erase_user
from storage.models import AuditEvent, LoginFailure, Role, User, UserCreate, utcnow
from studio import access
from studio.admin import AdminService
from studio.login import current_user
from studio.service import PermissionDenied
from studio.sessions import SessionArguments
from studio.validation import ValidationFailed

PASSWORD = "correct horse battery"
LOGINS = select(AuditEvent).where(AuditEvent.action.startswith("user.login")).order_by(AuditEvent.id)
SETTINGS = SessionArguments(secret="s" * 32, session_hours=2, max_failures=3, max_failures_per_address=5)


def add_user(engine, name: str, role: Role = Role.rater) -> int:
    with write_session(engine) as session, session.begin():
        return create_user(session=session, user=UserCreate(username=name, password=PASSWORD, role=role)).id


@pytest.fixture
def admin(engine):
    """An admin service on a database with the admin root."""
    service = AdminService(engine, login=SETTINGS)
    service.root = add_user(engine, "root", Role.admin)
    return service


def logged_in(service, name: str, address: str = "10.0.0.1") -> str:
    outcome = service.log_in(name, PASSWORD, address)
    assert outcome.token and not outcome.refusal
    return outcome.token


def request_with(service, token: str) -> SimpleNamespace:
    """What a Gradio handler is given: the request's cookies (and no username is trusted)."""
    return SimpleNamespace(cookies={service.login.cookie_name: token}, username="whoever")


def later(monkeypatch, **delta) -> None:
    moved = utcnow() + timedelta(**delta)
    monkeypatch.setattr(access, "utcnow", lambda: moved)


def test_a_session_belongs_to_the_account_not_its_name_and_ends_with_the_erasure(engine, admin):
    victim = add_user(engine, "victim")
    token = logged_in(admin, "victim")
    assert current_user(admin, request_with(admin, token), None) == victim
    admin.erase(admin.root, "victim", "anonymise")
    reborn = add_user(engine, "victim", Role.lead)  # the name is free again: a new account, a lead
    assert admin.signed_in(token) is None
    with pytest.raises(PermissionDenied, match="session has ended"):
        current_user(admin, request_with(admin, token), None)
    assert current_user(admin, request_with(admin, logged_in(admin, "victim")), None) == reborn


def test_sessions_expire(engine, admin, monkeypatch):
    add_user(engine, "ada")
    token = logged_in(admin, "ada")
    later(monkeypatch, hours=1, minutes=59)
    assert admin.signed_in(token) is not None
    later(monkeypatch, hours=2, seconds=1)
    assert admin.signed_in(token) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda admin: admin.set_role(admin.root, "ada", "lead"),
        lambda admin: admin.set_active(admin.root, "ada", False),
        lambda admin: admin.reset_password(admin.root, "ada"),
    ],
    ids=["role", "deactivation", "password"],
)
def test_a_role_change_deactivation_or_new_password_ends_every_session_of_the_account(engine, admin, change):
    add_user(engine, "ada")
    add_user(engine, "bo")
    tokens, bystander = [logged_in(admin, "ada"), logged_in(admin, "ada", "10.0.0.2")], logged_in(admin, "bo")
    change(admin)
    admin.set_active(admin.root, "ada", True)  # reactivating does not bring an old session back
    assert [admin.signed_in(token) for token in tokens] == [None, None]
    assert admin.signed_in(bystander) is not None  # other accounts keep theirs


def test_logging_out_ends_that_session_only(engine, admin):
    add_user(engine, "ada")
    first, second = logged_in(admin, "ada"), logged_in(admin, "ada")
    admin.log_out(first)
    assert admin.signed_in(first) is None and admin.signed_in(second) is not None


def test_a_password_checked_before_a_revocation_opens_no_live_session(engine, admin, monkeypatch):
    """The session is bound to the epoch the password was checked under: a revocation in between wins."""
    add_user(engine, "ada")
    record = admin._transaction

    def revoke_first(action):
        monkeypatch.setattr(admin, "_transaction", record)
        admin.reset_password(admin.root, "ada")
        return record(action)

    monkeypatch.setattr(admin, "_transaction", revoke_first)
    outcome = admin.log_in("ada", PASSWORD, "10.0.0.1")
    assert outcome.token and admin.signed_in(outcome.token) is None


def test_after_too_many_failures_even_the_right_password_waits(engine, admin, monkeypatch):
    add_user(engine, "ada")
    for _ in range(3):
        assert admin.log_in("ada", "wrong password", "10.0.0.1").refusal == "Wrong username or password."
    locked = admin.log_in("ADA", PASSWORD, "10.0.0.9")  # another address, the name in capitals: the same account
    assert locked.token is None and 14 * 60 < locked.retry_after_s <= 15 * 60
    assert locked.refusal == "Too many failed logins for this account: try again in 15 minutes."
    later(monkeypatch, minutes=15, seconds=1)
    assert logged_in(admin, "ada")


def test_one_address_guessing_at_many_names_is_locked_out_and_a_good_login_does_not_reset_it(engine, admin):
    add_user(engine, "ada")
    for name in ("bo", "cy", "dee", "ada"):
        admin.log_in(name, "wrong password", "10.0.0.1")
    assert logged_in(admin, "ada", "10.0.0.1")  # clears ada's count, not the address's
    admin.log_in("eve", "wrong password", "10.0.0.1")
    refused = admin.log_in("ada", PASSWORD, "10.0.0.1")
    assert refused.token is None and refused.refusal.startswith("Too many failed logins for your address")
    assert logged_in(admin, "ada", "10.0.0.2")


def test_failed_logins_are_audited_with_their_address_and_erasure_drops_it(engine, admin):
    add_user(engine, "ada")
    admin.log_in("ada", "wrong password", "10.0.0.7")
    admin.log_in("nobody", "wrong password", "10.0.0.7")
    logged_in(admin, "ada", "10.0.0.8")
    with Session(engine) as session:
        events = session.exec(LOGINS).all()
    assert [(e.action, e.target, e.details) for e in events] == [
        ("user.login_failed", "ada", {"address": "10.0.0.7"}),
        ("user.login_failed", "nobody", {"address": "10.0.0.7"}),
        ("user.login", "ada", {"address": "10.0.0.8"}),
    ]
    with write_session(engine) as session, session.begin():
        ada = session.exec(select(User).where(User.username == "ada")).one()
        erase_user(session=session, user_id=ada.id, mode="remove", actor_id=admin.root)
    with Session(engine) as session:
        kept = session.exec(LOGINS).all()
        failures = session.exec(select(LoginFailure.username)).all()
    assert [(e.target, e.details) for e in kept] == [
        (f"erased-{ada.id}", {}), ("nobody", {"address": "10.0.0.7"}), (f"erased-{ada.id}", {})
    ]  # fmt: skip
    assert failures == ["nobody"]


def test_settings_come_from_the_environment_and_bad_values_name_their_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCORD_DATA_DIR", str(tmp_path))
    settings = SessionArguments.from_env({"CONCORD_SESSION_HOURS": "0.5", "CONCORD_COOKIE_SAMESITE": "None"})
    assert settings.lifetime == timedelta(minutes=30) and settings.cookie_secure  # SameSite=None needs Secure
    assert settings.key == (tmp_path / "secret_key").read_text().encode()  # made once, then reused
    assert SessionArguments.from_env({}).key == settings.key and (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="CONCORD_LOGIN_MAX_FAILURES='many'"):
        SessionArguments.from_env({"CONCORD_LOGIN_MAX_FAILURES": "many"})
    with pytest.raises(ValueError, match="cookie_samesite"):
        SessionArguments(cookie_samesite="loose")


def test_an_admins_reset_gives_a_one_time_password_that_signs_in_only_once_replaced(engine, admin):
    add_user(engine, "ada")
    old_session = logged_in(admin, "ada")
    one_time = admin.reset_password(admin.root, "ada")
    assert admin.signed_in(old_session) is None
    refused = admin.log_in("ada", PASSWORD)  # the old password stopped working
    assert (
        refused.token is None and refused.refusal == "Wrong username or password." and not refused.must_change_password
    )
    asked = admin.log_in("ada", one_time)
    assert (asked.token, asked.must_change_password) == (None, True) and "choose a new one" in asked.refusal
    too_short = admin.log_in("ada", one_time, new_password="short")
    assert too_short.token is None and too_short.refusal == "A password needs at least 8 characters."
    assert admin.log_in("ada", one_time, new_password=one_time).refusal.startswith("The new password must differ")
    signed = admin.log_in("ada", one_time, new_password="ada's own horse")
    assert signed.token and admin.signed_in(signed.token)[1] == "ada"
    assert admin.log_in("ada", one_time).token is None  # one time only
    assert admin.log_in("ada", "ada's own horse").token is not None
    with Session(engine) as session:
        assert session.exec(select(User.must_change_password).where(User.username == "ada")).one() is False


def test_changing_ones_own_password_keeps_this_session_and_ends_the_others(engine, admin):
    ada = add_user(engine, "ada")
    here, elsewhere = logged_in(admin, "ada"), logged_in(admin, "ada", "10.0.0.2")
    for old, new, refusal in [("wrong", "a new horse", "The current password is wrong."),
                              (PASSWORD, "short", "A password needs at least 8 characters."),
                              (PASSWORD, PASSWORD, "The new password must differ from the current one.")]:  # fmt: skip
        with pytest.raises(ValidationFailed) as refused:
            admin.change_password(ada, old, new, here)
        assert str(refused.value) == refusal
    admin.change_password(ada, PASSWORD, "a new horse", here)
    assert admin.signed_in(here) is not None and admin.signed_in(elsewhere) is None
    assert admin.log_in("ada", PASSWORD).token is None and admin.log_in("ada", "a new horse").token


def test_a_crowd_signing_in_checks_one_password_per_core_at_a_time(engine, admin, monkeypatch):
    """Eight sign-ins at once on a pretend 2-core machine: never more than two argon2 checks run together."""
    import threading
    import time

    from storage import accounts

    running, most, lock = [0], [0], threading.Lock()

    class WatchedHasher:
        def verify(self, hash_, password):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)  # long enough for the others to pile up behind it
            try:
                return real.verify(hash_, password)
            finally:
                with lock:
                    running[0] -= 1

        def __getattr__(self, name):
            return getattr(real, name)

    real = accounts._hasher
    for n in range(8):
        add_user(engine, f"r{n}")
    monkeypatch.setattr(accounts, "_hasher", WatchedHasher())
    monkeypatch.setattr(access, "SIGNING_IN", threading.BoundedSemaphore(2))
    outcomes = [None] * 8

    def sign_in(n: int) -> None:
        outcomes[n] = admin.log_in(f"r{n}", PASSWORD, f"10.1.0.{n}")

    threads = [threading.Thread(target=sign_in, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(outcome.token for outcome in outcomes) and 1 <= most[0] <= 2
