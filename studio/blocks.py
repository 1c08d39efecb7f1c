"""``Blocks``: ``gr.Blocks`` whose events leave the outputs a handler left out as they are, at no cost.

Gradio 6.31 treats an output left out of a handler's answer (``gr.skip()``) as a property update: it builds a new
component and its config for it, only to send the browser the bare update ``{"__type__": "update"}``. A judgment
submit leaves 8 of its 31 outputs alone (panels already shown, guidelines unchanged), and rebuilding them was about
a sixth of the submit's server CPU. Here those outputs skip Gradio's postprocess and are sent as the same bare update.
"""

from __future__ import annotations

import copy
from typing import Any

import gradio as gr
from gradio.blocks import Block

BARE_UPDATE = {"__type__": "update"}


class Blocks(gr.Blocks):
    async def postprocess_data(self, block_fn: Any, predictions: Any, state: Any) -> list[Any]:
        outputs = list(block_fn.outputs)
        if not isinstance(predictions, dict) or not predictions or not all(isinstance(k, Block) for k in predictions):
            return await super().postprocess_data(block_fn, predictions, state)
        given = {block._id: value for block, value in predictions.items() if not _bare(value)}
        kept = [block for block in outputs if block._id in given]
        if len(kept) == len(outputs):
            return await super().postprocess_data(block_fn, predictions, state)
        done: list[Any] = []
        if kept:
            part = copy.copy(block_fn)
            part.outputs = kept
            values = [given[block._id] for block in kept]
            # Gradio takes a single output's value bare, not in a list.
            done = await super().postprocess_data(part, values if len(kept) > 1 else values[0], state)
        answers = iter(done)
        return [next(answers) if block._id in given else None if block.stateful else dict(BARE_UPDATE)
                for block in outputs]  # fmt: skip


def _bare(value: Any) -> bool:
    return isinstance(value, dict) and value == BARE_UPDATE  # a value may be a frame, whose == is elementwise
