"""Parsers: a file or a dataset -> plain prompt, pair and demonstration records; no database here.

A problem raises ImportFailed naming the file, the record (the line of a JSONL file, the 1-based row of a CSV,
Parquet file or dataset) and the field."""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

Messages = list[dict[str, str]]
ROLES = ("system", "user", "assistant")
HH_SPEAKERS = {"user": "Human", "assistant": "Assistant"}
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
_OPTIONAL_LENGTHS = {"domain": 64, "source": 256, "license": 128}  # the columns' sizes in storage.models
_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')


class ImportFailed(ValueError):
    """Input that cannot be imported; the message names the file, the record and the field."""

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = str(path), line, field
        where = (f", line {line}" if line else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{path}{where}: {problem}")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prompt_hash(messages: Messages) -> str:
    """``Prompt.content_hash``: sha256 of the canonical JSON of the messages."""
    return hashlib.sha256(canonical_json(messages).encode()).hexdigest()


def pair_hash(prompt_content_hash: str, text_a: str, text_b: str) -> str:
    """``Pair.content_hash``: the same for (a, b) and (b, a), so a swapped duplicate is still a duplicate."""
    return hashlib.sha256(canonical_json([prompt_content_hash, *sorted([text_a, text_b])]).encode()).hexdigest()


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
        return pair_hash(self.prompt.content_hash, self.response_a, self.response_b)


@dataclass
class DemonstrationRecord:
    prompt: PromptRecord
    text: str


@dataclass
class Parsed:
    """Everything one file holds; pairs and demonstrations carry their own prompts."""

    format: str
    name: str  # the file or dataset name, the default ``source`` of every row
    prompts: list[PromptRecord] = field(default_factory=list)
    pairs: list[PairRecord] = field(default_factory=list)
    demonstrations: list[DemonstrationRecord] = field(default_factory=list)
    identical_dropped: int = 0


@dataclass
class _Context:
    path: str
    drop_identical: bool
    line: int = 0
    dropped: int = 0

    def fail(self, field: str | None, problem: str) -> NoReturn:
        raise ImportFailed(self.path, problem, line=self.line, field=field)

    def pair(self, prompt: PromptRecord, a: str, b: str, field: str, **known: Any) -> list[PairRecord]:
        if a != b:
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


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _text(ctx: _Context, rec: dict, key: str, *, required: bool = True, max_len: int | None = None) -> str | None:
    value = rec.get(key)
    if value is None or (value == "" and not required):
        return ctx.fail(key, "is missing") if required else None
    if not isinstance(value, str):
        ctx.fail(key, f"must be a string, got {_kind(value)}")
    if max_len and len(value) > max_len:
        ctx.fail(key, f"is longer than {max_len} characters")
    return value


def _messages(ctx: _Context, value: Any, key: str) -> Messages:
    if isinstance(value, str):  # a CSV cell holds the list as JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            ctx.fail(key, "is a string but not a JSON list of messages")
    if not isinstance(value, list) or not value:
        ctx.fail(key, f"must be a non-empty list of {{role, content}} messages, got {_kind(value)}")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            ctx.fail(f"{key}[{i}]", f"must be {{role: {'|'.join(ROLES)}, content: string}}, got {m!r:.80}")
        messages.append({"role": m["role"], "content": m["content"]})
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        ctx.fail(key, "must end with a non-empty user message")
    return messages


def _prompt(ctx: _Context, rec: dict) -> PromptRecord:
    key = "messages" if rec.get("messages") not in (None, "") else "prompt"
    value = rec.get(key)
    if value is None:
        ctx.fail("prompt", "is missing: give 'prompt' (a string) or 'messages' (a list of {role, content})")
    if key == "prompt" and isinstance(value, str):
        value = [{"role": "user", "content": value}]
    extra = {k: _text(ctx, rec, k, required=False, max_len=n) for k, n in _OPTIONAL_LENGTHS.items()}
    return PromptRecord(ctx.line, _messages(ctx, value, key), **extra)


def _preference(ctx: _Context, rec: dict) -> int | None:
    value = rec.get("preference")
    if value is None or value == "":
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():  # a nullable integer column read back as floats
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -2 <= value <= 2:
        ctx.fail("preference", f"must be an integer from -2 (A much better) to 2 (B much better), got {value!r}")
    return value


def _reply(ctx: _Context, rec: dict, key: str) -> str:
    """A string, one {role, content} assistant message (TRL), or one {from, value} turn (ShareGPT)."""
    value = rec.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("content", value.get("value"))
    if not isinstance(value, str):
        ctx.fail(key, f"must be a string or a single assistant message, got {_kind(value)}")
    return value


def parse_hh(transcript: str) -> Messages:
    """``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` -> messages, keeping every character of every turn."""
    parts = _HH_TURN.split(transcript)
    if parts[0]:
        raise ValueError("an HH transcript starts with '\\n\\nHuman: '")
    return [
        {"role": "user" if who == "Human" else "assistant", "content": text}
        for who, text in zip(parts[1::2], parts[2::2], strict=True)
    ]


def render_hh(messages: Messages) -> str:
    """Messages -> the HH transcript they came from, exactly."""
    return "".join(f"\n\n{HH_SPEAKERS[m['role']]}: {m['content']}" for m in messages)


def split_hh(chosen: str, rejected: str) -> tuple[Messages, str, str]:
    """The shared dialogue (ending in a Human turn) and the two replies: all the text after it, since a few
    HH records go on past the differing reply; so ``render_hh(prompt + [reply])`` is the exact transcript."""
    a, b = parse_hh(chosen), parse_hh(rejected)
    k = 0
    while k < min(len(a), len(b)) - 1 and a[k] == b[k]:
        k += 1
    while k > 0 and not (a[k]["role"] == b[k]["role"] == "assistant" and a[k - 1]["role"] == "user"):
        k -= 1
    if k == 0:
        raise ValueError("chosen and rejected share no dialogue that ends in a Human turn")
    start = len(render_hh(a[:k])) + len("\n\nAssistant: ")
    return a[:k], chosen[start:], rejected[start:]


def _parse_prompts(ctx: _Context, rec: Any) -> list:
    return [_prompt(ctx, {"prompt": rec} if isinstance(rec, str) else rec)]


def _parse_pairs(ctx: _Context, rec: dict) -> list:
    prompt = _prompt(ctx, rec)
    a, b = _text(ctx, rec, "response_a"), _text(ctx, rec, "response_b")
    models = {key: _text(ctx, rec, key, required=False, max_len=128) for key in ("model_a", "model_b")}
    return ctx.pair(prompt, a, b, "response_b", preference=_preference(ctx, rec), **models)


def _parse_hh(ctx: _Context, rec: dict) -> list:
    chosen, rejected = _text(ctx, rec, "chosen"), _text(ctx, rec, "rejected")
    for key, transcript in (("chosen", chosen), ("rejected", rejected)):
        if not transcript.startswith("\n\nHuman: "):
            ctx.fail(key, "must be a transcript that starts with '\\n\\nHuman: '")
    try:
        messages, chosen_reply, rejected_reply = split_hh(chosen, rejected)
    except ValueError as exc:
        ctx.fail("rejected", str(exc))
    return ctx.chosen_pair(PromptRecord(ctx.line, messages), chosen_reply, rejected_reply, "rejected")


def _parse_trl(ctx: _Context, rec: dict) -> list:
    return ctx.chosen_pair(_prompt(ctx, rec), _reply(ctx, rec, "chosen"), _reply(ctx, rec, "rejected"), "rejected")


def _parse_sharegpt(ctx: _Context, rec: dict) -> list:
    turns = rec.get("conversations")
    if not isinstance(turns, list):
        ctx.fail("conversations", f"must be a list of {{from, value}} turns, got {_kind(turns)}")
    turns = [
        {"role": _SHAREGPT_ROLES.get(t.get("from")), "content": t.get("value")} if isinstance(t, dict) else t
        for t in turns
    ]
    prompt = PromptRecord(ctx.line, _messages(ctx, turns, "conversations"))
    return ctx.chosen_pair(prompt, _reply(ctx, rec, "chosen"), _reply(ctx, rec, "rejected"), "rejected")


def _walk_oasst(ctx: _Context, node: Any, prefix: Messages, key: str) -> list:
    """Every prompter turn's conversation is a prompt; human assistant replies are demonstrations; ranked
    assistant siblings give every (better, worse) pair."""
    if not (
        isinstance(node, dict) and node.get("role") in ("prompter", "assistant") and isinstance(node.get("text"), str)
    ):
        ctx.fail(key, "must be an OASST message with role prompter|assistant and a text")
    if not isinstance(node.get("replies") or [], list) or not isinstance(node.get("rank"), int | None):
        ctx.fail(key, "has 'replies' that is not a list or a 'rank' that is not an integer")
    messages = [*prefix, {"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]}]
    records, replies = [], []
    for i, reply in enumerate(node.get("replies") or []):
        if not (isinstance(reply, dict) and reply.get("deleted")):
            records += _walk_oasst(ctx, reply, messages, f"{key}.replies[{i}]")
            replies.append(reply)
    if node["role"] == "prompter":
        prompt = PromptRecord(ctx.line, messages, source="oasst")
        answers = [r for r in replies if r["role"] == "assistant"]
        records.append(prompt)
        records += [DemonstrationRecord(prompt, r["text"]) for r in answers if not r.get("synthetic")]
        ranked = sorted((r for r in answers if r.get("rank") is not None), key=lambda r: r["rank"])
        for better, worse in itertools.combinations(ranked, 2):
            records += ctx.chosen_pair(
                prompt, better["text"], worse["text"], f"{key}.replies", (_author(better), _author(worse))
            )
    return records


def _author(message: dict) -> str:
    return (message.get("model_name") or "unknown") if message.get("synthetic") else "human"


PARSERS = {
    "prompts": _parse_prompts,
    "pairs": _parse_pairs,
    "hh-rlhf": _parse_hh,
    "oasst": lambda ctx, rec: _walk_oasst(ctx, rec.get("prompt") if "message_tree_id" in rec else rec, [], "prompt"),
    "trl": _parse_trl,
    "sharegpt": _parse_sharegpt,
}


def detect_format(record: Any) -> str | None:
    """The format a record's keys point to, or None when they do not say."""
    if isinstance(record, str):
        return "prompts"
    keys = set(record) if isinstance(record, dict) else set()
    if "message_tree_id" in keys or {"message_id", "replies"} <= keys:
        return "oasst"
    if {"chosen", "rejected"} <= keys:
        return "sharegpt" if "conversations" in keys else "trl" if "prompt" in keys else "hh-rlhf"
    if keys & {"response_a", "response_b"}:
        return "pairs"
    return "prompts" if keys & {"prompt", "messages"} else None


def _json_lines(path: Path, text: str) -> list[tuple[int, Any]]:
    if text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise ImportFailed(path, f"not valid JSON ({exc})") from exc
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            keys = _JSON_KEY.findall(line[: exc.pos])  # the field being read when the line broke off
            problem = f"not valid JSON ({exc.msg} at column {exc.colno}); is the line truncated?"
            raise ImportFailed(path, problem, line=number, field=keys[-1] if keys else None) from exc
    return rows


def _dataset_rows(name: str) -> list[tuple[int, Any]]:
    import datasets  # heavy: only for dataset imports

    saved = (Path(name) / "state.json").exists() or (Path(name) / "dataset_dict.json").exists()  # save_to_disk
    try:
        loaded = (datasets.load_from_disk if saved else datasets.load_dataset)(name)
    except Exception as exc:  # noqa: BLE001  (datasets raises many kinds; each means: cannot load it)
        raise ImportFailed(name, f"not a file, and datasets cannot load it: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if "train" not in splits and len(splits) != 1:
            raise ImportFailed(name, f"has splits {splits} and none is 'train'; save the one to import on its own")
        loaded = loaded["train" if "train" in splits else splits[0]]
    return list(enumerate(loaded, start=1))


def read_rows(path: str | Path) -> tuple[list[tuple[int, Any]], str]:
    """(record number, raw record) pairs of a JSON(L), CSV or Parquet file or a dataset, and its name."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if path.is_dir() or (not path.exists() and not suffix):
        return _dataset_rows(str(path)), path.name or str(path)
    if not path.is_file():
        raise ImportFailed(path, "no such file")
    name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    try:
        if suffix in (".jsonl", ".json", ".jsonl.gz", ".json.gz"):
            opener = gzip.open if suffix.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                return _json_lines(path, f.read()), name
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(enumerate(csv.DictReader(f), start=1)), name
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(enumerate(pq.read_table(path).to_pylist(), start=1)), name
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise ImportFailed(path, f"cannot be read: {exc}") from exc
    raise ImportFailed(path, "unknown file type: expected .jsonl(.gz), .json, .csv, .parquet or a dataset folder")


def parse_file(path: str | Path, fmt: str | None = None, *, drop_identical: bool = False) -> Parsed:
    """Read and check every record of ``path``; the first problem raises ImportFailed."""
    rows, name = read_rows(path)
    if not rows:
        raise ImportFailed(path, "holds no records")
    first = rows[0][1]
    fmt = fmt or detect_format(first)
    if fmt is None:
        keys = sorted(first) if isinstance(first, dict) else _kind(first)
        problem = f"cannot tell the format from the fields {keys}; pass --format (one of {', '.join(PARSERS)})"
        raise ImportFailed(path, problem, line=rows[0][0])
    if fmt not in PARSERS:
        raise ImportFailed(path, f"unknown format {fmt!r}; choose one of {', '.join(PARSERS)}", field="format")
    ctx, parsed = _Context(str(path), drop_identical), Parsed(fmt, name)
    kept = {PromptRecord: parsed.prompts, PairRecord: parsed.pairs, DemonstrationRecord: parsed.demonstrations}
    for ctx.line, row in rows:
        if not isinstance(row, dict) and not (fmt == "prompts" and isinstance(row, str)):
            ctx.fail(None, f"must be an object of fields, got {_kind(row)}")
        for record in PARSERS[fmt](ctx, row):
            kept[type(record)].append(record)
    parsed.identical_dropped = ctx.dropped
    return parsed
