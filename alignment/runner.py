"""One training run: recipe -> TrainingRun row -> rows (exported) -> readiness -> the method's main -> lineage.

The run folder <output_root>/<run_name>/ holds config.yaml, data/ (the campaign's export), readiness.json and
model/ (checkpoints, TensorBoard logs under runs/, then the trained model, its tokenizer and metrics.json).

Under ``accelerate launch`` every process runs this; only the main process touches the database and exports the
rows, the others wait for it, then read the same rows from the run folder.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate.utils import broadcast_object_list
from sqlalchemy import Engine
from sqlmodel import Session
from transformers import set_seed
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint

from alignment.arguments import DataArguments
from alignment.data import RunData, from_folder_or_name, load_run_data
from alignment.lineage import fail_run, finish_run, resume_run, start_run, update_run
from alignment.model import check_loadable
from alignment.readiness import check_readiness
from alignment.recipe import parse_recipe, resolved_config, write_resolved
from alignment.source import export_ids_for_folder, resolve_model_path, stale_warnings, upstream_export_ids
from storage.db import make_engine, upgrade_database
from storage.models import TrainingRun

log = logging.getLogger(__name__)

MODEL_FIELDS = ("reward_model_path",)
"""Fields of a method's config that name a further model (PPO's reward model): each must be set, is resolved like
model_name_or_path (run:NAME, pkg:NAME) and, when it is a run, links the new run to that run's exports."""


def _on_main(training_args, work: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
    """Run ``work`` (returning a picklable summary and local data) on the main process only: the others wait, then
    get its summary and None, or fail with its error."""
    if training_args.world_size == 1:
        return work()
    message, local = [None], None
    if training_args.process_index == 0:
        try:
            summary, local = work()
        except BaseException as error:
            broadcast_object_list([("error", f"{type(error).__name__}: {error}")])
            raise
        message = [("ok", summary)]
    broadcast_object_list(message)
    status, summary = message[0]
    if status == "error":
        raise RuntimeError(f"the main process failed: {summary}")
    return summary, local


def _leave_group(training_args) -> None:
    """End an accelerate launch's process group on every process together. The trainer's DDP wrapper holds the group:
    freed while a process's peers had already exited, its gloo workers waited on them for ever (or aborted)."""
    if training_args.world_size == 1:
        return
    import torch.distributed

    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _run_data(data_args: DataArguments, *, engine: Engine, run_dir: Path, resume: bool) -> RunData:
    exported = run_dir / "data"
    if resume and data_args.campaign is not None and (exported / "dataset").is_dir():
        log.info("resuming on the rows exported when the run started: %s", exported)
        data_args = dataclasses.replace(data_args, campaign=None, dataset=str(exported))
    data = load_run_data(data_args, engine=engine, data_dir=exported)
    if data_args.dataset is not None and Path(data_args.dataset).is_dir():  # a Concord export keeps its lineage
        data.export_ids = export_ids_for_folder(data_args.dataset, engine=engine)
    return data


def _checkpoint(output_dir: Path) -> str | None:
    found = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if found is None:
        log.warning("no checkpoint in %s: the run starts again from its first step", output_dir)
    else:
        log.info("resuming from %s", found)
    return found


def _prepare(recipe_path, data_args, training_args, model_args, *, engine: Engine, resume: bool, run_dir: Path):
    """Main process: the TrainingRun row, the rows, readiness; returns what the other processes need, and the rows."""
    model_path = resolve_model_path(model_args.model_name_or_path, engine=engine)
    sources = {name: getattr(training_args, name) for name in MODEL_FIELDS if hasattr(training_args, name)}
    paths = {name: resolve_model_path(source, engine=engine) for name, source in sources.items()}
    upstream = upstream_export_ids([model_args.model_name_or_path, *sources.values()], engine=engine)
    resolved = resolved_config(data_args, training_args, model_args) | {"model_path": model_path} | paths
    if resume:
        run = resume_run(engine, training_args.run_name, method=data_args.method, resolved=resolved, run_dir=run_dir)
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise FileExistsError(f"{run_dir} already exists and is not empty: choose another run_name (or --resume)")
        run = start_run(engine, TrainingRun(
            name=training_args.run_name, method=data_args.method, data_source=data_args.campaign or data_args.dataset,
            recipe=resolved, recipe_path=str(Path(recipe_path).resolve()), output_path=str(run_dir.resolve()),
        ))  # fmt: skip
    write_resolved(resolved, run_dir)
    log.info("training run #%s %r: %s into %s", run.id, run.name, data_args.method, run_dir)
    try:
        data = _run_data(data_args, engine=engine, run_dir=run_dir, resume=resume)
        export_ids = data.export_ids + [i for i in upstream if i not in data.export_ids]
        run = update_run(engine, run.id, export_ids=export_ids)
        with Session(engine) as session:
            stale_warnings(session=session, run=run, export_ids=export_ids)
        check_readiness(data, data_args, run_dir)
    except BaseException as error:
        fail_run(engine, run.id, error)
        raise
    rows = str(run_dir / "data") if data_args.campaign is not None else data_args.dataset
    summary = {"run_id": run.id, "model_path": model_path, "rows": rows, "paths": paths,
               "resume_from": _checkpoint(run_dir / "model") if resume else None}  # fmt: skip
    return summary, data


def train(
    recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, engine: Engine | None = None,
    resume: bool = False,
) -> TrainingRun | None:  # fmt: skip
    """Run the recipe with ``overrides`` (``--key value``); returns the finished TrainingRun (None on the processes
    other than the main one), or raises and marks it failed. ``resume`` continues the run named by run_name from its
    last checkpoint. ``engine`` defaults to the recipe's database_url ($CONCORD_DATABASE_URL)."""
    data_args, training_args, model_args = parse_recipe(recipe_path, overrides)
    models = {"model_name_or_path": model_args.model_name_or_path}
    models |= {name: getattr(training_args, name) for name in MODEL_FIELDS if hasattr(training_args, name)}
    for name, value in models.items():
        if not value:
            raise ValueError(f"{recipe_path}: {name} is not set (a hub id, a folder, run:NAME or pkg:NAME)")
    check_loadable(model_args)
    main = training_args.process_index == 0  # also sets up the processes' group under accelerate launch
    if training_args.world_size > 1:  # the default run_name holds the time: every process takes the main one's
        names = [training_args.run_name]
        broadcast_object_list(names)
        training_args.run_name = names[0]
    run_dir = Path(data_args.output_root) / training_args.run_name
    training_args.output_dir = str(run_dir / "model")
    if main and engine is None:
        engine = make_engine(data_args.database_url)
        upgrade_database(engine)
    prepare = functools.partial(_prepare, recipe_path, data_args, training_args, model_args, engine=engine,
                                resume=resume, run_dir=run_dir)  # fmt: skip
    summary, data = _on_main(training_args, prepare)
    model_args.model_name_or_path = summary["model_path"]
    for name, path in summary["paths"].items():
        setattr(training_args, name, path)
    training_args.resume_from_checkpoint = summary["resume_from"]
    dataset = data.dataset if main else from_folder_or_name(summary["rows"])[0]
    if ("test" not in dataset or not dataset["test"].num_rows) and training_args.eval_strategy != IntervalStrategy.NO:
        log.warning("no held-out rows: evaluation during training is off (the recipe's eval_strategy is %s)",
                    training_args.eval_strategy.value)  # fmt: skip
        training_args.eval_strategy = IntervalStrategy.NO
    # Imported only now: a run whose data is not ready never loads torch's model code.
    method = importlib.import_module(f"alignment.{data_args.method}")
    # Seeded before any model is built: TRL seeds only when its Trainer starts, after a reward head is initialised.
    set_seed(training_args.seed)
    try:
        metrics = method.main(data_args, training_args, model_args, dataset)
    except BaseException as error:
        if main:
            fail_run(engine, summary["run_id"], error)
        raise
    _leave_group(training_args)
    if not main:
        return None
    finished = finish_run(engine, summary["run_id"], metrics)
    if data_args.method == "reward" and data_args.campaign is not None:
        from alignment.score import refresh_queue_scores  # a campaign whose queue follows the reward model

        refresh_queue_scores(engine=engine, campaign=data_args.campaign, run=finished.name)
    return finished
