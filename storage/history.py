"""A rater's own history: their current judgments and demonstrations, newest first (the studio's History tab).

Current means that no later row supersedes it: the data model is append-only, and a revision is a new row naming
the one it replaces. Text search is case-insensitive over the prompt and the rater's own reasoning or written
response. It runs in Python, since prompts are JSON (escaped on some engines): the history is read newest first a
page at a time until enough rows match, so a search never loads more of a long history than it needs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from storage.models import Campaign, Demonstration, Judgment, Pair, Prompt, TaskKind

PAGE = 200


@dataclass(frozen=True)
class HistoryRow:
    """One current judgment or demonstration of the rater, as the history lists it."""

    kind: TaskKind
    id: int
    campaign_id: int
    campaign: str
    at: datetime  # when this version was stored
    messages: list[dict[str, Any]]  # the prompt
    text: str  # the reasoning of a judgment, the written response of a demonstration
    preference: int | None  # stored terms (A/B); None for a demonstration
    left: str | None  # which response was shown on the left; None for a demonstration
    revised: bool  # this version replaces an earlier one


def _judgments(rater_id: int, campaign_ids: list[int]) -> Any:
    later = aliased(Judgment)
    return (
        select(
            Judgment.id, Pair.campaign_id, Campaign.name, Judgment.server_time, Prompt.messages, Judgment.reasoning,
            Judgment.preference, Judgment.left, Judgment.supersedes_id,
        )
        .join(Pair, col(Pair.id) == Judgment.pair_id)
        .join(Prompt, col(Prompt.id) == Pair.prompt_id)
        .join(Campaign, col(Campaign.id) == Pair.campaign_id)
        .where(Judgment.rater_id == rater_id, col(Pair.campaign_id).in_(campaign_ids))
        .where(~exists().where(later.supersedes_id == Judgment.id))
    ), Judgment.server_time, Judgment.id  # fmt: skip


def _demonstrations(rater_id: int, campaign_ids: list[int]) -> Any:
    later = aliased(Demonstration)
    return (
        select(
            Demonstration.id, Prompt.campaign_id, Campaign.name, Demonstration.created_at, Prompt.messages,
            Demonstration.messages, Demonstration.supersedes_id,
        )
        .join(Prompt, col(Prompt.id) == Demonstration.prompt_id)
        .join(Campaign, col(Campaign.id) == Prompt.campaign_id)
        .where(Demonstration.rater_id == rater_id, col(Prompt.campaign_id).in_(campaign_ids))
        .where(~exists().where(later.supersedes_id == Demonstration.id))
    ), Demonstration.created_at, Demonstration.id  # fmt: skip


def _rows(session: Session, built: Any, since: datetime | None, until: datetime | None) -> Iterator[tuple]:
    """The query's rows, newest first, a page at a time."""
    query, at, row_id = built
    if since is not None:
        query = query.where(at >= since)
    if until is not None:
        query = query.where(at < until)
    query = query.order_by(col(at).desc(), col(row_id).desc())
    for offset in range(0, 1 << 62, PAGE):
        page = session.exec(query.offset(offset).limit(PAGE)).all()
        yield from page
        if len(page) < PAGE:
            return


def _judgment_row(row: tuple) -> HistoryRow:
    id_, campaign_id, name, at, prompt, reasoning, preference, left, supersedes = row
    return HistoryRow(TaskKind.judgment, id_, campaign_id, name, at, prompt, reasoning, preference, left,
                      supersedes is not None)  # fmt: skip


def _demonstration_row(row: tuple) -> HistoryRow:
    id_, campaign_id, name, at, prompt, written, supersedes = row
    text = "\n".join(str(m.get("content", "")) for m in written)
    return HistoryRow(TaskKind.demonstration, id_, campaign_id, name, at, prompt, text, None, None,
                      supersedes is not None)  # fmt: skip


def _matches(row: HistoryRow, needle: str) -> bool:
    prompt = " ".join(str(m.get("content", "")) for m in row.messages)
    return needle in f"{prompt}\n{row.text}".casefold()


def list_history(
    *,
    session: Session,
    rater_id: int,
    campaign_ids: list[int],
    text: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[HistoryRow]:
    """The rater's current judgments and demonstrations in ``campaign_ids``, newest first: at most ``limit``, stored
    in [since, until) when given, with ``text`` (any case) in the prompt or in their reasoning or response."""
    judged = map(_judgment_row, _rows(session, _judgments(rater_id, campaign_ids), since, until))
    written = map(_demonstration_row, _rows(session, _demonstrations(rater_id, campaign_ids), since, until))
    needle = text.strip().casefold()
    found = []
    for row in heapq.merge(judged, written, key=lambda r: (_aware(r.at), r.id), reverse=True):
        if not needle or _matches(row, needle):
            found.append(row)
            if len(found) == limit:
                break
    return found


def _aware(moment: datetime) -> datetime:
    """SQLite may hand back stored UTC times without their zone: compare them all as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def lock_demonstration(*, session: Session, demonstration_id: int) -> Demonstration | None:
    """The demonstration, locked so that two revisions of it cannot both pass the current-version check."""
    query = select(Demonstration).where(Demonstration.id == demonstration_id).with_for_update()
    return session.exec(query).first()


def version_of(*, session: Session, model: type[Judgment] | type[Demonstration], row_id: int) -> int:
    """1 for a first version, 2 for its first revision, and so on (the chain of ``supersedes_id`` walked back)."""
    version, current = 1, session.get(model, row_id)
    while current is not None and current.supersedes_id is not None:
        version, current = version + 1, session.get(model, current.supersedes_id)
    return version
