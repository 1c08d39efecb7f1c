"""Parsed records -> database rows: one import is one transaction, and a bad record anywhere writes nothing."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from storage.db import write_session
from storage.formats import ImportFailed, Parsed, PromptRecord, canonical_json, parse_file
from storage.models import (
    AuditEvent,
    CalibrationItem,
    CalibrationItemCreate,
    CalibrationKind,
    Campaign,
    CampaignCreate,
    CampaignKind,
    Demonstration,
    DemonstrationCreate,
    Pair,
    Prompt,
    Response,
    utcnow,
)

__all__ = ["KNOWN_AS", "ImportFailed", "ImportReport", "import_file"]

log = logging.getLogger(__name__)

KNOWN_AS = ("prior", "calibration", "none")
"""What a label known at import time becomes: Pair.prior_preference, also a CalibrationItem, or nothing."""


@dataclass
class ImportReport:
    file: str
    campaign: str
    format: str
    prompts: int = 0
    responses: int = 0
    pairs: int = 0
    demonstrations: int = 0
    calibration_items: int = 0
    duplicates: int = 0  # records already in the campaign (or earlier in the same file), skipped
    identical_dropped: int = 0  # pairs whose two responses were the same, skipped with drop_identical

    def summary(self) -> str:
        """One paragraph for the command line and the log."""
        return (
            f"Imported {self.file} ({self.format}) into campaign {self.campaign!r}: {self.prompts} prompts, "
            f"{self.responses} responses, {self.pairs} pairs, {self.demonstrations} demonstrations and "
            f"{self.calibration_items} calibration items created; {self.duplicates} duplicates skipped, "
            f"{self.identical_dropped} pairs with identical responses dropped."
        )


def import_file(
    path: str | Path,
    *,
    engine: Engine,
    campaign: str,
    fmt: str | None = None,
    known_as: str = "prior",
    drop_identical: bool = False,
    source: str | None = None,
    license: str | None = None,
    actor_id: int | None = None,
) -> ImportReport:
    """Parse all of ``path`` (a file, dataset folder or dataset name), then write it in one transaction."""
    if known_as not in KNOWN_AS:
        raise ValueError(f"known_as must be one of {KNOWN_AS}, got {known_as!r}")
    parsed = parse_file(path, fmt, drop_identical=drop_identical)
    report = ImportReport(str(path), campaign, parsed.format, identical_dropped=parsed.identical_dropped)
    with write_session(engine) as session, session.begin():
        _write_records(session, parsed, report, known_as=known_as, source=source, license=license)
        session.add(AuditEvent(actor_id=actor_id, action="import", target=campaign, details=asdict(report)))
    log.info(report.summary())
    return report


def _write_records(session: Session, parsed: Parsed, report: ImportReport, *, known_as, source, license) -> None:
    """Write ``parsed`` into ``report.campaign`` (created if missing), counting into ``report``."""
    campaign = _campaign(session, report.campaign, parsed)
    now = utcnow()

    def provenance(prompt: PromptRecord) -> dict[str, Any]:
        # The user's option wins, then what the record says, then the file or dataset name.
        return {
            "source": source or prompt.source or parsed.name,
            "license": license or prompt.license,
            "created_at": now,
        }

    prompt_ids = _write_prompts(session, campaign, parsed, report, provenance)
    pairs = _write_pairs(session, campaign, parsed, report, prompt_ids, provenance, keep_label=known_as != "none")
    if known_as == "calibration":
        items = [_calibration_item(pair) for pair in pairs if pair.prior_preference is not None]
        session.add_all(items)
        report.calibration_items = len(items)
    _write_demonstrations(session, campaign, parsed, report, prompt_ids, provenance)
    session.flush()


def _campaign(session: Session, name: str, parsed: Parsed) -> Campaign:
    """Find or create the campaign; a campaign that now holds pairs and demonstrations becomes ``both``."""
    writing = bool(parsed.demonstrations) or not parsed.pairs  # bare prompts are there for people to answer
    kind = (CampaignKind.both if writing else CampaignKind.preference) if parsed.pairs else CampaignKind.demonstration
    found = session.exec(select(Campaign).where(Campaign.name == name)).first()
    if found is None:
        found = Campaign.model_validate(CampaignCreate(name=name, kind=kind))
        session.add(found)
    elif found.kind != kind and (parsed.pairs or parsed.demonstrations):  # bare prompts change no campaign's kind
        found.kind = CampaignKind.both
    session.flush()
    return found


def _write_prompts(session, campaign, parsed, report, provenance) -> dict[str, int]:
    """Content hash -> id of every prompt the import needs: the campaign's own, and new rows for the rest."""
    ids = dict(session.exec(select(Prompt.content_hash, Prompt.id).where(Prompt.campaign_id == campaign.id)).all())
    seen = set(ids)
    for record in parsed.prompts:
        report.duplicates += record.content_hash in seen
        seen.add(record.content_hash)
    new: dict[str, Prompt] = {}
    for record in [*parsed.prompts, *(r.prompt for r in parsed.pairs), *(r.prompt for r in parsed.demonstrations)]:
        if record.content_hash not in ids and record.content_hash not in new:
            new[record.content_hash] = Prompt(
                campaign_id=campaign.id,
                messages=record.messages,
                domain=record.domain,
                content_hash=record.content_hash,
                **provenance(record),
            )
    session.add_all(new.values())
    session.flush()
    report.prompts = len(new)
    return ids | {key: prompt.id for key, prompt in new.items()}


def _write_pairs(session, campaign, parsed, report, prompt_ids, provenance, *, keep_label: bool) -> list[Pair]:
    """New pairs and their responses; a pair already in the campaign, in either order, is a duplicate."""
    existing = set(session.exec(select(Pair.content_hash).where(Pair.campaign_id == campaign.id)).all())
    responses: dict[tuple[int, str, str], Response] = {}  # OASST siblings share a response across their pairs
    todo = []
    for record in parsed.pairs:
        if record.content_hash in existing:
            report.duplicates += 1
            continue
        existing.add(record.content_hash)
        prompt_id = prompt_ids[record.prompt.content_hash]
        sides = ((record.model_a, record.response_a), (record.model_b, record.response_b))
        keys = [(prompt_id, model or "unknown", text) for model, text in sides]
        for key in keys:
            if key not in responses:
                responses[key] = Response(prompt_id=key[0], author=key[1], text=key[2], **provenance(record.prompt))
        todo.append((record, *keys))
    session.add_all(responses.values())
    session.flush()
    pairs = [
        Pair(
            campaign_id=campaign.id,
            prompt_id=a[0],
            response_a_id=responses[a].id,
            response_b_id=responses[b].id,
            prior_preference=r.preference if keep_label else None,
            content_hash=r.content_hash,
            **provenance(r.prompt),
        )
        for r, a, b in todo
    ]
    session.add_all(pairs)
    session.flush()
    report.responses, report.pairs = len(responses), len(pairs)
    return pairs


def _calibration_item(pair: Pair) -> CalibrationItem:
    """Expect the known direction at strength 1 and accept either strength of it; a known tie accepts -1..1."""
    direction = (pair.prior_preference > 0) - (pair.prior_preference < 0)
    accepted = [-1, 0, 1] if direction == 0 else [direction, 2 * direction]
    said = "rated the two responses equal" if direction == 0 else f"preferred response {'AB'[direction > 0]}"
    item = CalibrationItemCreate(
        pair_id=pair.id,
        expected=direction,
        accepted=accepted,
        kind=CalibrationKind.factual_priority,
        explanation=f"Label from the import source {pair.source!r}, which {said}.",
    )
    return CalibrationItem.model_validate(item)


def _write_demonstrations(session, campaign, parsed, report, prompt_ids, provenance) -> None:
    """Human-written replies; one with the same prompt and text as a demonstration already there is a duplicate."""
    query = select(Demonstration.prompt_id, Demonstration.messages).join(Prompt, Prompt.id == Demonstration.prompt_id)
    seen = {(pid, canonical_json(m)) for pid, m in session.exec(query.where(Prompt.campaign_id == campaign.id))}
    demonstrations = []
    for record in parsed.demonstrations:
        prompt_id, messages = prompt_ids[record.prompt.content_hash], [{"role": "assistant", "content": record.text}]
        if (prompt_id, canonical_json(messages)) in seen:
            report.duplicates += 1
            continue
        seen.add((prompt_id, canonical_json(messages)))
        demonstration = DemonstrationCreate(prompt_id=prompt_id, messages=messages)
        demonstrations.append(Demonstration.model_validate(demonstration, update=provenance(record.prompt)))
    session.add_all(demonstrations)
    report.demonstrations = len(demonstrations)
