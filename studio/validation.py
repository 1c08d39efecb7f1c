"""Checks on what a rater submits: each failure is a ValidationFailed whose message says how to fix it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from storage.models import PREFERENCE_SCALE, Campaign, Claim, ClaimStatus, JudgmentCreate, Side


class ValidationFailed(ValueError):
    """A submission the rater can fix; the message says how."""


def message(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in error.errors())


@dataclass(frozen=True)
class JudgmentAnswer:
    """What a rater submits for a pair, in display terms: choice -2 left much better .. +2 right much better."""

    choice: int
    both_bad: bool
    criteria: dict[str, int | None]  # a criterion left out, or None, is "not rated"
    reasoning: str
    confidence: int
    time_on_task_s: float
    client_time: datetime | None = None


def flip(choice: int, left: str) -> int:
    """Display terms to stored terms and back: display -2 means "left much better", stored -2 "A much better"."""
    return choice if left == Side.a else -choice


def reasoning_length(text: str | None) -> int:
    """How many characters of reasoning count toward a campaign's minimum: runs of whitespace count as one, and
    invisible characters not at all, so padding never reaches the minimum. static/studio.js counts the same way."""
    return len(" ".join(_INVISIBLE.sub("", text or "").split()))


_INVISIBLE = re.compile("[\u200b-\u200d\u2060\ufeff]")


def rated(criteria: dict[str, int | None]) -> dict[str, int]:
    """The criteria the rater scored: an unrated one (None) is left out, which is how "not rated" is stored."""
    return {name: score for name, score in criteria.items() if score is not None}


def check_judgment(campaign: Campaign, answer: JudgmentAnswer) -> str:
    """Raise ValidationFailed for the first problem; return the reasoning as stored."""
    choice, criteria, confidence = answer.choice, rated(answer.criteria), answer.confidence
    if choice is None:
        raise ValidationFailed("Choose which response is better (or Tie).")
    if isinstance(choice, bool) or choice not in PREFERENCE_SCALE:
        raise ValidationFailed(f"Choose a preference from -2 to 2 (got {choice!r}).")
    if not isinstance(answer.both_bad, bool):
        raise ValidationFailed(f"'Both bad' must be yes or no (got {answer.both_bad!r}).")
    if unknown := sorted(set(criteria) - set(campaign.rubric)):
        raise ValidationFailed(
            f"Unknown criteria {', '.join(unknown)}; this campaign scores {', '.join(campaign.rubric)}."
        )
    # A criterion may stay unrated unless the campaign requires every one (its `criteria_required` setting).
    missing = [name for name in campaign.rubric if name not in criteria]
    if missing and campaign.criteria_required:
        raise ValidationFailed(f"This campaign asks for every criterion: score {', '.join(missing)}.")
    for name, score in criteria.items():
        if isinstance(score, bool) or score not in range(1, 6):
            raise ValidationFailed(f"Score '{name}' from 1 to 5 (got {score!r}).")
    if isinstance(confidence, bool) or confidence not in range(1, 6):
        raise ValidationFailed(f"Confidence must be 1 to 5 (got {confidence!r}).")
    reasoning = (answer.reasoning or "").strip()
    if (length := reasoning_length(reasoning)) < campaign.min_reasoning_chars:
        raise ValidationFailed(
            f"Reasoning needs at least {campaign.min_reasoning_chars} characters (you wrote {length}; "
            "repeated spaces and line breaks count once)."
        )
    return reasoning


def judgment_create(
    campaign: Campaign, answer: JudgmentAnswer, *, pair_id: int, left: str, supersedes_id: int | None = None
) -> JudgmentCreate:
    """Validate a display-terms answer and turn it into a stored-terms judgment."""
    reasoning = check_judgment(campaign, answer)
    check_client_time(answer.client_time)
    try:
        return JudgmentCreate(
            pair_id=pair_id,
            preference=flip(answer.choice, left),
            both_bad=answer.both_bad,
            criteria=rated(answer.criteria),
            reasoning=reasoning,
            confidence=answer.confidence,
            left=left,
            time_on_task_s=answer.time_on_task_s,
            client_time=answer.client_time,
            supersedes_id=supersedes_id,
        )
    except ValidationError as error:
        raise ValidationFailed(message(error)) from None


def check_client_time(client_time: datetime | None) -> None:
    if client_time is not None and client_time.utcoffset() is None:
        raise ValidationFailed(f"client_time needs a timezone (got {client_time.isoformat()}).")


def check_claims(claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checked = []
    for number, raw in enumerate(claims, start=1):
        try:
            claim = Claim.model_validate(raw)
        except ValidationError as error:
            raise ValidationFailed(f"Claim {number}: {message(error)}.") from None
        if claim.status == ClaimStatus.false:
            raise ValidationFailed(
                f"Claim {number} ({claim.claim!r}) is marked false: correct or remove it before submitting."
            )
        if claim.status == ClaimStatus.verified and not (claim.source or "").strip():
            raise ValidationFailed(f"Claim {number} ({claim.claim!r}) is marked verified: add the source you checked.")
        checked.append(claim.model_dump(mode="json"))
    return checked


def claims_from_rows(rows: list[list[Any]] | None) -> list[dict[str, Any]]:
    """The claim editor's rows (claim, status, source) as claim dicts; blank rows are dropped, nothing else is."""
    claims = []
    for row in rows or []:
        claim, status, source = (str(cell).strip() if cell is not None else "" for cell in [*row, "", "", ""][:3])
        if claim or status or source:
            claims.append({"claim": claim, "status": status.lower(), "source": source or None})
    return claims


MAX_PASTE_EVENTS = 1000


def check_paste_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paste events as the browser records them: ``{"at": ISO-8601 time with a zone, "chars": pasted characters}``."""
    if not isinstance(events, list) or len(events) > MAX_PASTE_EVENTS:
        raise ValidationFailed(f"Paste events must be a list of at most {MAX_PASTE_EVENTS} events.")
    checked = []
    for number, event in enumerate(events, start=1):
        at, chars = (event.get("at"), event.get("chars")) if isinstance(event, dict) else (None, None)
        try:
            zoned = datetime.fromisoformat(at).utcoffset() is not None if isinstance(at, str) else False
        except ValueError:
            zoned = False
        if not zoned or isinstance(chars, bool) or not isinstance(chars, int) or chars < 0:
            raise ValidationFailed(
                f"Paste event {number} must be {{'at': an ISO time with a zone, 'chars': a count}}; got {event!r}."
            )
        checked.append({"at": at, "chars": chars})
    return checked


def read_paste_events(text: str | None) -> list[dict[str, Any]]:
    """The paste events the browser wrote (JSON) into the write form."""
    try:
        events = json.loads(text) if (text or "").strip() else []
    except json.JSONDecodeError as error:
        raise ValidationFailed(f"Paste events are not valid JSON: {error}.") from None
    return check_paste_events(events)
