"""Parsers: a file or a dataset -> plain prompt, pair and demonstration records; no database here.

One module per format family: the chat formats (prompts, pairs, TRL, ShareGPT) here, HH-RLHF transcripts in
``formats_hh``, OpenAssistant trees in ``formats_oasst``, response sets and unpaired KTO rows in
``formats_responses``; reading files in ``formats_files``; the records, the limits
and the field checks they share in ``formats_records``. A problem raises ImportFailed naming the file, the record
(the line of a JSONL file, the 1-based row of a CSV, Parquet file or dataset) and the field. docs/import.md
describes every format and field."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.formats_files import open_source
from storage.formats_hh import FIELDS as HH_FIELDS
from storage.formats_hh import HH_SPEAKERS, parse_hh, parse_hh_record, render_hh, split_hh
from storage.formats_oasst import parse_oasst_record
from storage.formats_records import (
    OPTIONAL_LENGTHS,
    ROLES,
    Context,
    DemonstrationRecord,
    ImportArguments,
    ImportFailed,
    Messages,
    PairRecord,
    PromptRecord,
    Record,
    ResponseRecord,
    canonical_json,
    kind,
    messages,
    optional_fields,
    pair_hash,
    preference,
    prompt,
    prompt_hash,
    reply,
    text,
)
from storage.formats_responses import KTO_FIELDS, RESPONSE_FIELDS, parse_kto_record, parse_response_record
from storage.formats_responses import detect as detect_responses

__all__ = [
    "HH_SPEAKERS",
    "PARSERS",
    "ROLES",
    "DemonstrationRecord",
    "ImportArguments",
    "ImportFailed",
    "Messages",
    "PairRecord",
    "Parsed",
    "PromptRecord",
    "Records",
    "ResponseRecord",
    "canonical_json",
    "detect_format",
    "pair_hash",
    "parse_file",
    "parse_hh",
    "prompt_hash",
    "read_rows",
    "render_hh",
    "split_hh",
]

_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
_PROMPT_FIELDS = ("prompt", "messages", *OPTIONAL_LENGTHS)


def _parse_prompts(ctx: Context, rec: Any) -> list:
    return [prompt(ctx, {"prompt": rec} if isinstance(rec, str) else rec)]


def _parse_pairs(ctx: Context, rec: dict) -> list:
    p = prompt(ctx, rec)
    a, b = text(ctx, rec, "response_a"), text(ctx, rec, "response_b")
    models = {key: text(ctx, rec, key, required=False, max_len=128) for key in ("model_a", "model_b")}
    return ctx.pair(p, a, b, "response_b", preference=preference(ctx, rec), **models)


def _parse_trl(ctx: Context, rec: dict) -> list:
    return ctx.chosen_pair(prompt(ctx, rec), reply(ctx, rec, "chosen"), reply(ctx, rec, "rejected"), "rejected")


def _parse_sharegpt(ctx: Context, rec: dict) -> list:
    turns = rec.get("conversations")
    if not isinstance(turns, list):
        ctx.fail("conversations", f"must be a list of {{from, value}} turns, got {kind(turns)}")
    turns = [
        {"role": _SHAREGPT_ROLES.get(str(t.get("from"))), "content": t.get("value")} if isinstance(t, dict) else t
        for t in turns
    ]
    p = PromptRecord(ctx.line, messages(ctx, turns, "conversations"), **optional_fields(ctx, rec))
    return ctx.chosen_pair(p, reply(ctx, rec, "chosen"), reply(ctx, rec, "rejected"), "rejected")


def _parse_turns(ctx: Context, rec: dict) -> list:
    """MT-bench's questions: ``turns``, the user's messages in order, each later one sent after the model's own answer
    to the one before (``launch.py generate``); stored as consecutive user messages. ``category`` is the domain."""
    turns = rec.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        ctx.fail("turns", f"must be a non-empty list of the user's messages (strings), got {kind(turns)}")
    category = text(ctx, rec, "category", required=False, max_len=OPTIONAL_LENGTHS["domain"])
    if category and rec.get("domain") not in (None, "", category):
        ctx.fail("category", "and 'domain' are both given and differ; they mean the same, keep one")
    system = text(ctx, rec, "system", required=False, max_len=ctx.limits.max_prompt_chars)
    turns = [{"role": "system", "content": system}] * bool(system) + [{"role": "user", "content": t} for t in turns]
    found = PromptRecord(ctx.line, messages(ctx, turns, "turns"), **optional_fields(ctx, rec))
    found.domain = found.domain or category
    return [found]


PARSERS = {
    "prompts": _parse_prompts,
    "turns": _parse_turns,
    "pairs": _parse_pairs,
    "hh-rlhf": parse_hh_record,
    "oasst": parse_oasst_record,
    "trl": _parse_trl,
    "sharegpt": _parse_sharegpt,
    "responses": parse_response_record,
    "kto": parse_kto_record,
}

FIELDS: dict[str, tuple[str, ...] | None] = {
    "prompts": _PROMPT_FIELDS,
    "turns": ("turns", "category", "system", *OPTIONAL_LENGTHS),
    "pairs": (*_PROMPT_FIELDS, "response_a", "response_b", "model_a", "model_b", "preference"),
    "hh-rlhf": HH_FIELDS,
    "oasst": None,  # message trees carry many fields of their own (lang, review counts, labels...)
    "trl": (*_PROMPT_FIELDS, "chosen", "rejected"),
    "sharegpt": ("conversations", "chosen", "rejected", *OPTIONAL_LENGTHS),
    "responses": RESPONSE_FIELDS,
    "kto": KTO_FIELDS,
}
"""The top-level fields each format reads. A CSV column outside them fails the import; in other files such fields
are listed in the report (``ignored_fields``) so a misspelt optional field never passes unnoticed."""


def detect_format(record: Any) -> str | None:
    """The format a record's keys point to, or None when they do not say."""
    if isinstance(record, str):
        return "prompts"
    keys = set(record) if isinstance(record, dict) else set()
    if "turns" in keys:
        return "turns"
    if "message_tree_id" in keys or {"message_id", "replies"} <= keys:
        return "oasst"
    if {"chosen", "rejected"} <= keys:
        return "sharegpt" if "conversations" in keys else "trl" if "prompt" in keys else "hh-rlhf"
    if keys & {"response_a", "response_b"}:
        return "pairs"
    if found := detect_responses(keys):
        return found
    return "prompts" if keys & {"prompt", "messages"} else None


class Records:
    """The records of one file or dataset, read afresh on every pass (iteration), so memory holds one record at a
    time, not the file. After a pass its counts describe that pass; the first problem raises ImportFailed."""

    def __init__(self, path: str | Path, fmt: str | None = None, *, drop_identical=False, limits=None,
                 model: str | None = None) -> None:  # fmt: skip
        self.limits = limits or ImportArguments()
        self.drop_identical, self.model = drop_identical, model
        largest = max(self.limits.max_prompt_chars, self.limits.max_response_chars)
        self.source = open_source(path, max_field_chars=2 * largest)
        if fmt is not None and fmt not in PARSERS:
            raise ImportFailed(path, f"unknown format {fmt!r}; choose one of {', '.join(PARSERS)}", field="format")
        rows = self.source.rows()
        first = next(rows, None)
        rows.close()
        if first is None:
            raise ImportFailed(path, "holds no records")
        self.format = fmt or detect_format(first[1])
        if self.format is None:
            keys = sorted(first[1])[:20] if isinstance(first[1], dict) else kind(first[1])
            problem = f"cannot tell the format from the fields {keys}; pass --format (one of {', '.join(PARSERS)})"
            raise ImportFailed(path, problem, line=first[0])
        self._check_columns()
        self._check_model()
        self.name, self.rows, self.identical_dropped, self.empty_responses = self.source.name, 0, 0, 0
        self.first_empty_line: int | None = None
        self.ignored_fields: set[str] = set()

    def _check_columns(self) -> None:
        columns, known = self.source.columns, FIELDS[self.format]
        if columns is None or known is None:
            return
        unknown = [c for c in columns if c not in known]
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if unknown or twice:
            problem = f"has the column(s) {unknown or twice} twice" if twice else f"has the column(s) {unknown}"
            raise ImportFailed(
                self.source.path,
                f"{problem}, which the {self.format} format does not read; it reads {', '.join(known)}. Rename or "
                "remove them (a misspelt optional column would otherwise be lost without a word).",
                field=(twice or unknown)[0],
            )

    def _check_model(self) -> None:
        if self.model is None:
            return
        if self.format not in ("responses", "kto"):
            problem = f"--model names the producer of a response set (formats responses, kto), not of {self.format}"
            raise ImportFailed(
                self.source.path, problem + " rows; pairs name theirs in model_a and model_b", field="model"
            )
        if not self.model.strip() or len(self.model) > 128:
            raise ImportFailed(self.source.path, "--model must be a name of 1 to 128 characters", field="model")

    def __iter__(self) -> Iterator[Record]:
        ctx = Context(self.source.path, self.drop_identical, self.limits, model=self.model)
        parse, known, ignored = PARSERS[self.format], FIELDS[self.format], set()
        self.rows = 0
        for ctx.line, row in self.source.rows():
            self.rows += 1
            if self.rows > self.limits.max_rows:
                knob = ImportArguments.knob("max_rows")
                ctx.fail(None, f"is past the limit of {self.limits.max_rows:,} records per import ({knob})")
            if not isinstance(row, dict) and not (self.format == "prompts" and isinstance(row, str)):
                ctx.fail(None, f"must be an object of fields, got {kind(row)}")
            if known is not None and isinstance(row, dict) and len(ignored) < 20:
                ignored.update(k for k in row if k not in known and row[k] not in (None, ""))
            yield from parse(ctx, row)
        self.identical_dropped, self.empty_responses = ctx.dropped, ctx.empty
        self.first_empty_line = ctx.first_empty_line
        self.ignored_fields = {name.encode("utf-8", "backslashreplace").decode()[:64] for name in ignored}


@dataclass
class Parsed:
    """Everything one file holds, in memory; pairs and demonstrations carry their own prompts."""

    format: str
    name: str  # the file or dataset name, the default ``source`` of every row
    prompts: list[PromptRecord] = field(default_factory=list)
    pairs: list[PairRecord] = field(default_factory=list)
    demonstrations: list[DemonstrationRecord] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    identical_dropped: int = 0
    empty_responses: int = 0


def parse_file(path: str | Path, fmt: str | None = None, *, drop_identical=False, limits=None, model=None) -> Parsed:
    """Read and check every record of ``path`` into memory (import_file streams instead); the first problem raises
    ImportFailed."""
    records = Records(path, fmt, drop_identical=drop_identical, limits=limits, model=model)
    parsed = Parsed(records.format, records.name)
    kept = {PromptRecord: parsed.prompts, PairRecord: parsed.pairs, DemonstrationRecord: parsed.demonstrations,
            ResponseRecord: parsed.responses}  # fmt: skip
    for record in records:
        kept[type(record)].append(record)
    parsed.identical_dropped, parsed.empty_responses = records.identical_dropped, records.empty_responses
    return parsed


def read_rows(path: str | Path) -> tuple[list[tuple[int, Any]], str]:
    """(record number, raw record) pairs of a JSON(L), CSV or Parquet file or a dataset, and its name."""
    source = open_source(path)
    return list(source.rows()), source.name
