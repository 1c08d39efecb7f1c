"""What a lead reviews of the demonstrations written for a campaign: the current ones with their newest review,
everything about one of them (its claims checked against its text), and a review (accepted or rejected, with a
note). Reviews are append-only like the demonstrations: the newest per demonstration counts, and a revised
demonstration is a new row, unreviewed until a lead reads it.

An imported demonstration (no rater: human writing from elsewhere, e.g. OASST) counts as reviewed where it came
from and exports unless a lead rejects it; one written in the studio exports once a lead accepts it
(storage.export.sft_rows). Results are frozen dataclasses, detached from the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from storage.members import excluded_raters
from storage.models import (
    AuditEvent,
    Campaign,
    Demonstration,
    DemonstrationReview,
    Prompt,
    Response,
    ReviewStatus,
    User,
)
from storage.quality.claims import ClaimCheck, check_claims
from storage.review import preview

FILTERS = ("unreviewed", "accepted", "rejected", "all")


@dataclass(frozen=True)
class Verdict:
    status: str  # accepted | rejected
    note: str
    reviewer: str | None  # the lead's username
    reviewed_at: datetime


@dataclass(frozen=True)
class DemonstrationSummary:
    demonstration_id: int
    prompt_preview: str
    writer: str  # the rater's username, or the imported row's source
    status: str  # unreviewed | accepted | rejected
    n_claims: int
    revised: bool  # it replaces an earlier version


@dataclass(frozen=True)
class DemonstrationDetail:
    demonstration_id: int
    campaign_id: int
    messages: list[dict[str, Any]]  # the prompt
    text: str  # the written response
    writer: str
    pseudonym: str | None  # None for imported writing
    claims: list[ClaimCheck]
    time_on_task_s: float
    pasted_chars: int  # characters pasted while writing it
    draft: str | None  # the model draft the rater started from, if any
    guideline_version: int | None
    verdict: Verdict | None  # the newest review


def response_text(messages: list[dict[str, Any]]) -> str:
    """The written response: its assistant turns, joined."""
    return "\n\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "assistant")


def _current():
    later = aliased(Demonstration)
    return ~exists().where(later.supersedes_id == Demonstration.id)


def _newest_review_is(status: ReviewStatus) -> Any:
    """Whether a demonstration's newest review (review ids grow with time) has this status."""
    newer = aliased(DemonstrationReview)
    later = exists().where(
        newer.demonstration_id == DemonstrationReview.demonstration_id, newer.id > DemonstrationReview.id
    )
    return exists().where(
        DemonstrationReview.demonstration_id == Demonstration.id, DemonstrationReview.status == status, ~later
    )


def awaiting_revision() -> Any:
    """Which demonstrations a lead rejected (their newest review) and their writer has not revised since: the
    writer's progress line counts their own (storage.progress), and History opens each with the lead's note."""
    return and_(_current(), _newest_review_is(ReviewStatus.rejected))


def holding_a_place(campaign_id: int) -> Any:
    """Which of a campaign's demonstrations fill one of their prompt's ``overlap_k`` places (storage.queue,
    storage.progress): current versions written in the studio (imported writing fills none), except those whose
    newest review rejected them, and an excluded writer's (storage.members) unless a lead accepted them. A rejected
    demonstration frees its place, so the prompt goes to another writer; its writer may still revise it, and the
    revision, unreviewed, holds a place again."""
    return and_(
        col(Demonstration.rater_id).is_not(None),
        _current(),
        ~_newest_review_is(ReviewStatus.rejected),
        or_(
            col(Demonstration.rater_id).not_in(excluded_raters(campaign_id)),
            _newest_review_is(ReviewStatus.accepted),
        ),
    )


def newest_reviews(*, session: Session, demonstration_ids: list[int]) -> dict[int, DemonstrationReview]:
    """The newest review of each of these demonstrations that has one."""
    query = (
        select(DemonstrationReview)
        .where(col(DemonstrationReview.demonstration_id).in_(demonstration_ids))
        .order_by(DemonstrationReview.reviewed_at, DemonstrationReview.id)
    )
    return {review.demonstration_id: review for review in session.exec(query)}


def demonstration_summaries(
    *, session: Session, campaign_id: int, status: str = "unreviewed", limit: int = 200
) -> list[DemonstrationSummary]:
    """The campaign's current demonstrations in id order, those with the newest review ``status`` (FILTERS)."""
    if status not in FILTERS:
        raise ValueError(f"status must be one of {', '.join(FILTERS)}; got {status!r}")
    query = (
        select(Demonstration, Prompt.messages, User.username)
        .join(Prompt, Prompt.id == Demonstration.prompt_id)
        .outerjoin(User, User.id == Demonstration.rater_id)
        .where(Prompt.campaign_id == campaign_id, _current())
        .order_by(Demonstration.id)
    )
    found = session.exec(query).all()
    reviews = newest_reviews(session=session, demonstration_ids=[d.id for d, _, _ in found])
    rows = []
    for demo, messages, username in found:
        review = reviews.get(demo.id)
        state = str(review.status) if review else "unreviewed"
        if status in ("all", state):
            rows.append(DemonstrationSummary(
                demonstration_id=demo.id, prompt_preview=preview(messages), writer=username or demo.source,
                status=state, n_claims=len(demo.claims), revised=demo.supersedes_id is not None,
            ))  # fmt: skip
    return rows[:limit]


def demonstration_detail(*, session: Session, demonstration_id: int) -> DemonstrationDetail:
    """Everything about one demonstration; LookupError when there is none."""
    demo = session.get(Demonstration, demonstration_id)
    if demo is None:
        raise LookupError(f"There is no demonstration {demonstration_id}.")
    prompt = session.get(Prompt, demo.prompt_id)
    writer = session.get(User, demo.rater_id) if demo.rater_id is not None else None
    text = response_text(demo.messages)
    draft = None
    if demo.draft_response_id is not None:
        draft = session.get(Response, demo.draft_response_id).text
    return DemonstrationDetail(
        demonstration_id=demo.id, campaign_id=prompt.campaign_id, messages=list(prompt.messages), text=text,
        writer=writer.username if writer else demo.source, pseudonym=writer.pseudonym if writer else None,
        claims=check_claims(demo.claims, text), time_on_task_s=demo.time_on_task_s,
        pasted_chars=sum(int(event.get("chars", 0)) for event in demo.paste_events), draft=draft,
        guideline_version=demo.guideline_version, verdict=newest_verdict(session=session, demonstration_id=demo.id),
    )  # fmt: skip


def newest_verdict(*, session: Session, demonstration_id: int) -> Verdict | None:
    query = (
        select(DemonstrationReview, User.username)
        .outerjoin(User, User.id == DemonstrationReview.reviewer_id)
        .where(DemonstrationReview.demonstration_id == demonstration_id)
        .order_by(col(DemonstrationReview.reviewed_at).desc(), col(DemonstrationReview.id).desc())
    )
    found = session.exec(query.limit(1)).first()
    if found is None:
        return None
    review, username = found
    return Verdict(status=str(review.status), note=review.note, reviewer=username, reviewed_at=review.reviewed_at)


def is_current(*, session: Session, demonstration_id: int) -> bool:
    later = select(func.count()).where(Demonstration.supersedes_id == demonstration_id)
    return session.exec(later).one() == 0


def record_review(
    *, session: Session, demonstration: Demonstration, status: ReviewStatus, note: str, actor_id: int | None
) -> DemonstrationReview:
    """Append a lead's review of ``demonstration`` (earlier ones stay) and audit it; the caller validates."""
    row = DemonstrationReview(demonstration_id=demonstration.id, status=status, note=note, reviewer_id=actor_id)
    session.add(row)
    session.flush()
    named = select(Campaign.name).join(Prompt, Prompt.campaign_id == Campaign.id)
    campaign = session.exec(named.where(Prompt.id == demonstration.prompt_id)).one()
    details = {"demonstration_id": demonstration.id, "review_id": row.id, "status": str(status)}
    session.add(AuditEvent(actor_id=actor_id, action="demonstration.review", target=campaign, details=details))
    session.flush()
    return row
