"""Parsed records -> database rows, all or nothing, without making raters wait.

An import reads its file twice. The first pass checks every record and keeps none of them: a bad record anywhere
fails the import before anything is written. The second pass writes the records in chunks (``chunk_rows``), each
its own short transaction, into a hidden staging campaign, then publishes them into the campaign (storage.staging).
A rater's submit waits for one chunk at most; memory holds one chunk and a few digests per row, never the file."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlmodel import Session

from storage import staging
from storage.db import refresh_statistics
from storage.formats import Records
from storage.formats_files import storable_name
from storage.formats_records import (
    Context,
    DemonstrationRecord,
    ImportArguments,
    ImportFailed,
    PairRecord,
    PromptRecord,
    Record,
    ResponseRecord,
    clean,
)
from storage.import_responses import resolve_prompt_ids, response_digest, response_rows, target_responses
from storage.models import (
    CalibrationItem,
    CalibrationKind,
    Campaign,
    CampaignKind,
    Demonstration,
    Pair,
    Prompt,
    Response,
    utcnow,
)

__all__ = ["KNOWN_AS", "ImportArguments", "ImportFailed", "ImportReport", "import_file"]

log = logging.getLogger(__name__)

KNOWN_AS = ("prior", "calibration", "none")
"""What a label known at import time becomes: Pair.prior_preference, also a CalibrationItem, or nothing."""


@dataclass
class ImportReport:
    file: str
    campaign: str
    format: str
    records: int = 0  # lines or rows read
    prompts: int = 0
    responses: int = 0
    pairs: int = 0
    demonstrations: int = 0
    calibration_items: int = 0
    duplicates: int = 0  # records already in the campaign (or earlier in the same file), skipped
    identical_dropped: int = 0  # pairs whose two responses were the same, skipped with drop_identical
    empty_responses: int = 0  # pairs, demonstrations or responses with an empty or whitespace-only response, kept
    first_empty_line: int | None = None
    models: dict[str, int] = field(default_factory=dict)  # responses written per producer (model), pairs' included
    labels: dict[str, int] = field(
        default_factory=dict
    )  # unpaired responses written per known label ("true", "false")
    ignored_fields: list[str] = field(default_factory=list)  # fields of the file that its format does not read

    def summary(self) -> str:
        """One paragraph for the command line and the log."""
        text = (
            f"Imported {self.file} ({self.format}) into campaign {self.campaign!r}: {self.prompts} prompts, "
            f"{self.responses} responses, {self.pairs} pairs, {self.demonstrations} demonstrations and "
            f"{self.calibration_items} calibration items created; {self.duplicates} duplicates skipped, "
            f"{self.identical_dropped} pairs with identical responses dropped."
        )
        if self.models:
            text += " Responses by model: " + ", ".join(f"{m} {n}" for m, n in sorted(self.models.items())) + "."
        if self.labels:
            text += " Labelled responses (KTO): " + ", ".join(f"{k} {n}" for k, n in sorted(self.labels.items())) + "."
        if self.empty_responses:
            sets = self.format in ("responses", "kto")
            what = "responses are empty" if sets else "pairs or demonstrations have an empty response"
            text += f" Warning: {self.empty_responses} {what} (kept; the first on line {self.first_empty_line})."
        if self.ignored_fields:
            text += f" Warning: fields not read by the {self.format} format: {', '.join(self.ignored_fields)}."
        return text


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
    limits: ImportArguments | None = None,
    model: str | None = None,
) -> ImportReport:
    """Check all of ``path`` (a file, dataset folder or dataset name), then write it into ``campaign`` (created if
    missing) without holding the database for more than one chunk at a time. ``limits``: from the environment;
    ``model``: who wrote a response set's responses when its records do not say."""
    if known_as not in KNOWN_AS:
        raise ValueError(f"known_as must be one of {KNOWN_AS}, got {known_as!r}")
    limits = limits or ImportArguments.from_env()
    _check_options(path, campaign, source=source, license=license)
    records = Records(path, fmt, drop_identical=drop_identical, limits=limits, model=model)
    kinds = {type(record) for record in records}  # the first pass: every record checked, none kept
    report = ImportReport(
        storable_name(str(path)), campaign, records.format, records.rows, identical_dropped=records.identical_dropped,
        empty_responses=records.empty_responses, first_empty_line=records.first_empty_line,
        ignored_fields=sorted(records.ignored_fields),
    )  # fmt: skip
    writer = staging.writer_engine(engine)
    try:
        staging.finish_abandoned(engine=writer, chunk=limits.chunk_rows)
        with staging.transaction(writer) as session:
            job = staging.open_job(session=session, target=campaign, kind=_kind(kinds), actor_id=actor_id)
            target = session.scalars(select(Campaign.id).where(Campaign.name == campaign)).first()
        provenance = {"source": source, "license": license, "name": records.name, "created_at": utcnow(),
                  "path": str(path)}  # fmt: skip
        _stage(
            writer, records, job.id, _Writer(job.campaign_id, target, report, known_as=known_as, provenance=provenance)
        )
        sets_kind = PairRecord in kinds or DemonstrationRecord in kinds  # bare prompts change no campaign's kind
        published = staging.publish(
            engine=writer, job_id=job.id, report=asdict(report), sets_kind=sets_kind, chunk=limits.chunk_rows
        )
        refresh_statistics(writer)
    finally:
        if writer is not engine:
            writer.dispose()
    report = ImportReport(**published)
    log.log(logging.WARNING if report.empty_responses or report.ignored_fields else logging.INFO, report.summary())
    return report


def _kind(kinds: set[type]) -> CampaignKind:
    """What a campaign holding these records is for; bare prompts are there for people to answer, responses to be
    paired and compared."""
    if PairRecord not in kinds and ResponseRecord not in kinds:
        return CampaignKind.demonstration
    return CampaignKind.both if DemonstrationRecord in kinds else CampaignKind.preference


def _stage(engine: Engine, records: Records, job_id: int, writer: _Writer) -> None:
    """The second pass: every record written into the job's staging campaign, a chunk per transaction. On any
    failure the staged rows are deleted, and the database is as it was."""
    chunk_rows = records.limits.chunk_rows
    try:
        for chunk in _chunks(records, chunk_rows):
            with staging.transaction(engine) as session:
                writer.write(session, chunk)
                staging.beat(session=session, job_id=job_id)
        if records.source.changed():
            problem = "changed while it was being imported; nothing was written: import it again"
            raise ImportFailed(records.source.path, problem)
    except BaseException:
        _discard(engine, job_id, chunk_rows)
        raise


def _check_options(path: str | Path, campaign: str, **options: str | None) -> None:
    """The campaign name and the provenance options meet the columns' limits on both engines."""
    ctx = Context(str(path), False, ImportArguments())
    if not isinstance(campaign, str) or not campaign.strip():
        ctx.fail("campaign", "give the campaign a name")
    clean(ctx, "campaign", campaign, 128)
    for key, n in (("source", 256), ("license", 128)):
        if options[key] is not None:
            clean(ctx, key, options[key], n)


def _discard(engine: Engine, job_id: int, chunk: int) -> None:
    try:
        staging.discard(engine=engine, job_id=job_id, chunk=chunk)
    except Exception:  # noqa: BLE001  (the original error matters more; the next import discards the rest)
        log.exception("could not discard the rows staged by a failed import; the next import will")


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _digest(*parts: str | int) -> bytes:
    """16 bytes standing for a row's content: what the writer remembers of each row across chunks. The parts are
    joined with NUL, which no imported text holds."""
    return hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=16).digest()


def _insert(session: Session, model: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` with one executemany; their new ids, in order."""
    if not rows:
        return []
    table = model.__table__
    if session.get_bind().dialect.name != "sqlite":
        return list(session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars())
    # SQLite would insert one row per statement to return ids in order; the chunk's transaction holds the write lock
    # (staging.transaction), so the ids after the largest are ours to give.
    first = (session.scalar(select(func.max(table.c.id))) or 0) + 1
    ids = list(range(first, first + len(rows)))
    session.execute(insert(table), [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
    return ids


def _existing(session: Session, column: Any, campaign: Any, campaign_id: int | None, hashes: set[str]) -> set[str]:
    """Those of ``hashes`` that the campaign already holds (an index lookup each)."""
    if campaign_id is None or not hashes:
        return set()
    ordered, found = sorted(hashes), set()
    for i in range(0, len(ordered), 1000):
        found.update(session.scalars(select(column).where(campaign == campaign_id, column.in_(ordered[i : i + 1000]))))
    return found


class _Writer:
    """Writes chunks of records into the staging campaign, skipping what the target campaign (``target``, None
    when it does not exist yet) or an earlier record already holds, and counting into ``report``."""

    def __init__(self, staged: int, target: int | None, report: ImportReport, *, known_as: str, provenance: dict):
        self.staged, self.target, self.report = staged, target, report
        self.keep_label, self.calibrate, self.provenance = known_as != "none", known_as == "calibration", provenance
        self.prompt_ids: dict[bytes, int] = {}  # every staged prompt
        self.response_ids: dict[bytes, int] = {}  # OASST siblings, and a response in several pairs, share one row
        self.seen: set[bytes] = set()  # bare prompts, pairs and demonstrations of this file so far

    def _row(self, prompt: PromptRecord) -> dict[str, Any]:
        # The user's option wins, then what the record says, then the file or dataset name.
        p = self.provenance
        return {"source": p["source"] or prompt.source or p["name"], "license": p["license"] or prompt.license,
                "created_at": p["created_at"]}  # fmt: skip

    def write(self, session: Session, chunk: list[Record]) -> None:
        resolve_prompt_ids(session, [r for r in chunk if isinstance(r, ResponseRecord)], target=self.target,
                           path=self.provenance["path"], campaign=self.report.campaign)  # fmt: skip
        prompts = {r.content_hash if isinstance(r, PromptRecord) else r.prompt.content_hash for r in chunk}
        in_target = _existing(session, Prompt.content_hash, Prompt.campaign_id, self.target, prompts)
        pairs = {r.content_hash for r in chunk if isinstance(r, PairRecord)}
        pairs_in_target = _existing(session, Pair.content_hash, Pair.campaign_id, self.target, pairs)
        demonstrations_in_target = self._target_demonstrations(session, in_target)
        if any(isinstance(r, ResponseRecord) for r in chunk):
            demonstrations_in_target |= target_responses(session, self.target, in_target)
        needed: dict[bytes, PromptRecord] = {}
        kept_pairs, kept_demonstrations, kept_responses = [], [], []
        for record in chunk:
            if isinstance(record, PromptRecord):
                key, there = _digest("prompt", record.content_hash), record.content_hash in in_target
                self._count_duplicate(key, there)
                if not there:
                    needed.setdefault(_digest(record.content_hash), record)
                continue
            if isinstance(record, PairRecord):
                key, kept = _digest("pair", record.content_hash), kept_pairs
                there = record.content_hash in pairs_in_target
            elif isinstance(record, ResponseRecord):
                key, kept = response_digest(record.prompt.content_hash, record.model, record.text), kept_responses
                there = key in demonstrations_in_target
            else:
                key = _digest("demonstration", record.prompt.content_hash, record.text)
                there, kept = key in demonstrations_in_target, kept_demonstrations
            if not self._count_duplicate(key, there):
                kept.append(record)
                needed.setdefault(_digest(record.prompt.content_hash), record.prompt)
        self._write_prompts(session, needed, in_target)
        self._write_pairs(session, kept_pairs)
        self._write_demonstrations(session, kept_demonstrations)
        self._write_responses(session, kept_responses)

    def _count_duplicate(self, key: bytes, in_target: bool) -> bool:
        duplicate = in_target or key in self.seen
        self.seen.add(key)
        self.report.duplicates += duplicate
        return duplicate

    def _target_demonstrations(self, session: Session, prompts: set[str]) -> set[bytes]:
        if not prompts:
            return set()
        query = select(Prompt.content_hash, Demonstration.messages).join(Prompt, Prompt.id == Demonstration.prompt_id)
        query, ordered, found = query.where(Prompt.campaign_id == self.target), sorted(prompts), set()
        for i in range(0, len(ordered), 1000):
            rows = session.execute(query.where(Prompt.content_hash.in_(ordered[i : i + 1000])))
            found.update(_digest("demonstration", prompt, m[0]["content"]) for prompt, m in rows if len(m) == 1)
        return found

    def _write_prompts(self, session: Session, needed: dict[bytes, PromptRecord], in_target: set[str]) -> None:
        """Stage every prompt the chunk needs; one the target holds is staged as a copy that publishing merges."""
        new = {key: record for key, record in needed.items() if key not in self.prompt_ids}
        rows = [
            {"campaign_id": self.staged, "messages": r.messages, "domain": r.domain, "content_hash": r.content_hash,
             **self._row(r)} for r in new.values()
        ]  # fmt: skip
        self.prompt_ids.update(zip(new, _insert(session, Prompt, rows), strict=True))
        self.report.prompts += sum(r.content_hash not in in_target for r in new.values())

    def _write_pairs(self, session: Session, records: list[PairRecord]) -> None:
        responses: dict[bytes, dict[str, Any]] = {}
        sides = []
        for r in records:
            prompt_id = self.prompt_ids[_digest(r.prompt.content_hash)]
            keys = []
            for model, text in ((r.model_a, r.response_a), (r.model_b, r.response_b)):
                key = _digest(prompt_id, model or "unknown", text)
                if key not in self.response_ids and key not in responses:
                    responses[key] = {"prompt_id": prompt_id, "text": text, "author": model or "unknown",
                                      "generation_params": {}, **self._row(r.prompt)}  # fmt: skip
                keys.append(key)
            sides.append((prompt_id, *keys))
        self.response_ids.update(zip(responses, _insert(session, Response, list(responses.values())), strict=True))
        rows = [
            {"campaign_id": self.staged, "prompt_id": prompt_id, "response_a_id": self.response_ids[a],
             "response_b_id": self.response_ids[b], "prior_preference": r.preference if self.keep_label else None,
             "content_hash": r.content_hash, **self._row(r.prompt)}
            for r, (prompt_id, a, b) in zip(records, sides, strict=True)
        ]  # fmt: skip
        ids = _insert(session, Pair, rows)
        labelled = [(i, row) for i, row in zip(ids, rows, strict=True) if row["prior_preference"] is not None]
        items = [_calibration_item(pair_id, row) for pair_id, row in labelled] if self.calibrate else []
        _insert(session, CalibrationItem, items)
        self.report.responses += len(responses)
        for response in responses.values():
            self.report.models[response["author"]] = self.report.models.get(response["author"], 0) + 1
        self.report.pairs += len(rows)
        self.report.calibration_items += len(items)

    def _write_responses(self, session: Session, records: list[ResponseRecord]) -> None:
        ids = [self.prompt_ids[_digest(r.prompt.content_hash)] for r in records]
        rows = response_rows(records, ids, [self._row(r.prompt) for r in records], keep_label=self.keep_label)
        _insert(session, Response, rows)
        self.report.responses += len(rows)
        for row in rows:
            self.report.models[row["author"]] = self.report.models.get(row["author"], 0) + 1
            if row["prior_label"] is not None:
                name = str(row["prior_label"]).lower()
                self.report.labels[name] = self.report.labels.get(name, 0) + 1

    def _write_demonstrations(self, session: Session, records: list[DemonstrationRecord]) -> None:
        rows = [
            {"prompt_id": self.prompt_ids[_digest(r.prompt.content_hash)],
             "messages": [{"role": "assistant", "content": r.text}], "draft_response_id": None, "claims": [],
             "time_on_task_s": 0.0, "paste_events": [], "client_time": None, "supersedes_id": None, "rater_id": None,
             "guideline_version": None, **self._row(r.prompt)}
            for r in records
        ]  # fmt: skip
        _insert(session, Demonstration, rows)
        self.report.demonstrations += len(rows)


def _calibration_item(pair_id: int, pair: dict[str, Any]) -> dict[str, Any]:
    """Expect the known direction at strength 1 and accept either strength of it; a known tie accepts -1..1."""
    direction = (pair["prior_preference"] > 0) - (pair["prior_preference"] < 0)
    accepted = [-1, 0, 1] if direction == 0 else sorted([direction, 2 * direction])
    said = "rated the two responses equal" if direction == 0 else f"preferred response {'AB'[direction > 0]}"
    explanation = f"Label from the import source {pair['source']!r}, which {said}."
    kind = CalibrationKind.factual_priority.value
    return {"pair_id": pair_id, "expected": direction, "accepted": accepted, "kind": kind, "explanation": explanation,
            "created_at": pair["created_at"]}  # fmt: skip
