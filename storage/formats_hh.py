"""Anthropic HH-RLHF: two full transcripts per record that share every turn but the last Assistant reply."""

from __future__ import annotations

import re

from storage.formats_records import Context, Messages, PromptRecord, check_prompt, clean, optional_fields, text

HH_SPEAKERS = {"user": "Human", "assistant": "Assistant"}
FIELDS = ("chosen", "rejected", "domain", "source", "license")
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


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


def parse_hh_record(ctx: Context, rec: dict) -> list:
    """One HH record -> its pair; the chosen reply lands on A or B by a hash of the content."""
    limit = ctx.limits.max_prompt_chars + ctx.limits.max_response_chars  # a transcript is a prompt and a reply
    transcripts = {}
    for key in ("chosen", "rejected"):
        transcripts[key] = text(ctx, rec, key, max_len=limit)
        if not transcripts[key].startswith("\n\nHuman: "):
            ctx.fail(key, "must be a transcript that starts with '\\n\\nHuman: '")
    try:
        messages, chosen, rejected = split_hh(transcripts["chosen"], transcripts["rejected"])
    except ValueError as exc:
        ctx.fail("rejected", str(exc))
    for key, reply in (("chosen", chosen), ("rejected", rejected)):
        clean(ctx, key, reply, ctx.limits.max_response_chars, "max_response_chars")
    prompt = PromptRecord(ctx.line, check_prompt(ctx, "chosen", messages), **optional_fields(ctx, rec))
    return ctx.chosen_pair(prompt, chosen, rejected, "rejected")
