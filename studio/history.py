"""A rater's history: their own past judgments and demonstrations, searched, reopened and revised. No UI code.

A revision is a new row superseding the rater's current version (append-only, as every judgment and
demonstration); exports and the quality engine read current versions only. A judgment is reopened as the rater
saw it (the same sides, answers in display terms).

Calibration items are listed, reopened and revised exactly like the others, and nothing here says which items they
are or what their expected answer is: in audit mode that would tell a rater which items test them, and a refusal
to revise them would say it as plainly. A revision never changes a calibration score instead: probation
(``storage.queue.calibration_standing``) and the quality engine (``storage.frames.judgment_frame_for``) score a
calibration item by the rater's first answer, given before any feedback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from storage import history, members, queue
from storage.db import read_session
from storage.demonstrations import Verdict, is_current, newest_reviews, newest_verdict
from storage.models import (
    Campaign,
    Demonstration,
    DemonstrationCreate,
    Judgment,
    Pair,
    Prompt,
    Response,
    TaskKind,
    utcnow,
)
from studio.access import PermissionDenied, Service
from studio.validation import (
    JudgmentAnswer,
    ValidationFailed,
    check_claims,
    check_paste_events,
    flip,
    judgment_create,
    message,
)

HISTORY_LIMIT = 50


@dataclass(frozen=True)
class HistoryItem:
    """One line of the rater's history."""

    kind: str  # judgment | demonstration
    item_id: int  # the judgment's or demonstration's id (its current version)
    campaign: str
    at: datetime
    prompt: str  # the prompt's last user turn, as written
    text: str  # the reasoning, or the written response
    choice: int | None  # display terms (-2 left much better .. 2 right much better); None for a demonstration
    revised: bool
    review: str | None = None  # a demonstration's newest review by a lead: accepted | rejected; None: not reviewed


@dataclass(frozen=True)
class JudgmentView:
    """A past judgment reopened, in display terms, with the pair as the rater saw it; never a calibration answer."""

    judgment_id: int
    version: int
    campaign_id: int
    messages: list[dict[str, Any]]
    left_text: str
    right_text: str
    rubric: list[str]
    criteria_required: bool
    min_reasoning_chars: int
    choice: int
    both_bad: bool
    criteria: dict[str, int]
    reasoning: str
    confidence: int


@dataclass(frozen=True)
class DemonstrationView:
    demonstration_id: int
    version: int
    campaign_id: int
    messages: list[dict[str, Any]]
    text: str
    claims: list[dict[str, Any]]
    verdict: Verdict | None  # a lead's newest review of this version, its note written to the writer


def parse_day(text: str | None, what: str) -> date | None:
    """A day typed as YYYY-MM-DD (blank: none)."""
    if not (text or "").strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValidationFailed(f"Write the {what} date as YYYY-MM-DD (got {text.strip()!r}).") from None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _prompt_line(messages: list[dict[str, Any]]) -> str:
    users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"] or [""]
    return " ".join(users[-1].split())


class RaterHistory(Service):
    """The rater's own history. Each public method is one transaction (reads: one session)."""

    def _own_campaign(self, session: Session, rater_id: int, campaign_id: int) -> Campaign:
        """The campaign of one of the rater's own rows, while the rater may still work in it."""
        return self._rater_in(session, rater_id, campaign_id)[1]

    def history(
        self, rater_id: int, *, text: str = "", campaign_id: int | None = None, since: str = "", until: str = ""
    ) -> list[HistoryItem]:
        """The rater's current judgments and demonstrations, newest first, in the campaigns they may still work in
        (or in ``campaign_id``), from ``since`` to ``until`` (days, YYYY-MM-DD, UTC, both included), with ``text``."""
        first, last = parse_day(since, "from"), parse_day(until, "to")
        if first and last and first > last:
            raise ValidationFailed(f"The 'from' date ({first}) is after the 'to' date ({last}).")
        with read_session(self.engine) as session:
            if campaign_id is None:
                user = self._active_user(session, rater_id)
                campaign_ids = [c.id for c in members.rateable_campaigns(session=session, user=user)]
            else:
                campaign_ids = [self._own_campaign(session, rater_id, campaign_id).id]
            rows = history.list_history(
                session=session, rater_id=rater_id, campaign_ids=campaign_ids, text=text, limit=HISTORY_LIMIT,
                since=_midnight(first) if first else None, until=_midnight(last + timedelta(days=1)) if last else None,
            )  # fmt: skip
            written = [row.id for row in rows if row.kind == TaskKind.demonstration]
            reviews = newest_reviews(session=session, demonstration_ids=written)
        reviewed = {demonstration_id: str(review.status) for demonstration_id, review in reviews.items()}
        return [
            HistoryItem(
                kind=str(row.kind), item_id=row.id, campaign=row.campaign, at=row.at,
                prompt=_prompt_line(row.messages),
                text=row.text, choice=None if row.left is None else flip(row.preference, row.left),
                revised=row.revised,
                review=reviewed.get(row.id) if row.kind == TaskKind.demonstration else None,
            )  # fmt: skip
            for row in rows
        ]

    def open_judgment(self, rater_id: int, judgment_id: int) -> JudgmentView:
        """One of the rater's own current judgments, to read again or revise."""
        with read_session(self.engine) as session:
            self._active_user(session, rater_id)
            judgment = session.get(Judgment, judgment_id)
            if judgment is None or judgment.rater_id != rater_id:
                raise PermissionDenied("This judgment is not yours.")
            if queue.is_superseded(session=session, judgment_id=judgment_id):
                raise ValidationFailed("This judgment was revised since: open its latest version.")
            pair = session.get(Pair, judgment.pair_id)
            campaign = self._own_campaign(session, rater_id, pair.campaign_id)
            a, b = session.get(Response, pair.response_a_id).text, session.get(Response, pair.response_b_id).text
            return JudgmentView(
                judgment_id=judgment.id,
                version=history.version_of(session=session, model=Judgment, row_id=judgment.id),
                campaign_id=campaign.id, messages=session.get(Prompt, pair.prompt_id).messages,
                left_text=a if judgment.left == "a" else b, right_text=b if judgment.left == "a" else a,
                rubric=list(campaign.rubric), criteria_required=campaign.criteria_required,
                min_reasoning_chars=campaign.min_reasoning_chars, choice=flip(judgment.preference, judgment.left),
                both_bad=judgment.both_bad, criteria=dict(judgment.criteria), reasoning=judgment.reasoning,
                confidence=judgment.confidence,
            )  # fmt: skip

    def open_demonstration(self, rater_id: int, demonstration_id: int) -> DemonstrationView:
        """One of the rater's own current demonstrations, to read again or revise."""
        with read_session(self.engine) as session:
            self._active_user(session, rater_id)
            demo = session.get(Demonstration, demonstration_id)
            if demo is None or demo.rater_id != rater_id:
                raise PermissionDenied("This demonstration is not yours.")
            if not is_current(session=session, demonstration_id=demonstration_id):
                raise ValidationFailed("This demonstration was revised since: open its latest version.")
            prompt = session.get(Prompt, demo.prompt_id)
            self._own_campaign(session, rater_id, prompt.campaign_id)
            return DemonstrationView(
                demonstration_id=demo.id,
                version=history.version_of(session=session, model=Demonstration, row_id=demo.id),
                campaign_id=prompt.campaign_id,
                messages=prompt.messages,
                text="\n\n".join(str(m.get("content", "")) for m in demo.messages),
                claims=list(demo.claims),
                verdict=newest_verdict(session=session, demonstration_id=demo.id),
            )

    def revise_judgment(self, rater_id: int, judgment_id: int, answer: JudgmentAnswer) -> int:
        """Append a new version of the rater's own current judgment; the old row stays as it was. No calibration
        feedback comes back, and a calibration item's score keeps the first answer (see the module docstring)."""

        def action(session: Session) -> int:
            self._active_user(session, rater_id)
            previous = queue.lock_judgment(session=session, judgment_id=judgment_id)
            if previous is None or previous.rater_id != rater_id:
                raise PermissionDenied("This judgment is not yours.")
            if queue.is_superseded(session=session, judgment_id=judgment_id):
                raise ValidationFailed("This judgment was already revised; edit its latest version.")
            pair = session.get(Pair, previous.pair_id)
            campaign = self._own_campaign(session, rater_id, pair.campaign_id)
            judgment = judgment_create(
                campaign, answer, pair_id=pair.id, left=previous.left, supersedes_id=previous.id
            )
            row = queue.record_judgment(
                session=session, judgment=judgment, rater_id=rater_id,
                guideline_version=campaign.guidelines_version, now=utcnow(),
            )  # fmt: skip
            return row.id

        return self._transaction(action)

    def revise_demonstration(
        self,
        rater_id: int,
        demonstration_id: int,
        *,
        text: str,
        claims: list[dict[str, Any]],
        time_on_task_s: float,
        paste_events: list[dict[str, Any]] | None = None,
    ) -> int:
        """Append a new version of the rater's own current demonstration; it starts unreviewed, the old row stays."""

        def action(session: Session) -> int:
            self._active_user(session, rater_id)
            previous = history.lock_demonstration(session=session, demonstration_id=demonstration_id)
            if previous is None or previous.rater_id != rater_id:
                raise PermissionDenied("This demonstration is not yours.")
            if not is_current(session=session, demonstration_id=demonstration_id):
                raise ValidationFailed("This demonstration was already revised; edit its latest version.")
            campaign = self._own_campaign(session, rater_id, session.get(Prompt, previous.prompt_id).campaign_id)
            if not (text or "").strip():
                raise ValidationFailed("Write a response before saving the revision.")
            try:
                demonstration = DemonstrationCreate(
                    prompt_id=previous.prompt_id, messages=[{"role": "assistant", "content": text.strip()}],
                    draft_response_id=previous.draft_response_id, claims=check_claims(claims),
                    time_on_task_s=time_on_task_s, paste_events=check_paste_events(paste_events or []),
                    supersedes_id=previous.id,
                )  # fmt: skip
            except ValidationError as error:
                raise ValidationFailed(message(error)) from None
            row = queue.record_demonstration(
                session=session, demonstration=demonstration, rater_id=rater_id,
                guideline_version=campaign.guidelines_version, now=utcnow(),
            )  # fmt: skip
            return row.id

        return self._transaction(action)
