"""A blind evaluation end to end: per-model response files, pairing, judging through the service, the export's
model columns, the quality report's model figures and launch.py eval-report."""

import dataclasses
import json
import random

import pytest
from datasets import load_from_disk
from sqlmodel import Session, select

import launch
from storage.db import write_session
from storage.export import export_campaign
from storage.frames import evaluation_report, quality_report
from storage.imports import import_file
from storage.members import set_member
from storage.models import Campaign, Response, Role, User
from storage.pairing import form_pairs
from studio.service import StudioService
from studio.validation import JudgmentAnswer

QUALITY = {"alpha-7b": 3, "beta-13b": 2, "gamma-1b": 1}  # what the raters see, hidden in the texts' wording
CATEGORIES = ("writing", "math")


def answer(i: int, quality: int) -> str:
    return f"Answer to question {i}: " + ["terse", "adequate", "thorough and correct"][quality - 1] + "."


@pytest.fixture
def evaluation(engine, tmp_path):
    for model, quality in QUALITY.items():
        rows = [{"prompt": f"Question {i}?", "response": answer(i, quality), "domain": CATEGORIES[i % 2],
                 "generation_params": {"temperature": 0.7, "seed": i}} for i in range(8)]  # fmt: skip
        path = tmp_path / f"{model}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        import_file(path, engine=engine, campaign="arena", model=model)
    with write_session(engine) as session, session.begin():
        campaign_id = session.exec(select(Campaign.id).where(Campaign.name == "arena")).one()
        report = form_pairs(session=session, campaign_id=campaign_id, strategy="all-models", evaluation=True)
        raters = [
            User(username=f"rater{k}", password_hash="x", role=Role.rater, domains=list(CATEGORIES)) for k in range(3)
        ]
        session.add_all(raters)
        session.flush()
        session.get(Campaign, campaign_id).overlap_k = 3
        rater_ids = [u.id for u in raters]
    assert report.created == 8 * 3
    return campaign_id, rater_ids


def quality_of(text: str) -> int:
    return next(q for q in (3, 2, 1) if answer(0, q).split(": ")[1] in text)


def judge_everything(engine, campaign_id, rater_ids) -> int:
    """Raters prefer the better-worded answer, except the last rater, who calls a tie on every fourth item."""
    service, judged = StudioService(engine, rng=random.Random(0)), 0
    for k, rater in enumerate(rater_ids):
        while (task := service.next_pair(rater, campaign_id)) is not None:
            shown = repr(dataclasses.asdict(task))
            assert not any(model in shown for model in QUALITY), "a rater must never see who wrote a response"
            left, right = quality_of(task.left_text), quality_of(task.right_text)
            choice = 0 if k == 2 and judged % 4 == 0 else (-1 if left > right else 1)
            service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(
                choice=choice, both_bad=False, criteria={}, reasoning="The chosen answer is more thorough.",
                confidence=4, time_on_task_s=10.0))  # fmt: skip
            judged += 1
    return judged


def test_an_evaluation_from_response_files_to_ratings_and_an_export(engine, evaluation, tmp_path, capsys):
    campaign_id, rater_ids = evaluation
    assert judge_everything(engine, campaign_id, rater_ids) == 24 * 3

    result = export_campaign(engine=engine, campaign="arena", kind="preference", out_dir=tmp_path / "out",
                             test_fraction=0.0)  # fmt: skip
    rows = load_from_disk(str(result.out_dir / "dataset"))["train"]
    with Session(engine) as session:
        author = {r.text: r.author for r in session.exec(select(Response))}
    assert len(rows) == 24
    for row in rows:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert (row["model_chosen"], row["model_rejected"]) == (author[chosen], author[rejected])
        assert QUALITY[row["model_chosen"]] > QUALITY[row["model_rejected"]]
        assert json.loads(row["generation_params_chosen"])["temperature"] == 0.7
    card = (result.out_dir / "README.md").read_text()
    assert "## Models" in card and "| alpha-7b | 16 | 33.3% | 16 |" in card and "| gamma-1b | 16 | 33.3% | 0 |" in card

    report = evaluation_report(engine=engine, campaign="arena", n_boot=200)
    overall = report["overall"]
    assert report["kind"] == "evaluation" and overall["models"] == ["alpha-7b", "beta-13b", "gamma-1b"]
    assert [r["rank"] for r in overall["ratings"]][0] == 1 and overall["n_votes"] == 72
    assert set(report["categories"]) == set(CATEGORIES)
    with write_session(engine) as session, session.begin():  # a lead excludes the tie-calling rater: their votes go
        user, campaign = session.get(User, rater_ids[2]), session.get(Campaign, campaign_id)
        set_member(session=session, campaign=campaign, user=user, role=Role.excluded, actor_id=None)
    assert evaluation_report(engine=engine, campaign="arena", n_boot=50)["overall"]["n_votes"] == 48
    quality = quality_report(engine=engine, campaign="arena", n_boot=50)
    assert [r["model"] for r in quality["models"]["win_rates"]] == ["alpha-7b", "beta-13b", "gamma-1b"]
    assert {r["pairing"] for r in quality["models"]["agreement_by_pairing"]} == {
        "alpha-7b vs beta-13b", "alpha-7b vs gamma-1b", "beta-13b vs gamma-1b"}  # fmt: skip

    if engine.dialect.name == "sqlite":  # the command line, once
        url = engine.url.render_as_string(hide_password=False)
        plot = tmp_path / "plot.png"
        launch.main(["eval-report", "--campaign", "arena", "--plot", str(plot), "--n-boot", "100",
                     "--database-url", url])  # fmt: skip
        out = capsys.readouterr().out
        assert "Ratings" in out and "Category math" in out and "alpha-7b" in out
        assert plot.read_bytes().startswith(b"\x89PNG")
