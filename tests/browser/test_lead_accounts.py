"""The lead's demonstration review and an admin's password reset, in a real headless Chromium at 1280x800 against
`launch.py studio` (conftest.py). What the page sends is checked where it lands: the database and the export."""

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from storage.accounts import create_user
from storage.db import write_session
from storage.models import Campaign, DemonstrationReview, ExportRecord, User, UserCreate
from studio.service import StudioService
from studio.validation import JudgmentAnswer
from tests.browser.conftest import PASSWORD, log_in, screenshot

pytestmark = pytest.mark.browser

GOOD = "Water boils at 100 degrees Celsius at sea level; at altitude the lower pressure makes it boil sooner."
BAD = "Water always boils at 50 degrees, wherever you are."
CLAIMS = [
    {"claim": 'It says "boils at 100 degrees Celsius"', "status": "verified", "source": "a physics textbook"},
    {"claim": "Salt water freezes at minus twenty", "status": "unverifiable", "source": None},
]


def rows(engine, query) -> list:
    with Session(engine) as session:
        return list(session.exec(query))


def box(page, elem_id: str):
    """The text field of the gr.Textbox ``elem_id`` (an input or a textarea, as Gradio renders it)."""
    return page.locator(f"#{elem_id} :is(input, textarea)").first


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in the gr.Dropdown ``elem_id``."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


@pytest.fixture(scope="module")
def written(studio):
    """ada writes two demonstrations for the demo campaign through the service, one right, one wrong, and judges a
    pair; returns the demonstrations' ids and the pair's."""
    engine = studio["engine"]
    service = StudioService(engine)
    ada = rows(engine, select(User.id).where(User.username == "ada"))[0]
    demo = rows(engine, select(Campaign).where(Campaign.name == "demo"))[0]
    service.accept_consent(ada, demo.id, demo.consent_version)
    ids = []
    for text in (GOOD, BAD):
        task = service.next_prompt(ada, demo.id)
        ids.append(service.submit_demonstration(ada, task.assignment_id, text=text, claims=CLAIMS,
                                                time_on_task_s=95.0, paste_events=[]))  # fmt: skip
    task = service.next_pair(ada, demo.id)
    answer = JudgmentAnswer(1, False, dict.fromkeys(task.rubric, 4), "The right one is accurate and complete.", 4, 30)
    service.submit_judgment(ada, task.assignment_id, answer)
    return ids, task.pair_id


def open_demonstration(page, demonstration_id: int) -> None:
    box(page, "demonstrations-id").fill(str(demonstration_id))
    page.locator("#demonstrations-open").click()
    expect(page.locator("#demonstrations-standing")).to_contain_text(f"Demonstration {demonstration_id} by ada")


def test_a_lead_accepts_one_demonstration_and_rejects_another_and_only_the_accepted_one_exports(
    studio, browser, written
):
    (good, bad), pair_id = written
    page = log_in(browser, studio["url"], "lena")
    page.get_by_role("tab", name="Lead").click()
    expect(page.locator("#lead-campaign input")).to_have_value("demo")
    expect(page.locator("#campaigns-kind input")).to_have_value(re.compile("^both"))  # its kind, editable
    expect(page.locator("#campaigns-criteria-required input")).not_to_be_checked()
    screenshot(page, "lead-campaigns")

    page.get_by_role("tab", name="Adjudication").click()  # the rater by name; a refusal beside the button
    box(page, "adjudication-pair-id").fill(str(pair_id))
    page.locator("#adjudication-open").click()
    expect(page.locator("#adjudication-judgments")).to_contain_text("ada")
    page.get_by_text("B better", exact=True).click()
    page.locator("#adjudication-record").click()
    expect(page.locator("#adjudication-status")).to_contain_text("Not done: Write a note saying why")
    page.locator("#adjudication-judgments").scroll_into_view_if_needed()
    screenshot(page, "lead-adjudication")
    page.get_by_role("tab", name="Demonstrations").click()
    page.locator("#demonstrations-list").click()
    table = page.locator("#demonstrations-table")
    expect(table).to_contain_text("ada")  # the writer, by name
    expect(table).to_contain_text("unreviewed")
    table.locator("[data-testid='cell-0-2']").click()  # a click on a row opens it: the first is the first written
    standing = page.locator("#demonstrations-standing")
    expect(standing).to_contain_text(f"Demonstration {good} by ada")
    expect(standing).to_contain_text("1 of 2 claims not found in the response")
    expect(box(page, "demonstrations-text")).to_have_value(GOOD)
    claims = page.locator("#demonstrations-claims")
    expect(claims).to_contain_text("every quoted span is in the response")
    expect(claims).to_contain_text("missing: salt")
    page.locator("#demonstrations-accept").click()
    expect(page.locator("#demonstrations-status")).to_contain_text(f"Demonstration {good} accepted.")

    open_demonstration(page, bad)
    page.locator("#demonstrations-reject").click()  # without a note: refused beside the buttons, form as it was
    status = page.locator("#demonstrations-status")
    expect(status).to_contain_text("Not done: Write a note saying why it is rejected")
    expect(box(page, "demonstrations-note")).to_be_editable()
    expect(box(page, "demonstrations-text")).to_have_value(BAD)
    box(page, "demonstrations-note").fill("The boiling point is wrong: 100 °C at sea level.")
    page.locator("#demonstrations-reject").click()
    expect(status).to_contain_text(f"Demonstration {bad} rejected. Its prompt goes back to the queue for another")
    expect(standing).to_contain_text("Rejected by lena")
    screenshot(page, "lead-demonstrations")
    verdicts = rows(studio["engine"], select(DemonstrationReview.demonstration_id, DemonstrationReview.status))
    assert sorted(verdicts) == sorted([(good, "accepted"), (bad, "rejected")])

    page.get_by_role("tab", name="Export").click()
    choose(page, "export-kind", "sft: messages")
    page.locator("#export-run").click()
    expect(box(page, "export-status")).to_have_value(re.compile(r"^export #\d+: 1 sft rows"), timeout=60_000)
    expect(page.locator("#export-card")).to_contain_text("demonstrations a lead rejected: 1")
    (record,) = rows(studio["engine"], select(ExportRecord).where(ExportRecord.kind == "sft"))
    exported = [json.loads(line)["demonstration_id"] for split in ("train", "test")
                for line in (Path(record.out_path) / "jsonl" / f"{split}.jsonl").read_text().splitlines()]  # fmt: skip
    assert exported == [good] and record.row_count == 1
    page.context.close()

    # ada, the writer, reads each verdict in her History, and the lead's note on the rejected one
    writer = log_in(browser, studio["url"], "ada")
    writer.get_by_role("tab", name="Write").click()  # her progress line counts what waits for a revision
    expect(writer.locator("#write-progress")).to_contain_text("1 rejected by a lead: see History for the note")
    screenshot(writer, "write-rejected")
    writer.get_by_role("tab", name="History").click()
    listed = writer.locator("#history-list label")
    expect(listed.filter(has_text="· accepted ·")).to_have_count(1)
    listed.filter(has_text="· rejected ·").click()
    verdict = writer.locator("#history-demo-verdict")
    expect(verdict).to_contain_text("Rejected by a lead on")
    expect(verdict).to_contain_text("The boiling point is wrong: 100 °C at sea level.")
    expect(box(writer, "history-editor")).to_have_value(BAD)
    screenshot(writer, "history-rejected")
    writer.context.close()


def test_an_admin_resets_a_password_the_old_one_stops_working_and_the_one_time_one_forces_a_change(studio, browser):
    with write_session(studio["engine"]) as session, session.begin():
        create_user(session=session, user=UserCreate(username="dora", password=PASSWORD))
    admin = log_in(browser, studio["url"], "root")
    admin.get_by_role("tab", name="Users").click()
    box(admin, "users-new-username").fill("dora")
    admin.locator("#users-create").click()  # a taken name: said beside the button, the form stays usable
    expect(admin.locator("#users-create-status")).to_contain_text("Not done: The username 'dora' is taken")
    expect(box(admin, "users-new-username")).to_have_value("dora")
    box(admin, "users-username").fill("dora")
    admin.locator("#users-reset-password").click()
    one_time = box(admin, "users-password")
    expect(one_time).not_to_have_value("")
    expect(admin.locator("#users-change-status")).to_contain_text("New one-time password for dora")
    screenshot(admin, "users-reset")
    secret = one_time.input_value()

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(studio["url"])
    message = page.locator("#login-message")
    page.locator("#login-username").fill("dora")
    page.locator("#login-password").fill(PASSWORD)  # the old password
    page.locator("#login-submit").click()
    expect(message).to_have_text("Wrong username or password.")
    page.locator("#login-password").fill(secret)
    page.locator("#login-submit").click()
    expect(message).to_have_text("That was a one-time password: choose a new one to sign in.")
    expect(page.locator("#login-new-password")).to_be_focused()
    page.locator("#login-new-password").fill("dora's own horse")
    page.locator("#login-new-repeat").fill("dora's own horse")
    screenshot(page, "login-new-password")
    page.locator("#login-submit").click()
    page.locator("#concord-campaign").wait_for()
    assert rows(studio["engine"], select(User.must_change_password).where(User.username == "dora")) == [False]

    page.get_by_role("tab", name="Account").click()
    page.locator("#account-current input").fill("wrong horse")
    page.locator("#account-new input").fill("dora's newer horse")
    page.locator("#account-again input").fill("dora's newer horse")
    page.locator("#account-change").click()
    expect(page.locator("#account-status")).to_contain_text("Not done: The current password is wrong.")
    page.locator("#account-current input").fill("dora's own horse")
    page.locator("#account-change").click()
    expect(page.locator("#account-status")).to_contain_text("Password changed.")
    screenshot(page, "account")
    page.locator("#concord-logout").click()
    expect(page.locator("#login-form")).to_be_visible()
    page.locator("#login-username").fill("dora")
    page.locator("#login-password").fill("dora's own horse")
    page.locator("#login-submit").click()
    expect(message).to_have_text("Wrong username or password.")
    context.close()
    admin.context.close()
