"""A database connection lost mid-transaction (a PostgreSQL restart): the whole action runs again on a new
connection; when the database stays away the person is told so in words, never with SQL or driver text."""

import pytest
from sqlalchemy.exc import OperationalError

from studio.access import ATTEMPTS, Service, Unavailable


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
