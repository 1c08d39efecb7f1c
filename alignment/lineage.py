"""The TrainingRun row of a run: started, resumed, updated, finished or failed (one transaction each)."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from alignment.source import find_run
from storage.db import write_session
from storage.models import TrainingRun, utcnow


def code_version() -> str:
    """The package version, plus the git commit of the working tree where there is one."""
    try:
        package = version("concord-studio")
    except PackageNotFoundError:
        package = "unknown"
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                         text=True, check=False)  # fmt: skip
    return f"{package}+g{git.stdout.strip()}" if git.returncode == 0 else package


def update_run(engine: Engine, run_id: int, **values: Any) -> TrainingRun:
    """Set ``values`` on the run and return it."""
    with write_session(engine) as session, session.begin():
        run = session.get(TrainingRun, run_id)
        for name, value in values.items():
            setattr(run, name, value)
        session.add(run)
    return run


def fail_run(engine: Engine, run_id: int, error: BaseException) -> TrainingRun:
    """Mark the run failed, with the error in its metrics."""
    return update_run(engine, run_id, status="failed", metrics={"error": f"{type(error).__name__}: {error}"},
                      finished_at=utcnow())  # fmt: skip


def finish_run(engine: Engine, run_id: int, metrics: dict[str, Any]) -> TrainingRun:
    """Mark the run finished with its metrics."""
    return update_run(engine, run_id, status="finished", metrics=metrics, finished_at=utcnow())


def start_run(engine: Engine, run: TrainingRun) -> TrainingRun:
    """Insert the new run (status running); its name must be free."""
    run.code_version = run.code_version or code_version()
    with write_session(engine) as session, session.begin():
        if find_run(run.name, session=session) is not None:
            raise ValueError(
                f"a training run named {run.name!r} already exists: choose another run_name (or --resume)"
            )
        session.add(run)
    return run


def resume_run(engine: Engine, name: str, *, method: str, resolved: dict[str, Any], run_dir: Path) -> TrainingRun:
    """The existing run ``name``, running again under the ``resolved`` recipe (e.g. with more max_steps)."""
    with write_session(engine) as session, session.begin():
        run = find_run(name, session=session)
        if run is None:
            raise ValueError(f"--resume: no training run is called {name!r}; set run_name to the run to continue")
        if run.method != method:
            raise ValueError(f"--resume: run {name!r} trained {run.method}, the recipe trains {method}")
        if Path(run.output_path) != run_dir.resolve():
            raise ValueError(f"--resume: run {name!r} lives in {run.output_path}, not {run_dir.resolve()}: "
                             "set output_root as when it started")  # fmt: skip
        run.status, run.finished_at, run.recipe, run.code_version = "running", None, resolved, code_version()
        session.add(run)
    return run
