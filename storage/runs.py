"""Training runs as the studio's Runs tab and ``launch.py runs`` list them: each TrainingRun with its campaigns, its
state and its lineage (exports, judgments, raters by pseudonym, guideline versions).

A run belongs to a campaign when it trained on that campaign (``data_source``) or on any export of it, its own or
an upstream run's (a PPO policy from a reward run). Its state is the row's status, except that a row still
``running`` whose process, started from the studio on this machine (an AuditEvent ``run.start`` records the pid),
is gone reads ``interrupted``: the process died without a word (killed, out of memory, the machine restarted).
A run started from the command line has no recorded process, so its row is all there is to go by.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from storage.models import AuditEvent, Campaign, ExportRecord, TrainingRun, User

START = "run.start"  # a training run started from the studio: run_name, pid, host, log, campaign_id
JOB = "run.job"  # work on a finished run started from the studio (eval, score): kind, run_name, pid, host, log
STOP = "run.stop"  # a lead stopped a run: run_name
RECENT_EVENTS = 500  # how far back the audit is read for processes: older ones ended long ago
SHOWN_RATERS = 6
COLUMNS = ("run", "method", "model", "campaign", "state", "metrics", "exports", "judgments", "raters", "guidelines",
           "started (UTC)")  # fmt: skip


@dataclass(frozen=True)
class Lineage:
    """What a run learned from, through its exports."""

    exports: list[str] = field(default_factory=list)  # "#3 reward of tiny (20 rows)"
    judgments: int | None = None  # judgments behind the exported rows; None when an export's files are gone
    raters: list[str] = field(default_factory=list)  # pseudonyms, never names
    guideline_versions: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class RunRow:
    """One run as listed."""

    name: str
    method: str
    model: str  # model_name_or_path as given (run:NAME, pkg:NAME, a hub id, a folder's name)
    campaigns: list[str]
    state: str  # running | finished | failed | stopped | interrupted
    stale: bool  # data it learned from was erased since
    metrics: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    output_path: str
    lineage: Lineage

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"started_at": self.started_at.isoformat(),
                               "finished_at": self.finished_at.isoformat() if self.finished_at else None}  # fmt: skip


def process_alive(pid: int, marker: str, host: str | None = None) -> bool:
    """Whether process ``pid`` still runs with ``marker`` (a run name) as one of its arguments, so a reused pid is
    told apart. A process on another machine (``host``) cannot be seen from here: it counts as alive."""
    if host and host != socket.gethostname():
        return True
    if Path("/proc/self/cmdline").exists():  # Linux: a zombie's command line is empty
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return marker.encode() in arguments
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def studio_events(*, session: Session, actions: tuple[str, ...] = (START, JOB, STOP)) -> list[AuditEvent]:
    """The recent AuditEvents of runs started, worked on and stopped from the studio, newest first."""
    query = select(AuditEvent).where(col(AuditEvent.action).in_(actions)).order_by(col(AuditEvent.id).desc())
    return list(session.exec(query.limit(RECENT_EVENTS)))


def run_state(status: str, started: dict[str, Any] | None) -> str:
    """The state to show for a row's ``status`` and its ``run.start`` details (None: not started from the studio).
    A run marks its row finished or failed a moment before its process writes its last lines and ends: until the
    process on this machine ends it still shows running, so a view that stops refreshing has the whole log."""
    if started is None or status not in ("running", "finished", "failed"):
        return status
    here = started.get("host") in (None, socket.gethostname())
    alive = process_alive(started["pid"], started["run_name"], started.get("host"))
    if status == "running":
        return "running" if alive else "interrupted"
    return "running" if alive and here else status


def campaign_export_ids(*, session: Session, campaign_id: int) -> set[int]:
    return set(session.exec(select(ExportRecord.id).where(ExportRecord.campaign_id == campaign_id)))


def runs_for(*, session: Session, campaign_id: int | None = None) -> list[TrainingRun]:
    """Every run, newest first; with ``campaign_id`` only the campaign's (see the module docstring)."""
    runs = session.exec(select(TrainingRun).order_by(col(TrainingRun.id).desc())).all()
    if campaign_id is None:
        return list(runs)
    name = session.get(Campaign, campaign_id).name
    exports = campaign_export_ids(session=session, campaign_id=campaign_id)
    return [run for run in runs if run.data_source == name or exports.intersection(run.export_ids)]


def run_campaign_ids(*, session: Session, run: TrainingRun) -> set[int]:
    """The campaigns a run belongs to."""
    ids = set(session.exec(select(ExportRecord.campaign_id).where(col(ExportRecord.id).in_(run.export_ids or [-1]))))
    named = session.exec(select(Campaign.id).where(Campaign.name == run.data_source)).first()
    return ids | ({named} if named is not None else set())


@functools.lru_cache(maxsize=256)
def _judgments_in(folder: str, modified: float) -> int | None:
    import pyarrow.parquet as pq

    files = sorted((Path(folder) / "parquet").glob("*.parquet"))
    if not files:
        return None
    total = 0
    for path in files:
        if "n_judgments" in pq.read_schema(path).names:
            total += int(pq.read_table(path, columns=["n_judgments"]).column(0).to_numpy().sum())
    return total


def export_judgments(out_path: str) -> int | None:
    """How many judgments stand behind an export's rows (its ``n_judgments`` column); None when its files are gone."""
    folder = Path(out_path) / "parquet"
    if not out_path or not folder.is_dir():
        return None
    return _judgments_in(out_path, folder.stat().st_mtime)


def lineage_of(*, session: Session, export_ids: list[int]) -> Lineage:
    """The exports a run learned from, the judgments and raters (by pseudonym) behind them, guideline versions."""
    query = select(ExportRecord, Campaign.name).join(Campaign).where(col(ExportRecord.id).in_(export_ids or [-1]))
    records = session.exec(query.order_by(ExportRecord.id)).all()
    rater_ids = sorted({r for record, _ in records for r in record.rater_ids})
    pseudonyms = dict(session.exec(select(User.id, User.pseudonym).where(col(User.id).in_(rater_ids or [-1]))).all())
    counts = [export_judgments(record.out_path) for record, _ in records]
    return Lineage(
        exports=[f"#{r.id} {r.kind} of {name} ({r.row_count:,} rows{', stale' if r.stale else ''})"
                 for r, name in records],
        judgments=None if None in counts else sum(counts),
        raters=[pseudonyms[r] for r in rater_ids if r in pseudonyms],
        guideline_versions=sorted({v for record, _ in records for v in record.guideline_versions}),
    )  # fmt: skip


def model_of(run: TrainingRun) -> str:
    """The model a run started from, as given; a local folder by its name."""
    given = str(run.recipe.get("model", {}).get("model_name_or_path") or run.recipe.get("model_path") or "")
    return Path(given).name if given.startswith("/") else given


def run_rows(*, session: Session, campaign_id: int | None = None) -> list[RunRow]:
    """The runs (of one campaign, or all), newest first, each with its state and lineage."""
    events = reversed(studio_events(session=session, actions=(START,)))  # oldest first: the newest start wins
    started = {e.details.get("run_name"): e.details for e in events}
    names = dict(session.exec(select(Campaign.id, Campaign.name)).all())
    rows = []
    for run in runs_for(session=session, campaign_id=campaign_id):
        campaigns = sorted(names[i] for i in run_campaign_ids(session=session, run=run))
        rows.append(RunRow(
            name=run.name, method=run.method, model=model_of(run), campaigns=campaigns,
            state=run_state(run.status, started.get(run.name)), stale=run.stale, metrics=run.metrics,
            started_at=run.started_at, finished_at=run.finished_at, output_path=run.output_path,
            lineage=lineage_of(session=session, export_ids=run.export_ids),
        ))  # fmt: skip
    return rows


def headline(metrics: dict[str, Any], width: int = 120) -> str:
    """A run's scalar metrics in one short line (a failed run: its error)."""
    if "error" in metrics:
        return str(metrics["error"])[:width]
    scalars = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and k != "max_length"]  # fmt: skip
    text = ", ".join(scalars)
    return text if len(text) <= width else text[: width - 1] + "…"


def raters_text(raters: list[str]) -> str:
    shown = ", ".join(raters[:SHOWN_RATERS])
    return shown + (f" +{len(raters) - SHOWN_RATERS} more" if len(raters) > SHOWN_RATERS else "")


def table_row(row: RunRow) -> dict[str, str]:
    """One run as the Runs tab's and the command line's table show it."""
    lineage = row.lineage
    values = (
        row.name, row.method, row.model, ", ".join(row.campaigns) or "-", row.state + (", stale" if row.stale else ""),
        headline(row.metrics), "; ".join(lineage.exports) or "-",
        "?" if lineage.judgments is None else f"{lineage.judgments:,}", raters_text(lineage.raters) or "-",
        ", ".join(f"v{v}" for v in lineage.guideline_versions) or "-", f"{row.started_at:%Y-%m-%d %H:%M}",
    )  # fmt: skip
    return dict(zip(COLUMNS, values, strict=True))


def render_runs(rows: list[RunRow], console) -> None:
    """The runs as a rich table on ``console``; exports by id (``runs_json`` has them in full)."""
    from rich.table import Table

    table = Table(title=f"Training runs ({len(rows)})")
    shown = [c for c in COLUMNS if c != "exports"]
    for name in ["run", "method", "model", "campaign", "state", "exports", *shown[5:]]:
        table.add_column(name, overflow="fold", ratio=3 if name == "metrics" else None)
    styles = {"failed": "red", "interrupted": "red", "stopped": "yellow", "running": "cyan"}
    for row in rows:
        cells = table_row(row)
        cells["exports"] = ", ".join(e.split(" ")[0] for e in row.lineage.exports) or "-"
        table.add_row(*(cells[c] for c in ["run", "method", "model", "campaign", "state", "exports", *shown[5:]]),
                      style=styles.get(row.state))  # fmt: skip
    console.print(table)


def runs_json(rows: list[RunRow]) -> str:
    return json.dumps([row.as_dict() for row in rows], indent=2, default=str)
