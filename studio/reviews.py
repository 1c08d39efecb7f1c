"""The leads' review of written demonstrations: list them by review status, read one with its claims checked against
its text, accept or reject it with a note. No UI code; the campaign's leads and admins only.

Only accepted demonstrations go into SFT exports by default (storage.export.sft_rows); a rejection says why, so it
needs a note. A demonstration revised since is reviewed in its newest version.
"""

from __future__ import annotations

from sqlmodel import Session

from storage import demonstrations
from storage.demonstrations import DemonstrationDetail, DemonstrationSummary
from storage.models import Demonstration, Prompt, ReviewStatus
from studio.access import Service
from studio.validation import ValidationFailed

__all__ = ["DemonstrationDetail", "DemonstrationSummary", "ReviewService"]


class ReviewService(Service):
    """Each public method takes the acting user's id first and checks that they lead the campaign (or are an admin)."""

    def _lead_of_demonstration(self, session: Session, actor_id: int, demonstration_id: int) -> Demonstration:
        demo = session.get(Demonstration, demonstration_id)
        if demo is None:
            raise LookupError(f"There is no demonstration {demonstration_id}.")
        self._lead_of(session, actor_id, session.get(Prompt, demo.prompt_id).campaign_id)
        return demo

    def demonstrations(
        self, actor_id: int, campaign_id: int, status: str = "unreviewed"
    ) -> list[DemonstrationSummary]:
        """The campaign's current demonstrations whose review status is ``status`` (unreviewed, accepted, rejected or
        all), in id order."""
        if status not in demonstrations.FILTERS:
            raise ValidationFailed(f"Show one of {', '.join(demonstrations.FILTERS)} (got {status!r}).")

        def action(session: Session) -> list[DemonstrationSummary]:
            self._lead_of(session, actor_id, campaign_id)
            return demonstrations.demonstration_summaries(session=session, campaign_id=campaign_id, status=status)

        return self._transaction(action)

    def demonstration(self, actor_id: int, demonstration_id: int) -> DemonstrationDetail:
        """One demonstration: prompt, text, claims checked against the text, writing figures, newest review."""

        def action(session: Session) -> DemonstrationDetail:
            self._lead_of_demonstration(session, actor_id, demonstration_id)
            return demonstrations.demonstration_detail(session=session, demonstration_id=demonstration_id)

        return self._transaction(action)

    def review_demonstration(self, actor_id: int, demonstration_id: int, *, accept: bool, note: str = "") -> int:
        """Accept or reject a demonstration (a later review replaces an earlier one); a rejection needs a note.
        Returns the review's id. Audited."""
        note = (note or "").strip()
        if not isinstance(accept, bool):
            raise ValidationFailed(f"Accept must be yes or no (got {accept!r}).")
        if not accept and not note:
            raise ValidationFailed("Write a note saying why it is rejected: the writer needs the reason.")

        def action(session: Session) -> int:
            demo = self._lead_of_demonstration(session, actor_id, demonstration_id)
            if not demonstrations.is_current(session=session, demonstration_id=demo.id):
                raise ValidationFailed(
                    f"Demonstration {demo.id} was revised since: review its newest version instead."
                )
            status = ReviewStatus.accepted if accept else ReviewStatus.rejected
            return demonstrations.record_review(
                session=session, demonstration=demo, status=status, note=note, actor_id=actor_id
            ).id

        return self._transaction(action)
