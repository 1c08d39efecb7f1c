"""Staging campaigns: how a large import is written in many short transactions and still lands all at once.

An import (storage.imports) writes its rows, one chunk per transaction, into a staging campaign of its own that an
ImportJob names; storage.members hides such a campaign from every list, rater and lead. So a rater's submit waits
for one chunk at most, never for the whole import. Then the job is published:

- into a campaign that does not exist yet: the staging campaign is renamed and its job deleted, in one small
  transaction, and every row appears at once;
- into an existing campaign: the job is marked ``moving`` (the commit point: from here on the import completes),
  then its prompts and pairs move over in chunks, each its own short transaction, merging any prompt or pair the
  campaign gained meanwhile. Raters see the moved rows arrive over the seconds this takes.

A failure before the commit point deletes the staging rows, again in chunks. A crash leaves the job behind, still
hidden; the next import (``finish_abandoned``) discards it, or completes its move when it had passed the commit
point. Every function that takes an engine runs its own transactions; the others only flush."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine, bindparam, delete, event, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import aliased
from sqlmodel import Session

from storage.db import make_engine, write_session
from storage.models import (
    AuditEvent,
    CalibrationItem,
    Campaign,
    CampaignCreate,
    CampaignKind,
    Demonstration,
    ImportJob,
    Pair,
    Prompt,
    Response,
    utcnow,
)

log = logging.getLogger(__name__)

ABANDONED_AFTER = timedelta(minutes=10)
"""A job that made no progress for this long was left by a process that died; a chunk takes well under a second."""

LOCK_POLL_S = 0.002
"""On SQLite an import asks for the write lock this often, where SQLite's own busy handler backs off to 100 ms between
tries: a steady stream of rater transactions would otherwise starve it for minutes."""
LOCK_WAIT_S = 30.0  # as long as storage.db lets any writer wait
LOCK_YIELD_S = 0.1
"""After each transaction an import leaves SQLite's lock free for as long as it held it, and for at least this long
(SQLite's longest wait between two tries) when it found the lock taken: every rater waiting meanwhile then gets in
before the import's next chunk."""

_PROMPT, _PAIR, _RESPONSE = Prompt.__table__, Pair.__table__, Response.__table__
_DEMONSTRATION, _CALIBRATION = Demonstration.__table__, CalibrationItem.__table__
_IN_LIST = 1000  # ids per IN (...) list, far below both engines' limits on bound parameters


def writer_engine(engine: Engine) -> Engine:
    """The engine an import writes through: for a SQLite file, one of its own whose connections give up on a busy
    database within ``LOCK_POLL_S``, so that ``transaction`` can ask again at once; else ``engine`` itself."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    own = make_engine(engine.url.render_as_string(hide_password=False))
    poll = f"PRAGMA busy_timeout = {round(LOCK_POLL_S * 1000)}"
    event.listen(own, "checkout", lambda dbapi_connection, *_: dbapi_connection.execute(poll))
    return own


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One short write transaction, committed on leaving. It takes SQLite's write lock before any work, asking every
    ``LOCK_POLL_S`` for up to ``LOCK_WAIT_S`` (see ``writer_engine``), so a retry repeats nothing; afterwards it
    yields the lock (``LOCK_YIELD_S``)."""
    deadline, contended = time.monotonic() + LOCK_WAIT_S, False
    while True:
        session = write_session(engine)
        try:
            session.begin()
            session.connection()  # on SQLite: BEGIN IMMEDIATE
            break
        except OperationalError as exc:
            session.close()
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            contended = True
            time.sleep(LOCK_POLL_S)
    held = time.monotonic()
    with session:
        if engine.dialect.name == "sqlite":  # the lock is ours: from here on, wait as any writer would
            session.execute(text("PRAGMA busy_timeout = 30000"))
        yield session
        session.commit()
    if engine.dialect.name == "sqlite":
        held = time.monotonic() - held
        time.sleep(max(held, LOCK_YIELD_S) if contended else held)


def open_job(*, session: Session, target: str, kind: CampaignKind, actor_id: int | None) -> ImportJob:
    """A new, hidden staging campaign and the job that names it, bound for the campaign ``target``."""
    staging = Campaign.model_validate(CampaignCreate(name=f"import {uuid.uuid4().hex}", kind=kind))
    session.add(staging)
    session.flush()
    job = ImportJob(campaign_id=staging.id, target=target, actor_id=actor_id)
    session.add(job)
    session.flush()
    return job


def beat(*, session: Session, job_id: int) -> None:
    """The job made progress: nobody may take it for abandoned."""
    session.execute(update(ImportJob).where(ImportJob.id == job_id).values(beat_at=utcnow()))


def _in_lists(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + _IN_LIST] for i in range(0, len(ids), _IN_LIST)]


def _repeat(engine: Engine, job_id: int, step: Callable[[Session], int]) -> None:
    """Run ``step`` in one short transaction after another until it has nothing left to do. Each step handles at
    most ``_IN_LIST`` rows, whatever the import's chunk size, so its ids fit in one IN (...) list."""
    while True:
        with transaction(engine) as session:
            done = step(session)
            beat(session=session, job_id=job_id)
        if not done:
            return


def discard(*, engine: Engine, job_id: int, chunk: int) -> None:
    """Delete everything the job staged, then the job and its staging campaign."""
    chunk = min(chunk, _IN_LIST)
    with Session(engine) as session:
        job = session.get(ImportJob, job_id)
    if job is None:
        return
    staged = job.campaign_id

    def pairs(session: Session) -> int:
        ids = list(session.scalars(select(_PAIR.c.id).where(_PAIR.c.campaign_id == staged).limit(chunk)))
        for some in _in_lists(ids):
            session.execute(delete(_CALIBRATION).where(_CALIBRATION.c.pair_id.in_(some)))
            session.execute(delete(_PAIR).where(_PAIR.c.id.in_(some)))
        return len(ids)

    def prompts(session: Session) -> int:
        ids = list(session.scalars(select(_PROMPT.c.id).where(_PROMPT.c.campaign_id == staged).limit(chunk)))
        for some in _in_lists(ids):
            session.execute(delete(_RESPONSE).where(_RESPONSE.c.prompt_id.in_(some)))
            session.execute(delete(_DEMONSTRATION).where(_DEMONSTRATION.c.prompt_id.in_(some)))
            session.execute(delete(_PROMPT).where(_PROMPT.c.id.in_(some)))
        return len(ids)

    _repeat(engine, job_id, pairs)
    _repeat(engine, job_id, prompts)
    with transaction(engine) as session:
        session.execute(delete(ImportJob).where(ImportJob.id == job_id))
        session.execute(delete(Campaign).where(Campaign.id == staged))
    log.info("discarded the rows staged for campaign %r", job.target)


def publish(*, engine: Engine, job_id: int, report: dict[str, Any], sets_kind: bool, chunk: int) -> dict[str, Any]:
    """Make the job's rows part of its target campaign; ``report`` is audited, and returned with the prompts and
    pairs that turned out to be duplicates only now (another import got there first) taken off."""
    for attempt in range(1, 4):  # on PostgreSQL another import may create the campaign between check and rename
        try:
            with transaction(engine) as session:
                job = session.get(ImportJob, job_id)
                target = session.scalars(select(Campaign).where(Campaign.name == job.target)).first()
                if target is None:
                    staging = session.get(Campaign, job.campaign_id)
                    staging.name = job.target
                    session.flush()
                    session.delete(job)
                    session.add(AuditEvent(actor_id=job.actor_id, action="import", target=job.target, details=report))
                    return report
                staged = session.scalar(select(func.count()).where(_PROMPT.c.campaign_id == job.campaign_id))
                staged_kind = session.get(Campaign, job.campaign_id).kind
                # Pairs imported into an evaluation are more comparisons to judge: it stays an evaluation.
                evaluation = target.kind == CampaignKind.evaluation and staged_kind == CampaignKind.preference
                if sets_kind and target.kind != staged_kind and not evaluation:
                    target.kind = CampaignKind.both
                job.state, job.report = "moving", {**report, "_copies": staged - report["prompts"]}
            break
        except IntegrityError:
            if attempt == 3:
                raise
            log.info("campaign %r appeared while publishing an import into it; merging instead", report["campaign"])
    return _move(engine, job_id, chunk)


def _move(engine: Engine, job_id: int, chunk: int) -> dict[str, Any]:
    """Move a committed job's prompts, then its pairs, into the target, chunk by chunk; then audit and forget it."""
    chunk = min(chunk, _IN_LIST)
    with Session(engine) as session:
        job = session.get(ImportJob, job_id)
        target_id = session.scalar(select(Campaign.id).where(Campaign.name == job.target))
    report, merged = dict(job.report), {"prompts": 0, "pairs": 0}
    copies = report.pop("_copies", 0)
    _repeat(engine, job_id, partial(_move_prompts, staged=job.campaign_id, target_id=target_id, chunk=chunk,
                                    merged=merged))  # fmt: skip
    _repeat(engine, job_id, partial(_move_pairs, staged=job.campaign_id, target_id=target_id, chunk=chunk,
                                    report=report))  # fmt: skip
    report["prompts"] -= max(merged["prompts"] - copies, 0)  # prompts the campaign gained elsewhere meanwhile
    with transaction(engine) as session:
        session.execute(delete(ImportJob).where(ImportJob.id == job_id))
        session.execute(delete(Campaign).where(Campaign.id == job.campaign_id))
        session.add(AuditEvent(actor_id=job.actor_id, action="import", target=job.target, details=report))
    return report


def _move_prompts(session: Session, *, staged: int, target_id: int, chunk: int, merged: dict[str, int]) -> int:
    """Up to ``chunk`` staged prompts into the target; one the target already holds takes over our copy's rows."""
    ids = list(session.scalars(select(_PROMPT.c.id).where(_PROMPT.c.campaign_id == staged).limit(chunk)))
    ours = aliased(Prompt)
    found = session.execute(
        select(ours.id, Prompt.id)
        .join(Prompt, (Prompt.content_hash == ours.content_hash) & (Prompt.campaign_id == target_id))
        .where(ours.id.in_(ids))
    ).all()
    if found:
        for table in (_RESPONSE, _PAIR, _DEMONSTRATION):
            remap = update(table).where(table.c.prompt_id == bindparam("old")).values(prompt_id=bindparam("new"))
            session.execute(remap, [{"old": old, "new": new} for old, new in found])
        session.execute(delete(_PROMPT).where(_PROMPT.c.id.in_([old for old, _ in found])))
    rest = sorted(set(ids) - {old for old, _ in found})
    session.execute(update(_PROMPT).where(_PROMPT.c.id.in_(rest)).values(campaign_id=target_id))
    merged["prompts"] += len(found)
    return len(ids)


def _move_pairs(session: Session, *, staged: int, target_id: int, chunk: int, report: dict[str, Any]) -> int:
    """Up to ``chunk`` staged pairs into the target; one the target gained meanwhile is dropped as a duplicate."""
    columns = (_PAIR.c.id, _PAIR.c.content_hash, _PAIR.c.response_a_id, _PAIR.c.response_b_id)
    rows = session.execute(select(*columns).where(_PAIR.c.campaign_id == staged).limit(chunk)).all()
    hashes = [row.content_hash for row in rows]
    in_target = select(_PAIR.c.content_hash).where(_PAIR.c.campaign_id == target_id, _PAIR.c.content_hash.in_(hashes))
    taken = set(session.scalars(in_target))
    if twice := [row for row in rows if row.content_hash in taken]:
        _drop_pairs(session, twice, report)
    keep = [row.id for row in rows if row.content_hash not in taken]
    session.execute(update(_PAIR).where(_PAIR.c.id.in_(keep)).values(campaign_id=target_id))
    return len(rows)


def _drop_pairs(session: Session, rows: list, report: dict[str, Any]) -> None:
    """Pairs the target gained meanwhile from another import: drop ours, with their calibration items and the
    responses nothing else uses."""
    ids = [row.id for row in rows]
    responses = {row.response_a_id for row in rows} | {row.response_b_id for row in rows}
    dropped = session.execute(delete(_CALIBRATION).where(_CALIBRATION.c.pair_id.in_(ids))).rowcount
    session.execute(delete(_PAIR).where(_PAIR.c.id.in_(ids)))
    used = set(
        session.scalars(
            select(_PAIR.c.response_a_id).where(_PAIR.c.response_a_id.in_(responses))
            .union(select(_PAIR.c.response_b_id).where(_PAIR.c.response_b_id.in_(responses)))
        )
    )  # fmt: skip
    unused = sorted(responses - used)
    session.execute(delete(_RESPONSE).where(_RESPONSE.c.id.in_(unused)))
    report.update(
        pairs=report["pairs"] - len(ids),
        duplicates=report["duplicates"] + len(ids),
        responses=report["responses"] - len(unused),
        calibration_items=report["calibration_items"] - dropped,
    )


def finish_abandoned(*, engine: Engine, chunk: int) -> None:
    """Discard the rows of jobs a dead process left while writing; complete the move of those it left moving."""
    cutoff = utcnow() - ABANDONED_AFTER
    with Session(engine) as session:
        jobs = list(session.scalars(select(ImportJob.id).where(ImportJob.beat_at < cutoff)))
    for job_id in jobs:
        with transaction(engine) as session:  # claim it: another process may be at it too
            claim = update(ImportJob).where(ImportJob.id == job_id, ImportJob.beat_at < cutoff)
            if session.execute(claim.values(beat_at=utcnow())).rowcount != 1:
                continue
            job = session.get(ImportJob, job_id)
            state, target = job.state, job.target
        log.warning("an import into %r was abandoned while %s; finishing it", target, state)
        if state == "moving":
            _move(engine, job_id, chunk)
        else:
            discard(engine=engine, job_id=job_id, chunk=chunk)
