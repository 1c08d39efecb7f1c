"""What raters, leads and admins see and do in the studio, in a real headless Chromium against `launch.py studio`.

One studio serves the whole module (conftest.py); each test logs in with a fresh browser context and saves its
screens to test-output/screenshots/. What the page sends is checked where it lands: in the database.
"""

import json
import random
import re
import time
import zipfile

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect
from sqlmodel import Session, select

from storage import members
from storage.accounts import create_user
from storage.db import write_session
from storage.imports import import_file
from storage.models import (
    Assignment,
    CalibrationItem,
    Campaign,
    CampaignMember,
    Demonstration,
    ExportRecord,
    Judgment,
    Pair,
    Response,
    Role,
    Side,
    TaskKind,
    User,
    UserCreate,
)
from studio.service import StudioService
from studio.validation import JudgmentAnswer, flip
from tests.browser.conftest import PASSWORD, ROOT, log_in, screenshot

pytestmark = pytest.mark.browser

REASONING = "Checked both against the guidelines: accuracy first, then the instruction, then the tone."
PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    "[x](javascript:window.__xss=3)",
]
ANSWER = "A hash table keeps each value in an array slot computed from its key, so a lookup takes one step."
CLAIM = {"claim": "Python dicts are hash tables", "status": "verified", "source": "https://docs.python.org/3/"}
DEMO_CALIBRATION = ROOT / "storage" / "demo" / "calibration.jsonl"


def wait_for(fetch, what: str, timeout: float = 20.0):
    """Poll ``fetch`` (a database read) until it returns something, or fail naming ``what`` never came."""
    deadline = time.monotonic() + timeout
    while not (found := fetch()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not arrive within {timeout:.0f} s")
        time.sleep(0.25)
    return found


def rows(engine, query) -> list:
    with Session(engine) as session:
        return list(session.exec(query))


def user_id(engine, username: str) -> int:
    return rows(engine, select(User.id).where(User.username == username))[0]


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in the gr.Dropdown ``elem_id``. While the page is still loading, the list is rebuilt under the
    pointer (never "stable" for Playwright): then open it again."""
    for _ in range(3):
        page.locator(f"#{elem_id} input").click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=5000)
            break
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    expect(page.locator(f"#{elem_id} input")).to_have_value(option)


def tab_to(page, selector: str, presses: int = 60) -> None:
    """Press Tab until the focus is in ``selector``, as a keyboard user would."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => !!document.activeElement?.closest(s)", selector):
            return
    pytest.fail(f"{presses} Tab presses never reached {selector}")


def edit_cell(page, grid: str, cell: str, text: str) -> None:
    """Type ``text`` into the gr.Dataframe cell (``cell-<row>-<column>``) that has the focus, with the keyboard only:
    Enter opens its editor, Enter again keeps what was typed and gives the focus back to the cell."""
    cell = page.locator(f"{grid} [data-testid='{cell}']")
    expect(cell).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Edit cell")).to_be_focused()
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    expect(cell).to_be_focused()


def open_compare(page) -> None:
    """Wait until Compare shows its item, accepting the campaign's consent if it is asked. Right after a campaign
    change the panel on screen may still be the previous campaign's consent, replaced while it is clicked: then look
    again."""
    for _ in range(3):
        page.locator("#compare-task:visible, #compare-consent:visible").first.wait_for()
        if not page.locator("#compare-consent").is_visible():
            break
        try:
            page.locator("#compare-consent-accept").click(timeout=5000)
        except PlaywrightTimeoutError:
            continue
    page.locator("#compare-task").wait_for(state="visible")


def open_campaign(page, name: str) -> None:
    """Switch to campaign ``name`` and wait for its first item; the focus leaves the picker, as after a click."""
    key = page.locator("#compare-draft-key textarea")  # "<user>:judgment:<assignment>" of the item on screen
    before = key.input_value()
    choose(page, "concord-campaign", name)
    open_compare(page)
    expect(key).not_to_have_value(re.compile(f"^({re.escape(before)})?$"))
    page.evaluate("document.activeElement.blur()")


def new_campaign(studio, tmp_path, name: str, records: list[dict], **import_options) -> int:
    """A campaign imported through the real import path, with lena as a lead member; returns its id."""
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    import_file(path, engine=studio["engine"], campaign=name, fmt="pairs", **import_options)
    with write_session(studio["engine"]) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == name)).one()
        lena = session.exec(select(User).where(User.username == "lena")).one()
        members.set_member(session=session, campaign=campaign, user=lena, role=Role.lead, actor_id=None)
        return campaign.id


def test_a_wrong_password_is_refused_and_too_many_lock_the_account_with_a_message(studio, browser):
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(studio["url"])
    page.get_by_label("username").fill("ada")
    screenshot(page, "login")
    page.get_by_label("password").fill("not the password")
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#login-message")).to_have_text("Wrong username or password.")
    expect(page.locator("#concord-campaign")).to_have_count(0)
    page.get_by_label("username").fill("mallory")  # nobody: an unknown name is locked like a real one
    for attempt in range(6):  # the default limit is 5 wrong passwords per account in 15 minutes
        page.get_by_label("password").fill(f"guess {attempt}")
        page.get_by_role("button", name="Login").click()
        expect(page.locator("#login-message")).not_to_have_text("")
        if attempt < 5:
            expect(page.locator("#login-message")).to_have_text("Wrong username or password.")
            page.locator("#login-message").evaluate("node => { node.textContent = '' }")
    expect(page.locator("#login-message")).to_have_text(
        "Too many failed logins for this account: try again in 15 minutes."
    )
    screenshot(page, "login-locked")
    page.context.close()


def test_a_rater_judges_with_the_keyboard_then_writes_with_a_verified_claim(studio, browser):
    engine, ada = studio["engine"], user_id(studio["engine"], "ada")
    page = log_in(browser, studio["url"], "ada")
    page.locator("#compare-consent").wait_for(state="visible")
    expect(page.locator("#compare-consent-text")).to_contain_text("stored and exported under a pseudonym")
    screenshot(page, "consent")
    page.locator("#compare-consent-accept").click()
    page.locator("#compare-task").wait_for(state="visible")
    left_text = page.locator("#compare-left .concord-rawtext").text_content()  # the raw text, as stored
    screenshot(page, "compare")

    page.keyboard.press("n")  # the item already on screen stays: it is leased to ada until she submits it
    expect(page.locator("#compare-status")).to_contain_text("This item is yours until you submit it")
    page.keyboard.press("g")
    expect(page.get_by_text("Accuracy first.")).to_be_visible()
    page.keyboard.press("g")  # and closed again
    expect(page.get_by_text("Accuracy first.")).to_be_hidden()
    page.keyboard.press("4")
    page.keyboard.press("Shift+Digit5")
    expect(page.locator("#compare-choice").get_by_label("Right better")).to_be_checked()
    expect(page.locator("#compare-confidence").get_by_label("5 · certain")).to_be_checked()
    tab_to(page, "#compare-reasoning")
    page.keyboard.type(REASONING)
    expect(page.locator("#compare-reasoning-count")).to_contain_text("✓")
    screenshot(page, "compare-reasoning")
    page.keyboard.press("Control+Enter")

    (judgment,) = wait_for(lambda: rows(engine, select(Judgment).where(Judgment.rater_id == ada)), "ada's judgment")
    query = select(Assignment).where(Assignment.rater_id == ada, Assignment.pair_id == judgment.pair_id)
    (assignment,) = rows(engine, query.where(Assignment.task == TaskKind.judgment))
    pair = rows(engine, select(Pair).where(Pair.id == judgment.pair_id))[0]
    shown_left = pair.response_a_id if assignment.left == Side.a else pair.response_b_id
    assert rows(engine, select(Response.text).where(Response.id == shown_left)) == [left_text]
    # "Right better" is +1 in display terms: B better when A was on the left, A better when B was.
    assert (judgment.left, judgment.preference) == (assignment.left, 1 if assignment.left == Side.a else -1)
    assert (judgment.reasoning, judgment.confidence, assignment.closed_at is not None) == (REASONING, 5, True)

    page.get_by_role("tab", name="Write").click()
    page.locator("#write-task").wait_for(state="visible")
    page.locator("#write-editor textarea").click()
    page.keyboard.type(ANSWER)
    tab_to(page, "#write-claims [data-testid='cell-0-0']")
    edit_cell(page, "#write-claims", "cell-0-0", CLAIM["claim"])
    page.keyboard.press("ArrowRight")
    edit_cell(page, "#write-claims", "cell-0-1", "verified")
    page.keyboard.press("ArrowRight")
    edit_cell(page, "#write-claims", "cell-0-2", CLAIM["source"])
    page.evaluate("document.querySelector('#write-editor').scrollIntoView()")
    screenshot(page, "write")
    page.keyboard.press("Control+Enter")

    (written,) = wait_for(
        lambda: rows(engine, select(Demonstration).where(Demonstration.rater_id == ada)), "ada's demonstration"
    )
    assert (written.messages, written.claims) == ([{"role": "assistant", "content": ANSWER}], [CLAIM])
    page.context.close()


def test_a_reload_keeps_the_unsent_drafts(studio, browser):
    page = log_in(browser, studio["url"], "ada")
    open_compare(page)
    left_text = page.locator("#compare-left .concord-rawtext").text_content()  # the raw text, as stored
    page.keyboard.press("1")
    page.locator("#compare-reasoning textarea").click()
    expect(page.locator("#compare-reasoning textarea")).to_be_focused()  # typed keys are text, not shortcuts
    page.keyboard.type("Half a thought about the left response")
    page.get_by_role("tab", name="Write").click()
    page.locator("#write-task").wait_for(state="visible")
    page.locator("#write-editor textarea").click()
    page.keyboard.type("A response I have not finished")
    page.locator("#write-claims [data-testid='cell-0-0']").click()
    edit_cell(page, "#write-claims", "cell-0-0", "An unchecked claim")

    page.reload()
    page.locator("#compare-task").wait_for(state="visible")
    expect(page.locator("#compare-left .concord-rawtext")).to_have_text(left_text)  # the lease resumed: the same item
    expect(page.locator("#compare-reasoning textarea")).to_have_value("Half a thought about the left response")
    expect(page.locator("#compare-choice").get_by_label("Left much better")).to_be_checked()
    page.get_by_role("tab", name="Write").click()
    expect(page.locator("#write-editor textarea")).to_have_value("A response I have not finished")
    expect(page.locator("#write-claims [data-testid='cell-0-0']")).to_contain_text("An unchecked claim")
    page.context.close()


def test_training_mode_shows_the_calibration_answer_after_the_submit(studio, browser, tmp_path):
    records = [json.loads(line) for line in DEMO_CALIBRATION.open(encoding="utf-8")]
    campaign_id = new_campaign(studio, tmp_path, "training", records, known_as="calibration")
    with write_session(studio["engine"]) as session, session.begin():
        pairs = select(Pair.id).where(Pair.campaign_id == campaign_id)
        for item in session.exec(select(CalibrationItem).where(CalibrationItem.pair_id.in_(pairs))):
            item.explanation = "The answer the import knew: response A was marked the better one."
    page = log_in(browser, studio["url"], "ada")
    open_campaign(page, "training")
    tie, reasoning = page.locator("#compare-choice").get_by_label("Tie"), page.locator("#compare-reasoning textarea")
    text = "Both responses look equally good to me on this one."
    for _ in range(3):  # under CI's load a late load of the same item can reset the form: fill it in again
        page.keyboard.press("3")
        reasoning.click()
        expect(reasoning).to_be_focused()  # typed keys are text, not shortcuts
        reasoning.fill(text)
        page.wait_for_timeout(1000)
        if tie.is_checked() and reasoning.input_value() == text:
            break
        page.locator("#compare-left").click()  # the focus out of the text box, so that 3 is a key again
    expect(tie).to_be_checked()
    reasoning.focus()
    page.keyboard.press("Control+Enter")

    feedback = page.locator("#compare-feedback")
    expect(feedback).to_contain_text("Calibration item: expected")
    ada = user_id(studio["engine"], "ada")
    (judgment,) = rows(studio["engine"], select(Judgment).where(Judgment.rater_id == ada, Judgment.pair_id.in_(pairs)))
    (item,) = rows(studio["engine"], select(CalibrationItem).where(CalibrationItem.pair_id == judgment.pair_id))
    expected = {-2: "Left much better", -1: "Left better", 1: "Right better", 2: "Right much better"}
    expect(feedback).to_contain_text(f"expected {expected[flip(item.expected, judgment.left)]}")
    expect(feedback).to_contain_text("your answer was not accepted")
    expect(page.locator("#compare-status")).to_contain_text("Press Next item (N) to go on")
    screenshot(page, "compare-feedback")
    page.context.close()


def test_script_in_prompts_responses_and_reasoning_stays_inert_text(studio, browser, tmp_path):
    payload = " ".join(PAYLOADS)
    record = {"prompt": f"Is this safe? {payload}", "response_a": f"A says {payload}", "response_b": f"B {payload}"}
    new_campaign(studio, tmp_path, "xss", [record])
    page = log_in(browser, studio["url"], "ada")
    open_campaign(page, "xss")
    expect(page.locator("#compare-prompt")).to_contain_text(f"Is this safe? {payload}")
    left, right = page.locator("#compare-left .concord-rawtext"), page.locator("#compare-right .concord-rawtext")
    assert sorted([left.text_content(), right.text_content()]) == [f"A says {payload}", f"B {payload}"]
    for pane in ("#compare-left", "#compare-right"):  # rendered as markdown, the payload reads as text
        expect(page.locator(f"{pane} .concord-md")).to_contain_text(payload)
    page.keyboard.press("2")
    page.locator("#compare-reasoning textarea").click()
    expect(page.locator("#compare-reasoning textarea")).to_be_focused()  # typed keys are text, not shortcuts
    page.keyboard.type(f"Left is fine; quoting it: {payload}")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#compare-status")).to_contain_text("Nothing left to judge")
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x'], a[href^='javascript']").count() == 0
    page.context.close()

    page = log_in(browser, studio["url"], "lena")
    page.get_by_role("tab", name="Lead").click()
    choose(page, "lead-campaign", "xss")
    page.get_by_role("tab", name="Adjudication").click()
    page.locator("#adjudication-only label").click()  # every pair, not only contested ones
    page.locator("#adjudication-list").click()
    page.locator("#adjudication-pairs [role=gridcell]").filter(has_text="Is this safe?").click()
    expect(page.locator("#adjudication-judgments")).to_contain_text(f"Left is fine; quoting it: {payload}")
    expect(page.locator("#adjudication-prompt textarea")).to_have_value(f"[user]\nIs this safe? {payload}")
    page.wait_for_timeout(500)  # an image error handler would have fired by now
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x'], a[href^='javascript']").count() == 0
    page.evaluate("document.querySelector('#adjudication-standing').scrollIntoView()")
    screenshot(page, "lead-adjudication")
    page.context.close()


@pytest.fixture(scope="module")
def team_judgments(studio):
    """Two more raters judge every demo pair they are given, agreeing on all but a few, through the service."""
    engine = studio["engine"]
    with write_session(engine) as session, session.begin():
        made = [create_user(session=session, user=UserCreate(username=n, password=PASSWORD)) for n in ("bea", "cal")]
        raters = [user.id for user in made]
        demo = session.exec(select(Campaign).where(Campaign.name == "demo")).one()
    service = StudioService(engine, rng=random.Random(0))
    for number, rater in enumerate(raters):
        service.accept_consent(rater, demo.id, demo.consent_version)
        for _ in range(30):  # more than the demo holds; a flagged rater on probation could be served forever
            task = service.next_pair(rater, demo.id)
            if task is None:
                break
            left = rows(engine, select(Assignment.left).where(Assignment.id == task.assignment_id))[0]
            stored = -1 if task.pair_id % 3 else 2
            if number and task.pair_id % 4 == 0:
                stored = -stored
            reasoning = f"Rater {number} on pair {task.pair_id}: this side is more accurate and more direct."
            answer = JudgmentAnswer(flip(stored, left), False, dict.fromkeys(task.rubric, 4), reasoning, 4, 20.0)
            service.submit_judgment(rater, task.assignment_id, answer)
    return raters


def test_a_lead_reads_the_quality_report_and_exports(studio, browser, team_judgments, tmp_path):
    new_campaign(studio, tmp_path, "second", [{"prompt": "Which?", "response_a": "This.", "response_b": "That."}])
    page = log_in(browser, studio["url"], "lena")
    expect(page.get_by_role("tab", name="Users")).to_be_hidden()  # admins only
    page.get_by_role("tab", name="Lead").click()
    expect(page.locator("#lead-campaign input")).to_have_value("demo")
    expect(page.locator("#campaigns-guidelines textarea")).to_have_value(re.compile("^# Demo campaign guidelines"))
    expect(page.locator("#campaigns-overlap-k")).to_contain_text("a careless vote is outvoted")
    page.locator("#campaigns-overlap-k").scroll_into_view_if_needed()
    screenshot(page, "lead-campaigns-overlap")
    screenshot(page, "lead-campaigns")

    page.get_by_role("tab", name="Quality").click()
    expect(page.locator("#quality-report")).to_be_hidden()  # no empty tables before the report is computed
    page.locator("#quality-refresh").click()
    expect(page.locator("#quality-agreement")).to_contain_text("Krippendorff's alpha, ordinal", timeout=60_000)
    expect(page.locator("#quality-raters")).to_contain_text("calibration")
    expect(page.locator("#quality-disagreements")).to_contain_text("votes")
    for plot in ("over-time", "calibration", "position"):
        expect(page.locator(f"#quality-plot-{plot} img")).to_be_visible()
    screenshot(page, "lead-quality")
    page.evaluate("document.querySelector('#quality-raters').scrollIntoView()")
    screenshot(page, "lead-quality-raters")
    expect(page.locator("#quality-disagreements")).to_contain_text("an excluded rater's too")
    page.evaluate("document.querySelector('#quality-disagreements').scrollIntoView()")
    screenshot(page, "lead-quality-disagreements")

    page.get_by_role("tab", name="Export").click()
    page.locator("#export-run").click()
    expect(page.locator("#export-preview")).to_contain_text("chosen", timeout=60_000)
    expect(page.locator("#export-card")).to_contain_text("Krippendorff")
    download = page.locator("#export-file a[href*='.zip']")
    expect(download).to_be_visible()
    with page.expect_download() as started:  # through the permission-checked route, with the lead's session
        download.click()
    with zipfile.ZipFile(started.value.path()) as archive:
        assert "README.md" in archive.namelist()
    expect(page.locator("#export-list")).to_contain_text("lena")
    (record,) = rows(studio["engine"], select(ExportRecord))
    lena = user_id(studio["engine"], "lena")
    assert (record.kind, record.created_by, record.row_count > 0) == ("preference", lena, True)
    assert set(team_judgments) <= set(record.rater_ids)
    screenshot(page, "lead-export")

    # The lead excludes a rater: the pairs they judged go back to the queue (the module's last use of the demo)
    page.get_by_role("tab", name="Campaigns").click()
    page.locator("#campaigns-members-section").get_by_role("button", name="Members").click()
    page.locator("#campaigns-member-username textarea").fill("cal")
    page.locator("#campaigns-member-role").get_by_label("excluded").check()
    page.locator("#campaigns-assign").click()
    expect(page.locator("#campaigns-members-status")).to_contain_text("cal is excluded here")
    expect(page.locator("#campaigns-members")).to_contain_text("excluded")
    screenshot(page, "lead-members-excluded")
    (role,) = rows(studio["engine"], select(CampaignMember.role).where(CampaignMember.user_id == team_judgments[1]))
    assert role == "excluded"
    page.get_by_role("tab", name="Quality").click()
    page.locator("#quality-refresh").click()  # the report keeps cal's judgments, as the lead's evidence, and says so
    expect(page.locator("#quality-raters").get_by_role("row", name=re.compile(r"\bcal\b"))).to_contain_text(
        "excluded", timeout=60_000
    )
    page.evaluate("document.querySelector('#quality-raters').scrollIntoView()")
    screenshot(page, "lead-quality-excluded")
    # Another campaign picked: demo's report goes, so no figure is read under the other campaign's name
    choose(page, "lead-campaign", "second")
    expect(page.locator("#quality-report")).to_be_hidden()
    page.get_by_role("tab", name="Export").click()
    expect(page.locator("#export-card")).not_to_contain_text("Krippendorff")
    expect(page.locator("#export-file")).not_to_contain_text("Download")
    page.context.close()


def test_an_admin_sees_every_account(studio, browser):
    page = log_in(browser, studio["url"], "root")
    page.get_by_role("tab", name="Users").click()
    page.locator("#users-refresh").click()
    for name in ("ada", "lena", "root"):
        expect(page.locator("#users-table")).to_contain_text(name)
    screenshot(page, "users")
    page.context.close()
