"""What a rater sees next and what they may submit: one transaction per user action, no UI code.

Tasks carry only what the rater sees. A pair is shown in display order (left/right) and the rater answers in
display terms; the service alone knows which side is A, and whether an item is a calibration item.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from storage import members, queue
from storage.models import (
    Assignment,
    DemonstrationCreate,
    Pair,
    Prompt,
    Response,
    Side,
    TaskKind,
    User,
    utcnow,
)
from studio.access import PermissionDenied, Service
from studio.validation import (
    JudgmentAnswer,
    ValidationFailed,
    check_claims,
    check_client_time,
    judgment_create,
    message,
)


@dataclass(frozen=True)
class PairTask:
    assignment_id: int
    pair_id: int
    messages: list[dict[str, Any]]
    left_text: str
    right_text: str
    rubric: list[str]
    min_reasoning_chars: int
    guidelines: str
    guidelines_version: int


@dataclass(frozen=True)
class PromptTask:
    assignment_id: int
    prompt_id: int
    messages: list[dict[str, Any]]
    draft: str | None
    guidelines: str
    guidelines_version: int


class StudioService(Service):
    """The raters' actions. Each public method is one transaction, retried on PostgreSQL conflicts."""

    def _own_open_assignment(self, session: Session, rater_id: int, assignment_id: int, task: TaskKind) -> Assignment:
        self._active_user(session, rater_id)
        assignment = queue.lock_assignment(session=session, assignment_id=assignment_id)
        if assignment is None or assignment.rater_id != rater_id or assignment.task != task:
            raise PermissionDenied("This item is not assigned to you.")
        if assignment.closed_at is not None:
            raise ValidationFailed("This item was already submitted; ask for the next one.")
        return assignment

    def campaigns_for(self, username: str | None) -> list[tuple[str, int]]:
        """(name, id) of the campaigns this user can work in."""
        user_id = self.user_id(username)
        with Session(self.engine) as session:
            user = session.get(User, user_id)
            return [(c.name, c.id) for c in members.rateable_campaigns(session=session, user=user)]

    def next_pair(self, rater_id: int, campaign_id: int) -> PairTask | None:
        """The pair this rater should judge now (the same one after a reload), or None when nothing is left."""

        def action(session: Session) -> PairTask | None:
            user, campaign = self._rater_in(session, rater_id, campaign_id)
            assignment = queue.next_pair_assignment(
                session=session, user=user, campaign=campaign, rng=self.rng, now=utcnow(), lease=self.lease
            )
            if assignment is None:
                return None
            pair = session.get(Pair, assignment.pair_id)
            a, b = session.get(Response, pair.response_a_id).text, session.get(Response, pair.response_b_id).text
            left_text, right_text = (a, b) if assignment.left == Side.a else (b, a)
            return PairTask(
                assignment_id=assignment.id,
                pair_id=pair.id,
                messages=session.get(Prompt, pair.prompt_id).messages,
                left_text=left_text,
                right_text=right_text,
                rubric=list(campaign.rubric),
                min_reasoning_chars=campaign.min_reasoning_chars,
                guidelines=campaign.guidelines,
                guidelines_version=campaign.guidelines_version,
            )

        return self._transaction(action)

    def next_prompt(self, rater_id: int, campaign_id: int) -> PromptTask | None:
        """The prompt this rater should write a response for, or None when nothing is left."""

        def action(session: Session) -> PromptTask | None:
            user, campaign = self._rater_in(session, rater_id, campaign_id)
            assignment = queue.next_prompt_assignment(
                session=session, user=user, campaign=campaign, now=utcnow(), lease=self.lease
            )
            if assignment is None:
                return None
            draft = queue.draft_response(session=session, prompt_id=assignment.prompt_id)
            return PromptTask(
                assignment_id=assignment.id,
                prompt_id=assignment.prompt_id,
                messages=session.get(Prompt, assignment.prompt_id).messages,
                draft=draft.text if draft else None,
                guidelines=campaign.guidelines,
                guidelines_version=campaign.guidelines_version,
            )

        return self._transaction(action)

    def submit_judgment(self, rater_id: int, assignment_id: int, answer: JudgmentAnswer) -> int:
        """Store the rater's judgment of the pair assigned to them."""

        def action(session: Session) -> int:
            assignment = self._own_open_assignment(session, rater_id, assignment_id, TaskKind.judgment)
            campaign = self._campaign(session, assignment.campaign_id)
            judgment = judgment_create(campaign, answer, pair_id=assignment.pair_id, left=assignment.left)
            row = queue.record_judgment(
                session=session,
                judgment=judgment,
                rater_id=rater_id,
                guideline_version=campaign.guidelines_version,
                now=utcnow(),
                assignment=assignment,
            )
            return row.id

        return self._transaction(action)

    def revise_judgment(self, rater_id: int, judgment_id: int, answer: JudgmentAnswer) -> int:
        """Append a new version of the rater's own current judgment; the old row stays as it was."""

        def action(session: Session) -> int:
            self._active_user(session, rater_id)
            previous = queue.lock_judgment(session=session, judgment_id=judgment_id)
            if previous is None or previous.rater_id != rater_id:
                raise PermissionDenied("This judgment is not yours.")
            if queue.is_superseded(session=session, judgment_id=judgment_id):
                raise ValidationFailed("This judgment was already revised; edit its latest version.")
            pair = session.get(Pair, previous.pair_id)
            campaign = self._campaign(session, pair.campaign_id)
            judgment = judgment_create(
                campaign, answer, pair_id=pair.id, left=previous.left, supersedes_id=previous.id
            )
            row = queue.record_judgment(
                session=session,
                judgment=judgment,
                rater_id=rater_id,
                guideline_version=campaign.guidelines_version,
                now=utcnow(),
            )
            return row.id

        return self._transaction(action)

    def submit_demonstration(
        self,
        rater_id: int,
        assignment_id: int,
        *,
        text: str,
        claims: list[dict[str, Any]],
        time_on_task_s: float,
        paste_events: list[dict[str, Any]],
        client_time: datetime | None = None,
    ) -> int:
        """Store the rater's written response; a claim marked false blocks it."""

        def action(session: Session) -> int:
            assignment = self._own_open_assignment(session, rater_id, assignment_id, TaskKind.demonstration)
            campaign = self._campaign(session, assignment.campaign_id)
            if not (text or "").strip():
                raise ValidationFailed("Write a response before submitting.")
            checked_claims = check_claims(claims)
            check_client_time(client_time)
            draft = queue.draft_response(session=session, prompt_id=assignment.prompt_id)
            try:
                demonstration = DemonstrationCreate(
                    prompt_id=assignment.prompt_id,
                    messages=[{"role": "assistant", "content": text.strip()}],
                    draft_response_id=draft.id if draft else None,
                    claims=checked_claims,
                    time_on_task_s=time_on_task_s,
                    paste_events=paste_events,
                    client_time=client_time,
                )
            except ValidationError as error:
                raise ValidationFailed(message(error)) from None
            row = queue.record_demonstration(
                session=session,
                demonstration=demonstration,
                rater_id=rater_id,
                guideline_version=campaign.guidelines_version,
                now=utcnow(),
                assignment=assignment,
            )
            return row.id

        return self._transaction(action)
