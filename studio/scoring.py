"""What a reward model's scores tell a campaign's leads: which run's scores order its queue (``queue_order``) and
when they were written, and the judged pairs whose consensus the model disputes: likely label errors, each opened in
Adjudication. No UI code, no torch: the scores come from ``launch.py score`` and from a reward run trained on the
campaign (alignment.runner rescores it when it finishes); the queue itself reads them in storage.active.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from storage import active
from storage.active import DisputedPair, Scoring
from studio.access import Service

__all__ = ["DisputedPair", "LabelErrors", "QueueScores", "Scoring", "ScoringService"]


@dataclass(frozen=True)
class QueueScores:
    order: str  # the campaign's queue_order: fifo | uncertainty | disagreement
    scoring: Scoring | None  # the scores it follows; None: no run has scored the campaign (the queue is fifo)


@dataclass(frozen=True)
class LabelErrors:
    scoring: Scoring | None  # the scores the disputes come from (None: nothing to review yet)
    pairs: list[DisputedPair]  # the most confident dispute first; adjudicated pairs left out


class ScoringService(Service):
    """Each public method takes the acting user's id first; only the campaign's leads and admins may call them."""

    def queue_scores(self, actor_id: int, campaign_id: int) -> QueueScores:
        """The campaign's queue order and the latest scoring run it follows."""

        def action(session: Session) -> QueueScores:
            _, campaign = self._lead_of(session, actor_id, campaign_id)
            scoring = active.latest_scoring(session=session, campaign_id=campaign.id)
            return QueueScores(order=str(campaign.queue_order), scoring=scoring)

        return self._transaction(action)

    def label_errors(self, actor_id: int, campaign_id: int, limit: int = 200) -> LabelErrors:
        """The judged pairs whose consensus the latest scoring run's model disputes, most confident first."""

        def action(session: Session) -> LabelErrors:
            self._lead_of(session, actor_id, campaign_id)
            scoring = active.latest_scoring(session=session, campaign_id=campaign_id)
            if scoring is None:
                return LabelErrors(scoring=None, pairs=[])
            found = active.disputed_pairs(session=session, campaign_id=campaign_id, run_id=scoring.run_id, limit=limit)
            return LabelErrors(scoring=scoring, pairs=found)

        return self._transaction(action)
