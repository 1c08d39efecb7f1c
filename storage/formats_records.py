"""What every import format shares: the records, the limits, and the checks each field goes through.

A problem raises ImportFailed naming the file, the record (the line of a JSONL file, the 1-based row of a CSV,
Parquet file or dataset) and the field. Text is checked the same way for every engine: SQLite would store a NUL
character or a lone surrogate that PostgreSQL refuses, so both refuse them here, before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

Messages = list[dict[str, str]]
ROLES = ("system", "user", "assistant")
MAX_TURNS_CEILING = 256  # the OASST walk recurses once per turn: far below Python's recursion limit
OPTIONAL_LENGTHS = {"domain": 64, "source": 256, "license": 128}  # the columns' sizes in storage.models
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


class ImportFailed(ValueError):
    """Input that cannot be imported; the message names the file, the record and the field."""

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = str(path), line, field
        where = (f", line {line}" if line else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{path}{where}: {problem}")


@dataclass
class ImportArguments:
    """Limits on one import, and how much of it each write transaction holds (docs/import.md). ``from_env`` reads
    ``$CONCORD_IMPORT_<FIELD>`` (e.g. ``CONCORD_IMPORT_MAX_ROWS``) over the defaults."""

    max_rows: int = field(default=1_000_000, metadata={"help": "records (lines, rows) in one file"})
    max_prompt_chars: int = field(default=100_000, metadata={"help": "characters of one prompt, all turns together"})
    max_response_chars: int = field(default=100_000, metadata={"help": "characters of one response or demonstration"})
    max_turns: int = field(default=100, metadata={"help": f"messages in a conversation (at most {MAX_TURNS_CEILING})"})
    chunk_rows: int = field(default=500, metadata={"help": "prompts, pairs and demonstrations per write transaction"})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name} must be a whole number of at least 1, got {value!r}")
        if self.max_turns > MAX_TURNS_CEILING:
            raise ValueError(f"max_turns must be at most {MAX_TURNS_CEILING}, got {self.max_turns}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ImportArguments:
        values = {}
        for f in fields(cls):
            name = f"CONCORD_IMPORT_{f.name.upper()}"
            if environ.get(name, "").strip():
                try:
                    values[f.name] = int(environ[name].replace("_", ""))
                except ValueError:
                    raise ValueError(f"${name} must be a whole number, got {environ[name]!r}") from None
        return cls(**values)

    @staticmethod
    def knob(name: str) -> str:
        """How a user changes a limit, for the messages that name it."""
        return f"{name}, ${f'CONCORD_IMPORT_{name.upper()}'}"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prompt_hash(messages: Messages) -> str:
    """``Prompt.content_hash``: sha256 of the canonical JSON of the messages."""
    return hashlib.sha256(canonical_json(messages).encode()).hexdigest()


def pair_hash(
    prompt_content_hash: str, text_a: str, text_b: str, model_a: str | None = None, model_b: str | None = None
) -> str:
    """``Pair.content_hash``: the same for (a, b) and (b, a), so a swapped duplicate is still a duplicate. A pair whose
    responses name their models counts as the same only when the producers match too (identical texts from two
    models are two comparisons); without models the hash is what it always was."""
    if model_a is None and model_b is None:
        return hashlib.sha256(canonical_json([prompt_content_hash, *sorted([text_a, text_b])]).encode()).hexdigest()
    sides = sorted([[text_a, model_a or "unknown"], [text_b, model_b or "unknown"]])
    return hashlib.sha256(canonical_json([prompt_content_hash, *sides]).encode()).hexdigest()


@dataclass
class PromptRecord:
    line: int
    messages: Messages
    domain: str | None = None
    source: str | None = None
    license: str | None = None

    @cached_property
    def content_hash(self) -> str:
        return prompt_hash(self.messages)


@dataclass
class PairRecord:
    prompt: PromptRecord
    response_a: str
    response_b: str
    model_a: str | None = None
    model_b: str | None = None
    preference: int | None = None  # known at import time, on the -2..2 scale

    @cached_property
    def content_hash(self) -> str:
        return pair_hash(self.prompt.content_hash, self.response_a, self.response_b, self.model_a, self.model_b)


@dataclass
class DemonstrationRecord:
    prompt: PromptRecord
    text: str


@dataclass
class ResponseRecord:
    """One model's response to a prompt, given by its text (``prompt``) or by its id in the campaign (``prompt_id``,
    resolved when the import writes); ``label`` is a known desirable/undesirable verdict (KTO)."""

    prompt: PromptRecord | None
    text: str
    model: str
    line: int
    prompt_id: int | None = None
    generation_params: dict[str, Any] = field(default_factory=dict)
    label: bool | None = None


Record = PromptRecord | PairRecord | DemonstrationRecord | ResponseRecord


@dataclass
class Context:
    """One pass over one file: where it is, the limits, and what it counted on the way."""

    path: str
    drop_identical: bool
    limits: ImportArguments
    line: int = 0
    model: str | None = None  # the producer of a response set's responses when its records do not say (--model)
    dropped: int = 0  # pairs with two identical responses, skipped
    empty: int = 0  # pairs, demonstrations or responses with an empty (or whitespace-only) response, kept
    first_empty_line: int | None = None
    message_ids: dict[str, int] = field(default_factory=dict)  # OASST message id -> the line it was first seen on

    def fail(self, field: str | None, problem: str) -> NoReturn:
        raise ImportFailed(self.path, problem, line=self.line, field=field)

    def note_empty(self, *texts: str) -> None:
        if any(not text.strip() for text in texts):
            self.empty += 1
            self.first_empty_line = self.first_empty_line or self.line

    def pair(self, prompt: PromptRecord, a: str, b: str, field: str, **known: Any) -> list[PairRecord]:
        if a != b:
            self.note_empty(a, b)
            return [PairRecord(prompt, a, b, **known)]
        if not self.drop_identical:
            self.fail(field, "both responses are identical (drop_identical=True, --drop-identical, skips them)")
        self.dropped += 1
        return []

    def chosen_pair(self, prompt: PromptRecord, chosen: str, rejected: str, field: str, models=(None, None)):
        """Chosen goes on A or B by a hash of the content, so the side never gives the label away."""
        chosen_on_a = int(pair_hash(prompt.content_hash, chosen, rejected)[-1], 16) % 2 == 0
        a, b = (chosen, rejected) if chosen_on_a else (rejected, chosen)
        model_a, model_b = models if chosen_on_a else models[::-1]
        return self.pair(prompt, a, b, field, model_a=model_a, model_b=model_b, preference=-1 if chosen_on_a else 1)


def kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def preview(value: Any) -> str:
    """A short description of any value: never a full repr, which can be huge or too deeply nested to print."""
    if isinstance(value, str):
        return repr(value[:60] + ("..." if len(value) > 60 else ""))
    if isinstance(value, dict):
        return f"an object with fields {[str(k)[:30] for k in list(value)[:6]]}"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, int) and value.bit_length() > 128:
        return "a very large integer"
    return f"{kind(value)} {str(value)[:40]}" if isinstance(value, int | float | bool) else kind(value)


def clean(ctx: Context, field: str, value: str, limit: int | None = None, knob: str | None = None) -> str:
    """``value`` if both engines store it as it is and it is within ``limit`` characters; else ImportFailed."""
    if limit is not None and len(value) > limit:
        if knob is None:
            ctx.fail(field, f"is longer than {limit:,} characters ({len(value):,})")
        ctx.fail(
            field, f"has {len(value):,} characters, more than the limit of {limit:,} ({ImportArguments.knob(knob)})"
        )
    if (bad := _BAD_CHARACTER.search(value)) is not None:
        at = f"at character {bad.start() + 1:,}"
        if bad.group() == "\x00":
            ctx.fail(field, f"holds a NUL character (U+0000) {at}, which PostgreSQL cannot store; remove it")
        ctx.fail(field, f"holds a lone surrogate (U+{ord(bad.group()):04X}) {at}, which is not valid Unicode text")
    return value


def text(ctx: Context, rec: dict, key: str, *, required: bool = True, max_len: int | None = None) -> str | None:
    """A string field. A required one may be empty (the pair counts it); ``max_len`` None means a response."""
    value = rec.get(key)
    if value is None or (value == "" and not required):
        return ctx.fail(key, "is missing") if required else None
    if not isinstance(value, str):
        ctx.fail(key, f"must be a string, got {preview(value)}")
    if max_len is None:
        return clean(ctx, key, value, ctx.limits.max_response_chars, "max_response_chars")
    return clean(ctx, key, value, max_len)


def optional_fields(ctx: Context, rec: dict) -> dict[str, str | None]:
    return {key: text(ctx, rec, key, required=False, max_len=n) for key, n in OPTIONAL_LENGTHS.items()}


def check_turns(ctx: Context, key: str, turns: int) -> None:
    if turns > ctx.limits.max_turns:
        knob = ImportArguments.knob("max_turns")
        ctx.fail(key, f"has {turns:,} turns, more than the limit of {ctx.limits.max_turns} ({knob})")


def check_prompt(ctx: Context, key: str, messages: Messages) -> Messages:
    """The limits on a whole conversation: turns, and characters over every turn."""
    check_turns(ctx, key, len(messages))
    if (total := sum(len(m["content"]) for m in messages)) > ctx.limits.max_prompt_chars:
        knob = ImportArguments.knob("max_prompt_chars")
        ctx.fail(key, f"has {total:,} characters, more than the limit of {ctx.limits.max_prompt_chars:,} ({knob})")
    return messages


def messages(ctx: Context, value: Any, key: str) -> Messages:
    if isinstance(value, str):  # a CSV cell holds the list as JSON
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            ctx.fail(key, "is a string but not a JSON list of messages")
    if not isinstance(value, list) or not value:
        ctx.fail(key, f"must be a non-empty list of {{role, content}} messages, got {preview(value)}")
    check_turns(ctx, key, len(value))
    result = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            ctx.fail(f"{key}[{i}]", f"must be {{role: {'|'.join(ROLES)}, content: string}}, got {preview(m)}")
        result.append({"role": m["role"], "content": clean(ctx, f"{key}[{i}].content", m["content"])})
    if result[-1]["role"] != "user" or not result[-1]["content"].strip():
        ctx.fail(key, "must end with a non-empty user message")
    return check_prompt(ctx, key, result)


def prompt(ctx: Context, rec: dict) -> PromptRecord:
    key = "messages" if rec.get("messages") not in (None, "") else "prompt"
    value = rec.get(key)
    if value is None:
        ctx.fail("prompt", "is missing: give 'prompt' (a string) or 'messages' (a list of {role, content})")
    if key == "prompt" and isinstance(value, str):
        value = [{"role": "user", "content": value}]
    return PromptRecord(ctx.line, messages(ctx, value, key), **optional_fields(ctx, rec))


def preference(ctx: Context, rec: dict) -> int | None:
    value = rec.get("preference")
    if value is None or value == "":
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]{1,3}\s*", value):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():  # a nullable integer column read back as floats
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -2 <= value <= 2:
        problem = f"must be an integer from -2 (A much better) to 2 (B much better), got {preview(value)}"
        ctx.fail("preference", problem)
    return value


def reply(ctx: Context, rec: dict, key: str) -> str:
    """A string, one {role, content} assistant message (TRL), or one {from, value} turn (ShareGPT)."""
    value = rec.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("content", value.get("value"))
    if not isinstance(value, str):
        ctx.fail(key, f"must be a string or a single assistant message, got {preview(value)}")
    return clean(ctx, key, value, ctx.limits.max_response_chars, "max_response_chars")
