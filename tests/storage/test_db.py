from sqlalchemy import text
from sqlmodel import select

from storage.db import alembic_config, write_session
from storage.models import Campaign, DemonstrationReview, User


def test_migrated_schema_matches_models(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"
    assert alembic_config(engine).get_main_option("script_location").endswith("migrations")


def test_a_write_is_visible_to_a_new_session(engine):
    with write_session(engine) as session, session.begin():
        session.add(Campaign(name="c1"))
    with write_session(engine) as session:
        assert session.exec(select(Campaign.name)).all() == ["c1"]


def test_sqlite_is_durable_and_checks_foreign_keys(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_sqlite_writers_in_one_process_take_turns_without_meeting_sqlites_lock(sqlite_engine, monkeypatch):
    """Two writers of one engine never both ask SQLite for its lock: with SQLite's own wait set to nothing, the
    second one still gets in as soon as the first is done, and a transaction that fails, or a session dropped
    unclosed, leaves the turn free."""
    import gc
    import threading

    import pytest
    from sqlalchemy import event
    from sqlalchemy.exc import IntegrityError, OperationalError

    import storage.db

    sqlite_engine.dispose()
    event.listen(
        sqlite_engine, "connect", lambda dbapi_connection, _: dbapi_connection.execute("PRAGMA busy_timeout=0")
    )
    holding, failures = threading.Event(), []

    def first():
        with write_session(sqlite_engine) as session, session.begin():
            session.add(Campaign(name="first"))
            session.flush()
            holding.set()
            threading.Event().wait(0.3)  # still holding the lock while the second writer asks

    def second():
        holding.wait(10)
        try:
            with write_session(sqlite_engine) as session, session.begin():
                session.add(Campaign(name="second"))
        except OperationalError as error:  # "database is locked": SQLite's lock met at once
            failures.append(error)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with pytest.raises(IntegrityError), write_session(sqlite_engine) as session, session.begin():
        session.add(Campaign(name="first"))  # a name taken: the transaction fails and rolls back

    def dropped():  # a session left unclosed: the pool rolls its connection back when it is collected
        session = write_session(sqlite_engine)
        session.begin()
        session.add(Campaign(name="dropped"))
        session.flush()

    thread = threading.Thread(target=dropped)
    thread.start()
    thread.join()
    gc.collect()
    monkeypatch.setattr(storage.db, "BUSY_TIMEOUT_S", 1)  # a turn never given back would now fail in a second
    with write_session(sqlite_engine) as session, session.begin():
        session.add(Campaign(name="third"))
    with write_session(sqlite_engine) as session:
        assert sorted(session.exec(select(Campaign.name)).all()) == ["first", "second", "third"]


def _migrate(engine, step: str, revision: str) -> None:
    from alembic import command

    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        getattr(command, step)(config, revision)


def test_0005_keeps_existing_accounts_and_campaigns_as_they_were_and_downgrades(engine):
    """Accounts made before 0005 keep their passwords; campaigns keep accepting unrated criteria."""
    _migrate(engine, "downgrade", "0004")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO campaign (name, kind, guidelines, rubric, overlap_k, calibration_rate, "
                          "calibration_mode, min_reasoning_chars, domains, consent_text, calibration_threshold, "
                          "calibration_window, probation, guidelines_version, consent_version, created_at) VALUES "
                          "('old', 'preference', '', '[]', 3, 0.1, 'training', 20, '[]', '', 0.7, 20, true, 1, 1, "
                          "'2026-01-01')"))  # fmt: skip
        conn.execute(text("INSERT INTO \"user\" (username, role, domains, active, password_hash, pseudonym, "
                          "created_at, session_epoch) VALUES ('ada', 'rater', '[]', true, '-', 'rater-1', "
                          "'2026-01-01', 0)"))  # fmt: skip
    _migrate(engine, "upgrade", "head")
    with write_session(engine) as session:
        assert session.exec(select(Campaign.criteria_required)).one() is False
        assert session.exec(select(User.must_change_password)).one() is False
        assert session.exec(select(DemonstrationReview)).all() == []
    _migrate(engine, "downgrade", "0004")
    with engine.connect() as conn:
        assert conn.execute(text('SELECT username FROM "user"')).scalar() == "ada"
    _migrate(engine, "upgrade", "head")
