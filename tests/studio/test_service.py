import dataclasses
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from storage import queue
from storage.db import write_session
from storage.models import (
    Assignment,
    CalibrationItem,
    CalibrationKind,
    Campaign,
    CampaignKind,
    Demonstration,
    Judgment,
    Pair,
    Prompt,
    Response,
    Role,
    Side,
    User,
)
from studio.service import PairTask, PermissionDenied, StudioService, ValidationFailed
from studio.validation import JudgmentAnswer

RUBRIC = ["helpfulness", "honesty"]
GOOD = dict(
    both_bad=False,
    criteria={"helpfulness": 4, "honesty": 5},
    reasoning="The left answer cites its source and is correct.",
    confidence=4,
    time_on_task_s=12.5,
)


def seed(engine, *, pairs=3, calibration=0, raters=2, k=2, rate=0.0, kind=CampaignKind.preference):
    """A campaign of ``pairs`` regular and ``calibration`` calibration pairs; returns (campaign id, rater ids)."""
    with write_session(engine) as s, s.begin():
        campaign = Campaign(
            name="c", kind=kind, rubric=RUBRIC, overlap_k=k, calibration_rate=rate, min_reasoning_chars=20
        )
        users = [User(username=f"r{i}", password_hash="x", role=Role.rater) for i in range(raters)]
        s.add_all([campaign, *users])
        s.flush()
        for i in range(pairs + calibration):
            prompt = Prompt(
                campaign_id=campaign.id, messages=[{"role": "user", "content": f"q{i}"}], content_hash=f"q{i}"
            )
            s.add(prompt)
            s.flush()
            a, b = Response(prompt_id=prompt.id, text=f"A{i}"), Response(prompt_id=prompt.id, text=f"B{i}")
            s.add_all([a, b])
            s.flush()
            pair = Pair(
                campaign_id=campaign.id,
                prompt_id=prompt.id,
                response_a_id=a.id,
                response_b_id=b.id,
                content_hash=f"q{i}",
            )
            s.add(pair)
            s.flush()
            if i >= pairs:
                s.add(CalibrationItem(pair_id=pair.id, expected=-2, accepted=[-2], kind=CalibrationKind.safety))
        return campaign.id, [u.id for u in users]


def snapshot(engine):
    with Session(engine) as s:
        return (
            s.exec(select(func.count(Judgment.id))).one(),
            s.exec(select(func.count(Demonstration.id))).one(),
            sorted((a.id, a.closed_at is None) for a in s.exec(select(Assignment))),
        )


def test_display_choice_maps_to_a_b_for_both_sides(engine):
    campaign_id, (rater, _) = seed(engine)
    service = StudioService(engine, rng=random.Random(1))
    lefts = []
    for _ in range(2):
        task = service.next_pair(rater, campaign_id)
        judgment_id = service.submit_judgment(
            rater, task.assignment_id, JudgmentAnswer(choice=-2, **GOOD)
        ).judgment_id  # left much better
        with Session(engine) as s:
            judgment = s.get(Judgment, judgment_id)
            a_text = s.get(Response, s.get(Pair, task.pair_id).response_a_id).text
        assert judgment.preference == (-2 if judgment.left == Side.a else 2)
        assert (task.left_text == a_text) == (judgment.left == Side.a)
        lefts.append(judgment.left)
    assert sorted(lefts) == [Side.a, Side.b]  # the second pair is shown the other way round


def test_calibration_task_looks_like_any_other(engine):
    campaign_id, (rater, _) = seed(engine, pairs=1, calibration=1, rate=0.5)
    service = StudioService(engine, rng=random.Random(0))
    tasks = []
    while (task := service.next_pair(rater, campaign_id)) is not None:
        tasks.append(task)
        service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=0, **GOOD))
    with Session(engine) as s:
        assert sorted(a.is_calibration for a in s.exec(select(Assignment))) == [False, True]
    regular, calibration = tasks
    assert dataclasses.asdict(regular).keys() == dataclasses.asdict(calibration).keys()
    assert {f.name for f in dataclasses.fields(PairTask)}.isdisjoint({"expected", "is_calibration", "explanation"})
    assert [type(v) for v in dataclasses.asdict(regular).values()] == [
        type(v) for v in dataclasses.asdict(calibration).values()
    ]


def test_reload_resumes_the_same_task(engine):
    campaign_id, (rater, _) = seed(engine)
    service = StudioService(engine, rng=random.Random(0))
    assert service.next_pair(rater, campaign_id) == service.next_pair(rater, campaign_id)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"choice": 3}, "preference from -2 to 2"),
        ({"both_bad": "yes"}, "'Both bad' must be yes or no"),
        ({"criteria": {"helpfulness": 4, "honesty": 6}}, "Score 'honesty' from 1 to 5 (got 6)"),
        ({"criteria": {"helpfulness": 4, "honesty": 5, "style": 3}}, "Unknown criteria style"),
        ({"confidence": 0}, "Confidence must be 1 to 5"),
        ({"reasoning": "  too short       "}, "at least 20 characters (you wrote 9;"),
        ({"reasoning": "padded" + " " * 20 + "\n\n\u200b\u200b out"}, "at least 20 characters (you wrote 10;"),
        ({"time_on_task_s": -1.0}, "time_on_task_s"),
        ({"client_time": datetime(2025, 1, 1)}, "client_time needs a timezone"),
    ],
)
def test_invalid_judgment_is_rejected_and_changes_nothing(engine, change, message):
    campaign_id, (rater, _) = seed(engine)
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    before = snapshot(engine)
    with pytest.raises(ValidationFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(**({"choice": 1} | GOOD | change)))
    assert snapshot(engine) == before


def test_an_unrated_criterion_is_stored_absent(engine):
    campaign_id, (rater, _) = seed(engine)
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    answer = JudgmentAnswer(**({"choice": 1} | GOOD | {"criteria": {"helpfulness": None, "honesty": 2}}))
    service.submit_judgment(rater, task.assignment_id, answer)
    with Session(engine) as session:
        (judgment,) = session.exec(select(Judgment)).all()
    assert judgment.criteria == {"honesty": 2}


def test_a_campaign_that_requires_every_criterion_refuses_an_unrated_one(engine):
    campaign_id, (rater, _) = seed(engine)
    with write_session(engine) as session, session.begin():
        session.get(Campaign, campaign_id).criteria_required = True
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    assert task.criteria_required
    unrated = JudgmentAnswer(**({"choice": 1} | GOOD | {"criteria": {"helpfulness": 4, "honesty": None}}))
    with pytest.raises(ValidationFailed, match="asks for every criterion: score honesty"):
        service.submit_judgment(rater, task.assignment_id, unrated)
    service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(**({"choice": 1} | GOOD)))


def test_only_the_active_owner_may_submit(engine):
    campaign_id, (rater, other) = seed(engine)
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    with pytest.raises(PermissionDenied):
        service.submit_judgment(other, task.assignment_id, JudgmentAnswer(choice=0, **GOOD))
    with write_session(engine) as s, s.begin():
        s.get(User, rater).active = False
    before = snapshot(engine)
    with pytest.raises(PermissionDenied):
        service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=0, **GOOD))
    with pytest.raises(PermissionDenied):
        service.next_pair(rater, campaign_id)
    assert snapshot(engine) == before


def test_late_submission_is_kept_and_a_second_submission_is_refused(engine):
    campaign_id, (rater, _) = seed(engine)
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    with write_session(engine) as s, s.begin():
        s.get(Assignment, task.assignment_id).expires_at = datetime.now(UTC) - timedelta(hours=1)
        s.get(Campaign, campaign_id).guidelines_version = 2
    sent = datetime(2025, 1, 1, 12, tzinfo=UTC)
    judgment_id = service.submit_judgment(
        rater, task.assignment_id, JudgmentAnswer(choice=1, client_time=sent, **GOOD)
    ).judgment_id
    with Session(engine) as s:
        assert (s.get(Judgment, judgment_id).guideline_version, s.get(Judgment, judgment_id).client_time) == (2, sent)
        assert s.get(Assignment, task.assignment_id).closed_at is not None
    with pytest.raises(ValidationFailed, match="already submitted"):
        service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=1, **GOOD))


def test_revision_appends_a_row_that_supersedes_the_old_one(engine):
    campaign_id, (rater, other) = seed(engine)
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    original = service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=-1, **GOOD)).judgment_id
    revised = service.revise_judgment(rater, original, JudgmentAnswer(choice=2, **GOOD))
    with Session(engine) as s:
        old, new = s.get(Judgment, original), s.get(Judgment, revised)
        assert (old.preference, old.supersedes_id) == ((-1 if old.left == Side.a else 1), None)
        assert (new.preference, new.supersedes_id, new.left) == ((2 if old.left == Side.a else -2), original, old.left)
    with pytest.raises(ValidationFailed, match="already revised"):
        service.revise_judgment(rater, original, JudgmentAnswer(choice=0, **GOOD))
    with pytest.raises(PermissionDenied):
        service.revise_judgment(other, revised, JudgmentAnswer(choice=0, **GOOD))
    # A revision does not free a slot: the pair still counts one judgment toward k=2.
    assert service.next_pair(other, campaign_id).pair_id == task.pair_id


def test_demonstration_round_trip_and_claim_checks(engine):
    campaign_id, (rater, other) = seed(engine, pairs=1, k=1, kind=CampaignKind.demonstration)
    service = StudioService(engine, rng=random.Random(0))
    assert service.next_pair(rater, campaign_id) is None
    task = service.next_prompt(rater, campaign_id)
    assert (task.draft, task.messages) == ("A0", [{"role": "user", "content": "q0"}])
    assert service.next_prompt(other, campaign_id) is None  # k=1 and the only prompt is leased
    before = snapshot(engine)
    false_claim = {"claim": "Paris is in Spain", "status": "false", "source": None}
    unsourced = {"claim": "Water boils at 100 C", "status": "verified", "source": " "}
    for claims, message in [([false_claim], "Claim 1 .*Paris is in Spain.* marked false"), ([unsourced], "source")]:
        with pytest.raises(ValidationFailed, match=message):
            service.submit_demonstration(
                rater, task.assignment_id, text="x", claims=claims, time_on_task_s=1.0, paste_events=[]
            )
    with pytest.raises(ValidationFailed, match="Write a response"):
        service.submit_demonstration(
            rater, task.assignment_id, text="  ", claims=[], time_on_task_s=1, paste_events=[]
        )
    assert snapshot(engine) == before
    claims = [{"claim": "Water boils at 100 C at sea level", "status": "verified", "source": "textbook"}]
    paste = [{"at": "2025-01-01T00:00:00Z", "chars": 40}]
    demo_id = service.submit_demonstration(
        rater, task.assignment_id, text=" Boiling point... ", claims=claims, time_on_task_s=30.0, paste_events=paste
    )
    with Session(engine) as s:
        demo = s.get(Demonstration, demo_id)
        assert (demo.messages, demo.rater_id, demo.paste_events) == (
            [{"role": "assistant", "content": "Boiling point..."}],
            rater,
            paste,
        )
        assert demo.draft_response_id is not None and demo.claims[0]["source"] == "textbook"
    assert service.next_prompt(rater, campaign_id) is None


def test_raters_racing_never_exceed_k_and_lose_nothing(engine):
    campaign_id, raters = seed(engine, pairs=20, raters=8, k=3)
    service = StudioService(engine, rng=random.Random(0))
    submitted: list[int] = []
    errors: list[BaseException] = []

    def work(rater_id: int) -> None:
        try:
            while (task := service.next_pair(rater_id, campaign_id)) is not None:
                answer = JudgmentAnswer(choice=0, **GOOD)
                submitted.append(service.submit_judgment(rater_id, task.assignment_id, answer).judgment_id)
        except BaseException as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(rater,)) for rater in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and not any(thread.is_alive() for thread in threads)
    with Session(engine) as s:
        per_pair = dict(s.exec(select(Judgment.pair_id, func.count(Judgment.id)).group_by(Judgment.pair_id)).all())
        stored = set(s.exec(select(Judgment.id)).all())
        pairs_per_rater = s.exec(select(Judgment.rater_id, Judgment.pair_id)).all()
    assert len(per_pair) == 20 and set(per_pair.values()) == {3}
    assert len(submitted) == 60 and set(submitted) == stored
    assert len(set(pairs_per_rater)) == 60  # no rater judged a pair twice


def test_postgres_conflicts_are_retried_and_other_errors_are_not(sqlite_engine, monkeypatch):
    campaign_id, (rater, _) = seed(sqlite_engine)
    real, calls = queue.next_pair_assignment, []

    def conflict(sqlstate):
        return OperationalError("SELECT", {}, type("DriverError", (Exception,), {"sqlstate": sqlstate})())

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise conflict("40P01")  # deadlock detected
        return real(**kwargs)

    monkeypatch.setattr(queue, "next_pair_assignment", flaky)
    assert StudioService(sqlite_engine).next_pair(rater, campaign_id) is not None and len(calls) == 2

    def broken(**_):
        calls.append(1)
        raise conflict("23505")  # a unique violation is a bug to report, not a conflict to retry

    monkeypatch.setattr(queue, "next_pair_assignment", broken)
    with pytest.raises(OperationalError):
        StudioService(sqlite_engine).next_pair(rater, campaign_id)
    assert len(calls) == 3


def test_simultaneous_requests_of_one_rater_share_one_assignment(engine):
    campaign_id, (rater, _) = seed(engine, pairs=5)
    service = StudioService(engine, rng=random.Random(0))
    start, got = threading.Barrier(4), []

    def ask() -> None:
        start.wait()
        got.append(service.next_pair(rater, campaign_id).assignment_id)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(got) == 4 and len(set(got)) == 1
