"""What a lead reviews and decides about pairs: which pairs raters disagree on, everything said about one pair, a
final decision (Adjudication) and marking a pair as a calibration item.

Results are frozen dataclasses, detached from the session, so the studio can hold them in ``gr.State``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, exists, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from storage.models import (
    Adjudication,
    AuditEvent,
    CalibrationItem,
    CalibrationItemCreate,
    Campaign,
    Judgment,
    Pair,
    Prompt,
    Response,
    User,
)

PREVIEW_CHARS = 120


@dataclass(frozen=True)
class PairSummary:
    pair_id: int
    prompt_preview: str  # the last user message, on one line, shortened
    n_judgments: int  # current judgments
    disagreed: bool  # its current judgments do not all give one direction (A, tie or B)
    is_calibration: bool
    adjudicated: bool


@dataclass(frozen=True)
class JudgmentView:
    judgment_id: int
    rater: str  # the rater's pseudonym, as exports name them
    rater_name: str  # the rater's username, for the campaign's leads
    preference: int  # -2 A much better .. +2 B much better, whichever side the rater saw on the left
    both_bad: bool
    reasoning: str
    confidence: int
    criteria: dict[str, int]
    time_on_task_s: float
    left: str  # the side shown on the left: "a" or "b"
    guideline_version: int


@dataclass(frozen=True)
class Decision:
    adjudication_id: int
    preference: int
    both_bad: bool
    note: str
    decided_by: str | None  # the lead's username
    decided_at: datetime


@dataclass(frozen=True)
class PairDetail:
    pair_id: int
    campaign_id: int
    messages: list[dict[str, Any]]
    response_a: str
    response_b: str
    prior_preference: int | None
    judgments: list[JudgmentView]  # current ones, oldest first
    calibration: CalibrationItemCreate | None
    adjudication: Decision | None  # the newest


def _current() -> Any:
    later = aliased(Judgment)
    return ~exists().where(later.supersedes_id == Judgment.id)


def preview(messages: list[dict[str, Any]]) -> str:
    """The last user message (else the last message) on one line, cut to PREVIEW_CHARS."""
    users = [m for m in messages if m.get("role") == "user"] or messages
    text = " ".join(str(users[-1].get("content", "")).split()) if users else ""
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def pair_summaries(*, session: Session, campaign_id: int, only_disagreed: bool, limit: int) -> list[PairSummary]:
    """The campaign's pairs in id order (only those whose current judgments disagree in direction, if asked)."""
    direction = case((Judgment.preference > 0, 1), (Judgment.preference < 0, -1), else_=0)
    stats = (
        select(Judgment.pair_id, func.count().label("n"), func.min(direction).label("low"),
               func.max(direction).label("high"))
        .join(Pair, Pair.id == Judgment.pair_id)
        .where(Pair.campaign_id == campaign_id, _current())
        .group_by(Judgment.pair_id)
        .subquery()
    )  # fmt: skip
    adjudicated = exists().where(Adjudication.pair_id == Pair.id)
    query = (
        select(Pair.id, Prompt.messages, stats.c.n, stats.c.low, stats.c.high, CalibrationItem.id, adjudicated)
        .join(Prompt, Prompt.id == Pair.prompt_id)
        .outerjoin(stats, stats.c.pair_id == Pair.id)
        .outerjoin(CalibrationItem, CalibrationItem.pair_id == Pair.id)
        .where(Pair.campaign_id == campaign_id)
    )
    if only_disagreed:
        query = query.where(stats.c.low != stats.c.high)
    rows = session.execute(query.order_by(Pair.id).limit(limit))
    return [
        PairSummary(pair_id=pair_id, prompt_preview=preview(messages), n_judgments=n or 0,
                    disagreed=low is not None and low != high, is_calibration=item is not None,
                    adjudicated=bool(decided))
        for pair_id, messages, n, low, high, item, decided in rows
    ]  # fmt: skip


def pair_detail(*, session: Session, pair_id: int) -> PairDetail:
    """Everything said about one pair; LookupError when there is no such pair."""
    pair = session.get(Pair, pair_id)
    if pair is None:
        raise LookupError(f"no pair with id {pair_id}")
    query = (
        select(Judgment, User.pseudonym, User.username)
        .join(User, User.id == Judgment.rater_id)
        .where(Judgment.pair_id == pair_id, _current())
        .order_by(Judgment.server_time, Judgment.id)
    )
    judgments = [
        JudgmentView(judgment_id=j.id, rater=pseudonym, rater_name=username, preference=j.preference,
                     both_bad=j.both_bad, reasoning=j.reasoning, confidence=j.confidence, criteria=dict(j.criteria),
                     time_on_task_s=j.time_on_task_s, left=j.left, guideline_version=j.guideline_version)
        for j, pseudonym, username in session.exec(query)
    ]  # fmt: skip
    item = session.exec(select(CalibrationItem).where(CalibrationItem.pair_id == pair_id)).first()
    return PairDetail(
        pair_id=pair.id,
        campaign_id=pair.campaign_id,
        messages=list(session.get(Prompt, pair.prompt_id).messages),
        response_a=session.get(Response, pair.response_a_id).text,
        response_b=session.get(Response, pair.response_b_id).text,
        prior_preference=pair.prior_preference,
        judgments=judgments,
        calibration=CalibrationItemCreate.model_validate(item, from_attributes=True) if item else None,
        adjudication=newest_decision(session=session, pair_id=pair_id),
    )


def newest_decision(*, session: Session, pair_id: int) -> Decision | None:
    """The pair's newest Adjudication, or None."""
    query = (
        select(Adjudication, User.username)
        .outerjoin(User, User.id == Adjudication.decided_by)
        .where(Adjudication.pair_id == pair_id)
        .order_by(Adjudication.decided_at.desc(), Adjudication.id.desc())
    )
    found = session.exec(query.limit(1)).first()
    if found is None:
        return None
    row, username = found
    return Decision(adjudication_id=row.id, preference=row.preference, both_bad=row.both_bad, note=row.note,
                    decided_by=username, decided_at=row.decided_at)  # fmt: skip


def record_adjudication(
    *, session: Session, pair: Pair, preference: int, both_bad: bool, note: str, actor_id: int | None
) -> Adjudication:
    """Append a lead's decision on ``pair`` (earlier ones stay) and audit it; the caller validates the values."""
    row = Adjudication(pair_id=pair.id, preference=preference, both_bad=both_bad, note=note, decided_by=actor_id)
    session.add(row)
    session.flush()
    details = {"pair_id": pair.id, "adjudication_id": row.id, "preference": preference, "both_bad": both_bad}
    campaign = session.get(Campaign, pair.campaign_id).name
    session.add(AuditEvent(actor_id=actor_id, action="adjudicate", target=campaign, details=details))
    session.flush()
    return row


def mark_calibration(*, session: Session, item: CalibrationItemCreate, actor_id: int | None) -> CalibrationItem:
    """Make the pair a calibration item, or replace the expected answer of the one it is; audited."""
    row = session.exec(select(CalibrationItem).where(CalibrationItem.pair_id == item.pair_id)).first()
    if row is None:
        row = CalibrationItem.model_validate(item)
    else:
        for name, value in item.model_dump().items():
            setattr(row, name, value)
    session.add(row)
    session.flush()
    details = {"pair_id": item.pair_id, "expected": item.expected, "accepted": item.accepted, "kind": item.kind}
    campaign = session.get(Campaign, session.get(Pair, item.pair_id).campaign_id).name
    session.add(AuditEvent(actor_id=actor_id, action="calibration.mark", target=campaign, details=details))
    session.flush()
    return row
