"""The command line end to end, as an engineer uses it: import shared data, judge, report quality, export."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk
from sqlmodel import Session, select

from storage.accounts import create_user
from storage.db import make_engine, write_session
from storage.models import Assignment, CalibrationItem, Campaign, ExportRecord, Judgment, Pair, User, UserCreate
from studio.service import StudioService
from studio.validation import JudgmentAnswer

ROOT = Path(__file__).resolve().parents[1]


def concord(*args: str, url: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "launch.py", "--database-url", url, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def judge_as_simulated_raters(url: str, items_each: int) -> None:
    """Five careful raters (right about 85% of the time) and one who clicks at random; 8 pairs are gold."""
    engine = make_engine(url)
    with write_session(engine) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == "hh")).one()
        campaign.min_reasoning_chars, campaign.calibration_rate, campaign_id = 10, 0.2, campaign.id
        for pair in session.exec(select(Pair).order_by(Pair.id.desc()).limit(8)):
            expected = pair.prior_preference
            session.add(CalibrationItem(pair_id=pair.id, expected=expected, accepted=[expected, 2 * expected],
                                        kind="factual_priority"))  # fmt: skip
        users = [UserCreate(username=f"rater{i}", password="password1") for i in range(6)]
        raters = [create_user(session=session, user=user).id for user in users]
    service, rng = StudioService(engine, rng=random.Random(0)), random.Random(1)
    for _ in range(items_each):
        for number, rater in enumerate(raters):
            task = service.next_pair(rater, campaign_id)
            with Session(engine) as session:
                truth = session.get(Pair, task.pair_id).prior_preference  # -1: A is the chosen one
                left = session.get(Assignment, task.assignment_id).left
            careful = number < 5
            stored = truth * rng.choice([1, 2]) if careful and rng.random() < 0.85 else rng.choice([-2, -1, 1, 2])
            choice = stored if (left == "a" or not careful) else -stored
            answer = JudgmentAnswer(choice=choice, both_bad=False,
                                    criteria={"helpfulness": 3, "honesty": 3, "harmlessness": 3},
                                    reasoning="the chosen reply answers the question", confidence=3,
                                    time_on_task_s=rng.uniform(20, 60))  # fmt: skip
            service.submit_judgment(rater, task.assignment_id, answer)
    engine.dispose()


@pytest.mark.slow
def test_import_judge_report_and_filtered_export(shared_data, tmp_path):
    url = f"sqlite:///{tmp_path / 'concord.db'}"
    source = shared_data / "hh-rlhf" / "helpful-online" / "test.jsonl.gz"
    imported = concord("import", str(source), "--campaign", "hh", url=url)
    assert imported.returncode != 0 and "--drop-identical" in imported.stderr  # 2 records have identical replies
    imported = concord("import", str(source), "--campaign", "hh", "--drop-identical", url=url)
    assert imported.returncode == 0, imported.stderr
    assert "1135 pairs" in imported.stdout and "2 pairs with identical responses dropped" in imported.stdout
    judge_as_simulated_raters(url, items_each=30)

    report = concord("quality", "--campaign", "hh", "--json", str(tmp_path / "q.json"),
                     "--plots", str(tmp_path / "plots"), "--n-boot", "50", url=url)  # fmt: skip
    assert report.returncode == 0, report.stderr
    figures = json.loads((tmp_path / "q.json").read_text())
    assert len(figures["raters"]) == 6 and figures["summary"]["n_judgments"] == 180
    assert 0.2 < figures["agreement"]["alpha_ordinal"]["value"] < 1
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["agreement_over_time.png", "calibration_by_kind.png", "position_bias.png"]

    out = tmp_path / "export"
    options = ["--policy", "weighted", "--min-agreement", "0.6", "--exclude-flagged-raters", "--no-prior"]
    exported = concord("export", "--campaign", "hh", "--kind", "preference", "--out", str(out), *options, url=url)
    assert exported.returncode == 0, exported.stderr
    dataset = load_from_disk(str(out / "dataset"))
    rows = [*dataset["train"], *dataset["test"]]
    assert 0 < len(rows) <= 60 and all(row["label_source"] == "judgments" for row in rows)
    assert all(row["agreement"] >= 0.6 for row in rows)
    card = (out / "README.md").read_text()
    assert "weighted" in card and "alpha" in card.lower()
    with Session(make_engine(url)) as session:
        record = session.exec(select(ExportRecord)).one()
        random_clicker = session.exec(select(User).where(User.username == "rater5")).one()
    assert [rater["rater_id"] for rater in record.filters["excluded_raters"]] == [random_clicker.id]
    assert random_clicker.pseudonym in card and "rater5" not in card


@pytest.mark.slow
def test_judging_from_the_terminal_and_second_runs_say_why_in_one_line(tmp_path):
    """`judge` shows the held pair and records an answer through the studio's checks; a taken username, an existing
    export folder, a wrong item and an unknown user are each refused in one line, without a traceback."""
    url = f"sqlite:///{tmp_path / 'concord.db'}"
    demo = ROOT / "storage" / "demo" / "calibration.jsonl"
    assert concord("import", str(demo), "--campaign", "cal", url=url).returncode == 0
    assert concord("user", "alice", url=url).returncode == 0
    shown = concord("judge", "alice", "--campaign", "cal", url=url)
    assert shown.returncode == 0 and "Item 1, held by alice" in shown.stdout and "--- right ---" in shown.stdout
    answer = ["--choice", "2", "--scores", "4,5,5", "--reasoning", "The left reply is the accurate one."]
    judged = concord("judge", "alice", "--campaign", "cal", "--item", "1", *answer, url=url)
    assert judged.returncode == 0, judged.stderr
    assert "recorded judgment 1 of item 1 (1 judged by alice)" in judged.stdout and "Item 2, held" in judged.stdout
    with Session(make_engine(url)) as session:
        judgment = session.exec(select(Judgment)).one()
        left = session.get(Assignment, 1).left
    assert judgment.preference == (-1 if left == "a" else 1) and judgment.criteria["honesty"] == 5

    out = tmp_path / "export"
    refusals = {
        ("user", "alice"): "user failed: username 'alice' is taken",
        ("judge", "alice", "--campaign", "cal", "--item", "1", *answer): "Item 1 is not the one alice holds (item 2)",
        ("judge", "alice", "--campaign", "cal", "--item", "2", *answer[:4], "--reasoning", "short"): "at least 20",
        ("judge", "bob", "--campaign", "cal"): "no active user is called 'bob'",
        ("export", "--campaign", "cal", "--kind", "preference", "--out", str(out)): "already exists",
    }
    assert concord("export", "--campaign", "cal", "--kind", "preference", "--out", str(out), url=url).returncode == 0
    for args, message in refusals.items():
        again = concord(*args, url=url)
        last = again.stderr.strip().splitlines()[-1]
        assert again.returncode == 1 and message in last and "Traceback" not in again.stderr, (args, again.stderr)


def test_an_admin_reset_from_the_shell_gives_a_one_time_password_and_names_an_unknown_user(tmp_path):
    url = f"sqlite:///{tmp_path / 'concord.db'}"
    assert concord("user", "ada", url=url).returncode == 0
    reset = concord("password", "ada", url=url)
    assert reset.returncode == 0 and "one-time password for 'ada'" in reset.stdout
    with Session(make_engine(url)) as session:
        assert session.exec(select(User.must_change_password).where(User.username == "ada")).one() is True
    unknown = concord("password", "nobody", url=url)
    assert unknown.returncode == 1 and unknown.stderr.strip().endswith("password failed: no user named 'nobody'")
    assert "Traceback" not in unknown.stderr
