"""One engine factory, and the migrations that bring any database to the current schema."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("concord-data")
MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_S = 30  # how long a SQLite writer waits for the write lock before it gives up


def data_dir() -> Path:
    """Where the studio keeps its files: ``$CONCORD_DATA_DIR``, ``./concord-data/``, or ``/data`` on a Space with
    persistent storage (with a warning on a Space without it: its files are lost when it restarts)."""
    folder = Path(os.environ.get("CONCORD_DATA_DIR", DEFAULT_DATA_DIR))
    if os.environ.get("SPACE_ID") and "CONCORD_DATA_DIR" not in os.environ:
        if Path("/data").is_dir():
            folder = Path("/data/concord")
        else:
            log.warning("running on a Space without persistent storage: judgments are lost when the Space restarts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def default_database_url() -> str:
    """``CONCORD_DATABASE_URL`` if set, else SQLite in the data folder (``data_dir``)."""
    return os.environ.get("CONCORD_DATABASE_URL") or f"sqlite:///{data_dir() / 'concord.db'}"


def make_engine(url: str | None = None) -> Engine:
    """SQLite with WAL, foreign keys and full sync (an acknowledged write survives a crash), or any URL.

    Pooled connections are not pinged before use: the ping was a round trip in every transaction (a submit and its
    session lookup, 2 ms of the studio's CPU). A connection the server dropped (a restart) fails its first statement,
    the pool then replaces every connection it holds, and the studio runs the action again (studio.access)."""
    url = url or default_database_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        # Thirty kept open, none beyond: a pool of 10 with 20 "overflow" connections closed each one it had no room
        # for, and the studio opened 700-800 PostgreSQL sessions a minute at 50 raters (each a backend started, its
        # prepared statements lost); kept, it opens 29 (docs/benchmarks.md).
        return create_engine(url, pool_size=30, max_overflow=0)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy emit BEGIN itself (below), so a writer can take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    # One writer at a time in this process, the others waiting on a lock that hands over at once and in turn: left
    # to SQLite's busy handler, 40 waiting threads would each sleep up to 100 ms between tries, and the unlucky ones
    # seconds. Writers in other processes (an import from the command line) still meet SQLite's lock.
    writing = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A read that later writes can fail with SQLITE_BUSY_SNAPSHOT under concurrency; writers begin IMMEDIATE.
        if not conn.get_execution_options().get("sqlite_write"):
            conn.exec_driver_sql("BEGIN")
            return
        if not writing.acquire(timeout=BUSY_TIMEOUT_S):  # as SQLite's own wait would end, never a deadlock
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            writing.release()
            raise
        conn.info["writing"] = True

    def _end(conn, finish: Callable[[sqlite3.Connection], None]) -> None:
        # SQLAlchemy's commit and rollback events come before the database's: end the transaction here, so the
        # turn passes only once SQLite's lock is free (SQLAlchemy's own commit then finds nothing left to do).
        if conn.info.pop("writing", False):
            try:
                if not conn.invalidated:
                    finish(conn.connection.dbapi_connection)
            finally:
                writing.release()

    event.listen(engine, "commit", lambda conn: _end(conn, sqlite3.Connection.commit))
    event.listen(engine, "rollback", lambda conn: _end(conn, sqlite3.Connection.rollback))

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_connection, record):
        # A connection back in the pool without either event (a session dropped unclosed: the pool rolled it back)
        # must not keep the turn.
        if record is not None and record.info.pop("writing", False):
            writing.release()

    return engine


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for one user action that only reads, ended with COMMIT. Closing a session that only read sends
    ROLLBACK, and psycopg forgets every prepared statement of the connection at a ROLLBACK: every request's session
    check did, so PostgreSQL planned every statement of every request anew."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def write_session(engine: Engine) -> Session:
    """A session for one user action that writes: on SQLite it holds the write lock from its first statement."""
    return Session(engine.execution_options(sqlite_write=True), expire_on_commit=False)


def refresh_statistics(engine: Engine) -> None:
    """PostgreSQL's planner statistics of the tables an import fills, brought up to date at once. Autovacuum does it
    a minute or more later; until then the queue's statements are planned for a campaign of a few pairs, and took
    400 ms instead of 2 on the 3,852 HH pairs (docs/benchmarks.md). SQLite plans without statistics."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE prompt, response, pair, calibrationitem, judgment, demonstration")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine) -> None:
    """Bring the database to the newest schema (creates it on first use)."""
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.info("database at %s is up to date", engine.url.render_as_string(hide_password=True))
