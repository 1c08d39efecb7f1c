"""``Blocks``: ``gr.Blocks`` made cheaper where Gradio 6.31 spends a rater's time on work with no effect.

- Outputs a handler leaves out (``gr.skip()``): Gradio treats each as a property update, building a new component
  and its config only to send the browser the bare update ``{"__type__": "update"}``. A judgment submit leaves 8 of
  its 31 outputs alone, and rebuilding them was about a sixth of its server CPU. Here they skip Gradio's postprocess
  and are sent as the same bare update.
- States to watch: on every call Gradio looks through all of the app's events (about 300) for each stateful output
  with a change listener, about a tenth of a submit's Gradio work. The studio renders nothing per session
  (no ``gr.render``), so a session's events are the app's: the watched states are found once.
- A new page: Gradio gives each page session a config entry for every component of the app (447 here, lead tabs
  included), built afresh each time: about two thirds of a page's arrival cost (while 200 raters arrived, 72 ms of
  server CPU a submit, 40 ms without it). Here the entries are built once and each session gets its own copy of
  their properties (a session writes its values there).
"""

from __future__ import annotations

import copy
from typing import Any

import gradio as gr
from gradio.blocks import Block, BlocksConfig
from gradio.utils import deep_hash

BARE_UPDATE = {"__type__": "update"}


class Blocks(gr.Blocks):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_config = SharedConfig(self)  # before any component registers in it
        self._watched: tuple[int, set[int]] | None = None  # (events counted, stateful ids with a change listener)

    def get_state_ids_to_track(self, block_fn: Any, state: Any) -> tuple[list[int], list]:
        if state is None or len(state.blocks_config.fns) != len(self.fns):  # a session with events of its own
            return super().get_state_ids_to_track(block_fn, state)
        if self._watched is None or self._watched[0] != len(self.fns):
            self._watched = len(self.fns), {block_id for fn in self.fns.values() for block_id, event in fn.targets
                                            if event == "change"}  # fmt: skip
        ids = [block._id for block in block_fn.outputs if block.stateful and block._id in self._watched[1]]
        return ids, [deep_hash(state[block_id]) for block_id in ids]

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


class SharedConfig(BlocksConfig):
    """The app's components, whose config entries every page session copies instead of building (see above)."""

    def __init__(self, root_block: gr.Blocks) -> None:
        super().__init__(root_block)
        self.built: dict[int, dict] = {}  # shared by the sessions' copies

    def config_for_block(self, _id: int, rendered_ids: list[int], block: Any, renderable: Any = None) -> dict:
        # A session's own component (after a property update) is built anew, as Gradio does.
        if renderable is not None or self.root_block.default_config.blocks.get(_id) is not block:
            return BlocksConfig.config_for_block(_id, rendered_ids, block, renderable)
        if _id not in self.built:
            self.built[_id] = BlocksConfig.config_for_block(_id, rendered_ids, block)
        built = self.built[_id]
        return {**built, "props": dict(built["props"])}

    def __copy__(self) -> SharedConfig:
        new = super().__copy__()  # Gradio's copy is a plain BlocksConfig
        new.__class__, new.built = SharedConfig, self.built
        return new


def _bare(value: Any) -> bool:
    return isinstance(value, dict) and value == BARE_UPDATE  # a value may be a frame, whose == is elementwise
