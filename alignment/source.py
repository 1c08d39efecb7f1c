"""Where a run's model and rows come from, and whether erasure has made any of them stale.

``model_name_or_path`` is a hub id, a local folder, ``run:NAME`` (the model folder of the finished TrainingRun NAME:
a DPO policy starting from an SFT run) or ``pkg:PACKAGE[/SUBFOLDER]`` (a folder inside an installed package, as the
offline model wheels ship them). A plain name is never looked up as a run, so a run cannot shadow a hub id.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from storage.models import ExportRecord, TrainingRun

log = logging.getLogger(__name__)

RUN_PREFIX = "run:"
PACKAGE_PREFIX = "pkg:"


def find_run(name: str, *, session: Session) -> TrainingRun | None:
    """The TrainingRun called ``name``, if any."""
    return session.exec(select(TrainingRun).where(TrainingRun.name == name)).first()


def _package_folder(spec: str) -> str:
    package, _, sub = spec.partition("/")
    found = importlib.util.find_spec(package) if package.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"{PACKAGE_PREFIX}{spec}: no installed package {package!r} (pip install it first)")
    folder = Path(next(iter(found.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise ValueError(f"{PACKAGE_PREFIX}{spec}: {folder} is not a folder")
    return str(folder)


def _run_folder(name: str, engine: Engine | None) -> str:
    if engine is None:
        raise ValueError(f"{RUN_PREFIX}{name}: a previous run is looked up in a database, and none was given")
    with Session(engine) as session:
        run = find_run(name, session=session)
    if run is None:
        raise ValueError(f"{RUN_PREFIX}{name}: no training run is called {name!r}")
    if run.status != "finished":
        raise ValueError(f"{RUN_PREFIX}{name}: that run is {run.status}, so its model is not complete")
    if run.stale:
        log.warning("model %s%s learned from data that was since erased (the run is stale)", RUN_PREFIX, name)
    folder = Path(run.output_path) / "model"
    if not folder.is_dir():
        raise ValueError(f"{RUN_PREFIX}{name}: its model folder {folder} is missing")
    return str(folder)


def resolve_model_path(name: str, *, engine: Engine | None) -> str:
    """The folder or hub id ``model_name_or_path`` stands for (see the module docstring)."""
    if name.startswith(RUN_PREFIX):
        return _run_folder(name.removeprefix(RUN_PREFIX), engine)
    if name.startswith(PACKAGE_PREFIX):
        return _package_folder(name.removeprefix(PACKAGE_PREFIX))
    return name


def upstream_export_ids(names: list[str], *, engine: Engine) -> list[int]:
    """The exports the runs among ``names`` (``run:NAME``) learned from, and so every model trained from them: a PPO
    policy from its SFT run and its reward run. Erasure that reaches any of them marks the new run stale too."""
    found: list[int] = []
    with Session(engine) as session:
        for name in names:
            run = find_run(name.removeprefix(RUN_PREFIX), session=session) if name.startswith(RUN_PREFIX) else None
            found += [export_id for export_id in (run.export_ids if run else []) if export_id not in found]
    return found


def export_ids_for_folder(folder: str | Path, *, engine: Engine) -> list[int]:
    """The ExportRecord written into ``folder``, if the dataset folder is a Concord export this database made."""
    with Session(engine) as session:
        rows = session.exec(select(ExportRecord.id).where(ExportRecord.out_path == str(Path(folder).resolve())))
        return list(rows.all())


def stale_warnings(*, session: Session, run: TrainingRun | None = None, export_ids: list[int] = ()) -> list[str]:
    """What erasure has made stale among ``run`` and the exports it uses; each message is also logged."""
    messages = []
    if run is not None and run.stale:
        messages.append(f"training run {run.name!r} is stale: data it learned from was erased since")
    for export_id in export_ids:
        export = session.get(ExportRecord, export_id)
        if export is not None and export.stale:
            messages.append(f"export #{export_id} ({export.out_path}) is stale: data it holds was erased since")
    for message in messages:
        log.warning(message)
    return messages
