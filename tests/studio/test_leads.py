"""The lead and admin services: who may do what, and what each action does to the database."""

import json
import zipfile
from dataclasses import dataclass

import pytest
from sqlmodel import Session, col, func, select

from storage.accounts import authenticate
from storage.db import write_session
from storage.imports import ImportFailed
from storage.models import (
    Adjudication,
    Assignment,
    AuditEvent,
    CalibrationItem,
    CalibrationKind,
    Campaign,
    CampaignCreate,
    CampaignMember,
    CampaignUpdate,
    Demonstration,
    Judgment,
    Pair,
    Prompt,
    Response,
    Role,
    User,
)
from studio.access import PermissionDenied
from studio.leads import LeadService, PairDetail, with_names
from studio.service import StudioService
from studio.validation import JudgmentAnswer, ValidationFailed

# Per pair of campaign c1, the preferences of raters r0, r1 and r2 (None: no judgment).
VOTES = [(-1, -1, -2), (-2, 1, 2), (0, 0, None), (None, None, None)]


@dataclass
class World:
    engine: object
    leads: LeadService
    users: dict[str, int]  # admin, lead (runs c1), other (runs c2), r0, r1, r2
    c1: int
    c2: int
    pairs: list[int]  # c1's pairs, in VOTES order


def _add_pair(session, campaign, number, votes, raters):
    prompt = Prompt(campaign_id=campaign.id, messages=[{"role": "user", "content": f"question {number}"}],
                    content_hash=f"q{number}")  # fmt: skip
    session.add(prompt)
    session.flush()
    a, b = (Response(prompt_id=prompt.id, text=f"answer {number}{side}") for side in "AB")
    session.add_all([a, b])
    session.flush()
    pair = Pair(campaign_id=campaign.id, prompt_id=prompt.id, response_a_id=a.id, response_b_id=b.id,
                content_hash=f"q{number}")  # fmt: skip
    session.add(pair)
    session.flush()
    session.add_all([
        Judgment(pair_id=pair.id, rater_id=rater.id, preference=vote, left="a", guideline_version=1,
                 reasoning=f"{rater.username} on {number}", confidence=3, time_on_task_s=5.0)
        for rater, vote in zip(raters, votes, strict=True) if vote is not None
    ])  # fmt: skip
    return pair


@pytest.fixture
def world(engine) -> World:
    with write_session(engine) as s, s.begin():
        roles = {"admin": Role.admin, "lead": Role.lead, "other": Role.lead, "r0": Role.rater, "r1": Role.rater,
                 "r2": Role.rater}  # fmt: skip
        users = {name: User(username=name, password_hash="-", role=role) for name, role in roles.items()}
        c1, c2 = Campaign(name="c1", rubric=["helpfulness"]), Campaign(name="c2")
        s.add_all([*users.values(), c1, c2])
        s.flush()
        s.add_all([CampaignMember(campaign_id=c1.id, user_id=users["lead"].id, role=Role.lead),
                   CampaignMember(campaign_id=c2.id, user_id=users["other"].id, role=Role.lead)])  # fmt: skip
        raters = [users[f"r{i}"] for i in range(3)]
        pairs = [_add_pair(s, c1, i, votes, raters).id for i, votes in enumerate(VOTES)]
        return World(engine, LeadService(engine), {n: u.id for n, u in users.items()}, c1.id, c2.id, pairs)


def _count(engine, model) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


def _pairs_file(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


# One call per method of a campaign's lead: it must work for the campaign's lead and an admin, and be refused to a
# rater and to the lead of another campaign.
LEAD_CALLS = {
    "campaign": lambda w, a, tmp: w.leads.campaign(a, w.c1),
    "update_campaign": lambda w, a, tmp: w.leads.update_campaign(a, w.c1, CampaignUpdate(overlap_k=4)),
    "import_file": lambda w, a, tmp: w.leads.import_file(
        a, w.c1, _pairs_file(tmp, [{"prompt": f"new {a}", "response_a": "x", "response_b": "y"}])
    ),
    "pairs": lambda w, a, tmp: w.leads.pairs(a, w.c1),
    "mark_calibration": lambda w, a, tmp: w.leads.mark_calibration(
        a, w.pairs[0], expected=-1, accepted=[-2], kind="safety", explanation="A refuses safely"
    ),
    "members": lambda w, a, tmp: w.leads.members(a, w.c1),
    "assign, set_domains, unassign": lambda w, a, tmp: (
        w.leads.assign(a, w.c1, "r2"),
        w.leads.set_domains(a, w.c1, "r2", ["law"]),
        w.leads.unassign(a, w.c1, "r2"),
    ),
    "quality": lambda w, a, tmp: w.leads.quality(a, w.c1, n_boot=10),
    "pair_detail": lambda w, a, tmp: w.leads.pair_detail(a, w.pairs[1]),
    "adjudicate": lambda w, a, tmp: w.leads.adjudicate(a, w.pairs[1], preference=2, both_bad=False, note="B"),
    "export": lambda w, a, tmp: w.leads.export(a, w.c1, out_dir=tmp / "export", test_fraction=0.0),
}


@pytest.mark.parametrize("method", LEAD_CALLS)
def test_lead_actions_are_for_the_campaigns_leads_and_admins(world, tmp_path, method):
    call = LEAD_CALLS[method]
    for actor in world.users:
        (tmp_path / actor).mkdir()
    for actor in ("r0", "other"):  # a rater, and the lead of c2
        before = _count(world.engine, AuditEvent)
        with pytest.raises(PermissionDenied):
            call(world, world.users[actor], tmp_path / actor)
        assert _count(world.engine, AuditEvent) == before
    for actor in ("lead", "admin"):
        assert call(world, world.users[actor], tmp_path / actor) is not None


def test_creating_a_campaign_makes_its_creator_a_lead(world):
    leads, lead = world.leads, world.users["lead"]
    campaign_id = leads.create_campaign(lead, CampaignCreate(name=" pilot ", guidelines="Be kind."))
    assert ("pilot", campaign_id) in leads.led_campaigns(lead)
    assert leads.campaign(lead, campaign_id).guidelines == "Be kind."
    assert [(m.username, m.role) for m in leads.members(lead, campaign_id)] == [("lead", "lead")]
    with pytest.raises(ValidationFailed, match="A campaign named 'pilot' already exists"):
        leads.create_campaign(world.users["admin"], CampaignCreate(name="pilot"))
    with pytest.raises(PermissionDenied, match="Only leads and admins"):
        leads.create_campaign(world.users["r0"], CampaignCreate(name="mine"))
    with Session(world.engine) as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "campaign.create")).one()
        assert (event.actor_id, event.target) == (lead, "pilot")


def test_roles_and_led_campaigns(world):
    leads, users = world.leads, world.users
    assert [leads.is_lead(users[n]) for n in ("admin", "lead", "r0")] == [True, True, False]
    assert [leads.is_admin(users[n]) for n in ("admin", "lead", "r0")] == [True, False, False]
    assert leads.led_campaigns(users["lead"]) == [("c1", world.c1)]
    assert leads.led_campaigns(users["admin"]) == [("c1", world.c1), ("c2", world.c2)]
    assert leads.led_campaigns(users["r0"]) == []


def test_an_edit_of_the_guidelines_bumps_their_version(world):
    lead = world.users["lead"]
    before = world.leads.campaign(lead, world.c1)
    after = world.leads.update_campaign(lead, world.c1, CampaignUpdate(guidelines="Prefer the correct answer."))
    assert (after.guidelines_version, after.consent_version) == (before.guidelines_version + 1, 1)
    assert world.leads.campaign(lead, world.c1).guidelines == "Prefer the correct answer."
    with pytest.raises(ValidationFailed, match="at least one criterion"):
        world.leads.update_campaign(lead, world.c1, CampaignUpdate(rubric=[" "]))


def test_an_import_names_the_bad_record_and_writes_nothing(world, tmp_path):
    lead = world.users["lead"]
    bad = _pairs_file(tmp_path, [{"prompt": "p", "response_a": "a", "response_b": "b"}, {"prompt": "q"}])
    before = (_count(world.engine, Prompt), _count(world.engine, AuditEvent))
    with pytest.raises(ImportFailed, match=r"pairs.jsonl, line 2, field 'response_a'"):
        world.leads.import_file(lead, world.c1, bad)
    assert (_count(world.engine, Prompt), _count(world.engine, AuditEvent)) == before
    good = _pairs_file(tmp_path, [{"prompt": "p", "response_a": "a", "response_b": "b", "preference": 1}])
    report = world.leads.import_file(lead, world.c1, good, known_as="calibration")
    assert (report.campaign, report.pairs, report.calibration_items) == ("c1", 1, 1)
    with Session(world.engine) as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "import")).one()
        assert (event.actor_id, event.target) == (lead, "c1")


def test_marking_a_calibration_item_creates_then_updates_it(world):
    lead, pair = world.users["lead"], world.pairs[3]
    first = world.leads.mark_calibration(lead, pair, expected=-2, accepted=[-1], kind="safety", explanation="A")
    again = world.leads.mark_calibration(lead, pair, expected=1, accepted=[], kind="repeat", explanation="B now")
    with Session(world.engine) as s:
        item = s.get(CalibrationItem, first)
        assert again == first and (item.expected, item.accepted, item.kind) == (1, [1], CalibrationKind.repeat)
    with pytest.raises(ValidationFailed, match="kind"):
        world.leads.mark_calibration(lead, pair, expected=1, accepted=[], kind="vibes", explanation="")
    with pytest.raises(ValidationFailed, match="preference from -2"):
        world.leads.mark_calibration(lead, pair, expected=3, accepted=[], kind="repeat", explanation="")
    summaries = {p.pair_id: p for p in world.leads.pairs(lead, world.c1)}
    assert summaries[pair].is_calibration and not summaries[world.pairs[0]].is_calibration


def test_assigning_a_rater_closes_the_campaign_to_the_others(world):
    leads, lead, studio = world.leads, world.users["lead"], StudioService(world.engine)
    assert ("c1", world.c1) in studio.campaigns_for("r1")
    leads.assign(lead, world.c1, "r0")
    assert ("c1", world.c1) not in studio.campaigns_for("r1") and ("c1", world.c1) in studio.campaigns_for("r0")
    with pytest.raises(PermissionDenied, match="not assigned"):
        studio.next_pair(world.users["r1"], world.c1)
    assert studio.next_pair(world.users["r0"], world.c1).pair_id == world.pairs[3]  # the one r0 has not judged
    row = leads.set_domains(lead, world.c1, "r0", [" law ", "law", "", "medicine"])
    assert (row.username, row.role, row.domains) == ("r0", "rater", ["law", "medicine"])
    assert [(m.username, m.role) for m in leads.members(lead, world.c1)] == [("lead", "lead"), ("r0", "rater")]
    with pytest.raises(ValidationFailed, match="'r1' is not a rater of campaign 'c1'"):
        leads.set_domains(lead, world.c1, "r1", ["law"])
    with pytest.raises(ValidationFailed, match="'r1' is a rater; an admin must make them a lead"):
        leads.assign(lead, world.c1, "r1", role="lead")
    with pytest.raises(ValidationFailed, match="cannot take yourself off"):
        leads.unassign(lead, world.c1, "lead")
    leads.unassign(lead, world.c1, "r0")
    assert ("c1", world.c1) in studio.campaigns_for("r1")  # open again
    with pytest.raises(ValidationFailed, match="'r0' is not a member"):
        leads.unassign(lead, world.c1, "r0")
    with Session(world.engine) as s:
        actions = s.exec(select(AuditEvent.action).where(AuditEvent.actor_id == lead).order_by(AuditEvent.id)).all()
    assert actions == ["member.assign", "user.domains", "member.remove"]


def test_an_excluded_rater_stops_rating_and_their_pairs_open_again_without_their_judgments(world, tmp_path):
    leads, lead, studio = world.leads, world.users["lead"], StudioService(world.engine)
    with write_session(world.engine) as s, s.begin():
        s.add_all([User(username="r8", password_hash="-"), User(username="r9", password_hash="-")])
    # k is 3: pairs 0 and 1 are full, 2 has two judgments; the queue moves its frontier on to pair 2
    assert studio.next_pair(studio.user_id("r8"), world.c1).pair_id == world.pairs[2]

    def exported(name):
        preview = leads.export(lead, world.c1, out_dir=tmp_path / name, test_fraction=0.0)
        return {row["pair_id"]: row["chosen"][0]["content"] for row in preview.rows}, preview.card

    assert exported("before")[0][world.pairs[1]] == "answer 1B"  # r0 -2, r1 +1, r2 +2: B by majority
    with pytest.raises(ValidationFailed, match="cannot exclude yourself"):
        leads.assign(lead, world.c1, "lead", role="excluded")
    held = studio.next_pair(world.users["r2"], world.c1)
    assert held.pair_id == world.pairs[3]  # r2 holds pair 3 open
    row = leads.assign(lead, world.c1, "r2", role="excluded")
    assert (row.username, row.role) == ("r2", "excluded")
    with Session(world.engine) as s:  # their lease is dropped: pair 3 has room again
        leased = select(Assignment.pair_id).where(Assignment.rater_id == world.users["r2"])
        assert s.exec(leased.where(col(Assignment.closed_at).is_(None))).all() == []
    answer = JudgmentAnswer(choice=1, both_bad=False, criteria={}, reasoning="B.", confidence=4, time_on_task_s=9)
    with pytest.raises(PermissionDenied, match="a lead may have taken you off its campaign"):
        studio.submit_judgment(world.users["r2"], held.assignment_id, answer)
    leads.assign(lead, world.c1, "r1")
    assert [(m.username, m.role) for m in leads.members(lead, world.c1)] == [
        ("lead", "lead"), ("r1", "rater"), ("r2", "excluded")]  # fmt: skip
    leads.unassign(lead, world.c1, "r1")
    assert ("c1", world.c1) not in studio.campaigns_for("r2") and ("c1", world.c1) in studio.campaigns_for("r1")
    with pytest.raises(PermissionDenied):
        studio.next_pair(world.users["r2"], world.c1)
    # r2's judgments no longer count toward k: pair 0, below the frontier, is open again and comes first
    assert studio.next_pair(studio.user_id("r9"), world.c1).pair_id == world.pairs[0]
    rows, card = exported("excluded")
    assert world.pairs[1] not in rows  # r0 -2, r1 +1: a tie, left out
    assert "judgments left out: their raters were excluded from the campaign: 2" in card
    # The quality report keeps their judgments (the lead's evidence) and says they are excluded
    report = leads.quality(lead, world.c1, n_boot=0)
    assert {r["name"]: r["excluded"] for r in report["raters"]} == {"r0": False, "r1": False, "r2": True}
    (tipped,) = [d for d in report["disagreements"] if d["item"] == world.pairs[1]]  # r2's vote made its majority
    assert tipped["votes"] == {"r0": -2, "r1": 1, "r2 (excluded)": 2}
    leads.unassign(lead, world.c1, "r2")  # their judgments count again
    assert exported("after")[0][world.pairs[1]] == "answer 1B"
    with Session(world.engine) as s:
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "member.assign").order_by(AuditEvent.id)).all()
    assert [(e.details["role"], e.target) for e in events] == [("excluded", "c1"), ("rater", "c1")]


def test_pairs_and_pair_detail_show_what_the_raters_said(world):
    lead = world.users["lead"]
    listed = world.leads.pairs(lead, world.c1)
    assert [(p.n_judgments, p.disagreed) for p in listed] == [(3, False), (3, True), (2, False), (0, False)]
    assert listed[0].prompt_preview == "question 0"
    assert [p.pair_id for p in world.leads.pairs(lead, world.c1, only_disagreed=True)] == [world.pairs[1]]
    assert len(world.leads.pairs(lead, world.c1, limit=2)) == 2
    detail = world.leads.pair_detail(lead, world.pairs[1])
    assert isinstance(detail, PairDetail) and (detail.response_a, detail.response_b) == ("answer 1A", "answer 1B")
    assert detail.messages == [{"role": "user", "content": "question 1"}]
    assert [j.preference for j in detail.judgments] == [-2, 1, 2] and detail.judgments[0].reasoning == "r0 on 1"
    with Session(world.engine) as s:
        assert detail.judgments[0].rater == s.get(User, world.users["r0"]).pseudonym
    assert detail.calibration is None and detail.adjudication is None


def test_an_adjudication_decides_the_exported_label(world, tmp_path):
    leads, lead, disputed = world.leads, world.users["lead"], world.pairs[1]
    with pytest.raises(ValidationFailed, match="Write a note"):
        leads.adjudicate(lead, disputed, preference=-2, both_bad=False, note="  ")
    leads.adjudicate(lead, disputed, preference=2, both_bad=False, note="first look")
    decision = leads.adjudicate(
        lead, disputed, preference=-2, both_bad=False, note="A is correct", make_calibration=True
    )
    detail = leads.pair_detail(lead, disputed)
    assert (detail.adjudication.adjudication_id, detail.adjudication.note) == (decision, "A is correct")
    assert detail.adjudication.decided_by == "lead"
    assert (detail.calibration.expected, detail.calibration.accepted) == (-2, [-2])
    assert detail.calibration.kind == CalibrationKind.factual_priority
    assert [p.adjudicated for p in leads.pairs(lead, world.c1)] == [False, True, False, False]
    # Made a calibration item, the pair leaves training exports unless asked for; then the decision labels it.
    preview = leads.export(lead, world.c1, out_dir=tmp_path / "default", test_fraction=0.0)
    assert disputed not in {row["pair_id"] for row in preview.rows}
    preview = leads.export(lead, world.c1, out_dir=tmp_path / "out", test_fraction=0.0, include_calibration="votes")
    rows = {row["pair_id"]: row for row in preview.rows}
    assert rows[disputed]["chosen"][0]["content"] == "answer 1A" and rows[disputed]["label_source"] == "adjudication"
    assert "rows labelled by a lead's adjudication: 1" in preview.card
    with Session(world.engine) as s:
        assert s.exec(select(func.count()).select_from(Adjudication)).one() == 2  # append-only


def test_an_export_returns_its_preview_card_and_archive(world, tmp_path):
    preview = world.leads.export(world.users["admin"], world.c1, out_dir=tmp_path / "out", kind="reward",
                                 test_fraction=0.0, keep_ties=True, min_agreement=0.5, policy="mean")  # fmt: skip
    assert preview.kind == "reward" and preview.counts == {"train": 3, "test": 0}  # the unjudged pair is unlabelled
    assert len(preview.rows) == 3 and {"prompt", "chosen", "rejected", "margin"} <= set(preview.rows[0])
    assert preview.card.startswith("---") and "# c1: reward export" in preview.card
    with zipfile.ZipFile(preview.zip_path) as archive:
        assert {"README.md", "export.json", "parquet/train.parquet"} <= set(archive.namelist())
    with Session(world.engine) as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "export")).one()
        assert event.actor_id == world.users["admin"] and event.details["export_id"] == preview.export_id
    with pytest.raises(ValueError, match="keep_ties applies to kind 'reward' only"):
        world.leads.export(world.users["admin"], world.c1, out_dir=tmp_path / "x", keep_ties=True)


ADMIN_CALLS = {
    "users": lambda leads, a: leads.users(a),
    "create_user": lambda leads, a: leads.create_user(a, f"new-{a}", "rater", ["law"]),
    "set_role": lambda leads, a: leads.set_role(a, "r1", "lead"),
    "set_active": lambda leads, a: leads.set_active(a, "r1", False),
    "erase": lambda leads, a: leads.erase(a, "r2", "anonymise"),
}


@pytest.mark.parametrize("method", ADMIN_CALLS)
def test_account_actions_are_for_admins(world, method):
    for actor in ("lead", "r0"):
        with pytest.raises(PermissionDenied, match="Only admins"):
            ADMIN_CALLS[method](world.leads, world.users[actor])
    assert ADMIN_CALLS[method](world.leads, world.users["admin"]) is not None


def test_admins_manage_accounts_but_not_their_own(world):
    leads, admin = world.leads, world.users["admin"]
    password = leads.create_user(admin, "newbie", "lead", ["law", " law"])
    with Session(world.engine) as s:
        user = authenticate(session=s, username="newbie", password=password)
        assert (user.role, user.domains) == (Role.lead, ["law"])
    for bad, message in [("newbie", "username 'newbie' is taken"), ("bad name!", "username may hold letters")]:
        with pytest.raises(ValidationFailed, match=message):
            leads.create_user(admin, bad, "rater", [])
    for role in ("boss", "excluded"):  # excluded is a campaign member's role, never an account's
        with pytest.raises(ValidationFailed, match="Role must be one of rater, lead, admin"):
            leads.create_user(admin, "x-user", role, [])
    assert leads.set_role(admin, "newbie", "rater").role == Role.rater
    assert leads.set_active(admin, "newbie", False).active is False
    assert leads.set_active(admin, "lead", False).active is False and not leads.is_lead(world.users["lead"])
    with pytest.raises(PermissionDenied):
        leads.campaign(world.users["lead"], world.c1)  # deactivated
    for call, doing in [(lambda: leads.set_role(admin, "admin", "rater"), "change the role of"),
                        (lambda: leads.set_active(admin, "admin", False), "deactivate or reactivate"),
                        (lambda: leads.erase(admin, "admin", "remove"), "erase")]:  # fmt: skip
        with pytest.raises(ValidationFailed, match=f"cannot {doing} your own account"):
            call()
    with pytest.raises(ValidationFailed, match="Erasure mode must be one of remove, anonymise"):
        leads.erase(admin, "r0", "shred")
    report = leads.erase(admin, "r0", "remove")
    assert report.deleted["judgments"] == 3 and report.username in {u.username for u in leads.users(admin)}
    with Session(world.engine) as s:
        assert not s.exec(select(Judgment.id).where(Judgment.rater_id == world.users["r0"])).all()
        actions = set(s.exec(select(AuditEvent.action).where(AuditEvent.actor_id == admin)).all())
    assert {"user.create", "user.role", "user.deactivate", "user.erase"} <= actions


def _demonstrations(world, texts, claims=()) -> list[int]:
    """Demonstrations written by r0 in c1, one per text, on fresh prompts; returns their ids."""
    with write_session(world.engine) as s, s.begin():
        ids = []
        for number, text in enumerate(texts):
            prompt = Prompt(campaign_id=world.c1, messages=[{"role": "user", "content": f"write {number}"}],
                            content_hash=f"w{number}")  # fmt: skip
            s.add(prompt)
            s.flush()
            demo = Demonstration(prompt_id=prompt.id, messages=[{"role": "assistant", "content": text}],
                                 rater_id=world.users["r0"], guideline_version=1, claims=list(claims))  # fmt: skip
            s.add(demo)
            s.flush()
            ids.append(demo.id)
        return ids


def test_a_lead_accepts_and_rejects_demonstrations_and_only_the_accepted_one_exports(world, tmp_path):
    leads, lead = world.leads, world.users["lead"]
    claims = [{"claim": 'It says "boils at 100 degrees"', "status": "verified", "source": "a textbook"},
              {"claim": "Water freezes at zero", "status": "verified", "source": None}]  # fmt: skip
    good, bad = _demonstrations(world, ["Water boils at 100 degrees at sea level.", "Water boils at 50."], claims)
    assert [d.demonstration_id for d in leads.demonstrations(lead, world.c1)] == [good, bad]  # unreviewed
    detail = leads.demonstration(lead, good)
    assert (detail.writer, detail.text, detail.verdict) == ("r0", "Water boils at 100 degrees at sea level.", None)
    assert [c.in_text for c in detail.claims] == [True, False]  # the second claim is not in the response
    assert not leads.demonstration(lead, bad).claims[0].in_text  # its quote is not in that text
    with pytest.raises(ValidationFailed, match="Write a note saying why it is rejected"):
        leads.review_demonstration(lead, bad, accept=False, note="  ")
    for actor in ("other", "r0"):
        with pytest.raises(PermissionDenied, match="Only the campaign's leads and admins"):
            leads.review_demonstration(world.users[actor], good, accept=True)
    leads.review_demonstration(lead, good, accept=True)
    leads.review_demonstration(world.users["admin"], bad, accept=False, note="Wrong boiling point.")
    assert [d.demonstration_id for d in leads.demonstrations(lead, world.c1, "accepted")] == [good]
    assert [d.demonstration_id for d in leads.demonstrations(lead, world.c1, "rejected")] == [bad]
    assert leads.demonstrations(lead, world.c1) == []
    verdict = leads.demonstration(lead, bad).verdict
    assert (verdict.status, verdict.note, verdict.reviewer) == ("rejected", "Wrong boiling point.", "admin")
    preview = leads.export(lead, world.c1, out_dir=tmp_path / "sft", kind="sft", test_fraction=0.0)
    assert [row["demonstration_id"] for row in preview.rows] == [good]
    everything = leads.export(lead, world.c1, out_dir=tmp_path / "all", kind="sft", test_fraction=0.0,
                              include_unreviewed=True)  # fmt: skip
    assert [row["demonstration_id"] for row in everything.rows] == [good]  # rejected ones never
    with Session(world.engine) as s:
        events = s.exec(select(AuditEvent.details).where(AuditEvent.action == "demonstration.review")).all()
    assert [e["status"] for e in events] == ["accepted", "rejected"]


def test_a_revised_demonstration_is_reviewed_in_its_newest_version(world):
    (first,) = _demonstrations(world, ["draft"])
    with write_session(world.engine) as s, s.begin():
        old = s.get(Demonstration, first)
        newer = Demonstration(prompt_id=old.prompt_id, messages=[{"role": "assistant", "content": "final"}],
                              rater_id=old.rater_id, guideline_version=1, supersedes_id=old.id)  # fmt: skip
        s.add(newer)
        s.flush()
        newer_id = newer.id
    with pytest.raises(ValidationFailed, match="revised since: review its newest version"):
        world.leads.review_demonstration(world.users["lead"], first, accept=True)
    summary = world.leads.demonstrations(world.users["lead"], world.c1, "all")
    assert [(d.demonstration_id, d.revised) for d in summary] == [(newer_id, True)]


def test_a_lead_changes_the_campaigns_kind_and_makes_criteria_required(world):
    leads, lead = world.leads, world.users["lead"]
    changed = leads.update_campaign(lead, world.c1, CampaignUpdate(kind="both", criteria_required=True))
    assert (changed.kind, changed.criteria_required) == ("both", True)
    service = StudioService(world.engine)
    with write_session(world.engine) as s, s.begin():
        s.get(Campaign, world.c1).rubric = ["helpfulness", "honesty"]
        s.add(User(username="r9", password_hash="-"))
    rater = service.user_id("r9")
    task = service.next_pair(rater, world.c1)
    answer = JudgmentAnswer(-1, False, {"helpfulness": 4}, "A is right and B is not, plainly.", 4, 12.0)
    with pytest.raises(ValidationFailed, match="honesty"):
        service.submit_judgment(rater, task.assignment_id, answer)
    leads.update_campaign(lead, world.c1, CampaignUpdate(criteria_required=False))
    answer = JudgmentAnswer(-1, False, {"helpfulness": 4, "honesty": 5}, "A is right and B is not, plainly.", 4, 12.0)
    assert service.submit_judgment(rater, task.assignment_id, answer).judgment_id


def test_leads_see_raters_by_name_and_exports_keep_pseudonyms(world):
    lead = world.users["lead"]
    detail = world.leads.pair_detail(lead, world.pairs[0])
    assert [j.rater_name for j in detail.judgments] == ["r0", "r1", "r2"]
    assert all(j.rater.startswith("rater-") for j in detail.judgments)
    report = with_names(
        {"raters": [{"pseudonym": "rater-1"}], "flags": [{"pseudonym": "rater-1"}], "not_enough_evidence": [],
         "disagreements": [{"votes": {"rater-1": 2, "rater-x": -1}}]},
        {"rater-1": "ada"}, {"rater-1"},
    )  # fmt: skip
    assert report["raters"][0]["name"] == report["flags"][0]["name"] == "ada"
    assert report["raters"][0]["excluded"] and report["flags"][0]["excluded"]
    assert report["disagreements"][0]["votes"] == {"ada (excluded)": 2, "rater-x": -1}  # unknown: as it is
