"""OpenAssistant message trees: ``{message_tree_id, prompt: {...}}`` tree files and ``{message_id, replies}`` files."""

from __future__ import annotations

import itertools
from typing import Any

from storage.formats_records import (
    Context,
    DemonstrationRecord,
    Messages,
    PromptRecord,
    check_prompt,
    check_turns,
    clean,
    preview,
    text,
)

ROLES = {"prompter": "user", "assistant": "assistant"}


def parse_oasst_record(ctx: Context, rec: dict) -> list:
    return walk_oasst(ctx, rec.get("prompt") if "message_tree_id" in rec else rec, [], "prompt")


def _check_message(ctx: Context, node: Any, depth: int, key: str) -> str:
    """The message's text, once its shape, its id (unique in the file) and its size are checked."""
    if not (isinstance(node, dict) and str(node.get("role")) in ROLES and isinstance(node.get("text"), str)):
        ctx.fail(key, f"must be an OASST message with role prompter|assistant and a text, got {preview(node)}")
    replies, rank = node.get("replies") or [], node.get("rank")
    if not isinstance(replies, list) or isinstance(rank, bool) or not isinstance(rank, int | None):
        ctx.fail(key, "has 'replies' that is not a list or a 'rank' that is not an integer")
    check_turns(ctx, key, depth + 1)
    message_id = node.get("message_id")
    if message_id is not None:
        if not isinstance(message_id, str):
            ctx.fail(f"{key}.message_id", f"must be a string, got {preview(message_id)}")
        if message_id in ctx.message_ids:
            first = ctx.message_ids[message_id]
            ctx.fail(f"{key}.message_id", f"{preview(message_id)} appears twice: it was first seen on line {first}")
        ctx.message_ids[message_id] = ctx.line
    limit, knob = (
        (ctx.limits.max_response_chars, "max_response_chars") if node["role"] == "assistant" else (None, None)
    )
    if node.get("synthetic"):
        text(ctx, node, "model_name", required=False, max_len=128)
    return clean(ctx, f"{key}.text", node["text"], limit, knob)


def walk_oasst(ctx: Context, node: Any, prefix: Messages, key: str) -> list:
    """Every prompter turn's conversation is a prompt; human assistant replies are demonstrations; ranked
    assistant siblings give every (better, worse) pair. The recursion is as deep as the conversation, which
    ``max_turns`` bounds."""
    content = _check_message(ctx, node, len(prefix), key)
    messages = [*prefix, {"role": ROLES[node["role"]], "content": content}]
    if node["role"] == "prompter":
        check_prompt(ctx, f"{key}.text", messages)
    records, replies = [], []
    for i, reply in enumerate(node.get("replies") or []):
        if not (isinstance(reply, dict) and reply.get("deleted")):
            records += walk_oasst(ctx, reply, messages, f"{key}.replies[{i}]")
            replies.append(reply)
    if node["role"] == "prompter":
        prompt = PromptRecord(ctx.line, messages, source="oasst")
        answers = [r for r in replies if r["role"] == "assistant"]
        records.append(prompt)
        for answer in answers:
            if not answer.get("synthetic"):
                ctx.note_empty(answer["text"])
                records.append(DemonstrationRecord(prompt, answer["text"]))
        ranked = sorted((r for r in answers if r.get("rank") is not None), key=lambda r: r["rank"])
        for better, worse in itertools.combinations(ranked, 2):
            records += ctx.chosen_pair(
                prompt, better["text"], worse["text"], f"{key}.replies", (_author(better), _author(worse))
            )
    return records


def _author(message: dict) -> str:
    return (message.get("model_name") or "unknown") if message.get("synthetic") else "human"
