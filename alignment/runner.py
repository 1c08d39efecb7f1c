"""One training run: recipe -> TrainingRun row -> rows (exported) -> readiness -> the method's main -> lineage.

The run folder <output_root>/<run_name>/ holds config.yaml, data/ (the campaign's export), readiness.json and
model/ (the trained model, its tokenizer and metrics.json).
"""

from __future__ import annotations

import importlib
import logging
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import select

from alignment.data import load_run_data
from alignment.readiness import check_readiness
from alignment.recipe import parse_recipe, resolved_config, write_resolved
from storage.db import make_engine, upgrade_database, write_session
from storage.models import TrainingRun, utcnow

log = logging.getLogger(__name__)


def code_version() -> str:
    """The package version, plus the git commit of the working tree where there is one."""
    try:
        package = version("concord-studio")
    except PackageNotFoundError:
        package = "unknown"
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                         text=True, check=False)  # fmt: skip
    return f"{package}+g{git.stdout.strip()}" if git.returncode == 0 else package


def _update_run(engine: Engine, run_id: int, **values: Any) -> TrainingRun:
    with write_session(engine) as session, session.begin():
        run = session.get(TrainingRun, run_id)
        for name, value in values.items():
            setattr(run, name, value)
        session.add(run)
    return run


def _start_run(engine: Engine, run: TrainingRun) -> TrainingRun:
    with write_session(engine) as session, session.begin():
        if session.exec(select(TrainingRun.id).where(TrainingRun.name == run.name)).first() is not None:
            raise ValueError(f"a training run named {run.name!r} already exists: choose another run_name")
        session.add(run)
    return run


def train(recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, engine: Engine | None = None):
    """Run the recipe with ``overrides`` (``--key value``); returns the finished TrainingRun, or raises and marks it
    failed. ``engine`` defaults to the recipe's database_url ($CONCORD_DATABASE_URL)."""
    data_args, training_args, model_args = parse_recipe(recipe_path, overrides)
    if not model_args.model_name_or_path:
        raise ValueError(f"{recipe_path}: model_name_or_path is not set (a hub id or a local folder)")
    if engine is None:
        engine = make_engine(data_args.database_url)
        upgrade_database(engine)
    run_dir = Path(data_args.output_root) / training_args.run_name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} already exists and is not empty: choose another run_name or output_root")
    training_args.output_dir = str(run_dir / "model")
    resolved = resolved_config(data_args, training_args, model_args)
    write_resolved(resolved, run_dir)
    run = _start_run(engine, TrainingRun(
        name=training_args.run_name, method=data_args.method, data_source=data_args.campaign or data_args.dataset,
        recipe=resolved, recipe_path=str(Path(recipe_path).resolve()), code_version=code_version(),
        output_path=str(run_dir.resolve()),
    ))  # fmt: skip
    log.info("training run #%s %r: %s into %s", run.id, run.name, data_args.method, run_dir)
    try:
        data = load_run_data(data_args, engine=engine, data_dir=run_dir / "data")
        _update_run(engine, run.id, export_ids=data.export_ids)
        check_readiness(data, data_args, run_dir)
        # Imported only now: a run whose data is not ready never loads torch's model code.
        method = importlib.import_module(f"alignment.{data_args.method}")
        metrics = method.main(data_args, training_args, model_args, data.dataset)
    except BaseException as error:
        _update_run(engine, run.id, status="failed", metrics={"error": f"{type(error).__name__}: {error}"},
                    finished_at=utcnow())  # fmt: skip
        raise
    return _update_run(engine, run.id, status="finished", metrics=metrics, finished_at=utcnow())
