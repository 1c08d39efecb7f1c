"""Candidate responses that a model generates for a campaign's prompts (``launch.py generate``): what the campaign
holds already, and one batch written.

A generated response is a Response row whose ``author`` is the model's name and whose ``generation_params`` hold the
sampling parameters, the model's identity and ``sample``, the index of the response among the N asked for its
prompt. (prompt, author, sample) is what a resumed run skips: nothing is generated twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from storage.models import AuditEvent, Prompt, Response, utcnow

SAMPLE = "sample"
"""The ``generation_params`` key holding a generated response's index among its prompt's samples."""


@dataclass(frozen=True)
class Candidate:
    """One generated response, ready to be written."""

    prompt_id: int
    author: str
    sample: int
    text: str
    generation_params: dict[str, Any]


def stored_samples(*, session: Session, campaign_id: int, author: str) -> set[tuple[int, int]]:
    """(prompt id, sample) of the responses ``author`` has generated for the campaign's prompts."""
    query = (
        select(Response.prompt_id, Response.generation_params)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .where(Prompt.campaign_id == campaign_id, Response.author == author)
    )
    return {(prompt_id, params[SAMPLE]) for prompt_id, params in session.execute(query)
            if isinstance(params, dict) and isinstance(params.get(SAMPLE), int)}  # fmt: skip


def add_candidates(*, session: Session, campaign_id: int, candidates: list[Candidate], source: str) -> int:
    """Write the candidates the campaign does not hold yet (another run may have written some meanwhile); flushes,
    never commits. Returns how many were written."""
    held: dict[str, set[tuple[int, int]]] = {}
    rows, now = [], utcnow()
    for c in candidates:
        if c.author not in held:
            held[c.author] = stored_samples(session=session, campaign_id=campaign_id, author=c.author)
        if (c.prompt_id, c.sample) in held[c.author]:
            continue
        held[c.author].add((c.prompt_id, c.sample))
        params = {**c.generation_params, SAMPLE: c.sample}
        text = c.text.replace("\x00", "\ufffd")  # a model can emit NUL, which PostgreSQL cannot store (SQLite can)
        rows.append(Response(prompt_id=c.prompt_id, text=text, author=c.author, generation_params=params,
                             source=source, created_at=now))  # fmt: skip
    session.add_all(rows)
    session.flush()
    return len(rows)


def audit_generation(*, session: Session, campaign: str, details: dict[str, Any]) -> None:
    """Record a finished (or stopped) generation run: models, counts, parameters."""
    session.add(AuditEvent(actor_id=None, action="generate", target=campaign, details=details))
    session.flush()
