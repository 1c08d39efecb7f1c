"""studio.blocks: outputs a handler leaves out are sent as Gradio's bare update, and no component is rebuilt; page
sessions copy the app's component configs instead of building them, and keep their values to themselves."""

import asyncio

import gradio as gr
import pandas as pd
from gradio.blocks import BlocksConfig
from gradio.state_holder import SessionState

from studio.blocks import Blocks


def test_left_out_outputs_are_bare_updates_and_keep_their_components():
    with Blocks() as app:
        kept, left_out, panel = gr.Markdown(), gr.Markdown("as it was"), gr.Row()
        state, table = gr.State(1), gr.Dataframe()
        gr.Button().click(lambda: None, outputs=[kept, left_out, panel, state, table])
    (fn,) = app.fns.values()
    session = SessionState(app)
    before = session.blocks_config.blocks[left_out._id]
    frame = pd.DataFrame({"a": [1]})
    answer = asyncio.run(app.postprocess_data(fn, {kept: "new text", panel: gr.skip(), table: frame}, session))
    assert answer[0] == "new text" and answer[1] == answer[2] == {"__type__": "update"} and answer[3] is None
    assert answer[4]["data"] == [[1]]  # a frame, whose == is elementwise, goes through Gradio's postprocess
    assert session.blocks_config.blocks[left_out._id] is before  # not rebuilt
    assert session[state._id] == 1


def test_answers_that_are_not_a_dict_of_outputs_go_to_gradio_unchanged():
    with Blocks() as app:
        one = gr.Textbox()
        gr.Button().click(lambda: None, outputs=[one])
    (fn,) = app.fns.values()
    assert asyncio.run(app.postprocess_data(fn, "plain", SessionState(app))) == ["plain"]


def test_page_sessions_copy_the_apps_component_configs_and_keep_their_own_values():
    with Blocks() as app:
        box = gr.Textbox("start", label="Box")
        gr.Button().click(lambda: None, outputs=[box])
    (fn,) = app.fns.values()
    first, second = SessionState(app), SessionState(app)
    assert first.config_values[box._id] == BlocksConfig.config_for_block(box._id, [], box)  # what Gradio builds
    assert box._id in app.default_config.built
    first._update_value_in_config(box._id, "typed by the first page")
    assert second.config_values[box._id]["props"]["value"] == "start"
    asyncio.run(app.postprocess_data(fn, gr.update(label="Changed"), first))  # a property update: its own component
    assert first.config_values[box._id]["props"]["label"] == "Changed"
    assert SessionState(app).config_values[box._id]["props"]["label"] == "Box"
