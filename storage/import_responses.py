"""The part of an import (storage.imports) that writes response sets: prompts named by id, duplicates by producer,
and the Response rows. A response is the same as a stored one only when its prompt, its text and its producer all
match: the same words from two models are two responses."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from storage.formats_records import ImportFailed, PromptRecord, ResponseRecord
from storage.models import Prompt, Response

_IN_LIST = 1000


def response_digest(prompt_hash: str, model: str, text: str) -> bytes:
    """What identifies a response across chunks and against the campaign: prompt, producer and text."""
    return hashlib.blake2b("\x00".join(("response", prompt_hash, model, text)).encode(), digest_size=16).digest()


def resolve_prompt_ids(
    session: Session, records: list[ResponseRecord], *, target: int | None, path: str, campaign: str
) -> None:
    """Give each record that names its prompt by ``prompt_id`` that prompt's messages; ImportFailed (which discards
    the import) naming the line when the campaign holds no such prompt."""
    wanted = sorted({r.prompt_id for r in records if r.prompt is None})
    found: dict[int, Any] = {}
    for i in range(0, len(wanted) if target is not None else 0, _IN_LIST):
        query = select(Prompt.id, Prompt.messages, Prompt.domain).where(
            Prompt.campaign_id == target, Prompt.id.in_(wanted[i : i + _IN_LIST])
        )
        found.update((row.id, row) for row in session.execute(query))
    for record in records:
        if record.prompt is not None:
            continue
        row = found.get(record.prompt_id)
        if row is None:
            problem = f"{record.prompt_id} is not the id of a prompt of campaign {campaign!r}"
            raise ImportFailed(path, problem + ("" if target else ", which does not exist yet"), line=record.line,
                               field="prompt_id")  # fmt: skip
        record.prompt = PromptRecord(record.line, row.messages, domain=row.domain)


def target_responses(session: Session, target: int | None, prompt_hashes: set[str]) -> set[bytes]:
    """Digests (``response_digest``) of the responses the campaign holds for these prompts."""
    if target is None or not prompt_hashes:
        return set()
    query = select(Prompt.content_hash, Response.author, Response.text).join(Prompt, Prompt.id == Response.prompt_id)
    query, ordered, found = query.where(Prompt.campaign_id == target), sorted(prompt_hashes), set()
    for i in range(0, len(ordered), _IN_LIST):
        rows = session.execute(query.where(Prompt.content_hash.in_(ordered[i : i + _IN_LIST])))
        found.update(response_digest(prompt, author, text) for prompt, author, text in rows)
    return found


def response_rows(
    records: list[ResponseRecord], prompt_ids: list[int], provenance: list[dict[str, Any]], *, keep_label: bool
) -> list[dict[str, Any]]:
    """Response rows for ``records``; a known label is kept unless the import says ``known_as none``."""
    return [
        {"prompt_id": prompt_id, "text": r.text, "author": r.model, "generation_params": r.generation_params,
         "prior_label": r.label if keep_label else None, **row}
        for r, prompt_id, row in zip(records, prompt_ids, provenance, strict=True)
    ]  # fmt: skip
