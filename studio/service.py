"""What a rater sees next and what they may submit: one transaction per user action, no UI code.

Tasks carry only what the rater sees. A pair is shown in display order (left/right) and the rater answers in
display terms; the service alone knows which side is A, and whether an item is a calibration item.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from storage import members, progress, queue
from storage.db import read_session
from storage.models import (
    Assignment,
    CalibrationKind,
    CalibrationMode,
    Campaign,
    Consent,
    DemonstrationCreate,
    Judgment,
    Prompt,
    Side,
    TaskKind,
    User,
    utcnow,
)
from studio.access import LOCKED_USERS, PermissionDenied
from studio.history import RaterHistory
from studio.validation import (
    JudgmentAnswer,
    ValidationFailed,
    check_claims,
    check_client_time,
    check_paste_events,
    flip,
    judgment_create,
    message,
)

__all__ = [
    "CalibrationFeedback",
    "ConsentRequired",
    "JudgmentResult",
    "PairTask",
    "PermissionDenied",
    "Progress",
    "PromptTask",
    "StudioService",
    "ValidationFailed",
]


class ConsentRequired(PermissionDenied):
    """The rater has not yet accepted this version of the campaign's consent text; it comes with the refusal."""

    def __init__(self, campaign_id: int, text: str, version: int) -> None:
        super().__init__("Read and accept this campaign's consent first.")
        self.campaign_id, self.text, self.version = campaign_id, text, version


@dataclass(frozen=True)
class PairTask:
    assignment_id: int
    pair_id: int
    messages: list[dict[str, Any]]
    left_text: str
    right_text: str
    rubric: list[str]
    criteria_required: bool  # every criterion must be scored; otherwise one may stay "not rated"
    min_reasoning_chars: int
    guidelines: str
    guidelines_version: int
    leased_at: datetime  # when the rater was first shown it: time on task counts from here, across reloads


@dataclass(frozen=True)
class PromptTask:
    assignment_id: int
    prompt_id: int
    messages: list[dict[str, Any]]
    draft: str | None
    guidelines: str
    guidelines_version: int
    leased_at: datetime  # as for PairTask


@dataclass(frozen=True)
class CalibrationFeedback:
    """After a calibration item in training mode: the expected answer, in display terms like the rater's own."""

    expected: int  # -2 left much better .. 2 right much better
    accepted: list[int]  # every answer that counts as correct, display terms
    answer_accepted: bool
    explanation: str  # written by a lead, who speaks of responses A and B
    a_on_left: bool  # where response A was shown, to read the explanation by


@dataclass(frozen=True)
class JudgmentResult:
    """A stored judgment, with what the rater sees next, looked up in the same transaction (one call per submit)."""

    judgment_id: int
    feedback: CalibrationFeedback | None = None  # only for a calibration item in a campaign in training mode
    progress: Progress | None = None  # None: nothing looked up (feedback to read, or consent or access changed)
    next_task: PairTask | None = None  # with progress set: the pair leased next, None when nothing is left


@dataclass(frozen=True)
class Progress:
    """One rater's own figures in one campaign. Campaign and calibration figures are ``as_of`` a time when set."""

    judged_today: int  # since 00:00 UTC
    judged_total: int
    written_today: int
    written_total: int
    written_rejected: int  # rejected by a lead, not yet revised (History opens each with the lead's note)
    judgments_collected: int  # every rater's, on regular pairs
    judgments_needed: int  # regular pairs x overlap_k
    demonstrations_collected: int
    demonstrations_needed: int  # prompts x overlap_k
    calibration_correct: int
    calibration_answered: int  # over the rater's last `calibration_window` calibration answers
    calibration_window: int
    calibration_threshold: float
    on_probation: bool  # served only calibration items until back above the threshold (training mode only)
    as_of: datetime | None  # None: live


def _feedback(session: Session, campaign: Campaign, judgment: Judgment) -> CalibrationFeedback | None:
    """Training mode shows a calibration item's answer after the submit (of an item leased as one); audit mode and
    repeat items never do."""
    if campaign.calibration_mode != CalibrationMode.training:
        return None
    item = queue.calibration_item(session=session, pair_id=judgment.pair_id)
    # A repeat item measures consistency when it comes back: revealing its answer would spoil the second showing.
    if item is None or item.kind == CalibrationKind.repeat:
        return None
    return CalibrationFeedback(
        expected=flip(item.expected, judgment.left),
        accepted=sorted(flip(value, judgment.left) for value in {item.expected, *item.accepted}),
        answer_accepted=judgment.preference in {item.expected, *item.accepted},
        explanation=item.explanation,
        a_on_left=judgment.left == Side.a,
    )


COVERAGE_SECONDS = 10.0
"""How often a campaign's collected/needed figures on the progress line are counted again: counting every judgment
of a large campaign on every submit made a submit cost more as the campaign grew (benchmarks/queue_scale.py)."""


class StudioService(RaterHistory):
    """The raters' actions (their history and revisions: studio.history). Each public method is one transaction,
    retried on PostgreSQL conflicts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._coverage: dict[tuple[int, datetime | None], tuple[float, tuple[int, int], tuple[int, int]]] = {}

    def _campaign_coverage(self, session: Session, campaign: Campaign, as_of: datetime | None) -> tuple:
        """(judgments, demonstrations) as (collected, needed), counted at most every ``COVERAGE_SECONDS``."""
        key, now = (campaign.id, as_of), time.monotonic()
        counted = self._coverage.get(key)
        if counted is None or counted[0] <= now:
            judged = progress.judgment_coverage(session=session, campaign=campaign, before=as_of)
            written = progress.demonstration_coverage(session=session, campaign=campaign, before=as_of)
            counted = self._coverage[key] = (now + COVERAGE_SECONDS, judged, written)
        return counted[1], counted[2]

    def _own_open_assignment(
        self, session: Session, rater_id: int, assignment_id: int, task: TaskKind
    ) -> tuple[Assignment, Campaign]:
        found = queue.lock_own_assignment(session=session, rater_id=rater_id, assignment_id=assignment_id)
        if found is not None:
            session.info.setdefault(LOCKED_USERS, {})[rater_id] = found[0]
        self._active_user(session, rater_id)  # an inactive account is told so, whoever's the item
        if found is None or found[1].task != task:
            raise PermissionDenied(
                "This item is not assigned to you (any more: a lead may have taken you off its campaign)."
            )
        _, assignment, campaign = found
        if assignment.closed_at is not None:
            raise ValidationFailed("This item was already submitted; ask for the next one.")
        return assignment, campaign

    def _consented_rater_in(self, session: Session, rater_id: int, campaign_id: int) -> tuple[User, Campaign]:
        user, campaign = self._rater_in(session, rater_id, campaign_id)
        if not members.has_consented(session=session, user_id=user.id, campaign=campaign):
            raise ConsentRequired(campaign.id, campaign.consent_text, campaign.consent_version)
        return user, campaign

    def campaigns_for(self, username: str | None = None, *, user_id: int | None = None) -> list[tuple[str, int]]:
        """(name, id) of the campaigns this user (by login name, or by id) can work in."""
        user_id = self.user_id(username) if user_id is None else user_id
        with read_session(self.engine) as session:
            user = session.get(User, user_id)
            if user is None or not user.active:
                raise PermissionDenied("This account is not active; ask a lead to reactivate it.")
            return [(c.name, c.id) for c in members.rateable_campaigns(session=session, user=user)]

    def accept_consent(self, rater_id: int, campaign_id: int, version: int) -> None:
        """Record that the rater accepted the campaign's consent text; ``version`` must be the current one."""

        def action(session: Session) -> None:
            user, campaign = self._rater_in(session, rater_id, campaign_id)
            if version != campaign.consent_version:
                raise ValidationFailed(
                    f"The consent text changed (now version {campaign.consent_version}, you read version "
                    f"{version}): read it again before accepting."
                )
            if not members.has_consented(session=session, user_id=user.id, campaign=campaign):
                session.add(Consent(user_id=user.id, campaign_id=campaign.id, version=version, at=utcnow()))

        self._transaction(action)

    def progress(self, rater_id: int, campaign_id: int) -> Progress:
        """The rater's own progress line. In audit mode campaign and calibration figures stop at 00:00 UTC: a figure
        that moved right after a submit would tell the rater that the item was a calibration item."""
        with read_session(self.engine) as session:
            _, campaign = self._rater_in(session, rater_id, campaign_id)
            return self._progress(session, rater_id, campaign)

    def _progress(self, session: Session, rater_id: int, campaign: Campaign) -> Progress:
        today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        as_of = today if campaign.calibration_mode == CalibrationMode.audit else None
        judged, written = self._campaign_coverage(session, campaign, as_of)
        correct, answered = queue.calibration_standing(
            session=session, rater_id=rater_id, campaign=campaign, before=as_of
        )
        judged_today, judged_total, written_today, written_total, rejected = progress.count_mine(
            session=session, rater_id=rater_id, campaign_id=campaign.id, today=today
        )
        return Progress(
            judged_today=judged_today,
            judged_total=judged_total,
            written_today=written_today,
            written_total=written_total,
            written_rejected=rejected,
            judgments_collected=judged[0],
            judgments_needed=judged[1],
            demonstrations_collected=written[0],
            demonstrations_needed=written[1],
            calibration_correct=correct,
            calibration_answered=answered,
            calibration_window=campaign.calibration_window,
            calibration_threshold=campaign.calibration_threshold,
            # In audit mode saying so would mark every item from now on as a calibration item.
            on_probation=as_of is None and queue.on_probation(session=session, rater_id=rater_id, campaign=campaign),
            as_of=as_of,
        )

    def next_pair(self, rater_id: int, campaign_id: int) -> PairTask | None:
        """The pair this rater should judge now (the same one after a reload), or None when nothing is left."""

        def action(session: Session) -> PairTask | None:
            user, campaign = self._consented_rater_in(session, rater_id, campaign_id)
            return self._next_pair(session, user, campaign)

        return self._transaction(action)

    def _next_pair(self, session: Session, user: User, campaign: Campaign) -> PairTask | None:
        assignment = queue.next_pair_assignment(
            session=session, user=user, campaign=campaign, rng=self.rng, now=utcnow(), lease=self.lease
        )
        if assignment is None:
            return None
        messages, a, b = queue.pair_shown(session=session, pair_id=assignment.pair_id)
        left_text, right_text = (a, b) if assignment.left == Side.a else (b, a)
        return PairTask(
            assignment_id=assignment.id,
            pair_id=assignment.pair_id,
            messages=messages,
            left_text=left_text,
            right_text=right_text,
            rubric=list(campaign.rubric),
            criteria_required=campaign.criteria_required,
            min_reasoning_chars=campaign.min_reasoning_chars,
            guidelines=campaign.guidelines,
            guidelines_version=campaign.guidelines_version,
            leased_at=assignment.leased_at,
        )

    def next_prompt(self, rater_id: int, campaign_id: int) -> PromptTask | None:
        """The prompt this rater should write a response for, or None when nothing is left."""

        def action(session: Session) -> PromptTask | None:
            user, campaign = self._consented_rater_in(session, rater_id, campaign_id)
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
                leased_at=assignment.leased_at,
            )

        return self._transaction(action)

    def submit_judgment(self, rater_id: int, assignment_id: int, answer: JudgmentAnswer) -> JudgmentResult:
        """Store the rater's judgment of the pair assigned to them; in training mode a calibration item answers.
        Otherwise the next pair is leased and the progress counted in the same transaction, unless the rater must
        first accept a new consent text or left the campaign (``progress`` None: ask ``next_pair``, which says why)."""

        def action(session: Session) -> JudgmentResult:
            assignment, campaign = self._own_open_assignment(session, rater_id, assignment_id, TaskKind.judgment)
            judgment = judgment_create(campaign, answer, pair_id=assignment.pair_id, left=assignment.left)
            row = queue.record_judgment(
                session=session,
                judgment=judgment,
                rater_id=rater_id,
                guideline_version=campaign.guidelines_version,
                now=utcnow(),
                assignment=assignment,
            )
            if assignment.is_calibration and (feedback := _feedback(session, campaign, row)) is not None:
                return JudgmentResult(judgment_id=row.id, feedback=feedback)
            try:
                user, campaign = self._consented_rater_in(session, rater_id, campaign.id)
            except PermissionDenied:  # ConsentRequired included
                return JudgmentResult(judgment_id=row.id)
            task = self._next_pair(session, user, campaign)
            return JudgmentResult(row.id, progress=self._progress(session, rater_id, campaign), next_task=task)

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
            assignment, campaign = self._own_open_assignment(session, rater_id, assignment_id, TaskKind.demonstration)
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
                    paste_events=check_paste_events(paste_events),
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
