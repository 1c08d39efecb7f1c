"""The studio through its HTTP API, as gradio_client (or any script) reaches it: what a rater can and cannot do."""

import pytest
from gradio_client import Client
from sqlmodel import Session, select

from storage.accounts import create_user
from storage.demo import seed_demo
from storage.models import Demonstration, Judgment, User, UserCreate
from studio.app import build_app
from studio.service import StudioService

CRITERIA = [4, 4, 4, 3, 3, 3]  # the demo rubric has three criteria; the rest are hidden sliders


@pytest.fixture
def studio(sqlite_engine):
    seed_demo(sqlite_engine)
    with Session(sqlite_engine) as session, session.begin():
        create_user(session=session, user=UserCreate(username="ada", password="password1"))
    service = StudioService(sqlite_engine)
    app = build_app(service)
    app.queue()
    _, url, _ = app.launch(prevent_thread_lock=True, auth=service.check_login, quiet=True, show_error=True)
    yield url
    app.close()


def test_a_rater_judges_and_writes_through_the_api(studio, sqlite_engine):
    rater = Client(studio, auth=("ada", "password1"), verbose=False)
    (campaign,) = [value for _, value in rater.predict(api_name="/campaigns")["choices"]]
    shown = rater.predict(campaign, api_name="/next_pair")
    assert shown[2] and shown[3] and shown[2] != shown[3]  # two responses, left and right
    with pytest.raises(Exception, match="Reasoning needs at least 30 characters"):
        rater.predict(campaign, -1, False, *CRITERIA, "too short", 4, api_name="/submit_judgment")
    rater.predict(campaign, -1, False, *CRITERIA, "The left answer is correct and explains collisions.", 4,
                  api_name="/submit_judgment")  # fmt: skip
    rater.predict(campaign, api_name="/next_prompt")
    claims = {"headers": ["claim", "status", "source"], "data": [["Tests catch regressions", "verified", "team wiki"]]}
    rater.predict(campaign, "Tests pin down behaviour before a refactor changes it.", claims,
                  api_name="/submit_demonstration")  # fmt: skip
    with Session(sqlite_engine) as session:
        ada = session.exec(select(User).where(User.username == "ada")).one()
        (judgment,) = session.exec(select(Judgment)).all()
        (demonstration,) = session.exec(select(Demonstration).where(Demonstration.rater_id == ada.id)).all()
    assert judgment.rater_id == ada.id and judgment.criteria == {"helpfulness": 4, "honesty": 4, "harmlessness": 4}
    assert demonstration.claims == [{"claim": "Tests catch regressions", "status": "verified", "source": "team wiki"}]


def test_the_api_refuses_anyone_not_logged_in(studio):
    with pytest.raises(Exception):  # noqa: B017  (the client fails at login; its exception type varies by version)
        Client(studio, auth=("ada", "wrong password"), verbose=False)
