"""Response sets: one model's (or several models') responses to a campaign's prompts, and unpaired labelled
responses for KTO. No pairs here: ``launch.py pair`` (storage.pairing) forms them from the stored responses.

``responses``: a prompt (``prompt``, ``messages``, Alpaca's ``instruction`` + ``input``, or the campaign's
``prompt_id``), a ``response`` (or ``output``), its ``model`` (or ``generator``; ``--model`` when the file does not
say), optional sampling parameters and an optional ``label``.
``kto``: the same with a required boolean ``label``, plus TRL's unpaired ``prompt`` / ``completion`` / ``label`` rows
and LLaMA-Factory's KTO rows (a ShareGPT conversation whose last turn is the assistant's answer, and ``label``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from storage.formats_records import (
    OPTIONAL_LENGTHS,
    Context,
    PromptRecord,
    ResponseRecord,
    check_prompt,
    clean,
    messages,
    optional_fields,
    preview,
    prompt,
    reply,
    text,
)

MODEL_CHARS = 128  # Response.author
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "max_new_tokens", "seed", "repetition_penalty")
"""Sampling parameters a row may give as fields of their own; they join ``generation_params``."""
_TURN_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_NUMBER = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}

_PROMPT = ("prompt", "messages", "instruction", "input", "system", "prompt_id")
_COMMON = ("model", "generator", "generation_params", *SAMPLING, "label", *OPTIONAL_LENGTHS)
RESPONSE_FIELDS = (*_PROMPT, "response", "output", *_COMMON)
KTO_FIELDS = (*_PROMPT, "response", "output", "completion", "conversations", *_COMMON)


def _one_of(ctx: Context, rec: dict, names: tuple[str, ...], *, empty: bool = False) -> str | None:
    """The one of ``names`` the record fills; ImportFailed when it fills two (an alias must not hide a field).
    With ``empty``, a field given as "" counts as given when no other is filled (an empty response)."""
    given = [name for name in names if rec.get(name) not in (None, "")]
    if len(given) > 1:
        ctx.fail(given[1], f"gives both {given[0]!r} and {given[1]!r}; they mean the same, keep one")
    if not given and empty:
        given = [name for name in names if rec.get(name) == ""]
    return given[0] if given else None


def _model(ctx: Context, rec: dict) -> str:
    key = _one_of(ctx, rec, ("model", "generator"))
    model = text(ctx, rec, key, max_len=MODEL_CHARS) if key else None
    if model is not None and ctx.model is not None and model != ctx.model:
        ctx.fail(key, f"says the model is {model!r}, but --model says {ctx.model!r}; drop one of them")
    if not (model or ctx.model or "").strip():
        ctx.fail("model", "is missing: give each record a 'model' field, or name the model with --model NAME")
    return model or ctx.model


def _number(ctx: Context, key: str, value: Any) -> int | float:
    if isinstance(value, str) and _NUMBER.fullmatch(value):  # a CSV cell
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        ctx.fail(key, f"must be a number, got {preview(value)}")
    return int(value) if isinstance(value, float) and value.is_integer() and key in ("top_k", "seed") else value


def _generation_params(ctx: Context, rec: dict) -> dict[str, Any]:
    params = rec.get("generation_params")
    if isinstance(params, str) and params.strip():  # a CSV cell holds the object as JSON
        try:
            params = json.loads(params)
        except (ValueError, RecursionError):
            ctx.fail("generation_params", "is a string but not a JSON object")
    if params in (None, ""):
        params = {}
    if not isinstance(params, dict):
        ctx.fail("generation_params", f"must be an object of sampling parameters, got {preview(params)}")
    if len(json.dumps(params, default=str)) > 4096:
        ctx.fail("generation_params", "is longer than 4,096 characters as JSON; keep the sampling parameters only")
    flat = {key: _number(ctx, key, rec[key]) for key in SAMPLING if rec.get(key) not in (None, "")}
    if twice := sorted(set(flat) & set(params)):
        ctx.fail(twice[0], "is given both on its own and inside generation_params; keep one")
    for key, value in params.items():
        if isinstance(value, str):
            clean(ctx, f"generation_params.{key}", value)
    return {**params, **flat}


def label(ctx: Context, rec: dict, *, required: bool) -> bool | None:
    value = rec.get("label")
    if value is None or value == "":
        return ctx.fail("label", "is missing: true (a desirable response) or false") if required else None
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):  # bool is an int too
        return bool(value)
    return ctx.fail("label", f"must be true or false, got {preview(value)}")


def _alpaca(ctx: Context, rec: dict) -> PromptRecord:
    """LLaMA-Factory's reading of Alpaca rows: the instruction, then a newline and the input when there is one."""
    instruction = text(ctx, rec, "instruction")
    extra = text(ctx, rec, "input", required=False, max_len=ctx.limits.max_prompt_chars)
    content = f"{instruction}\n{extra}" if extra else instruction
    if not content.strip():
        ctx.fail("instruction", "is empty")
    turns = [{"role": "user", "content": content}]
    return PromptRecord(
        ctx.line, check_prompt(ctx, "instruction", _system(ctx, rec) + turns), **optional_fields(ctx, rec)
    )


def _system(ctx: Context, rec: dict) -> list[dict[str, str]]:
    system = text(ctx, rec, "system", required=False, max_len=ctx.limits.max_prompt_chars)
    return [{"role": "system", "content": system}] if system else []


def _prompt_id(ctx: Context, rec: dict) -> int:
    value = rec["prompt_id"]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        ctx.fail(
            "prompt_id", f"must be the id of one of the campaign's prompts (a whole number), got {preview(value)}"
        )
    return value


def _prompt(ctx: Context, rec: dict) -> tuple[PromptRecord | None, int | None]:
    """The prompt as text, or the id of a prompt the campaign holds; never both."""
    key = _one_of(ctx, rec, ("prompt", "messages", "instruction", "prompt_id"))
    if key is None:
        ctx.fail("prompt", "is missing: give 'prompt', 'messages', 'instruction' (+ 'input') or 'prompt_id'")
    if key == "prompt_id":
        return None, _prompt_id(ctx, rec)
    if key == "instruction":
        return _alpaca(ctx, rec), None
    found = prompt(ctx, rec)
    found.messages = check_prompt(ctx, key, _system(ctx, rec) + found.messages)
    return found, None


def _response(ctx: Context, rec: dict, names: tuple[str, ...]) -> str:
    key = _one_of(ctx, rec, names, empty=True)
    if key is None:
        ctx.fail(names[0], f"is missing: give the model's answer as {' or '.join(repr(n) for n in names)}")
    answer = reply(ctx, rec, key)
    ctx.note_empty(answer)
    return answer


def parse_response_record(ctx: Context, rec: dict) -> list[ResponseRecord]:
    """A ``responses`` row: one response of one model to one prompt."""
    found, prompt_id = _prompt(ctx, rec)
    answer = _response(ctx, rec, ("response", "output"))
    return [ResponseRecord(found, answer, _model(ctx, rec), ctx.line, prompt_id, _generation_params(ctx, rec),
                           label(ctx, rec, required=False))]  # fmt: skip


def _conversation(ctx: Context, rec: dict, key: str) -> tuple[PromptRecord, str]:
    """LLaMA-Factory's KTO rows: ShareGPT turns ({from, value} or {role, content}); the last is the answer."""
    turns = rec[key]
    if not isinstance(turns, list) or len(turns) < 2:
        ctx.fail(key, f"must list the conversation's turns, the assistant's answer last, got {preview(turns)}")
    plain = []
    for i, turn in enumerate(turns):
        role = _TURN_ROLES.get(str(turn.get("role", turn.get("from")))) if isinstance(turn, dict) else None
        content = turn.get("content", turn.get("value")) if isinstance(turn, dict) else None
        if role is None or not isinstance(content, str):
            ctx.fail(
                f"{key}[{i}]", f"must be {{from: human|gpt|system, value}} or {{role, content}}, got {preview(turn)}"
            )
        plain.append({"role": role, "content": content})
    if plain[-1]["role"] != "assistant":
        ctx.fail(f"{key}[{len(plain) - 1}]", "must be the assistant's answer: a KTO row ends with the labelled reply")
    answer = clean(ctx, f"{key}[{len(plain) - 1}]", plain[-1]["content"], ctx.limits.max_response_chars,
                   "max_response_chars")  # fmt: skip
    ctx.note_empty(answer)
    found = messages(ctx, _system(ctx, rec) + plain[:-1], key)
    return PromptRecord(ctx.line, found, **optional_fields(ctx, rec)), answer


def parse_kto_record(ctx: Context, rec: dict) -> list[ResponseRecord]:
    """A ``kto`` row: one labelled response, from TRL's unpaired rows, LLaMA-Factory's KTO rows or ``responses``."""
    if (key := _one_of(ctx, rec, ("conversations", "messages"))) and _ends_with_answer(rec[key]):
        found, answer, prompt_id = *_conversation(ctx, rec, key), None
    else:
        found, prompt_id = _prompt(ctx, rec)
        answer = _response(ctx, rec, ("completion", "response", "output"))
    key = _one_of(ctx, rec, ("model", "generator"))
    model = _model(ctx, rec) if key or ctx.model else "unknown"  # KTO files rarely say who wrote the answer
    return [ResponseRecord(found, answer, model, ctx.line, prompt_id, _generation_params(ctx, rec),
                           label(ctx, rec, required=True))]  # fmt: skip


def _ends_with_answer(turns: Any) -> bool:
    last = turns[-1] if isinstance(turns, list) and turns else None
    return isinstance(last, dict) and str(last.get("role", last.get("from"))) in ("assistant", "gpt")


def detect(keys: set[str]) -> str | None:
    """``kto`` for labelled rows, ``responses`` for rows with a response, else None."""
    if "label" in keys and keys & {"completion", "conversations", "messages", "response", "output"}:
        return "kto"
    if keys & {"response", "output"}:
        return "responses"
    return None


__all__ = ["KTO_FIELDS", "RESPONSE_FIELDS", "SAMPLING", "detect", "parse_kto_record", "parse_response_record"]
