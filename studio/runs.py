"""Training started by a lead from the studio, and work on a finished run. No UI code, no torch.

``start_run`` runs ``launch.py train RECIPE --campaign NAME --run_name NAME --output_root ... [--key value ...]`` as
a subprocess in a process group of its own, with the database URL in its environment (never on its command line),
its output in ``$CONCORD_DATA_DIR/training/<run>.log`` and its folder in ``$CONCORD_DATA_DIR/runs/<run>/``, and
returns at once; an AuditEvent ``run.start`` records the command, pid, host and log, so the run survives a browser
reload and a restarted studio (studio.run_views reads it all back). At most ``$CONCORD_MAX_RUNS`` (default 2)
processes started here run at once, evaluations and scorings included. ``stop_run`` sends the group SIGTERM, then
SIGKILL after a grace period, and marks the row ``stopped``.

On a finished run: ``evaluate_run`` (``launch.py eval RUN``: its own held-out rows again, or with ``--pairs`` the test
split of one of the campaign's preference exports), ``judge_with_run`` (``launch.py score --campaign NAME --run RUN``:
a reward model scores the campaign's pairs for active selection) and ``generator_spec`` (``NAME=run:NAME`` for the
Generate tab).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from sqlmodel import Session, select

from storage.db import data_dir, read_session
from storage.models import AuditEvent, ExportRecord, TrainingRun, utcnow
from storage.runs import JOB, START, STOP, studio_events
from studio.run_views import CHILDREN, EXITED, JobView, RunView, RunViewService, alive, child_environment, reap
from studio.validation import ValidationFailed

PROJECT = Path(__file__).resolve().parents[1]
RECIPES = PROJECT / "recipes"
UPLOADED = "uploaded/"
MAX_RECIPE_BYTES = 64_000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
RESERVED = {"campaign", "dataset", "database_url", "output_root", "output_dir", "run_name", "resume"}
POLICIES = ("majority", "mean", "weighted")
GRACE_S = 10.0
_starting = threading.Lock()  # the check of the limit and the start are one step


@dataclass(frozen=True)
class RunOptions:
    """The export options of a run started from the studio; None leaves the recipe's value."""

    policy: str | None = None
    min_agreement: float | None = None
    test_fraction: float | None = None
    exclude_flagged_raters: bool = False

    def flags(self) -> list[str]:
        if self.policy not in (None, "", *POLICIES):
            raise ValidationFailed(f"Combine judgments by one of {', '.join(POLICIES)}.")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ValidationFailed("The minimum agreement is a share between 0 and 1.")
        if self.test_fraction is not None and not 0 <= self.test_fraction < 1:
            raise ValidationFailed("The test split is a share from 0 up to (not including) 1.")
        values = {"policy": self.policy or None, "min_agreement": self.min_agreement,
                  "test_fraction": self.test_fraction, "exclude_flagged_raters": "true" if self.exclude_flagged_raters
                  else None}  # fmt: skip
        return [arg for key, value in values.items() if value is not None for arg in (f"--{key}", str(value))]


def max_runs() -> int:
    """How many processes started from the studio may run at once: ``$CONCORD_MAX_RUNS``, default 2."""
    return max(1, int(os.environ.get("CONCORD_MAX_RUNS", "2")))


def training_command(recipe: Path, campaign: str, run_name: str, output_root: Path, flags: list[str]) -> list[str]:
    """The ``launch.py train`` command line (tests may swap it)."""
    return [sys.executable, str(PROJECT / "launch.py"), "train", str(recipe), "--campaign", campaign, "--dataset", "",
            "--run_name", run_name, "--output_root", str(output_root), *flags]  # fmt: skip


def evaluation_command(run_name: str, pairs: Path | None) -> list[str]:
    """``launch.py eval RUN`` (its held-out rows), or with ``--pairs`` a preference file."""
    extra = ["--pairs", str(pairs)] if pairs else []
    return [sys.executable, str(PROJECT / "launch.py"), "eval", run_name, *extra]


def scoring_command(campaign: str, run_name: str) -> list[str]:
    """``launch.py score``: the run's reward model scores the campaign's pairs (tests swap it)."""
    return [sys.executable, str(PROJECT / "launch.py"), "score", "--campaign", campaign, "--run", run_name]


def folder(name: str) -> Path:
    """``$CONCORD_DATA_DIR/<name>/``, absolute, made if missing."""
    path = (data_dir() / name).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_overrides(text: str) -> list[str]:
    """``--key value`` pairs typed by a lead; the keys the studio sets itself are refused."""
    try:
        words = shlex.split(text or "")
    except ValueError as error:
        raise ValidationFailed(f"The overrides do not parse: {error}.") from None
    if len(words) % 2:
        raise ValidationFailed("Write the overrides as --key value pairs, e.g. --max_steps 20 --learning_rate 1e-4.")
    for key in words[::2]:
        if not re.fullmatch(r"--[a-z][a-z0-9_]*", key):
            raise ValidationFailed(f"{key!r} is not an option: write --key value pairs.")
        if key[2:] in RESERVED:
            raise ValidationFailed(f"{key} is set by the studio: {', '.join(sorted(RESERVED))} cannot be overridden.")
    return words


def _terminate(pid: int, grace_s: float) -> None:
    """SIGTERM to the process group, SIGKILL if it still runs after ``grace_s``; returns once it is gone."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process = CHILDREN.get(pid)
        if (process.poll() is not None) if process else not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if (process := CHILDREN.pop(pid, None)) is not None:
        EXITED[pid] = process.wait(timeout=30)


class RunsService(RunViewService):
    """Start and stop runs, and work on finished ones: the campaign's leads and admins only."""

    def recipes(self, actor_id: int, campaign_id: int) -> list[str]:
        """The recipes a run can start from: the project's (recipes/**.yaml, hardware configs aside) and uploaded
        ones (``$CONCORD_DATA_DIR/recipes/``)."""
        self._transaction(lambda session: self._lead_of(session, actor_id, campaign_id))
        found = [str(p.relative_to(PROJECT)) for p in sorted(RECIPES.rglob("*.yaml")) if "accelerate" not in p.parts]
        return found + [UPLOADED + p.name for p in sorted(folder("recipes").glob("*.yaml"))]

    @staticmethod
    def _recipe_path(recipe: str) -> Path:
        recipe = (recipe or "").strip()
        if not recipe:
            raise ValidationFailed("Pick a recipe (or upload one).")
        if recipe.startswith(UPLOADED):
            path = folder("recipes") / recipe.removeprefix(UPLOADED)
        else:
            path = PROJECT / recipe
        allowed = path.resolve().parent == folder("recipes") or RECIPES in path.resolve().parents
        if not allowed or path.suffix != ".yaml" or not path.is_file() or "accelerate" in path.parts:
            raise ValidationFailed(f"There is no recipe {recipe!r}: pick one from the list.")
        return path.resolve()

    def save_recipe(self, actor_id: int, campaign_id: int, file_name: str, content: bytes) -> str:
        """Keep an uploaded recipe under ``$CONCORD_DATA_DIR/recipes/``; returns its name in the recipe list. It must
        be a YAML mapping naming its ``method``; keys the studio sets (database_url) are refused."""
        name = self._transaction(lambda session: self._lead_of(session, actor_id, campaign_id)[1].name)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(file_name or "").stem).strip("-.")
        if not stem or Path(file_name).suffix not in (".yaml", ".yml"):
            raise ValidationFailed("Upload a recipe as a .yaml file.")
        if len(content) > MAX_RECIPE_BYTES:
            raise ValidationFailed(f"A recipe is a short YAML file: this one is over {MAX_RECIPE_BYTES:,} bytes.")
        try:
            recipe = yaml.safe_load(content.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as error:
            raise ValidationFailed(f"The recipe is not YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(recipe, dict) or not isinstance(recipe.get("method"), str):
            raise ValidationFailed("A recipe is a YAML mapping with a method (sft, reward, dpo, kto, ppo, ...).")
        if "database_url" in recipe:
            raise ValidationFailed("A recipe started from the studio uses the studio's database: drop database_url.")
        path = folder("recipes") / f"{stem}.yaml"
        if path.exists():
            raise ValidationFailed(f"A recipe called {path.name} was uploaded already: rename the file.")
        path.write_bytes(content)
        details = {"campaign_id": campaign_id, "path": str(path), "method": recipe["method"]}
        self._transaction(lambda session: session.add(AuditEvent(actor_id=actor_id, action="recipe.upload",
                                                                 target=name, details=details)))  # fmt: skip
        return UPLOADED + path.name

    def _check_name(self, session: Session, run_name: str) -> None:
        if not NAME.fullmatch(run_name):
            raise ValidationFailed("A run name is letters, digits, '.', '_' or '-' (up to 96), starting with a letter "
                                   "or digit.")  # fmt: skip
        taken = session.exec(select(TrainingRun.id).where(TrainingRun.name == run_name)).first() is not None
        started = any(e.details.get("run_name") == run_name for e in studio_events(session=session, actions=(START,)))
        if taken or started or (folder("runs") / run_name).exists():
            raise ValidationFailed(f"A run called {run_name!r} exists already: choose another name.")

    def _spawn(self, actor_id: int, action: str, target: str, command: list[str], log: Path, details: dict) -> dict:
        """Start ``command`` (in its own process group) unless the limit is reached; audit it; its details."""
        reap()
        env = child_environment(self.engine)
        with _starting:
            with read_session(self.engine) as session:
                events = [e.details for e in studio_events(session=session, actions=(START, JOB))]
            running = sum(alive(d) for d in events)
            if running >= max_runs():
                going = f"{running} run is" if running == 1 else f"{running} runs are"
                raise ValidationFailed(f"{going} going already, the most this studio runs at once "
                                       "($CONCORD_MAX_RUNS): wait for one to end, or stop one.")  # fmt: skip
            with log.open("wb") as out:  # the child holds its own copy of the file; ours closes now
                process = subprocess.Popen(command, cwd=Path.cwd(), env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            CHILDREN[process.pid] = process
            details |= {"pid": process.pid, "host": socket.gethostname(), "log": str(log),
                        "command": command[1:], "started": datetime.now(UTC).isoformat()}  # fmt: skip
            self._transaction(lambda session: session.add(AuditEvent(actor_id=actor_id, action=action, target=target,
                                                                     details=details)))  # fmt: skip
        return details

    def start_run(
        self, actor_id: int, campaign_id: int, recipe: str, *, model: str = "", run_name: str = "",
        options: RunOptions | None = None, overrides: str = "",
    ) -> RunView:  # fmt: skip
        """Check, then start ``launch.py train`` on the campaign in the background and return at once."""
        name = self._transaction(lambda session: self._lead_of(session, actor_id, campaign_id)[1].name)
        path = self._recipe_path(recipe)
        method = str((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("method", ""))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "campaign"
        run_name = (run_name or "").strip() or f"{slug}-{method or 'run'}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        flags = (options or RunOptions()).flags() + parse_overrides(overrides)
        if (model or "").strip():
            flags += ["--model_name_or_path", model.strip()]
        with read_session(self.engine) as session:
            self._check_name(session, run_name)
        command = training_command(path, name, run_name, folder("runs"), flags)
        details = {"campaign_id": campaign_id, "run_name": run_name, "method": method, "kind": "train",
                   "recipe": recipe, "run_dir": str(folder("runs") / run_name)}  # fmt: skip
        self._spawn(actor_id, START, run_name, command, folder("training") / f"{run_name}.log", details)
        return self.run_view(actor_id, campaign_id, run_name)

    def stop_run(self, actor_id: int, campaign_id: int, run_name: str, grace_s: float = GRACE_S) -> RunView:
        """Stop a running run: SIGTERM to its process group, SIGKILL after ``grace_s``; its row reads ``stopped``."""
        reap()
        with read_session(self.engine) as session:
            run, start, _, _ = self._run_of(session, actor_id, campaign_id, run_name)
            status = run.status if run else "starting"
        if start is None:
            raise ValidationFailed("This run was started from the command line: stop it where it runs.")
        if start.get("host") != socket.gethostname():
            raise ValidationFailed(f"This run runs on {start.get('host')}: stop it there.")
        if status not in ("running", "starting") or not alive(start):
            raise ValidationFailed(f"Run {start['run_name']!r} is not running.")
        _terminate(start["pid"], grace_s)

        def mark(session: Session) -> None:
            row = session.exec(select(TrainingRun).where(TrainingRun.name == start["run_name"])).first()
            if row is not None and row.status != "finished":  # it may have finished while we waited
                row.status, row.finished_at = "stopped", utcnow()
                session.add(row)
            details = {"run_name": start["run_name"], "pid": start["pid"], "campaign_id": campaign_id}
            session.add(AuditEvent(actor_id=actor_id, action=STOP, target=start["run_name"], details=details))

        self._transaction(mark)
        return self.run_view(actor_id, campaign_id, run_name)

    def _finished(self, actor_id: int, campaign_id: int, run_name: str) -> tuple[TrainingRun, str]:
        def action(session: Session) -> tuple[TrainingRun, str]:
            run, *_ = self._run_of(session, actor_id, campaign_id, run_name)
            if run is None or run.status != "finished":
                raise ValidationFailed(f"Run {run_name!r} has not finished: only a finished run's model is complete.")
            session.expunge(run)
            return run, self._campaign(session, campaign_id).name

        return self._transaction(action)

    def _start_job(self, actor_id: int, campaign_id: int, run: TrainingRun, kind: str, command: list[str]) -> JobView:
        log = folder("training") / f"{run.name}-{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.log"
        details = {"campaign_id": campaign_id, "run_name": run.name, "kind": kind}
        return self._job_view(self._spawn(actor_id, JOB, run.name, command, log, details))

    def evaluate_run(self, actor_id: int, campaign_id: int, run_name: str, export_id: int | None = None) -> JobView:
        """``launch.py eval`` on a finished run: its own held-out rows again, or the test split of the campaign's
        preference or reward export ``export_id`` (a reward model or a DPO policy)."""
        run, _ = self._finished(actor_id, campaign_id, run_name)
        pairs = None
        if export_id not in (None, ""):
            with read_session(self.engine) as session:
                record = session.get(ExportRecord, int(export_id))
            if record is None or record.campaign_id != campaign_id or record.kind not in ("preference", "reward"):
                raise ValidationFailed(f"Evaluate on one of this campaign's preference or reward exports, not "
                                       f"#{export_id}.")  # fmt: skip
            if run.method not in ("reward", "dpo"):
                raise ValidationFailed(f"A {run.method} run scores no pairs: evaluate it on its own held-out rows.")
            pairs = Path(record.out_path) / "jsonl" / "test.jsonl"
            if not pairs.is_file() or not pairs.stat().st_size:
                raise ValidationFailed(f"Export #{record.id} holds no test rows to evaluate on.")
        return self._start_job(actor_id, campaign_id, run, "eval", evaluation_command(run.name, pairs))

    def judge_with_run(self, actor_id: int, campaign_id: int, run_name: str) -> JobView:
        """Score the campaign's pairs with a finished reward run (``launch.py score``), for active selection."""
        run, name = self._finished(actor_id, campaign_id, run_name)
        if run.method != "reward":
            raise ValidationFailed(f"A judge is a reward model: {run.name!r} is a {run.method} run.")
        return self._start_job(actor_id, campaign_id, run, "score", scoring_command(name, run.name))

    def generator_spec(self, actor_id: int, campaign_id: int, run_name: str) -> str:
        """The Generate tab's model spec of a finished policy run: ``NAME=run:NAME``."""
        run, _ = self._finished(actor_id, campaign_id, run_name)
        if run.method == "reward":
            raise ValidationFailed(f"{run.name!r} is a reward model: it scores, it does not write. Use it as a judge.")
        return f"{run.name}=run:{run.name}"
