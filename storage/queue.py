"""The work queue: which pair or prompt a rater gets next, leases, and recording what raters submit.

An item is open while its current judgments (or rater-written demonstrations) plus its unexpired open leases
are fewer than the campaign's ``overlap_k``; the judgments of raters a lead excluded from the campaign do not count
(storage.members). Every chain of revisions starts with one row that supersedes
nothing, so counting those rows counts current versions.

Among the open pairs the one closest to k comes first, then the lowest id (fifo); a campaign whose ``queue_order``
is uncertainty or disagreement ranks them by its reward model's scores around that (storage.active). A pair another
rater is claiming at that moment is passed over for the next (``_first_open``): fifty raters asking at once would
otherwise all wait on the first one's row lock on PostgreSQL.

Claiming the last slot is race-free: on SQLite ``write_session`` holds the write lock from the first statement;
on PostgreSQL the candidate row is locked ``FOR NO KEY UPDATE`` and its load counted again before the lease is
written.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import ARRAY, Integer, and_, any_, bindparam, exists, func, or_, union, union_all
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from storage import active
from storage.demonstrations import holding_a_place
from storage.frontier import frontier
from storage.members import excluded_raters
from storage.models import (
    Assignment,
    CalibrationItem,
    CalibrationKind,
    Campaign,
    CampaignKind,
    Demonstration,
    DemonstrationCreate,
    Judgment,
    JudgmentCreate,
    Pair,
    Prompt,
    QueueOrder,
    Response,
    Side,
    TaskKind,
    User,
)

REPEAT_SHOWINGS = 2
"""A ``repeat`` calibration item comes back once, so a rater's consistency can be measured without a loop."""

MIN_CALIBRATION_ANSWERS = 5
"""Fewer calibration answers than this say too little to put anyone on probation."""

CANDIDATES = 8
"""How many open items a queue statement reads at once, to try in turn (``_first_open``)."""


RATER, FIRST, NOW, K, ITEM, CAMPAIGN, TASK = (
    bindparam(name) for name in ("rater", "first", "now", "k", "item", "campaign", "task")
)
DOMAINS, FULL = bindparam("domains", expanding=True), bindparam("full", expanding=True)
"""What a queue statement is given at each call (``_queue_values``): built once per campaign, a statement costs
less Python than building it anew, which was about half of the queue's work on a submit."""
ITEMS = bindparam("items", type_=ARRAY(Integer))  # PostgreSQL only (``_lock_first``)


def _queue_values(user: User, now: datetime, k: int, first: int = 0) -> dict[str, Any]:
    return {"rater": user.id, "domains": list(user.domains or []), "now": now, "k": k, "first": first}


def _domain_allowed() -> Any:
    return or_(col(Prompt.domain).is_(None), col(Prompt.domain).in_(DOMAINS))


def _claims(campaign_id: int, task: TaskKind) -> Any:
    """One row (``item``) per current rater-made judgment (but those of raters excluded from the campaign) or
    demonstration, or unexpired open lease, of a campaign (of its pairs from ``first`` on)."""
    if task == TaskKind.judgment:
        done = select(col(Judgment.pair_id).label("item")).join(Pair, col(Pair.id) == Judgment.pair_id)
        done = done.where(Pair.campaign_id == campaign_id, col(Judgment.supersedes_id).is_(None))
        done = done.where(Judgment.pair_id >= FIRST, col(Judgment.rater_id).not_in(excluded_raters(campaign_id)))
        leased_item = Assignment.pair_id
    else:
        done = select(col(Demonstration.prompt_id).label("item")).join(
            Prompt, col(Prompt.id) == Demonstration.prompt_id
        )
        done = done.where(Prompt.campaign_id == campaign_id, holding_a_place(campaign_id))
        leased_item = Assignment.prompt_id
    leased = select(col(leased_item).label("item")).where(
        Assignment.campaign_id == campaign_id, Assignment.task == task
    )
    leased = leased.where(col(Assignment.closed_at).is_(None), Assignment.expires_at > NOW)
    if task == TaskKind.judgment:
        leased = leased.where(Assignment.pair_id >= FIRST)
    return union_all(done, leased).subquery()


def _held(item: Any) -> Any:
    return select(item).where(Assignment.rater_id == RATER, col(Assignment.closed_at).is_(None), item.is_not(None))


@dataclass(frozen=True)
class OpenItemQueries:
    """A campaign's statements for one task: the open item closest to k (then the lowest id) that the rater has not
    done or held, among those not in ``full`` (statements tried in turn, the first item found wins); and, for an
    item, its row locked and its claims counted."""

    first_open: tuple
    lock: Any
    first_unlocked: Any  # of ``items``, in their order, the first whose row no other transaction holds, locked
    claims: Any


@lru_cache(maxsize=256)
def open_item_queries(campaign_id: int, task: TaskKind, queue_order: QueueOrder) -> OpenItemQueries:
    """Built once per campaign, task and queue order (storage.active.ranked); every value is bound at the call."""
    if task == TaskKind.judgment:
        model = Pair
        seen = union(select(Judgment.pair_id).where(Judgment.rater_id == RATER), _held(Assignment.pair_id))
        base = (
            select(Pair.id)
            .join(Prompt, col(Prompt.id) == Pair.prompt_id)
            # every regular pair below ``first`` is full (storage.frontier)
            .where(Pair.campaign_id == campaign_id, Pair.id >= FIRST, _domain_allowed(), col(Pair.id).not_in(seen))
            .where(~exists().where(CalibrationItem.pair_id == Pair.id))
        )
        base, before, after = active.ranked(base, campaign_id=campaign_id, queue_order=queue_order)
    else:
        model, before, after = Prompt, [], []
        written = select(Demonstration.prompt_id).where(Demonstration.rater_id == RATER)
        seen = union(written, _held(Assignment.prompt_id))
        base = select(Prompt.id).where(Prompt.campaign_id == campaign_id, _domain_allowed())
        base = base.where(col(Prompt.id).not_in(seen))
    claims = _claims(campaign_id, task)
    loads = select(claims.c.item, func.count().label("load")).group_by(claims.c.item).subquery()
    open_items = base.where(col(model.id).not_in(FULL))
    if before or after:  # an active order ranks every open item
        load = func.coalesce(loads.c.load, 0)
        ranked = open_items.outerjoin(loads, loads.c.item == model.id).where(load < K)
        first_open: tuple = (ranked.order_by(*before, load.desc(), *after, model.id).limit(CANDIDATES),)
    else:
        # fifo: any claimed item with room comes before every unclaimed one. Two statements, the items in flight
        # first (read from their claims, so that the database walks those alone), then the lowest unclaimed id,
        # instead of ranking every open item (5 ms of SQLite a submit at 3,852 pairs).
        open_claimed = open_items.where(model.id == loads.c.item).exists()
        unclaimed = col(model.id).not_in(select(claims.c.item).where(claims.c.item.is_not(None)))
        first_open = (
            select(loads.c.item).where(loads.c.load < K, open_claimed)
            .order_by(loads.c.load.desc(), loads.c.item).limit(CANDIDATES),
            open_items.where(unclaimed).order_by(model.id).limit(CANDIDATES),
        )  # fmt: skip
    return OpenItemQueries(
        first_open=first_open,
        # NO KEY UPDATE: claimers exclude one another, not the raters whose judgment of the item (its foreign key
        # takes KEY SHARE) is not committed yet
        lock=select(model.id).where(model.id == ITEM).with_for_update(key_share=True),
        first_unlocked=select(model.id)
        .where(model.id == any_(ITEMS))
        .order_by(func.array_position(ITEMS, model.id))
        .limit(1)
        .with_for_update(key_share=True, skip_locked=True),
        claims=select(func.count()).select_from(claims).where(claims.c.item == ITEM),
    )


def _queries(campaign: Campaign, task: TaskKind) -> OpenItemQueries:
    return open_item_queries(campaign.id, task, campaign.queue_order)


def _sqlite(session: Session) -> bool:
    """A SQLite writer holds the database's write lock already: no row lock to take."""
    return session.get_bind().dialect.name == "sqlite"


def _lock(*, session: Session, queries: OpenItemQueries, item_id: int) -> bool:
    """Lock the item's row, waiting for another transaction that holds it."""
    return _sqlite(session) or session.exec(queries.lock, params={"item": item_id}).first() is not None


def _lock_first(*, session: Session, queries: OpenItemQueries, items: list[int]) -> int | None:
    """The first of ``items`` whose row no other transaction holds, locked, in one statement however many are held
    (one statement an item had been four or five a submit with 50 raters asking at once); None when all are."""
    if _sqlite(session):
        return items[0]
    return session.exec(queries.first_unlocked, params={"items": items}).first()


def _room(*, session: Session, queries: OpenItemQueries, item_id: int, values: dict[str, Any]) -> bool:
    """Whether the item's claims, counted again under its lock, leave room: another rater may have taken the last
    slot meanwhile."""
    return session.exec(queries.claims, params=values | {"item": item_id}).one() < values["k"]


def _lock_if_room(*, session: Session, queries: OpenItemQueries, item_id: int, values: dict[str, Any]) -> bool:
    return _lock(session=session, queries=queries, item_id=item_id) and _room(
        session=session, queries=queries, item_id=item_id, values=values
    )


def _first_open(*, session: Session, queries: OpenItemQueries, values: dict[str, Any]) -> int | None:
    """The open item ``queries`` find first, locked; None when all are full. An item another rater is claiming
    (its row locked) is passed over, and waited for only when no other item is open: raters asking at once take
    different items instead of queueing on one row lock."""
    full: list[int] = []
    passed: list[int] = []
    for query in queries.first_open:
        while rows := session.exec(query, params=values | {"full": full + passed}).all():
            untried = list(rows)
            while untried:
                item_id = _lock_first(session=session, queries=queries, items=untried)
                held = untried.index(item_id) if item_id is not None else len(untried)
                passed += untried[:held]
                if item_id is None:
                    break
                if _room(session=session, queries=queries, item_id=item_id, values=values):
                    return item_id
                full.append(item_id)
                untried = untried[held + 1 :]
            if len(rows) < CANDIDATES:  # it found every one there was
                break
    for item_id in passed:
        if _lock_if_room(session=session, queries=queries, item_id=item_id, values=values):
            return item_id
    return None


def _has_room(*, session: Session, assignment: Assignment, campaign: Campaign, now: datetime) -> bool:
    if assignment.is_calibration:
        return True
    item_id = assignment.pair_id if assignment.task == TaskKind.judgment else assignment.prompt_id
    values = {"now": now, "k": campaign.overlap_k, "first": 0}
    return _lock_if_room(session=session, queries=_queries(campaign, assignment.task), item_id=item_id, values=values)


_HELD = (
    select(Assignment)
    .where(Assignment.rater_id == RATER, Assignment.campaign_id == CAMPAIGN, Assignment.task == TASK)
    .where(col(Assignment.closed_at).is_(None))
    .order_by(col(Assignment.id).desc())
)
_SIDES_SHOWN = (
    select(Assignment.left, func.count(Assignment.id))
    .where(Assignment.rater_id == RATER, Assignment.campaign_id == CAMPAIGN, Assignment.task == TaskKind.judgment)
    .group_by(Assignment.left)
)
_LOCK_OWN_ASSIGNMENT = (
    select(User, Assignment, Campaign)
    .join(Assignment, col(Assignment.rater_id) == User.id)
    .join(Campaign, col(Campaign.id) == Assignment.campaign_id)
    .where(User.id == RATER, Assignment.id == ITEM)
    .with_for_update(of=[User, Assignment])  # never the campaign's row: every rater's submit reads it
)


@lru_cache(maxsize=64)
def _calibration_answers(window: int, before: bool) -> Any:
    """A rater's last ``window`` first answers to a campaign's calibration items (given before ``before``)."""
    query = (
        select(Judgment.preference, CalibrationItem.expected, CalibrationItem.accepted)
        .join(CalibrationItem, col(CalibrationItem.pair_id) == Judgment.pair_id)
        .join(Pair, col(Pair.id) == Judgment.pair_id)
        # A revision made after seeing the expected answer (training mode) must not lift the score.
        .where(Pair.campaign_id == CAMPAIGN, Judgment.rater_id == RATER, col(Judgment.supersedes_id).is_(None))
    )
    if before:
        query = query.where(Judgment.server_time < bindparam("before"))
    return query.order_by(col(Judgment.server_time).desc(), col(Judgment.id).desc()).limit(window)


def resume_assignment(
    *, session: Session, rater_id: int, campaign: Campaign, task: TaskKind, now: datetime, lease: timedelta
) -> Assignment | None:
    """The rater's latest open assignment of this kind: as is while leased, renewed if expired and still room."""
    held = session.exec(_HELD, params={"rater": rater_id, "campaign": campaign.id, "task": task}).first()
    if held is None or held.expires_at > now:
        return held
    if not _has_room(session=session, assignment=held, campaign=campaign, now=now):
        return None
    held.leased_at, held.expires_at = now, now + lease
    session.flush()
    return held


def _next_regular_pair(*, session: Session, user: User, campaign: Campaign, now: datetime) -> int | None:
    first = frontier(session=session, campaign=campaign)  # every regular pair below it is full
    values = _queue_values(user, now, campaign.overlap_k, first)
    return _first_open(session=session, queries=_queries(campaign, TaskKind.judgment), values=values)


STANDING = "calibration_standing"  # the session.info key of the standings counted in this transaction


def calibration_standing(
    *, session: Session, rater_id: int, campaign: Campaign, before: datetime | None = None
) -> tuple[int, int]:
    """(correct, answered) over the rater's last ``campaign.calibration_window`` first answers to calibration items
    (given before ``before``, when set). Kept in the session until ``record_judgment`` adds a judgment."""
    known, key = session.info.setdefault(STANDING, {}), (rater_id, campaign.id, before)
    if key not in known:  # a submit asks twice (probation, then the progress line): counted once
        values = {"rater": rater_id, "campaign": campaign.id, "before": before}
        rows = session.exec(_calibration_answers(campaign.calibration_window, before is not None), params=values).all()
        known[key] = sum(preference in {expected, *accepted} for preference, expected, accepted in rows), len(rows)
    return known[key]


def on_probation(*, session: Session, rater_id: int, campaign: Campaign) -> bool:
    """Below the campaign's calibration threshold, on a campaign that puts such raters on probation."""
    if not campaign.probation:
        return False
    correct, answered = calibration_standing(session=session, rater_id=rater_id, campaign=campaign)
    return answered >= MIN_CALIBRATION_ANSWERS and correct < campaign.calibration_threshold * answered


def _next_calibration_pair(*, session: Session, user: User, campaign: Campaign, again: bool = False) -> int | None:
    """An unseen calibration pair (or a repeat item due again); with ``again``, the least-seen of any."""
    showings = (
        select(func.count(Judgment.id))
        .where(Judgment.pair_id == Pair.id, Judgment.rater_id == user.id, col(Judgment.supersedes_id).is_(None))
        .scalar_subquery()
    )
    repeatable = and_(CalibrationItem.kind == CalibrationKind.repeat, showings < REPEAT_SHOWINGS)
    query = (
        select(Pair.id)
        .join(CalibrationItem, col(CalibrationItem.pair_id) == Pair.id)
        .join(Prompt, col(Prompt.id) == Pair.prompt_id)
        .where(Pair.campaign_id == campaign.id, _domain_allowed(), or_(showings == 0, repeatable, again))
        .where(col(Pair.id).not_in(_held(Assignment.pair_id)))
        .order_by(showings, Pair.id)
        .limit(1)
    )
    return session.exec(query, params={"rater": user.id, "domains": list(user.domains or [])}).first()


def _balanced_left(*, session: Session, rater_id: int, campaign_id: int, rng: random.Random) -> Side:
    counts = dict(session.exec(_SIDES_SHOWN, params={"rater": rater_id, "campaign": campaign_id}).all())
    shown_a, shown_b = counts.get(Side.a, 0), counts.get(Side.b, 0)
    if shown_a != shown_b:
        return Side.a if shown_a < shown_b else Side.b
    return rng.choice([Side.a, Side.b])


def next_pair_assignment(
    *, session: Session, user: User, campaign: Campaign, rng: random.Random, now: datetime, lease: timedelta
) -> Assignment | None:
    """The pair the rater should judge now: the one they hold, else a new lease (calibration mixed in), else None."""
    if not user.active or campaign.kind == CampaignKind.demonstration:
        return None
    held = resume_assignment(
        session=session, rater_id=user.id, campaign=campaign, task=TaskKind.judgment, now=now, lease=lease
    )
    if held is not None:
        return held
    probation = on_probation(session=session, rater_id=user.id, campaign=campaign)
    want_calibration = probation or rng.random() < campaign.calibration_rate
    for is_calibration in (want_calibration,) if probation else (want_calibration, not want_calibration):
        if is_calibration:
            pair_id = _next_calibration_pair(session=session, user=user, campaign=campaign, again=probation)
        else:
            pair_id = _next_regular_pair(session=session, user=user, campaign=campaign, now=now)
        if pair_id is None:
            continue
        assignment = Assignment(
            campaign_id=campaign.id,
            rater_id=user.id,
            task=TaskKind.judgment,
            pair_id=pair_id,
            left=_balanced_left(session=session, rater_id=user.id, campaign_id=campaign.id, rng=rng),
            is_calibration=is_calibration,
            leased_at=now,
            expires_at=now + lease,
        )
        session.add(assignment)
        session.flush()
        return assignment
    return None


def next_prompt_assignment(
    *, session: Session, user: User, campaign: Campaign, now: datetime, lease: timedelta
) -> Assignment | None:
    """The prompt the rater should write for now: the one they hold, else a new lease, else None."""
    if not user.active or campaign.kind in (CampaignKind.preference, CampaignKind.evaluation):
        return None
    held = resume_assignment(
        session=session, rater_id=user.id, campaign=campaign, task=TaskKind.demonstration, now=now, lease=lease
    )
    if held is not None:
        return held
    values = _queue_values(user, now, campaign.overlap_k)
    prompt_id = _first_open(session=session, queries=_queries(campaign, TaskKind.demonstration), values=values)
    if prompt_id is None:
        return None
    assignment = Assignment(
        campaign_id=campaign.id,
        rater_id=user.id,
        task=TaskKind.demonstration,
        prompt_id=prompt_id,
        leased_at=now,
        expires_at=now + lease,
    )
    session.add(assignment)
    session.flush()
    return assignment


_A, _B = aliased(Response), aliased(Response)
_PAIR_SHOWN = (
    select(Prompt.messages, _A.text, _B.text)
    .select_from(Pair)
    .join(Prompt, col(Prompt.id) == Pair.prompt_id)
    .join(_A, _A.id == Pair.response_a_id)
    .join(_B, _B.id == Pair.response_b_id)
    .where(Pair.id == ITEM)
)


def pair_shown(*, session: Session, pair_id: int) -> tuple[list[dict], str, str]:
    """What a rater reads of a pair: (the prompt's messages, response A's text, response B's text)."""
    return tuple(session.exec(_PAIR_SHOWN, params={"item": pair_id}).one())


_CALIBRATION_ITEM = select(CalibrationItem).where(CalibrationItem.pair_id == ITEM)


def calibration_item(*, session: Session, pair_id: int) -> CalibrationItem | None:
    """The pair's calibration item; None for a regular pair."""
    return session.exec(_CALIBRATION_ITEM, params={"item": pair_id}).first()


def lock_own_assignment(
    *, session: Session, rater_id: int, assignment_id: int
) -> tuple[User, Assignment, Campaign] | None:
    """The rater's account and their assignment, both locked (two submissions of it cannot both pass the open check,
    nor one rater's two requests both take a lease), and its campaign: one statement where a submit took three.
    None when the assignment is not the rater's."""
    row = session.exec(_LOCK_OWN_ASSIGNMENT, params={"rater": rater_id, "item": assignment_id}).first()
    return None if row is None else tuple(row)


def lock_judgment(*, session: Session, judgment_id: int) -> Judgment | None:
    """The judgment, locked so that two revisions of it cannot both pass the current-version check."""
    return session.exec(select(Judgment).where(Judgment.id == judgment_id).with_for_update()).first()


def is_superseded(*, session: Session, judgment_id: int) -> bool:
    """Whether a later version of this judgment exists."""
    return session.exec(select(Judgment.id).where(Judgment.supersedes_id == judgment_id)).first() is not None


def draft_response(*, session: Session, prompt_id: int) -> Response | None:
    """The response offered as a starting draft for a demonstration: the prompt's first one."""
    return session.exec(select(Response).where(Response.prompt_id == prompt_id).order_by(Response.id)).first()


def record_judgment(
    *,
    session: Session,
    judgment: JudgmentCreate,
    rater_id: int,
    guideline_version: int,
    now: datetime,
    assignment: Assignment | None = None,
) -> Judgment:
    """Append a judgment and close the assignment it answers (a revision answers none)."""
    row = Judgment.model_validate(
        judgment, update={"rater_id": rater_id, "guideline_version": guideline_version, "server_time": now}
    )
    session.add(row)
    session.info.pop(STANDING, None)
    if assignment is not None:
        assignment.closed_at = now
    session.flush()
    return row


def record_demonstration(
    *,
    session: Session,
    demonstration: DemonstrationCreate,
    rater_id: int,
    guideline_version: int,
    now: datetime,
    assignment: Assignment | None = None,
) -> Demonstration:
    """Append a demonstration and close the assignment it answers (a revision answers none)."""
    row = Demonstration.model_validate(
        demonstration, update={"rater_id": rater_id, "guideline_version": guideline_version, "created_at": now}
    )
    session.add(row)
    if assignment is not None:
        assignment.closed_at = now
    session.flush()
    return row
