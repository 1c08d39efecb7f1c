"""How far a rater and a campaign have come: the counts behind a rater's progress line, as queries.

An item is counted once: a revision (a row that supersedes another) is not new work. A campaign's demonstrations
count as in the work queue (storage.demonstrations.holding_a_place): not imported writing, not rejected ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, exists, func, true
from sqlmodel import Session, col, select

from storage.demonstrations import awaiting_revision, holding_a_place
from storage.members import excluded_raters
from storage.models import CalibrationItem, Campaign, Demonstration, Judgment, Pair, Prompt

_REGULAR_PAIR = ~exists().where(CalibrationItem.pair_id == Pair.id)


def _count(session: Session, query: Any) -> int:
    return session.exec(query).one()


def _today_and_total(moment: Any) -> Any:
    """A query of (rows since ``today``, rows in all), ``moment`` saying when a row was made."""
    return select(func.count(case((moment >= bindparam("today"), 1))), func.count())


# Built once (they run on every submit), their values bound at the call.
RATER, CAMPAIGN = bindparam("rater"), bindparam("campaign")
_JUDGED = (
    _today_and_total(Judgment.server_time)
    .select_from(Judgment)
    .join(Pair, col(Pair.id) == Judgment.pair_id)
    .where(Pair.campaign_id == CAMPAIGN, Judgment.rater_id == RATER, col(Judgment.supersedes_id).is_(None))
)
_WRITTEN = (
    _today_and_total(Demonstration.created_at)
    .select_from(Demonstration)
    .join(Prompt, col(Prompt.id) == Demonstration.prompt_id)
    .where(Prompt.campaign_id == CAMPAIGN, Demonstration.rater_id == RATER)
    .where(col(Demonstration.supersedes_id).is_(None))
)
_REJECTED = (
    select(func.count())
    .select_from(Demonstration)
    .join(Prompt, col(Prompt.id) == Demonstration.prompt_id)
    .where(Prompt.campaign_id == CAMPAIGN, Demonstration.rater_id == RATER, awaiting_revision())
)
_judged, _written, _rejected = _JUDGED.subquery(), _WRITTEN.subquery(), _REJECTED.subquery()
_MINE = (  # one row of all three, one statement
    select(*_judged.c, *_written.c, *_rejected.c).select_from(_judged.join(_written, true()).join(_rejected, true()))
)


def count_mine(
    *, session: Session, rater_id: int, campaign_id: int, today: datetime
) -> tuple[int, int, int, int, int]:
    """(judged since ``today``, judged in all, written since ``today``, written in all, rejected): the pairs of the
    campaign this rater judged (calibration items included), the demonstrations they wrote for it, and how many of
    those await a revision after a lead rejected them (storage.demonstrations.awaiting_revision)."""
    return tuple(session.exec(_MINE, params={"rater": rater_id, "campaign": campaign_id, "today": today}).one())


def judgment_coverage(*, session: Session, campaign: Campaign, before: datetime | None = None) -> tuple[int, int]:
    """(collected, needed): judgments of the campaign's regular pairs (before ``before``) that count toward k (not an
    excluded rater's: storage.members), and pairs x overlap_k."""
    pairs = _count(session, select(func.count(Pair.id)).where(Pair.campaign_id == campaign.id, _REGULAR_PAIR))
    query = (
        select(func.count(Judgment.id))
        .join(Pair, col(Pair.id) == Judgment.pair_id)
        .where(Pair.campaign_id == campaign.id, _REGULAR_PAIR, col(Judgment.supersedes_id).is_(None))
        .where(col(Judgment.rater_id).not_in(excluded_raters(campaign.id)))
    )
    collected = _count(session, query if before is None else query.where(Judgment.server_time < before))
    return collected, pairs * campaign.overlap_k


def demonstration_coverage(*, session: Session, campaign: Campaign, before: datetime | None = None) -> tuple[int, int]:
    """(collected, needed): the demonstrations holding a place toward k (storage.demonstrations.holding_a_place;
    before ``before``), and prompts x overlap_k."""
    prompts = _count(session, select(func.count(Prompt.id)).where(Prompt.campaign_id == campaign.id))
    query = (
        select(func.count(Demonstration.id))
        .join(Prompt, col(Prompt.id) == Demonstration.prompt_id)
        .where(Prompt.campaign_id == campaign.id, holding_a_place(campaign.id))
    )
    collected = _count(session, query if before is None else query.where(Demonstration.created_at < before))
    return collected, prompts * campaign.overlap_k
