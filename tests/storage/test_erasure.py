"""Erasure: both modes, supersedes chains, stale exports and runs, nothing of the person left, the audit trail."""

import pytest
from sqlalchemy import select as core_select
from sqlmodel import Session, SQLModel, func, select

import launch
from storage.accounts import authenticate, create_user
from storage.db import write_session
from storage.erasure import erase_user
from storage.frames import judgment_frame_for
from storage.models import (
    Assignment,
    AuditEvent,
    Campaign,
    CampaignMember,
    Consent,
    DeletionRequest,
    Demonstration,
    DemonstrationReview,
    ExportRecord,
    Judgment,
    Pair,
    Prompt,
    Response,
    Role,
    TrainingRun,
    User,
    UserCreate,
    utcnow,
)

PASSWORD = "correct horse battery"


def _judgment(session, pair, rater, preference, supersedes=None):
    row = Judgment(pair_id=pair.id, rater_id=rater.id, preference=preference, left="a", guideline_version=1,
                   reasoning=f"I prefer {preference}", supersedes_id=supersedes and supersedes.id)  # fmt: skip
    session.add(row)
    session.flush()
    return row


def _demonstration(session, prompt, rater, text, supersedes=None):
    row = Demonstration(prompt_id=prompt.id, messages=[{"role": "assistant", "content": text}], rater_id=rater.id,
                        guideline_version=1, supersedes_id=supersedes and supersedes.id)  # fmt: skip
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def world(engine):
    """Erin (to be erased) and Olga judged and wrote in campaign "c"; Erin alone is assigned to campaign "closed".
    Export 1 holds both raters' data, export 2 only Olga's; run 1 learned from export 1, run 2 from export 2."""
    with write_session(engine) as s, s.begin():
        erin = create_user(
            session=s, user=UserCreate(username="erin-the-rater", password=PASSWORD, domains=["forensic-law"])
        )
        erin.hf_username = "erin-hf"
        olga = create_user(session=s, user=UserCreate(username="olga", password=PASSWORD))
        campaign, closed = Campaign(name="c", consent_text="ok?"), Campaign(name="closed")
        s.add_all([campaign, closed])
        s.flush()
        prompt = Prompt(campaign_id=campaign.id, messages=[{"role": "user", "content": "q"}], content_hash="q")
        s.add(prompt)
        s.flush()
        a, b = Response(prompt_id=prompt.id, text="A"), Response(prompt_id=prompt.id, text="B")
        s.add_all([a, b])
        s.flush()
        pair = Pair(campaign_id=campaign.id, prompt_id=prompt.id, response_a_id=a.id, response_b_id=b.id,
                    content_hash="q")  # fmt: skip
        s.add(pair)
        s.flush()
        first = _judgment(s, pair, erin, -2)
        second = _judgment(s, pair, erin, -1, supersedes=first)
        _judgment(s, pair, erin, 1, supersedes=second)  # a chain of three versions
        _judgment(s, pair, olga, 2)
        draft = _demonstration(s, prompt, erin, "erin's draft")
        final = _demonstration(s, prompt, erin, "erin's final", supersedes=draft)
        _demonstration(s, prompt, olga, "olga's")
        s.add(DemonstrationReview(demonstration_id=final.id, status="rejected", note="cites no source",
                                  reviewer_id=olga.id))  # fmt: skip
        now = utcnow()
        s.add_all([
            Assignment(campaign_id=campaign.id, rater_id=erin.id, task="judgment", pair_id=pair.id, expires_at=now,
                       closed_at=now),
            Assignment(campaign_id=campaign.id, rater_id=erin.id, task="judgment", pair_id=pair.id, expires_at=now),
            Consent(user_id=erin.id, campaign_id=campaign.id, version=1),
            CampaignMember(campaign_id=closed.id, user_id=erin.id, role=Role.rater),
        ])  # fmt: skip
        exports = [
            ExportRecord(campaign_id=campaign.id, kind="preference", rater_ids=[erin.id, olga.id], created_by=olga.id),
            ExportRecord(campaign_id=campaign.id, kind="preference", rater_ids=[olga.id]),
        ]
        s.add_all(exports)
        s.flush()
        runs = [TrainingRun(name=f"run{i}", method="dpo", export_ids=[e.id]) for i, e in enumerate(exports)]
        s.add_all(runs)
        s.flush()
        return {"erin": erin.id, "olga": olga.id, "pseudonym": erin.pseudonym, "exports": [e.id for e in exports],
                "runs": [r.id for r in runs], "campaign": campaign.id}  # fmt: skip


def _count(session, model, **where):
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return session.exec(query).one()


def _everything(engine) -> str:
    """Every row of every table, as text."""
    with Session(engine) as s:
        return "\n".join(str(row) for t in SQLModel.metadata.sorted_tables for row in s.execute(core_select(t)))


def _erase(engine, world, mode):
    with write_session(engine) as s, s.begin():
        return erase_user(session=s, user_id=world["erin"], mode=mode, actor_id=world["olga"])


def _check_de_identified(engine, world, report, mode):
    with Session(engine) as s:
        erin = s.get(User, world["erin"])
        assert (erin.username, erin.active, erin.hf_username, erin.domains) == (report.username, False, None, [])
        assert report.username == f"erased-{erin.id}" and erin.pseudonym != world["pseudonym"]
        for name in ("erin-the-rater", report.username):
            assert authenticate(session=s, username=name, password=PASSWORD) is None
        assert authenticate(session=s, username="olga", password=PASSWORD) is not None
        request = s.exec(select(DeletionRequest)).one()
        assert (request.user_id, request.mode, request.requested_by) == (erin.id, mode, world["olga"])
        assert request.completed_at is not None and request.id == report.request_id
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "user.erase")).one()
        assert (event.actor_id, event.target, event.details["mode"]) == (world["olga"], report.username, mode)
        assert event.details["stale_exports"] == [world["exports"][0]]
        # Exports and runs with Erin's data are stale; the others are not.
        assert [e.stale for e in s.exec(select(ExportRecord).order_by(ExportRecord.id))] == [True, False]
        assert [r.stale for r in s.exec(select(TrainingRun).order_by(TrainingRun.id))] == [True, False]
        assert (report.stale_exports, report.stale_runs) == (world["exports"][:1], world["runs"][:1])
        # Olga's rows are untouched.
        assert (_count(s, Judgment, rater_id=world["olga"]), _count(s, Demonstration, rater_id=world["olga"])) == (
            1,
            1,
        )
    everything = _everything(engine)
    for trace in ("erin-the-rater", world["pseudonym"], "erin-hf", "forensic-law"):
        assert trace not in everything


def test_remove_deletes_everything_the_person_made(engine, world):
    report = _erase(engine, world, "remove")
    assert report.deleted == {"judgments": 3, "demonstration reviews": 1, "demonstrations": 2, "assignments": 2,
                              "consents": 1, "memberships": 1}  # fmt: skip
    assert report.opened_campaigns == ["closed"] and report.kept == {}
    with Session(engine) as s:
        for model, column in [(Judgment, "rater_id"), (Demonstration, "rater_id"), (Assignment, "rater_id"),
                              (Consent, "user_id"), (CampaignMember, "user_id")]:  # fmt: skip
            assert _count(s, model, **{column: world["erin"]}) == 0, model
    _check_de_identified(engine, world, report, "remove")
    assert "erin's" not in _everything(engine)


def test_anonymise_keeps_the_judgments_measurable(engine, world):
    report = _erase(engine, world, "anonymise")
    assert report.kept == {"judgments": 3, "demonstrations": 2} and report.deleted == {"open assignments": 1}
    with Session(engine) as s:
        chain = s.exec(select(Judgment).where(Judgment.rater_id == world["erin"]).order_by(Judgment.id)).all()
        assert [j.supersedes_id for j in chain] == [None, chain[0].id, chain[1].id]
        assert _count(s, Consent, user_id=world["erin"]) == 1  # the consent those judgments were given under
        current = judgment_frame_for(session=s, campaign_id=world["campaign"])
        pseudonym = s.get(User, world["erin"]).pseudonym
    assert sorted(current["preference"]) == [1, 2] and pseudonym in set(current["pseudonym"])
    _check_de_identified(engine, world, report, "anonymise")
    assert "erin's final" in _everything(engine)  # the writing stays, under the new account


def test_bad_requests_are_refused_and_change_nothing(engine, world):
    with write_session(engine) as s, s.begin():
        with pytest.raises(ValueError, match="mode must be one of remove, anonymise; got 'forget'"):
            erase_user(session=s, user_id=world["erin"], mode="forget", actor_id=None)
        with pytest.raises(ValueError, match="no user with id 999"):
            erase_user(session=s, user_id=999, mode="remove", actor_id=None)
    with Session(engine) as s:
        assert s.get(User, world["erin"]).active and _count(s, DeletionRequest) == 0


def test_the_command_line_erases_by_username(engine, world, capsys):
    url = engine.url.render_as_string(hide_password=False)
    launch.main(["--database-url", url, "erase", "erin-the-rater", "--mode", "remove"])
    assert "erased (remove)" in capsys.readouterr().out
    with Session(engine) as s:
        assert _count(s, Judgment, rater_id=world["erin"]) == 0
    with pytest.raises(SystemExit, match="erase failed: no user named 'nobody'"):
        launch.main(["--database-url", url, "erase", "nobody", "--mode", "remove"])
