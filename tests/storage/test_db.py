from sqlalchemy import text
from sqlmodel import select

from storage.db import alembic_config, write_session
from storage.models import Campaign


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
