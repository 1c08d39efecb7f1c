"""An evaluation campaign end to end: MT-bench-style questions imported, answered by a tiny local model and by a
fake OpenAI-compatible endpoint (launch.py generate), paired blind (launch.py pair), judged through the studio's
service, then rated (launch.py eval-report), with a reward model trained on the judgments as a judge beside the
raters (launch.py train, launch.py score)."""

import dataclasses
import json
import random
from pathlib import Path

from sqlmodel import Session, select

import launch
from storage.db import write_session
from storage.models import Campaign, CampaignKind, Response, Role, User
from studio.service import StudioService
from studio.validation import JudgmentAnswer
from tests.alignment.fake_endpoint import FakeEndpoint

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a short poem about tides.", "Now shorten it."]},
    {"question_id": 82, "category": "writing", "turns": ["Describe a lantern."]},
    {"question_id": 111, "category": "math", "turns": ["What is 3 * 7?", "And divided by 3?"]},
    {"question_id": 112, "category": "math", "turns": ["Is 91 prime?"]},
    {"question_id": 113, "category": "math", "turns": ["What is 10 - 4?"]},
    {"question_id": 83, "category": "writing", "turns": ["Name three kinds of owls."]},
]
MODELS = ("remote", "tiny")
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


def judge_all(engine, campaign_id: int, raters: list[int]) -> int:
    """Raters prefer the endpoint's answers (they quote the question), but the last one calls every third a tie."""
    service, judged = StudioService(engine, rng=random.Random(0)), 0
    for k, rater in enumerate(raters):
        while (task := service.next_pair(rater, campaign_id)) is not None:
            shown = repr(dataclasses.asdict(task))
            assert not any(model in shown for model in MODELS), "a rater must never see who wrote a response"
            remote_left = " on: " in task.left_text
            choice = 0 if k == len(raters) - 1 and judged % 3 == 0 else (-1 if remote_left else 1)
            service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(
                choice=choice, both_bad=False, criteria={}, reasoning="It answers the question that was asked.",
                confidence=4, time_on_task_s=8.0))  # fmt: skip
            judged += 1
    return judged


def test_generate_judge_report(engine, tmp_path, tiny_causal_lm, tiny_encoder, capsys):
    url = ["--database-url", engine.url.render_as_string(hide_password=False)]
    questions = tmp_path / "question.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    launch.main(["import", str(questions), "--campaign", "arena", *url])
    with FakeEndpoint() as server:
        launch.main(["generate", "--campaign", "arena", "--model", f"tiny={tiny_causal_lm}", "--model",
                     f"remote=chat-model@{server.url}", "--max-new-tokens", "6", "--seed", "1", *url])  # fmt: skip
    assert len(server.requests) == 6 + 2, "one request per turn"
    launch.main(["pair", "--campaign", "arena", "--strategy", "all-models", "--evaluation", *url])
    assert "6 pairs created over 6 prompts and 2 models" in capsys.readouterr().out

    with write_session(engine) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == "arena")).one()
        assert campaign.kind == CampaignKind.evaluation
        campaign.overlap_k = 3
        raters = [User(username=f"r{k}", password_hash="x", role=Role.rater, domains=["writing", "math"])
                  for k in range(3)]  # fmt: skip
        session.add_all(raters)
        session.flush()
        campaign_id, rater_ids = campaign.id, [u.id for u in raters]
    assert judge_all(engine, campaign_id, rater_ids) == 6 * 3

    report_path = tmp_path / "report.json"
    launch.main(["eval-report", "--campaign", "arena", "--n-boot", "200", "--json", str(report_path),
                 "--plot", str(tmp_path / "ratings.png"), *url])  # fmt: skip
    report = json.loads(report_path.read_text())
    ratings = report["overall"]["ratings"]
    assert [r["model"] for r in ratings] == ["remote", "tiny"] and report["overall"]["n_votes"] == 18
    for r in ratings:
        assert r["low"] <= r["rating"] <= r["high"] and r["low"] < r["high"]
    assert ratings[0]["rating"] > ratings[1]["rating"] and set(report["categories"]) == {"writing", "math"}
    assert (tmp_path / "ratings.png").read_bytes().startswith(b"\x89PNG")
    with Session(engine) as session:
        params = {r.author: r.generation_params for r in session.exec(select(Response))}
    assert params["tiny"]["backend"] == "transformers" and params["remote"]["backend"] == "openai-compatible"

    # A reward model learns the raters' taste from these judgments, scores the pairs and joins the report as a judge.
    launch.main(["train", str(RECIPES / "reward.yaml"), "--model_name_or_path", tiny_encoder, "--campaign", "arena",
                 "--run_name", "arena-rm", "--max_steps", "40", "--test_fraction", "0.0", "--output_root",
                 str(tmp_path / "runs"), *url])  # fmt: skip
    launch.main(["score", "--campaign", "arena", "--run", "arena-rm", *url])
    launch.main(["eval-report", "--campaign", "arena", "--n-boot", "200", "--json", str(report_path),
                 "--plot", str(tmp_path / "ratings.png"), *url])  # fmt: skip
    assert "Reward model arena-rm as judge on 6 pairs: agrees with the human majority on" in capsys.readouterr().out
    judge = json.loads(report_path.read_text())["judge"]
    assert judge["run"] == "arena-rm" and judge["n_pairs"] == 6
    assert judge["agreement"]["n"] == 6 and judge["agreement"]["rate"] >= 5 / 6  # every majority is "remote"
    assert judge["rater_agreement"]["n"] == 18 and judge["rater_agreement"]["rate"] == 16 / 18  # two ties
    assert [r["model"] for r in judge["ratings"]["ratings"]][0] == "remote"
