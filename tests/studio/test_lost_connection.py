"""A database connection lost mid-transaction (a PostgreSQL restart): the whole action runs again on a new
connection; when the database stays away the person is told so in words, never with SQL or driver text."""

import asyncio
from types import SimpleNamespace

import pytest
from fastapi import HTTPException
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from storage.accounts import create_user
from storage.db import write_session
from storage.models import UserCreate
from studio.access import ATTEMPTS, Service, Unavailable
from studio.login import signed_in_user
from studio.sessions import SessionArguments
from tests.conftest import POSTGRES_URL

PASSWORD = "correct horse battery"


class Dropped(Exception):
    pgcode = sqlstate = "57P01"  # admin_shutdown: what pg_terminate_backend and a restart send


def _lost() -> OperationalError:
    return OperationalError(
        "SELECT pair.id FROM pair WHERE pair.id = 9 FOR UPDATE", {}, Dropped(), connection_invalidated=True
    )


@pytest.mark.parametrize("failures", [1, ATTEMPTS - 1])
def test_an_action_cut_off_by_a_lost_connection_runs_again(engine, failures, monkeypatch):
    monkeypatch.setattr("studio.access.time.sleep", lambda s: None)
    calls = []

    def action(session):
        calls.append(1)
        if len(calls) <= failures:
            raise _lost()
        return "done"

    assert Service(engine)._transaction(action) == "done" and len(calls) == failures + 1


def test_a_database_that_stays_away_is_told_in_words(engine, monkeypatch):
    monkeypatch.setattr("studio.access.time.sleep", lambda s: None)

    def action(session):
        raise _lost()

    with pytest.raises(Unavailable) as refused:
        Service(engine)._transaction(action)
    told = str(refused.value)
    assert told.startswith("The database did not answer") and "nothing was saved" in told
    assert "SELECT" not in told and "57P01" not in told


def _ada_signed_in(engine) -> tuple[Service, str]:
    """A service on ``engine`` and the session token of its one account, ada."""
    with write_session(engine) as session, session.begin():
        create_user(session=session, user=UserCreate(username="ada", password=PASSWORD))
    service = Service(engine, login=SessionArguments(secret="s" * 32))
    return service, service.log_in("ada", PASSWORD).token


def test_a_request_after_a_database_restart_finds_its_session(engine):
    """Pooled connections are not pinged before use (storage.db): one the server dropped fails its first
    statement, and the request carries on on a new connection instead of telling the person to try again."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no server to restart")
    service, token = _ada_signed_in(engine)
    with engine.connect() as connection:  # the pool's one connection, as every request before it left it
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:  # what a restart does to every connection
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    admin.dispose()

    assert service.signed_in(token)[1] == "ada"
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid


def test_a_session_check_while_the_database_is_away_answers_503_in_words(engine, monkeypatch):
    """Every API call's session check runs before any handler (Gradio's auth_dependency): a database that does not
    answer there must not come back as a bare 500 page the browser and gradio_client cannot read."""
    service = Service(engine, login=SessionArguments(secret="s" * 32))

    def away(token):
        raise _lost()

    monkeypatch.setattr(service, "signed_in", away)
    request = SimpleNamespace(cookies={service.login.cookie_name: "a token"}, state=SimpleNamespace())
    with pytest.raises(HTTPException) as refused:
        asyncio.run(signed_in_user(service)(request))
    assert refused.value.status_code == 503 and refused.value.detail.startswith("The database did not answer")
    assert "SELECT" not in refused.value.detail


def test_requests_that_only_read_keep_the_connections_prepared_statements(engine):
    """psycopg forgets every prepared statement of a connection at a ROLLBACK, which is how a session that only read
    used to end: every request's session check did, and PostgreSQL planned every statement anew (16.6 plans a submit
    at 50 raters, 4.8 since). A read ends with COMMIT (storage.db.read_session)."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite prepares no statements on a server")
    service, token = _ada_signed_in(engine)
    for _ in range(10):  # psycopg prepares a statement at its sixth use on a connection
        assert service.signed_in(token)[1] == "ada"
    with engine.connect() as connection:  # the pool's one connection, as every request before it left it
        prepared = connection.exec_driver_sql("SELECT statement FROM pg_prepared_statements").scalars().all()
    assert any("loginsession" in statement for statement in prepared)
