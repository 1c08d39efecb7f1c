"""How lead and admin handlers say a refusal: beside the form for a mistake, an error for a permission; never a
traceback in the server's log."""

import gradio as gr
import pytest

from studio.access import PermissionDenied
from studio.tabs.events import need_campaign, said_beside, shown_to_user
from studio.validation import ValidationFailed


def test_a_mistake_is_said_beside_the_form_and_leaves_the_other_outputs_alone():
    with gr.Blocks():
        status, table = gr.Markdown(), gr.Dataframe()

    @said_beside(status)
    def handler(fail: str | None) -> dict:
        if fail == "mistake":
            with shown_to_user():
                raise ValidationFailed("There is no user named 'bo'.")
        if fail == "campaign":
            need_campaign(None)
        if fail == "permission":
            with shown_to_user():
                raise PermissionDenied("Only admins can do this.")
        return {table: "rows"}

    assert handler("mistake") == {status: "**Not done:** There is no user named 'bo'."}
    assert handler("campaign") == {status: "**Not done:** Pick a campaign first."}
    assert handler(None) == {status: "", table: "rows"}  # a success clears the last refusal
    with pytest.raises(gr.Error, match="Only admins") as refused:
        handler("permission")
    assert refused.value.print_exception is False
