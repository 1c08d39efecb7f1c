"""The rater's loop in a real browser: how long from a submit to the next item being ready and focused?

    python benchmarks/rater_ui.py            # 50 items after 3 warm-up items
    python benchmarks/rater_ui.py --quick    # 12 items: about a minute with the studio's start

A studio (``launch.py studio``, as raters run it) on a fresh SQLite file; headless Chromium at 1280x800 logs in as
a rater and judges item after item with the keyboard only: a choice, two rubric scores, the reasoning, confidence,
Ctrl+Enter. The page itself (static/studio.js) notes the time of the Ctrl+Enter key press and of the moment the
next item is on screen with the focus on it (``window.concord.lastReady``); the difference is the figure, so
Playwright's polling adds nothing to it. Typing is not timed. The page must never scroll (checked, and counted as
an error if it does). The last line printed is one JSON object; a section is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlmodel import select  # noqa: E402

from benchmarks._report import report  # noqa: E402
from storage.accounts import create_user  # noqa: E402
from storage.db import make_engine, upgrade_database, write_session  # noqa: E402
from storage.imports import import_file  # noqa: E402
from storage.models import Campaign, UserCreate  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
WARMUP = 3
READY = "(key) => window.concord.lastReady && window.concord.lastReady.key && window.concord.lastReady.key !== key"


def seed(folder: Path, items: int) -> str:
    """A campaign of ``items`` pairs with a three-criterion rubric, open to the one rater; returns the database URL."""
    url = f"sqlite:///{folder / 'concord.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    path = folder / "pairs.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for n in range(items):
            code = f"```python\ndef f{n}(xs):\n    return sorted(set(xs))\n```"
            record = {"prompt": f"Item {n}: remove duplicates from a list and sort it.",
                      "response_a": f"Use a set, then sort:\n\n{code}\n\nThis is O(n log n).",
                      "response_b": f"Loop, append what is new ({n}), then call `sort()`."}  # fmt: skip
            f.write(json.dumps(record) + "\n")
    import_file(path, engine=engine, campaign="bench", fmt="pairs")
    with write_session(engine) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == "bench")).one()
        campaign.calibration_rate, campaign.consent_text, campaign.min_reasoning_chars = 0.0, "", 20
        campaign.rubric = ["accuracy", "clarity", "safety"]
        create_user(session=session, user=UserCreate(username="rita", password=PASSWORD))
    engine.dispose()
    return url


def start_studio(folder: Path, database_url: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "CONCORD_DATA_DIR": str(folder), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(ROOT / "launch.py"), "--database-url", database_url, "studio", "--port", str(port)]
    log = (folder / "studio.log").open("w")
    server = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit(f"the studio did not start:\n{(folder / 'studio.log').read_text()}") from None
            time.sleep(0.5)


def judge(page, n: int) -> dict:
    """One item with the keyboard; returns what the page measured from Ctrl+Enter to the next item ready."""
    key = page.locator("#compare-draft-key textarea").input_value()
    for press in [str(n % 5 + 1), "a", "4", "s", str(n % 5 + 1), f"Shift+Digit{(n + 2) % 5 + 1}", "r"]:
        page.keyboard.press(press)
    page.keyboard.insert_text(f"Item {n}: the chosen side is correct and says why.")
    page.keyboard.press("Control+Enter")
    page.wait_for_function(READY, arg=key, timeout=30_000)
    return page.evaluate("window.concord.lastReady")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(items: int, command: str) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server, url = start_studio(folder, seed(folder, items + WARMUP + 1))
        try:
            with sync_playwright() as playwright:
                chromium = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
                )
                page = chromium.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.goto(url)
                page.get_by_label("username").fill("rita")
                page.get_by_label("Password", exact=True).fill(PASSWORD)
                page.get_by_role("button", name="Login").click()
                page.locator("#compare-task").wait_for(state="visible", timeout=60_000)
                page.evaluate("window.__scrolls = 0; window.addEventListener('scroll', () => window.__scrolls++)")
                height = page.evaluate("document.documentElement.scrollHeight")
                measured, errors = [], []
                for n in range(items + WARMUP):
                    ready = judge(page, n)
                    if not ready["focused"]:
                        errors.append(f"item {n}: the next item did not take the focus")
                    if n >= WARMUP:
                        measured.append(ready["sinceSubmit"])
                scrolls = page.evaluate("[window.scrollY, window.__scrolls]")
                if scrolls != [0, 0]:
                    errors.append(f"the page scrolled: scrollY, scroll events = {scrolls}")
                chromium.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    figures = {
        "items": len(measured),
        "submit_to_ready_ms": {
            "p50": round(statistics.median(measured), 1),
            "p95": round(percentile(measured, 0.95), 1),
            "max": round(max(measured), 1),
            "mean": round(statistics.fmean(measured), 1),
        },
        "page_height_px_at_1280x800": height,
        "errors": errors,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    report("rater UI: submit to next item ready and focused (Playwright, SQLite)", figures, command)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 items instead of 50: about a minute")
    parser.add_argument("--items", type=int, default=None, help="how many items to time (after 3 warm-up items)")
    args = parser.parse_args()
    count = args.items or (12 if args.quick else 50)
    main(
        count,
        "python benchmarks/rater_ui.py"
        + (" --quick" if args.quick else "")
        + (f" --items {args.items}" if args.items else ""),
    )
