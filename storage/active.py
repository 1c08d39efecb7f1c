"""Active selection: the order a reward model's scores give a campaign's queue (``Campaign.queue_order``), and the
judged pairs whose consensus the model disputes (likely label errors, for the leads' review).

The scores are the PairScore rows of the run that scored the campaign last (``storage.scores.latest_run_id``). A
pair's margin is ``score_a - score_b`` (positive: A better); its confidence is ``|margin| / (margin_std + EPS)``, the
margin in units of its MC-dropout spread, which orders exactly as ``|margin|`` when the run was scored without
dropout (every spread 0). A pair's consensus is the sign of the mean preference of its current judgments (-2..2,
negative: A better); the model disputes it when the mean preference and the margin have the same sign.

Where the model's priority sits against the queue's "closest to k first" (storage.queue._first_open):

- ``uncertainty`` ranks after the load: it chooses which pair to open next. The top pair stays on top until it is
  full anyway, so while the scores stand this changes nothing; when a new run rescores the campaign, pairs already
  started are finished first instead of being stranded with fewer than k judgments (a label needs its k for its
  agreement figures and export filters).
- ``disagreement`` ranks its disputed pairs before the load: its point is to send the next judgment of an already
  judged pair where the consensus is in doubt, and "closest to k first" would put every half-finished undisputed
  pair ahead of it. A disputed pair only moves toward k, so nothing is stranded. The other pairs follow as in
  ``uncertainty``.

Unscored pairs (imported after the scoring) come after every scored one; with no scoring run at all the queue is
fifo. The ranking is SQL joined into the queue's one query: no pair is read into Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, exists, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from storage.models import (
    Adjudication,
    CalibrationItem,
    Judgment,
    Pair,
    PairScore,
    Prompt,
    QueueOrder,
)
from storage.review import preview
from storage.scores import latest_run_id, latest_scoring_run

EPS = 1e-6
"""Keeps the confidence finite where a run has no MC-dropout spread (``margin_std`` 0)."""


@dataclass(frozen=True)
class DisputedPair:
    """A judged pair whose consensus the reward model disputes: a likely label error."""

    pair_id: int
    prompt_preview: str
    n_judgments: int  # current ones
    mean_preference: float  # of the current judgments, -2 (A much better) .. 2 (B much better)
    margin: float  # the model's score of A minus its score of B: positive, A better
    margin_std: float  # the margin's MC-dropout spread (0 without)
    confidence: float  # |margin| / (margin_std + EPS): how surely the model disputes it
    is_calibration: bool


@dataclass(frozen=True)
class Scoring:
    """The campaign's latest scoring: the scores its queue follows when its order is not fifo."""

    run_id: int
    run: str  # the run's name
    scored_at: datetime  # when its newest score of the campaign was written
    scored_pairs: int
    total_pairs: int  # the campaign's pairs now; those imported since the scoring are unscored


def latest_scoring(*, session: Session, campaign_id: int) -> Scoring | None:
    """Which run's scores order the campaign's queue, when they were written and how many pairs they cover; None
    while no run has scored the campaign."""
    run = latest_scoring_run(session=session, campaign_id=campaign_id)
    if run is None:
        return None
    scored_at, scored = session.execute(
        select(func.max(PairScore.scored_at), func.count())
        .join(Pair, col(Pair.id) == PairScore.pair_id)
        .where(Pair.campaign_id == campaign_id, PairScore.run_id == run.id)
    ).one()
    total = session.exec(select(func.count()).select_from(Pair).where(Pair.campaign_id == campaign_id)).one()
    return Scoring(run_id=run.id, run=run.name, scored_at=scored_at, scored_pairs=scored, total_pairs=total)


def consensus_of(campaign_id: int) -> Any:
    """Per judged pair of the campaign: ``pair_id``, ``mean_preference`` and ``n_judgments`` over its current
    (not superseded) judgments."""
    later = aliased(Judgment)
    return (
        select(col(Judgment.pair_id).label("pair_id"), func.avg(Judgment.preference).label("mean_preference"),
               func.count().label("n_judgments"))
        .join(Pair, col(Pair.id) == Judgment.pair_id)
        .where(Pair.campaign_id == campaign_id, ~exists().where(later.supersedes_id == Judgment.id))
        .group_by(Judgment.pair_id)
        .subquery()
    )  # fmt: skip


def scores_of(run_id: Any) -> Any:
    """The run's scores (``run_id`` an id or a scalar subquery): ``pair_id``, ``margin``, ``margin_std`` and
    ``confidence`` (see the module docstring)."""
    margin = PairScore.score_a - PairScore.score_b
    return (
        select(
            col(PairScore.pair_id).label("pair_id"),
            margin.label("margin"),
            col(PairScore.margin_std).label("margin_std"),
            (func.abs(margin) / (PairScore.margin_std + EPS)).label("confidence"),
        )
        .where(PairScore.run_id == run_id)
        .subquery()
    )


def _disputed(consensus: Any, scores: Any) -> Any:
    return func.coalesce(consensus.c.mean_preference * scores.c.margin, 0) > 0


def ranked(base: Select, *, campaign_id: int, queue_order: QueueOrder) -> tuple[Select, list, list]:
    """``base`` (the open-pair query selecting ``Pair.id``) with the latest scores joined, and the ORDER BY terms that
    go before and after the queue's load ordering for the campaign's ``queue_order``. For fifo there are none; while
    no run has scored the campaign every pair is unscored and the terms tie, so the queue is fifo then too."""
    if queue_order == QueueOrder.fifo:
        return base, [], []
    scores = scores_of(latest_run_id(campaign_id))
    base = base.outerjoin(scores, scores.c.pair_id == Pair.id)
    after = [scores.c.pair_id.is_(None), scores.c.confidence]
    if queue_order != QueueOrder.disagreement:
        return base, [], after
    consensus = consensus_of(campaign_id)
    base = base.outerjoin(consensus, consensus.c.pair_id == Pair.id)
    disputed = _disputed(consensus, scores)
    return base, [case((disputed, 0), else_=1), case((disputed, -scores.c.confidence), else_=0)], after


def disputed_pairs(*, session: Session, campaign_id: int, run_id: int, limit: int = 200) -> list[DisputedPair]:
    """The campaign's judged pairs whose consensus the run's model disputes, the most confident dispute first. A pair
    a lead has adjudicated is left out: it has been reviewed, and its decision is its label."""
    consensus, scores = consensus_of(campaign_id), scores_of(run_id)
    query = (
        select(Pair.id, Prompt.messages, consensus.c.n_judgments, consensus.c.mean_preference, scores.c.margin,
               scores.c.margin_std, scores.c.confidence, CalibrationItem.id)
        .join(Prompt, col(Prompt.id) == Pair.prompt_id)
        .join(consensus, consensus.c.pair_id == Pair.id)
        .join(scores, scores.c.pair_id == Pair.id)
        .outerjoin(CalibrationItem, col(CalibrationItem.pair_id) == Pair.id)
        .where(Pair.campaign_id == campaign_id, _disputed(consensus, scores))
        .where(~exists().where(Adjudication.pair_id == Pair.id))
        .order_by(scores.c.confidence.desc(), Pair.id)
        .limit(limit)
    )  # fmt: skip
    return [
        DisputedPair(pair_id=pair_id, prompt_preview=preview(messages), n_judgments=n, mean_preference=float(mean),
                     margin=float(margin), margin_std=float(std), confidence=float(confidence),
                     is_calibration=item is not None)
        for pair_id, messages, n, mean, margin, std, confidence, item in session.execute(query)
    ]  # fmt: skip
