"""Every endpoint the studio exposes over HTTP has a permission test, and one rater never sees another's work."""

import json
import re
from pathlib import Path

from gradio_client import Client

from storage.accounts import create_user
from storage.db import write_session
from storage.models import UserCreate
from studio.app import build_app
from studio.service import StudioService
from tests.studio.test_app import CRITERIA, LEFT, RIGHT, log_in, studio  # noqa: F401  (the fixture)

HERE = Path(__file__).parent
SECRET = "Only ada knows this reasoning: the left answer cites the 1997 report."


def test_every_public_endpoint_is_exercised_by_a_studio_api_test(sqlite_engine, tmp_path):
    app = build_app(StudioService(sqlite_engine), exports_dir=tmp_path)
    public = {f"/{fn.api_name}" for fn in app.fns.values() if fn.api_visibility == "public"}
    tested = set()
    for path in HERE.glob("test_*.py"):
        tested |= set(re.findall(r'"(/[a-z_]+)"', path.read_text(encoding="utf-8")))
    assert public - tested == set(), "each new endpoint needs a test of who may call it"


def test_a_rater_sees_nothing_of_another_raters_work(studio, sqlite_engine):  # noqa: F811
    with write_session(sqlite_engine) as session, session.begin():
        create_user(session=session, user=UserCreate(username="bob", password="password2"))
    ada, campaign = log_in(studio)
    ada.predict(campaign, api_name="/next_pair")  # shows the consent text
    ada.predict(campaign, api_name="/accept_consent_pair")
    ada.predict(campaign, -1, False, *CRITERIA, SECRET, 4, api_name="/submit_judgment")
    ada.predict(campaign, api_name="/next_prompt")  # consent is per campaign: asked once
    ada.predict(campaign, "Ada's own demonstration, about the 1997 report.", {"headers": [], "data": []}, "[]",
                api_name="/submit_demonstration")  # fmt: skip

    bob = Client(studio, auth=("bob", "password2"), verbose=False)
    seen = [bob.predict(api_name="/campaigns")]
    seen.append(bob.predict(campaign, api_name="/next_prompt"))  # asks for consent first
    seen.append(bob.predict(campaign, api_name="/accept_consent_prompt"))
    seen.append(bob.predict("", api_name="/use_draft"))
    for _ in range(3):  # whatever bob is given next, including the pair ada judged
        seen.append(bob.predict(campaign, api_name="/next_pair"))  # a calibration item waits for Next after feedback
        seen.append(bob.predict(campaign, -2, False, *CRITERIA, "Bob's own reasoning, long enough to count.", 3,
                                api_name="/submit_judgment"))  # fmt: skip
    everything = json.dumps(seen)
    assert SECRET not in everything and "Ada's own" not in everything
    assert seen[4][LEFT] and seen[4][RIGHT]  # bob does get work of his own
