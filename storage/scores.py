"""A reward model's scores of a campaign's pairs (PairScore rows, written by alignment.score) and their reads."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import delete, exists, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from storage.models import Pair, PairScore, Prompt, Response, TrainingRun


def pairs_to_score(*, session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Every pair of the campaign as ``pair_id``, ``prompt`` (messages), ``a`` and ``b`` (its texts), in id order."""
    response_a, response_b = aliased(Response), aliased(Response)
    rows = session.execute(
        select(Pair.id, Prompt.messages, response_a.text, response_b.text)
        .join(Prompt, col(Prompt.id) == Pair.prompt_id)
        .join(response_a, response_a.id == Pair.response_a_id)
        .join(response_b, response_b.id == Pair.response_b_id)
        .where(Pair.campaign_id == campaign_id)
        .order_by(Pair.id)
    ).all()
    return [{"pair_id": row[0], "prompt": row[1], "a": row[2], "b": row[3]} for row in rows]


def store_scores(*, session: Session, run_id: int, scores: pd.DataFrame) -> int:
    """Replace the run's scores of these pairs (``pair_id``, ``score_a``, ``score_b``, ``margin_std``); how many."""
    pair_ids = [int(pair_id) for pair_id in scores["pair_id"]]
    session.exec(delete(PairScore).where(PairScore.run_id == run_id, col(PairScore.pair_id).in_(pair_ids)))
    session.add_all(
        PairScore(
            pair_id=int(row.pair_id),
            run_id=run_id,
            score_a=float(row.score_a),
            score_b=float(row.score_b),
            margin_std=float(row.margin_std),
        )  # fmt: skip
        for row in scores.itertuples()
    )
    session.flush()
    return len(pair_ids)


def latest_run_id(campaign_id: int) -> Any:
    """The id of the run whose scores of the campaign were written last, as a scalar subquery (NULL while none).

    Scores are only ever inserted (``store_scores`` replaces a run's rows with new ones), so the newest write holds
    the highest PairScore id: read backwards from the newest row, this stops at the campaign's first, where ordering
    by ``scored_at`` read and sorted every score of the campaign: 2.7 ms on 10,000 pairs, on each request of the
    queue (storage.active)."""
    of_campaign = exists().where(Pair.id == PairScore.pair_id, Pair.campaign_id == campaign_id).correlate(PairScore)
    return (
        select(PairScore.run_id)
        .where(of_campaign)
        .order_by(col(PairScore.id).desc())
        .limit(1)
        .correlate(None)  # its own pairscore, never the enclosing query's
        .scalar_subquery()
    )


def latest_scoring_run(*, session: Session, campaign_id: int) -> TrainingRun | None:
    """The run whose scores of the campaign's pairs were written last (None when no run scored it)."""
    run_id = session.execute(select(latest_run_id(campaign_id))).scalar()
    return None if run_id is None else session.get(TrainingRun, run_id)


def scores_for(*, session: Session, campaign_id: int, run_id: int) -> pd.DataFrame:
    """The run's scores of the campaign's pairs: ``pair_id``, ``score_a``, ``score_b``, ``margin`` (a minus b),
    ``margin_std``."""
    query = (
        select(PairScore.pair_id, PairScore.score_a, PairScore.score_b, PairScore.margin_std)
        .join(Pair, col(Pair.id) == PairScore.pair_id)
        .where(Pair.campaign_id == campaign_id, PairScore.run_id == run_id)
        .order_by(PairScore.pair_id)
    )
    frame = pd.read_sql(query, session.connection())
    return frame.assign(margin=frame["score_a"] - frame["score_b"])


def scored_pair_count(*, session: Session, campaign_id: int, run_id: int) -> int:
    """How many of the campaign's pairs the run has scored."""
    query = select(func.count()).select_from(PairScore).join(Pair, col(Pair.id) == PairScore.pair_id)
    return session.exec(query.where(Pair.campaign_id == campaign_id, PairScore.run_id == run_id)).one()
