"""A real studio (`python launch.py studio`) on a seeded SQLite file, driven by Debian's headless Chromium.

The demo campaign has a rater (ada), a lead who is a lead member of it (lena) and an admin (root).
Screenshots of every screen land in test-output/screenshots/ at 1280x800, for people to look at.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlmodel import Session, select

from storage import members
from storage.accounts import create_user
from storage.db import make_engine, upgrade_database
from storage.demo import seed_demo
from storage.models import Campaign, Role, UserCreate

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PASSWORD = "correct horse battery"
USERS = {"ada": Role.rater, "lena": Role.lead, "root": Role.admin}

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The studio's URL and database URL; the demo campaign, a rater, a lead and an admin exist."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    folder = tmp_path_factory.mktemp("studio")
    database_url = f"sqlite:///{folder / 'concord.db'}"
    engine = make_engine(database_url)
    upgrade_database(engine)
    seed_demo(engine)
    with Session(engine) as session, session.begin():
        users = {
            name: create_user(session=session, user=UserCreate(username=name, password=PASSWORD, role=role))
            for name, role in USERS.items()
        }
        demo = session.exec(select(Campaign).where(Campaign.name == "demo")).one()
        members.set_member(session=session, campaign=demo, user=users["lena"], role=Role.lead, actor_id=None)
    port = _free_port()
    env = {**os.environ, "CONCORD_DATA_DIR": str(folder), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(ROOT / "launch.py"), "--database-url", database_url, "studio", "--port", str(port)]
    log = (folder / "studio.log").open("w")
    server = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the studio did not start:\n{(folder / 'studio.log').read_text()}")
            time.sleep(0.5)
    yield {"url": url, "database_url": database_url, "engine": engine, "folder": folder}
    server.terminate()
    server.wait(timeout=20)
    engine.dispose()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


def log_in(browser, url: str, username: str):
    """A fresh 1280x800 page, logged in through Gradio's login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(url)
    page.get_by_label("username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)  # not "New password" (a one-time password's form)
    page.get_by_role("button", name="Login").click()
    page.locator("#concord-campaign").wait_for()
    return page


def screenshot(page, name: str) -> Path:
    """The page as a person sees it (the 1280x800 viewport) in test-output/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
