"""How far a rater and a campaign have come: the counts behind a rater's progress line, as queries.

An item is counted once: a revision (a row that supersedes another) is not new work. Imported writing (no rater)
does not count toward a campaign's demonstrations, as in the work queue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import exists, func
from sqlmodel import Session, col, select

from storage.models import CalibrationItem, Campaign, Demonstration, Judgment, Pair, Prompt

_REGULAR_PAIR = ~exists().where(CalibrationItem.pair_id == Pair.id)


def _count(session: Session, query: Any) -> int:
    return session.exec(query).one()


def count_judged(*, session: Session, rater_id: int, campaign_id: int, since: datetime | None = None) -> int:
    """Pairs of the campaign this rater judged (calibration items included), since ``since`` when given."""
    query = (
        select(func.count(Judgment.id))
        .join(Pair, col(Pair.id) == Judgment.pair_id)
        .where(Pair.campaign_id == campaign_id, Judgment.rater_id == rater_id, col(Judgment.supersedes_id).is_(None))
    )
    return _count(session, query if since is None else query.where(Judgment.server_time >= since))


def count_written(*, session: Session, rater_id: int, campaign_id: int, since: datetime | None = None) -> int:
    """Demonstrations this rater wrote for the campaign, since ``since`` when given."""
    query = (
        select(func.count(Demonstration.id))
        .join(Prompt, col(Prompt.id) == Demonstration.prompt_id)
        .where(Prompt.campaign_id == campaign_id, Demonstration.rater_id == rater_id)
        .where(col(Demonstration.supersedes_id).is_(None))
    )
    return _count(session, query if since is None else query.where(Demonstration.created_at >= since))


def judgment_coverage(*, session: Session, campaign: Campaign, before: datetime | None = None) -> tuple[int, int]:
    """(collected, needed): judgments of the campaign's regular pairs (before ``before``), and pairs x overlap_k."""
    pairs = _count(session, select(func.count(Pair.id)).where(Pair.campaign_id == campaign.id, _REGULAR_PAIR))
    query = (
        select(func.count(Judgment.id))
        .join(Pair, col(Pair.id) == Judgment.pair_id)
        .where(Pair.campaign_id == campaign.id, _REGULAR_PAIR, col(Judgment.supersedes_id).is_(None))
    )
    collected = _count(session, query if before is None else query.where(Judgment.server_time < before))
    return collected, pairs * campaign.overlap_k


def demonstration_coverage(*, session: Session, campaign: Campaign, before: datetime | None = None) -> tuple[int, int]:
    """(collected, needed): rater-written demonstrations (before ``before``), and prompts x overlap_k."""
    prompts = _count(session, select(func.count(Prompt.id)).where(Prompt.campaign_id == campaign.id))
    query = (
        select(func.count(Demonstration.id))
        .join(Prompt, col(Prompt.id) == Demonstration.prompt_id)
        .where(Prompt.campaign_id == campaign.id, col(Demonstration.rater_id).is_not(None))
        .where(col(Demonstration.supersedes_id).is_(None))
    )
    collected = _count(session, query if before is None else query.where(Demonstration.created_at < before))
    return collected, prompts * campaign.overlap_k
