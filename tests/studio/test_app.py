"""The studio through its HTTP API, as gradio_client (or any script) reaches it: what a rater can and cannot do."""

import json
import re
import time
from types import SimpleNamespace

import gradio as gr
import pytest
from gradio_client import Client
from sqlmodel import Session, select

from storage.accounts import create_user
from storage.db import write_session
from storage.demo import seed_demo
from storage.models import CalibrationItem, Campaign, Consent, Demonstration, Judgment, Pair, Prompt, User, UserCreate
from studio.app import build_app, launch_studio
from studio.login import current_user, hf_oauth_enabled
from studio.service import PermissionDenied, StudioService
from studio.tabs import compare
from studio.tabs.rater import as_chat

CRITERIA = [4, 4, 4, 3, 3, 3, 3, 3]  # the demo rubric has three criteria; the rest are hidden sliders
REASONING = "The left answer is correct and explains collisions."
STATUS, PROMPT, LEFT, RIGHT = 0, 1, 2, 3  # next_pair's first outputs (gradio_client leaves out states and layout)
CLAIM_HEADERS = ["claim", "status", "source"]


@pytest.fixture
def studio(sqlite_engine):
    seed_demo(sqlite_engine)
    with write_session(sqlite_engine) as session, session.begin():
        create_user(session=session, user=UserCreate(username="ada", password="password1"))
    app = launch_studio(StudioService(sqlite_engine), prevent_thread_lock=True, quiet=True)
    yield app.local_url
    app.close()


def demo_campaign(engine, **fields) -> None:
    with write_session(engine) as session, session.begin():
        campaign = session.exec(select(Campaign)).one()
        for name, value in fields.items():
            setattr(campaign, name, value)


def log_in(url: str) -> tuple[Client, int]:
    rater = Client(url, auth=("ada", "password1"), verbose=False)
    whoami, dropdown = rater.predict(api_name="/campaigns")
    (campaign,) = [value for _, value in dropdown["choices"]]
    assert whoami == "Signed in as **ada** · campaign:"
    return rater, campaign


def test_a_rater_consents_then_judges_and_writes_through_the_api(studio, sqlite_engine):
    rater, campaign = log_in(studio)
    asked = rater.predict(campaign, api_name="/next_pair")
    assert "stored and exported under a pseudonym" in json.dumps(asked)
    for pane in (asked[LEFT], asked[RIGHT]):  # no response is sent before the consent: only a bare update
        assert isinstance(pane, dict) and pane.get("__type__") == "update" and "value" not in pane
    refused = rater.predict(campaign, -1, False, *CRITERIA, REASONING, 4, api_name="/submit_judgment")
    assert refused[0] == "⚠ **Not submitted:** There is no item on screen: press Next item."
    shown = rater.predict(campaign, api_name="/accept_consent_pair")
    assert shown[LEFT] and shown[RIGHT] and shown[LEFT] != shown[RIGHT]
    refused = rater.predict(campaign, -1, False, *CRITERIA, "too short", 4, api_name="/submit_judgment")
    assert "Not submitted:** Reasoning needs at least 30 characters" in refused[0]
    rater.predict(campaign, -1, False, *CRITERIA, REASONING, 4, api_name="/submit_judgment")
    rater.predict(campaign, api_name="/next_prompt")
    false_claim = {"headers": CLAIM_HEADERS, "data": [["Tests prove code correct", "false", ""]]}
    refused = rater.predict(campaign, "Tests prove code correct.", false_claim, "[]", api_name="/submit_demonstration")
    assert "Not submitted:** " in refused[0] and "marked false: correct or remove it" in refused[0]
    claims = {"headers": CLAIM_HEADERS, "data": [["Tests catch regressions", "Verified", "team wiki"], ["", "", ""]]}
    pastes = '[{"at": "2025-01-01T10:00:00.000Z", "chars": 42}]'
    rater.predict(campaign, "Tests pin down behaviour before a refactor changes it.", claims, pastes,
                  api_name="/submit_demonstration")  # fmt: skip
    with Session(sqlite_engine) as session:
        ada = session.exec(select(User).where(User.username == "ada")).one()
        (judgment,) = session.exec(select(Judgment)).all()
        (demonstration,) = session.exec(select(Demonstration).where(Demonstration.rater_id == ada.id)).all()
        (consent,) = session.exec(select(Consent)).all()
    assert judgment.rater_id == ada.id and judgment.criteria == {"helpfulness": 4, "honesty": 4, "harmlessness": 4}
    assert demonstration.claims == [{"claim": "Tests catch regressions", "status": "verified", "source": "team wiki"}]
    assert demonstration.paste_events == [{"at": "2025-01-01T10:00:00.000Z", "chars": 42}]
    assert (consent.user_id, consent.version) == (ada.id, 1)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (("left", False, *CRITERIA, REASONING, 4), "Choose a preference from -2 to 2 \\(got 'left'\\)"),
        ((-1, "yes", *CRITERIA, REASONING, 4), "'Both bad' must be yes or no \\(got 'yes'\\)"),
        ((-1, False, "x", *CRITERIA[1:], REASONING, 4), "Score 'helpfulness' from 1 to 5 \\(got 'x'\\)"),
        ((-1, False, *CRITERIA, REASONING, 9), "Confidence must be 1 to 5 \\(got 9\\)"),
    ],
)
def test_a_submit_with_malformed_values_names_the_field_and_stores_nothing(studio, sqlite_engine, values, message):
    """The submit takes the values as sent (no Gradio preprocess): the service's own check names the field, on the
    status line; every other output is left as it is."""
    rater, campaign = log_in(studio)
    rater.predict(campaign, api_name="/next_pair")
    rater.predict(campaign, api_name="/accept_consent_pair")
    refused = rater.predict(campaign, *values, api_name="/submit_judgment")
    assert re.search(f"Not submitted:\\*\\* {message}", refused[0]), refused[0]
    assert all(value == {"__type__": "update"} for value in refused[1:]), "the form keeps what was sent"
    with Session(sqlite_engine) as session:
        assert session.exec(select(Judgment)).all() == []
    rater.predict(campaign, -1, False, *CRITERIA, REASONING, 4, api_name="/submit_judgment")  # the item is still held


@pytest.mark.parametrize("mode", ["training", "audit"])
def test_a_calibration_answer_is_never_sent_before_the_submit(studio, sqlite_engine, mode):
    demo_campaign(sqlite_engine, calibration_rate=1.0, calibration_mode=mode, consent_text="")
    with Session(sqlite_engine) as session:
        explanations = [item.explanation for item in session.exec(select(CalibrationItem))]
    rater, campaign = log_in(studio)
    shown = rater.predict(campaign, api_name="/next_pair")
    sent = json.dumps(shown)
    assert shown[LEFT] and shown[RIGHT] and "Calibration item" not in sent and "xpected" not in sent
    assert not any(explanation in sent for explanation in explanations)
    after = json.dumps(rater.predict(campaign, -2, False, *CRITERIA, REASONING, 4, api_name="/submit_judgment"))
    told = [explanation for explanation in explanations if explanation in after]
    if mode == "training":
        assert len(told) == 1 and "Calibration item:** expected *" in after
    else:
        assert told == [] and "Calibration item" not in after and "xpected" not in after


def test_html_in_a_prompt_is_sent_escaped(studio, sqlite_engine):
    demo_campaign(sqlite_engine, calibration_rate=0.0, consent_text="")
    with write_session(sqlite_engine) as session, session.begin():
        first = session.exec(select(Pair).order_by(Pair.id)).first()  # the queue serves the lowest id first
        session.get(Prompt, first.prompt_id).messages = [
            {"role": "user", "content": "<img src=x onerror=alert(1)> & <script>alert(2)</script>"}
        ]
    rater, campaign = log_in(studio)
    shown = rater.predict(campaign, api_name="/next_pair")[PROMPT]  # rendered markdown, and the raw text
    escaped = "&lt;img src=x onerror=alert(1)&gt; &amp; &lt;script&gt;alert(2)&lt;/script&gt;"
    assert shown.count(escaped) == 2 and "<img" not in shown and "<script" not in shown


def test_prompts_are_escaped_and_system_prompts_kept():
    chat = as_chat([{"role": "system", "content": "Be <b>brief</b>."}, {"role": "user", "content": "a < b?"}])
    assert chat == [
        {"role": "assistant", "content": "Be &lt;b&gt;brief&lt;/b&gt;.", "metadata": {"title": "System prompt"}},
        {"role": "user", "content": "a &lt; b?"},
    ]


def test_the_api_refuses_anyone_not_logged_in(studio):
    with pytest.raises(Exception):  # noqa: B017  (the client fails at login; its exception type varies by version)
        Client(studio, auth=("ada", "wrong password"), verbose=False)


def test_on_a_space_with_oauth_hf_accounts_sign_in_as_linked_users(sqlite_engine, monkeypatch):
    for name, value in {"SYSTEM": "spaces", "SPACE_ID": "team/concord", "OAUTH_CLIENT_ID": ""}.items():
        monkeypatch.setenv(name, value)
    assert not hf_oauth_enabled()  # a Space without `hf_oauth: true` keeps the password login
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client")
    assert hf_oauth_enabled()
    with write_session(sqlite_engine) as session, session.begin():
        ada = create_user(session=session, user=UserCreate(username="ada", password="password1"))
        ada.hf_username, ada_id = "ada-hf", ada.id
    service = StudioService(sqlite_engine)
    no_password = SimpleNamespace(username=None)  # OAuth replaces Gradio's password login

    def profile(username):
        return gr.OAuthProfile({"name": username, "preferred_username": username, "profile": "", "picture": ""})

    assert current_user(service, no_password, profile("ADA-hf")) == ada_id
    with pytest.raises(PermissionDenied, match="'mallory' is not linked .* ask an admin to add you"):
        current_user(service, no_password, profile("mallory"))
    with pytest.raises(PermissionDenied, match="Sign in with Hugging Face first"):
        current_user(service, no_password, None)


def test_gradios_queue_keeps_few_event_records_and_summarises_them_rarely(sqlite_engine, tmp_path, monkeypatch):
    """Gradio summarised its last 10,000 events with pandas after every event (2 to 9 ms of a submit, growing with
    the events kept) for a monitoring page the studio does not serve."""
    monkeypatch.delenv("GRADIO_ANALYTICS_MAX_EVENTS", raising=False)
    monkeypatch.delenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", raising=False)
    app = build_app(StudioService(sqlite_engine), exports_dir=tmp_path)
    assert app._queue.ANALYTICS_MAX_EVENTS == 100 and app._queue.ANAYLTICS_CACHE_FREQUENCY == 1000


def test_a_session_holds_no_more_components_however_many_judgments_it_submits(sqlite_engine):
    """Gradio 6.31 keeps a copy of an input component in the session for each update of its properties: resending
    the rubric's labels with every submit grew a rater's session by eight components a judgment."""
    seed_demo(sqlite_engine)
    demo_campaign(sqlite_engine, consent_text="", calibration_rate=0.0)
    with write_session(sqlite_engine) as session, session.begin():
        create_user(session=session, user=UserCreate(username="ada", password="password1"))
    app = launch_studio(StudioService(sqlite_engine), prevent_thread_lock=True, quiet=True)
    try:
        rater, campaign = log_in(app.local_url)
        rater.predict(campaign, api_name="/next_pair")
        held = []
        for n in range(4):
            shown = rater.predict(campaign, -1, False, *CRITERIA, f"Judgment {n}: the left answer is more specific.",
                                  4, api_name="/submit_judgment")  # fmt: skip
            assert "Saved" in shown[0]
            held.append(len(app.state_holder.session_data[rater.session_hash].blocks_config.blocks))
        assert held == held[:1] * 4
    finally:
        app.close()


def test_submits_beyond_the_bound_wait_their_turn_and_every_one_is_stored(sqlite_engine, monkeypatch):
    """Gradio's 40 worker threads let 50 raters' submits run at once, each taking the interpreter's lock from the
    others at every database round trip (studio.tabs.compare.SUBMITS_AT_ONCE)."""
    monkeypatch.setattr(compare, "SUBMITS_AT_ONCE", 2)
    seed_demo(sqlite_engine)
    demo_campaign(sqlite_engine, consent_text="", calibration_rate=0.0)
    names = [f"rater{n}" for n in range(6)]
    with write_session(sqlite_engine) as session, session.begin():
        for name in names:
            create_user(session=session, user=UserCreate(username=name, password="password1"))
    running, most = [], []

    class Slow(StudioService):
        def submit_judgment(self, *args, **kwargs):
            running.append(1)
            most.append(len(running))
            time.sleep(0.3)
            running.pop()
            return super().submit_judgment(*args, **kwargs)

    app = launch_studio(Slow(sqlite_engine), prevent_thread_lock=True, quiet=True)
    try:
        raters = [Client(app.local_url, auth=(name, "password1"), verbose=False) for name in names]
        for rater in raters:
            (campaign,) = [value for _, value in rater.predict(api_name="/campaigns")[1]["choices"]]
            rater.predict(campaign, api_name="/next_pair")
        jobs = [rater.submit(campaign, -1, False, *CRITERIA, REASONING, 4, api_name="/submit_judgment")
                for rater in raters]  # fmt: skip
        assert all("Saved" in job.result(timeout=30)[0] for job in jobs)
    finally:
        app.close()
    assert max(most) == 2
    with Session(sqlite_engine) as session:
        assert len(session.exec(select(Judgment)).all()) == len(names)


def test_starting_from_the_model_draft_is_refused_beside_the_form_and_keeps_the_raters_text(studio):
    rater, campaign = log_in(studio)
    rater.predict(campaign, api_name="/next_prompt")
    draft = rater.predict(campaign, api_name="/accept_consent_prompt")[2]  # the demo's first prompt has one
    assert draft.startswith("A hash table stores values under keys.")
    kept, said = rater.predict("My own start.", api_name="/use_draft")
    assert kept == {"__type__": "update"}  # the rater's text is left as it is, and the status line says why
    assert said == "**Not done:** Your response is not empty: clear it first to start from the model draft."
    assert rater.predict("", api_name="/use_draft") == (draft, "")
