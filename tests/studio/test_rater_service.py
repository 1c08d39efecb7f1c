"""The rater service beyond judging: consent, calibration feedback, progress, HF accounts, what the browser sends."""

import dataclasses
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, func, select

from storage.db import write_session
from storage.models import (
    CalibrationItem,
    CalibrationKind,
    CalibrationMode,
    Campaign,
    CampaignKind,
    CampaignMember,
    Consent,
    Judgment,
    Role,
    User,
)
from storage.queue import MIN_CALIBRATION_ANSWERS
from studio.service import COVERAGE_SECONDS, ConsentRequired, PermissionDenied, StudioService, ValidationFailed
from studio.tabs.rater import progress_line
from studio.validation import JudgmentAnswer, claims_from_rows, read_paste_events
from tests.studio.test_service import GOOD, seed, snapshot


def configure(engine, campaign_id, **fields):
    with write_session(engine) as s, s.begin():
        campaign = s.get(Campaign, campaign_id)
        for name, value in fields.items():
            setattr(campaign, name, value)


def consents(engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count(Consent.id))).one()


def test_no_item_before_the_current_consent_version_is_accepted(engine):
    campaign_id, (rater, _) = seed(engine, kind=CampaignKind.both)
    configure(engine, campaign_id, consent_text="My work is stored under a pseudonym.", consent_version=2)
    service = StudioService(engine, rng=random.Random(0))
    for ask in (service.next_pair, service.next_prompt):
        with pytest.raises(ConsentRequired) as refused:
            ask(rater, campaign_id)
        assert (refused.value.text, refused.value.version) == ("My work is stored under a pseudonym.", 2)
    with pytest.raises(ValidationFailed, match="now version 2, you read version 1"):
        service.accept_consent(rater, campaign_id, 1)
    assert consents(engine) == 0 and snapshot(engine)[2] == []  # nothing leased while refused
    service.accept_consent(rater, campaign_id, 2)
    service.accept_consent(rater, campaign_id, 2)  # a second click records nothing more
    assert consents(engine) == 1
    assert service.next_pair(rater, campaign_id) is not None and service.next_prompt(rater, campaign_id) is not None
    configure(engine, campaign_id, consent_version=3)  # a lead changed the text: ask again
    with pytest.raises(ConsentRequired):
        service.next_pair(rater, campaign_id)


def test_consent_is_only_for_raters_of_the_campaign(engine):
    campaign_id, (rater, outsider) = seed(engine)
    configure(engine, campaign_id, consent_text="Consent.")
    with write_session(engine) as s, s.begin():
        s.add(CampaignMember(campaign_id=campaign_id, user_id=rater, role=Role.rater))
    with pytest.raises(PermissionDenied, match="not assigned"):
        StudioService(engine).accept_consent(outsider, campaign_id, 1)
    assert consents(engine) == 0


class Sided(random.Random):
    """An rng that shows response A on the side asked for."""

    def __init__(self, a_on_left: bool) -> None:
        super().__init__(0)
        self.a_on_left = a_on_left

    def choice(self, seq):
        return seq[0] if self.a_on_left else seq[1]  # the queue chooses among [Side.a, Side.b]


def judge_calibration_item(engine, *, mode, kind=CalibrationKind.safety, a_on_left=True):
    """One calibration pair (expected: A much better; also accepted: A better), judged "left much better"."""
    campaign_id, (rater, _) = seed(engine, pairs=0, calibration=1, rate=1.0)
    configure(engine, campaign_id, calibration_mode=mode)
    with write_session(engine) as s, s.begin():
        item = s.exec(select(CalibrationItem)).one()
        item.kind, item.accepted, item.explanation = kind, [-2, -1], "A cites the label; B guesses."
    service = StudioService(engine, rng=Sided(a_on_left))
    task = service.next_pair(rater, campaign_id)
    assert task.left_text == ("A0" if a_on_left else "B0")
    return task, service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=-2, **GOOD))


@pytest.mark.parametrize("a_on_left", [True, False])
def test_training_mode_answers_a_calibration_item_in_display_terms(engine, a_on_left):
    _, result = judge_calibration_item(engine, mode=CalibrationMode.training, a_on_left=a_on_left)
    feedback = result.feedback
    expected = -2 if a_on_left else 2  # "A much better" is "left much better" only when A is on the left
    assert (feedback.expected, feedback.accepted, feedback.a_on_left) == (
        expected,
        sorted([expected, expected // 2]),
        a_on_left,
    )
    assert feedback.answer_accepted == a_on_left  # the rater chose "left much better"
    assert feedback.explanation == "A cites the label; B guesses."
    with Session(engine) as s:
        assert s.get(Judgment, result.judgment_id).preference == (-2 if a_on_left else 2)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [(CalibrationMode.audit, CalibrationKind.safety), (CalibrationMode.training, CalibrationKind.repeat)],
)
def test_audit_mode_and_repeat_items_answer_nothing(engine, mode, kind):
    task, result = judge_calibration_item(engine, mode=mode, kind=kind)
    assert result.feedback is None and result.judgment_id is not None


def test_a_regular_item_answers_nothing_and_no_task_carries_the_answer(engine):
    campaign_id, (rater, _) = seed(engine, pairs=1)
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    assert service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=0, **GOOD)).feedback is None
    assert not {"expected", "accepted", "explanation", "is_calibration"} & {f.name for f in dataclasses.fields(task)}


def judge_all(service, rater, campaign_id, choice=-2):
    while (task := service.next_pair(rater, campaign_id)) is not None:
        service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=choice, **GOOD))


def test_progress_counts_the_raters_own_work_and_the_campaigns(engine):
    campaign_id, (rater, other) = seed(engine, pairs=3, calibration=1, k=2, rate=0.5)
    service = StudioService(engine, rng=random.Random(0))
    judge_all(service, rater, campaign_id)
    service = StudioService(engine)  # each submit counted the campaign's figures, kept for COVERAGE_SECONDS
    before = service.progress(other, campaign_id)
    assert (before.judged_today, before.judged_total, before.calibration_answered) == (0, 0, 0)
    assert (before.judgments_collected, before.judgments_needed) == (3, 6)  # 3 regular pairs x k=2
    with write_session(engine) as s, s.begin():  # one of the rater's judgments was made two days ago
        oldest = s.exec(select(Judgment).order_by(Judgment.id)).first()
        oldest.server_time = datetime.now(UTC) - timedelta(days=2)
    mine = service.progress(rater, campaign_id)
    assert (mine.judged_today, mine.judged_total) == (3, 4)  # the calibration item counts as an item
    assert (mine.calibration_correct, mine.calibration_answered, mine.calibration_window) == (1, 1, 20)
    assert (mine.written_total, mine.demonstrations_needed) == (0, 8) and mine.as_of is None


def test_audit_mode_progress_stops_at_midnight_so_no_submit_moves_it(engine):
    campaign_id, (rater, _) = seed(engine, pairs=2, calibration=1, k=2, rate=1.0)
    configure(engine, campaign_id, calibration_mode=CalibrationMode.audit)
    service = StudioService(engine, rng=random.Random(0))
    judge_all(service, rater, campaign_id)
    today = service.progress(rater, campaign_id)
    assert today.judged_today == 3 and today.as_of.hour == 0 and today.as_of <= datetime.now(UTC)
    assert (today.judgments_collected, today.calibration_answered) == (0, 0)
    with write_session(engine) as s, s.begin():
        for judgment in s.exec(select(Judgment)):
            judgment.server_time -= timedelta(days=1)
    service = StudioService(engine)  # a campaign's figures are counted again only every COVERAGE_SECONDS
    yesterday = service.progress(rater, campaign_id)
    assert (yesterday.judged_today, yesterday.judgments_collected, yesterday.calibration_answered) == (0, 2, 1)


@pytest.mark.parametrize("mode", [CalibrationMode.training, CalibrationMode.audit])
def test_a_rater_on_probation_is_told_so_in_training_mode_only(engine, mode):
    campaign_id, (rater, _) = seed(engine, pairs=2, calibration=6, rate=1.0)
    configure(engine, campaign_id, calibration_mode=mode)
    service = StudioService(engine, rng=random.Random(0))
    told = []
    for _ in range(MIN_CALIBRATION_ANSWERS):
        task = service.next_pair(rater, campaign_id)
        service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=0, **GOOD))  # a tie: never expected
        mine = service.progress(rater, campaign_id)
        told.append((mine.on_probation, "only calibration items until you pass" in progress_line(mine, "judgment")))
    on_probation = mode == CalibrationMode.training  # audit mode: saying so would mark the items from now on
    assert told == [(False, False)] * (MIN_CALIBRATION_ANSWERS - 1) + [(on_probation, on_probation)]
    if on_probation:
        assert "**below 70%: only calibration items until you pass again**" in progress_line(mine, "judgment")
        assert "calibration item" not in progress_line(mine, "demonstration")


def test_progress_is_refused_outside_the_raters_campaigns(engine):
    campaign_id, (rater, outsider) = seed(engine)
    with write_session(engine) as s, s.begin():
        s.add(CampaignMember(campaign_id=campaign_id, user_id=rater, role=Role.rater))
    with pytest.raises(PermissionDenied):
        StudioService(engine).progress(outsider, campaign_id)


def test_hf_accounts_map_to_linked_active_users_only(engine):
    _, (rater, other) = seed(engine)
    with write_session(engine) as s, s.begin():
        s.get(User, rater).hf_username = "Ada-Lovelace"
        s.get(User, other).hf_username, s.get(User, other).active = "grace", False
    service = StudioService(engine)
    assert service.user_for_hf("ada-lovelace") == rater == service.user_for_hf("Ada-Lovelace")
    for unknown in ("grace", "mallory"):
        with pytest.raises(PermissionDenied, match="ask an admin to add you"):
            service.user_for_hf(unknown)
    with pytest.raises(PermissionDenied, match="Sign in with Hugging Face"):
        service.user_for_hf(None)
    with Session(engine) as s:
        assert s.exec(select(func.count(User.id))).one() == 2  # nobody was created


def test_the_first_admin_is_linked_once_to_the_spaces_hf_account(engine):
    seed(engine)
    with write_session(engine) as s, s.begin():
        s.add_all([User(username=name, password_hash="x", role=Role.admin) for name in ("root", "second")])
    service = StudioService(engine)
    assert service.link_first_admin("Alice") and not service.link_first_admin("alice")  # already linked
    root = service.user_for_hf("alice")
    with Session(engine) as s:
        assert s.get(User, root).username == "root"
        assert s.exec(select(func.count(User.id)).where(User.hf_username.is_not(None))).one() == 1


def test_claim_rows_and_paste_events_from_the_browser(engine):
    rows = [["Water boils at 100 C", " Verified ", "textbook"], ["", "", ""], [None, None, None], ["", "false", ""]]
    assert claims_from_rows(rows) == [
        {"claim": "Water boils at 100 C", "status": "verified", "source": "textbook"},
        {"claim": "", "status": "false", "source": None},  # kept, so the check names it rather than dropping it
    ]
    assert read_paste_events('[{"at": "2025-01-01T10:00:00.000Z", "chars": 12}]') == [
        {"at": "2025-01-01T10:00:00.000Z", "chars": 12}
    ]
    for bad in ("[{", '[{"at": "2025-01-01T10:00:00", "chars": 3}]', '[{"at": "2025-01-01T10:00Z", "chars": -1}]'):
        with pytest.raises(ValidationFailed, match="Paste event"):
            read_paste_events(bad)
    campaign_id, (rater, _) = seed(engine, pairs=1, k=1, kind=CampaignKind.demonstration)
    service = StudioService(engine)
    task = service.next_prompt(rater, campaign_id)
    before = snapshot(engine)
    with pytest.raises(ValidationFailed, match="Paste event 1"):
        service.submit_demonstration(
            rater, task.assignment_id, text="x", claims=[], time_on_task_s=1.0, paste_events=[{"chars": "many"}]
        )
    assert snapshot(engine) == before


def test_a_campaigns_figures_are_counted_again_after_a_while_and_the_raters_own_at_once(engine, monkeypatch):
    campaign_id, (rater, other) = seed(engine, pairs=3, k=2)
    service = StudioService(engine, rng=random.Random(0))
    assert service.progress(rater, campaign_id).judgments_collected == 0
    judge_all(service, rater, campaign_id)
    cached = service.progress(rater, campaign_id)
    assert (cached.judged_total, cached.judgments_collected) == (3, 0)  # a big campaign is not recounted per submit
    later = time.monotonic() + COVERAGE_SECONDS + 1
    monkeypatch.setattr("studio.service.time.monotonic", lambda: later)
    assert service.progress(rater, campaign_id).judgments_collected == 3


def test_a_submit_leases_and_returns_the_next_pair_and_progress_in_the_same_call(engine):
    campaign_id, (rater, _) = seed(engine, pairs=3)
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    result = service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=-1, **GOOD))
    assert result.next_task is not None and result.next_task.pair_id != task.pair_id
    assert service.next_pair(rater, campaign_id).assignment_id == result.next_task.assignment_id  # leased
    assert (result.progress.judged_today, result.progress.judged_total) == (1, 1)
    for _ in range(2):
        result = service.submit_judgment(rater, result.next_task.assignment_id, JudgmentAnswer(choice=1, **GOOD))
    assert result.next_task is None and result.progress.judged_total == 3  # nothing left: said with the progress


def test_a_submit_after_the_consent_text_changed_is_stored_and_leases_nothing(engine):
    campaign_id, (rater, _) = seed(engine, pairs=3)
    service = StudioService(engine, rng=random.Random(0))
    task = service.next_pair(rater, campaign_id)
    configure(engine, campaign_id, consent_text="New terms.", consent_version=2)
    result = service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=-1, **GOOD))
    assert result.judgment_id and result.progress is None and result.next_task is None
    assert snapshot(engine)[2] == [(task.assignment_id, False)]  # closed, and nothing new leased
    with pytest.raises(ConsentRequired):
        service.next_pair(rater, campaign_id)
