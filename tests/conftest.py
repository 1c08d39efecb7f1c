"""Fixtures shared by every layer. HF libraries are kept offline before anything imports them."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from storage.db import make_engine, upgrade_database  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
POSTGRES_URL = os.environ.get("CONCORD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_reachable() -> bool:
    try:
        with create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2}).connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:  # noqa: BLE001  (any failure means: not here)
        return False


POSTGRES = _postgres_reachable()


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the project; tests that need them skip when they are absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED / 'data'}")
    return SHARED / "data"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    """A migrated, empty database: SQLite in a temp file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'concord.db'}")
        upgrade_database(engine)
        yield engine
        engine.dispose()
        return
    if not POSTGRES:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(POSTGRES_URL + ("&" if "?" in POSTGRES_URL else "?") + f"options=-csearch_path%3D{schema}")
    upgrade_database(engine)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'concord.db'}")
    upgrade_database(engine)
    yield engine
    engine.dispose()
