"""How lead and admin handlers say a refusal: beside the form for a mistake, an error for a permission; never a
traceback in the server's log."""

import gradio as gr
import pytest
from gradio_client import Client

from studio.access import PermissionDenied
from studio.tabs.events import need_campaign, said_beside, shown_to_user
from studio.validation import ValidationFailed
from tests.studio.test_app import studio  # noqa: F401  (the fixture: a launched studio where ada rates)


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


def test_a_person_changes_their_own_password_over_the_api_and_keeps_this_session(studio):  # noqa: F811
    ada = Client(studio, auth=("ada", "password1"), verbose=False)
    *_, said = ada.predict("wrong one", "a new horse", "a new horse", api_name="/change_password")
    assert said == "**Not done:** The current password is wrong."
    *_, said = ada.predict("password1", "a new horse", "another horse", api_name="/change_password")
    assert said == "**Not done:** The two new passwords differ: type the same one twice."
    cleared = ada.predict("password1", "a new horse", "a new horse", api_name="/change_password")
    assert cleared[:3] == ("", "", "") and cleared[3].startswith("**Password changed.**")
    assert ada.predict(api_name="/campaigns")[0] == "Signed in as **ada** · campaign:"  # this session goes on
    with pytest.raises(Exception):  # noqa: B017  (the old password no longer logs in: gradio_client raises)
        Client(studio, auth=("ada", "password1"), verbose=False)
    Client(studio, auth=("ada", "a new horse"), verbose=False)
