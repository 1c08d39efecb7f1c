"""What the Runs tab shows of a campaign's training runs and exports, for its leads and admins. No UI code, no torch.

Everything is read back from the database (TrainingRun rows, ExportRecords, the AuditEvents of runs started and
stopped from the studio: storage.runs) and from the run's folder and log (storage.run_folder), never from the
browser or this process's memory, so a reload or a restarted studio shows the same. A run started from the studio
exists before its row does (the subprocess writes it once its recipe parses): until then its ``run.start`` event
stands for it, ``starting`` while the process lives, else ``failed`` with its log's last line.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from storage import run_folder
from storage.db import data_dir, read_session
from storage.models import ExportRecord, TrainingRun, User
from storage.run_folder import Progress
from storage.runs import (
    COLUMNS,
    JOB,
    START,
    STOP,
    export_judgments,
    process_alive,
    raters_text,
    run_campaign_ids,
    run_rows,
    run_state,
    studio_events,
    table_row,
)
from studio.access import Service

CHILDREN: dict[int, subprocess.Popen] = {}  # pid -> a process this studio started, to reap it and read its code
EXITED: dict[int, int] = {}  # pid -> exit code of a child reaped


def child_environment(engine: Engine) -> dict[str, str]:
    """The environment of a process the studio starts (training, evaluation, scoring, generation), which runs in the
    studio's working directory: the studio's database and data folder, however relative their settings."""
    url = engine.url.render_as_string(hide_password=False)
    return {**os.environ, "CONCORD_DATABASE_URL": url, "CONCORD_DATA_DIR": str(data_dir().resolve()),
            "PYTHONUNBUFFERED": "1"}  # fmt: skip


@dataclass(frozen=True)
class JobView:
    """Work started from the studio: a training run (``train``), an evaluation (``eval``) or a scoring (``score``)."""

    kind: str
    run_name: str
    state: str  # starting | running | finished | failed | stopped | interrupted
    started: str  # ISO time, UTC
    log: str
    message: str = ""  # the log's last line when it failed


@dataclass(frozen=True)
class RunView:
    """One run as its live view shows it."""

    name: str
    method: str
    state: str
    stale: bool
    progress: Progress
    message: str  # why it failed, or how it ended
    log: str  # the path of its log ("" when started from the command line)
    log_tail: str
    history: list[dict[str, Any]]
    readiness: dict[str, Any] | None
    metrics: dict[str, Any] | None
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[JobView] = field(default_factory=list)


@dataclass(frozen=True)
class ExportRow:
    """One export of the campaign, with what the Runs tab's list says of it."""

    export_id: int
    kind: str
    created_at: datetime
    row_count: int
    judgments: int | None
    raters: str  # pseudonyms
    guideline_versions: list[int]
    filters: str
    stale: bool
    made_by: str
    file_name: str


def reap() -> None:
    """Collect the exit codes of this studio's finished children (a zombie would look alive)."""
    for pid, process in list(CHILDREN.items()):
        if process.poll() is not None and CHILDREN.pop(pid, None) is not None:  # another thread may reap it first
            EXITED[pid] = process.returncode


def alive(details: dict[str, Any]) -> bool:
    return process_alive(details["pid"], details["run_name"], details.get("host"))


def _job_state(details: dict[str, Any], stopped: bool) -> tuple[str, str]:
    """State and message of a job without a row to go by: from its process, its stop event and its log."""
    if alive(details):
        return "starting" if details.get("kind", "train") == "train" else "running", ""
    if stopped:
        return "stopped", ""
    last = run_folder.log_tail(details["log"], lines=1)
    if details.get("kind", "train") == "train":
        return "failed", last or "the process ended before its run was recorded"
    code = EXITED.get(details["pid"])
    if code is None:  # started before this studio: its log is all there is
        code = int(any(word in last.lower() for word in ("failed", "error", "traceback")))
    return ("failed", last or f"exit code {code}") if code else ("finished", "")


def _filters_text(filters: dict[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in filters.items() if k not in ("excluded_raters", "flag_settings")]
    if filters.get("excluded_raters"):
        shown.append(f"excluded raters={len(filters['excluded_raters'])}")
    return ", ".join(shown)


def _view(run: TrainingRun, state: str, message: str, log: str, jobs: list[JobView]) -> RunView:
    folder = run.output_path
    records = run_folder.history(folder) if folder else []
    max_steps = run.recipe.get("training", {}).get("max_steps")
    metrics = run.metrics if state in ("finished", "failed") and run.metrics else None
    return RunView(
        name=run.name, method=run.method, state=state, stale=run.stale, message=message, log=log,
        progress=run_folder.progress(records, max_steps), log_tail=run_folder.log_tail(log, lines=15) if log else "",
        history=records, readiness=run_folder.readiness(folder) if folder else None,
        metrics=metrics or (run_folder.final_metrics(folder) if folder else None),
        evaluations=run_folder.evaluations(folder) if folder else {},
        samples=run_folder.samples(folder) if folder else [], jobs=jobs,
    )  # fmt: skip


class RunViewService(Service):
    """Reads of the Runs tab: the campaign's leads and admins only (``_lead_of`` comes from Service)."""

    def _events(self, session: Session, run_name: str) -> tuple[dict | None, list[dict], bool]:
        """The run's newest ``run.start`` details, its jobs (newest first) and whether it was stopped."""
        events = [e for e in studio_events(session=session) if e.details.get("run_name") == run_name]
        start = next((e.details for e in events if e.action == START), None)
        jobs = [e.details for e in events if e.action == JOB]
        return start, jobs, any(e.action == STOP for e in events)

    def _run_of(self, session: Session, actor_id: int, campaign_id: int, run_name: str):
        """The campaign's run ``run_name``: its row (None while it starts) and its events; LookupError if the
        campaign has no such run (or the user may not lead the campaign: PermissionDenied)."""
        self._lead_of(session, actor_id, campaign_id)
        name = (run_name or "").strip()
        if not name:
            raise LookupError("Pick a run first.")
        run = session.exec(select(TrainingRun).where(TrainingRun.name == name)).first()
        start, jobs, stopped = self._events(session, name)
        ours = run is not None and campaign_id in run_campaign_ids(session=session, run=run)
        ours = ours or (run is None and start is not None and start.get("campaign_id") == campaign_id)
        if not ours:
            raise LookupError(f"This campaign has no training run called {name!r}.")
        return run, start, jobs, stopped

    def _read_run(self, actor_id: int, campaign_id: int, run_name: str) -> tuple:
        with read_session(self.engine) as session:
            run, start, jobs, stopped = self._run_of(session, actor_id, campaign_id, run_name)
            if run is not None:
                session.expunge(run)
        return run, start, jobs, stopped

    def run_view(self, actor_id: int, campaign_id: int, run_name: str) -> RunView:
        """The live view of one of the campaign's runs: state, progress and ETA, curves, readiness, metrics,
        evaluations, samples, the log's tail and the jobs started on it."""
        reap()
        run, start, jobs, stopped = self._read_run(actor_id, campaign_id, run_name)
        if run is None and not alive(start):  # it may have recorded its run and ended since the read: read again
            run, start, jobs, stopped = self._read_run(actor_id, campaign_id, run_name)
        if run is None:  # started, not recorded yet: its event is all there is
            state, message = _job_state(start, stopped)
            run = TrainingRun(name=start["run_name"], method=start.get("method", ""), output_path=start["run_dir"],
                              status=state)  # fmt: skip
        else:
            state, message = run_state(run.status, start), ""
            if state == "failed":
                message = str(run.metrics.get("error", ""))
            elif state == "interrupted":
                message = "its process ended without marking the run finished or failed (killed, or it crashed)"
        log = start["log"] if start else ""
        return _view(run, state, message or (run_folder.log_tail(log, lines=1) if state == "failed" else ""), log,
                     [self._job_view(j) for j in jobs])  # fmt: skip

    @staticmethod
    def _job_view(details: dict[str, Any]) -> JobView:
        state, message = _job_state(details, stopped=False)
        return JobView(details["kind"], details["run_name"], state, details.get("started", ""), details["log"],
                       message)  # fmt: skip

    def _pending(self, session: Session, campaign_id: int, known: set[str]) -> list[dict[str, Any]]:
        """The campaign's runs started from the studio that have no row (yet): ``run.start`` details, newest first."""
        seen, pending = set(known), []
        for event in studio_events(session=session, actions=(START,)):
            d = event.details
            if d.get("campaign_id") == campaign_id and d.get("run_name") not in seen:
                seen.add(d["run_name"])
                pending.append(d)
        return pending

    def run_names(self, actor_id: int, campaign_id: int) -> list[str]:
        """The campaign's runs, newest first: rows, and runs still starting."""
        return [row["run"] for row in self.past_runs(actor_id, campaign_id)]

    def past_runs(self, actor_id: int, campaign_id: int) -> list[dict[str, str]]:
        """The campaign's runs as table rows (storage.runs.table_row), newest first; runs without a row yet first."""
        reap()
        with read_session(self.engine) as session:
            self._lead_of(session, actor_id, campaign_id)
            rows = [table_row(r) for r in run_rows(session=session, campaign_id=campaign_id)]
            pending = self._pending(session, campaign_id, {r["run"] for r in rows})
            stops = {e.details.get("run_name") for e in studio_events(session=session, actions=(STOP,))}
        blank = dict.fromkeys(COLUMNS, "-")
        early = [blank | {"run": d["run_name"], "method": d.get("method", "-"), "state": _job_state(d, d["run_name"]
                 in stops)[0], "started (UTC)": d.get("started", "")[:16].replace("T", " ")}
                 for d in pending]  # fmt: skip
        return early + rows

    def past_exports(self, actor_id: int, campaign_id: int) -> list[ExportRow]:
        """The campaign's exports, newest first: filters, counts, raters by pseudonym, stale marks."""
        from studio.exports import _zip_name  # the same file name the Export tab's links give

        with read_session(self.engine) as session:
            self._lead_of(session, actor_id, campaign_id)
            query = (select(ExportRecord, User.username).join(User, col(ExportRecord.created_by) == User.id,
                     isouter=True).where(ExportRecord.campaign_id == campaign_id)
                     .order_by(col(ExportRecord.id).desc()))  # fmt: skip
            records = session.exec(query).all()
            ids = sorted({r for record, _ in records for r in record.rater_ids})
            pseudonyms = dict(session.exec(select(User.id, User.pseudonym).where(col(User.id).in_(ids or [-1]))).all())
        return [ExportRow(
            export_id=record.id, kind=record.kind, created_at=record.created_at, row_count=record.row_count,
            judgments=export_judgments(record.out_path), guideline_versions=list(record.guideline_versions),
            raters=raters_text([pseudonyms[r] for r in record.rater_ids if r in pseudonyms]),
            filters=_filters_text(record.filters), stale=record.stale, made_by=username or "command line or a run",
            file_name=_zip_name(record),
        ) for record, username in records]  # fmt: skip

    def export_card(self, actor_id: int, campaign_id: int, export_id: int) -> str:
        """The dataset card (README.md) of one of the campaign's exports."""
        with read_session(self.engine) as session:
            self._lead_of(session, actor_id, campaign_id)
            record = session.get(ExportRecord, int(export_id))
            if record is None or record.campaign_id != campaign_id:
                raise LookupError(f"This campaign has no export #{export_id}.")
            card = Path(record.out_path) / "README.md"
        if not card.is_file():
            raise LookupError(f"The files of export #{export_id} are no longer on the server.")
        return card.read_text(encoding="utf-8")
