"""The rater's history through the service: listing, search, reopening and append-only revisions of their own work."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from datasets import load_from_disk
from sqlmodel import Session, select

from storage import demonstrations
from storage.db import write_session
from storage.export import export_campaign
from storage.frames import calibration_frame_for, judgment_frame_for
from storage.models import CampaignKind, CampaignMember, Demonstration, Judgment, Pair, Prompt, ReviewStatus, Role
from storage.quality.agreement import campaign_agreement
from storage.quality.raters import rater_table
from studio.service import PermissionDenied, StudioService, ValidationFailed
from studio.tabs.rater import progress_line
from studio.validation import JudgmentAnswer
from tests.studio.test_service import GOOD, seed


def judge(service, rater, campaign_id, choice, reasoning=GOOD["reasoning"]):
    """The rater judges the pair they are given; returns (judgment id, pair task)."""
    task = service.next_pair(rater, campaign_id)
    answer = JudgmentAnswer(choice=choice, **(GOOD | {"reasoning": reasoning}))
    return service.submit_judgment(rater, task.assignment_id, answer).judgment_id, task


def write(service, rater, campaign_id, text):
    task = service.next_prompt(rater, campaign_id)
    return service.submit_demonstration(
        rater, task.assignment_id, text=text, claims=[], time_on_task_s=5.0, paste_events=[]
    )


def set_prompt(engine, pair_id, text):
    with write_session(engine) as s, s.begin():
        prompt = s.get(Prompt, s.get(Pair, pair_id).prompt_id)
        prompt.messages = [{"role": "user", "content": text}]


def test_history_lists_the_raters_own_current_work_newest_first(engine):
    campaign_id, (rater, other) = seed(engine, pairs=3, kind=CampaignKind.both)
    service = StudioService(engine, rng=random.Random(0))
    first, _ = judge(service, rater, campaign_id, -2)
    second, task = judge(service, rater, campaign_id, 1)
    judge(service, other, campaign_id, 0)
    written = write(service, rater, campaign_id, "My own careful answer.")
    revised = service.revise_judgment(rater, first, JudgmentAnswer(choice=2, **GOOD))

    items = service.history(rater)
    assert [(i.kind, i.item_id) for i in items] == [
        ("judgment", revised), ("demonstration", written), ("judgment", second)
    ]  # fmt: skip
    assert [(i.choice, i.revised) for i in items] == [(2, True), (None, False), (1, False)]  # display terms
    assert items[1].text == "My own careful answer." and items[2].prompt == task.messages[-1]["content"]
    assert [i.item_id for i in service.history(other)] != [i.item_id for i in items]  # only one's own


def test_history_searches_prompt_and_reasoning_text_date_and_campaign(engine):
    campaign_id, (rater, _) = seed(engine, pairs=3)
    service = StudioService(engine, rng=random.Random(0))
    one, task = judge(service, rater, campaign_id, -1, reasoning="The left one cites the Élysée treaty correctly.")
    set_prompt(engine, task.pair_id, "How far is the Moon from Earth?")
    two, _ = judge(service, rater, campaign_id, 1)

    assert [i.item_id for i in service.history(rater, text="moon")] == [one]  # prompt, any case
    assert [i.item_id for i in service.history(rater, text="élysée")] == [one]  # reasoning, non-ASCII
    assert service.history(rater, text="nowhere to be found") == []
    today = datetime.now(UTC).date()
    assert [i.item_id for i in service.history(rater, since=str(today), until=str(today))] == [two, one]
    assert service.history(rater, until=str(today - timedelta(days=1))) == []
    assert [i.item_id for i in service.history(rater, campaign_id=campaign_id)] == [two, one]
    with pytest.raises(ValidationFailed, match="YYYY-MM-DD"):
        service.history(rater, since="last week")
    with pytest.raises(ValidationFailed, match="after the 'to' date"):
        service.history(rater, since=str(today), until=str(today - timedelta(days=1)))


def test_reopen_shows_the_pair_as_the_rater_saw_it_and_revise_appends_a_superseding_row(engine):
    campaign_id, (rater, other) = seed(engine, pairs=2)
    service = StudioService(engine, rng=random.Random(0))
    original, task = judge(service, rater, campaign_id, -2)
    view = service.open_judgment(rater, original)
    assert (view.left_text, view.right_text, view.choice) == (task.left_text, task.right_text, -2)
    assert (view.criteria, view.reasoning, view.confidence, view.version) == (
        GOOD["criteria"], GOOD["reasoning"], GOOD["confidence"], 1
    )  # fmt: skip

    new_reasoning = "On a second reading the right answer is the correct one."
    revised = service.revise_judgment(
        rater, original, JudgmentAnswer(choice=1, **(GOOD | {"reasoning": new_reasoning}))
    )
    with Session(engine) as s:
        old, new = s.get(Judgment, original), s.get(Judgment, revised)
        assert (old.supersedes_id, old.reasoning) == (None, GOOD["reasoning"])  # the old row as it was
        assert (new.supersedes_id, new.pair_id, new.left, new.reasoning) == (
            original,
            old.pair_id,
            old.left,
            new_reasoning,
        )
    assert (service.open_judgment(rater, revised).choice, service.open_judgment(rater, revised).version) == (1, 2)
    with pytest.raises(ValidationFailed, match="revised since"):
        service.open_judgment(rater, original)
    with pytest.raises(ValidationFailed, match="already revised"):
        service.revise_judgment(rater, original, JudgmentAnswer(choice=0, **GOOD))
    with pytest.raises(ValidationFailed, match="Reasoning needs at least"):
        service.revise_judgment(rater, revised, JudgmentAnswer(choice=0, **(GOOD | {"reasoning": "short"})))


def test_another_raters_item_is_refused_to_open_and_to_revise(engine):
    campaign_id, (rater, other) = seed(engine, pairs=2, kind=CampaignKind.both)
    service = StudioService(engine, rng=random.Random(0))
    judgment, _ = judge(service, rater, campaign_id, -1)
    demo = write(service, rater, campaign_id, "Mine.")
    with pytest.raises(PermissionDenied, match="not yours"):
        service.open_judgment(other, judgment)
    with pytest.raises(PermissionDenied, match="not yours"):
        service.revise_judgment(other, judgment, JudgmentAnswer(choice=2, **GOOD))
    with pytest.raises(PermissionDenied, match="not yours"):
        service.open_demonstration(other, demo)
    with pytest.raises(PermissionDenied, match="not yours"):
        service.revise_demonstration(other, demo, text="Taken over.", claims=[], time_on_task_s=1.0)
    with Session(engine) as s:
        assert len(s.exec(select(Judgment)).all()) == 1 and len(s.exec(select(Demonstration)).all()) == 1


def test_a_rater_no_longer_in_the_campaign_can_neither_list_nor_revise_its_items(engine):
    campaign_id, (rater, other) = seed(engine, pairs=2)
    service = StudioService(engine, rng=random.Random(0))
    judgment, _ = judge(service, rater, campaign_id, -1)
    with write_session(engine) as s, s.begin():  # the campaign gets assigned raters; `rater` is not one of them
        s.add(CampaignMember(campaign_id=campaign_id, user_id=other, role=Role.rater))
    assert service.history(rater) == []
    with pytest.raises(PermissionDenied, match="not assigned"):
        service.revise_judgment(rater, judgment, JudgmentAnswer(choice=2, **GOOD))


def test_a_revised_demonstration_is_a_new_unreviewed_row_with_the_same_prompt_and_draft(engine):
    campaign_id, (rater, _) = seed(engine, pairs=1, kind=CampaignKind.demonstration)
    service = StudioService(engine, rng=random.Random(0))
    claims = [{"claim": "Water boils at 100 C at sea level.", "status": "verified", "source": "a textbook"}]
    task = service.next_prompt(rater, campaign_id)
    first = service.submit_demonstration(
        rater, task.assignment_id, text="Draft one.", claims=claims, time_on_task_s=3.0, paste_events=[]
    )
    view = service.open_demonstration(rater, first)
    assert (view.text, view.claims, view.version) == ("Draft one.", claims, 1)
    revised = service.revise_demonstration(rater, first, text="  Draft two.  ", claims=claims, time_on_task_s=2.0)
    with Session(engine) as s:
        old, new = s.get(Demonstration, first), s.get(Demonstration, revised)
        assert (new.supersedes_id, new.prompt_id, new.draft_response_id) == (
            first,
            old.prompt_id,
            old.draft_response_id,
        )
        assert (old.messages[0]["content"], new.messages[0]["content"], new.claims) == (
            "Draft one.",
            "Draft two.",
            claims,
        )
    with pytest.raises(ValidationFailed, match="marked false"):
        service.revise_demonstration(
            rater, revised, text="x", claims=[{"claim": "c", "status": "false"}], time_on_task_s=1.0
        )
    with pytest.raises(ValidationFailed, match="already revised"):
        service.revise_demonstration(rater, first, text="Draft three.", claims=[], time_on_task_s=1.0)
    assert [(i.item_id, i.revised) for i in service.history(rater)] == [(revised, True)]


def test_the_writer_sees_a_leads_verdict_and_note_until_they_revise(engine):
    campaign_id, (rater, _) = seed(engine, pairs=1, kind=CampaignKind.demonstration)
    service = StudioService(engine, rng=random.Random(0))
    first = write(service, rater, campaign_id, "Water boils at 50 C.")
    assert service.open_demonstration(rater, first).verdict is None
    assert service.progress(rater, campaign_id).written_rejected == 0
    with write_session(engine) as s, s.begin():
        for status, note in (("accepted", ""), ("rejected", "Wrong boiling point: 100 C at sea level.")):
            demonstrations.record_review(session=s, demonstration=s.get(Demonstration, first),
                                         status=ReviewStatus(status), note=note, actor_id=None)  # fmt: skip
    (item,) = service.history(rater)
    assert (item.item_id, item.review) == (first, "rejected")  # the newest review
    verdict = service.open_demonstration(rater, first).verdict
    assert (verdict.status, verdict.note) == ("rejected", "Wrong boiling point: 100 C at sea level.")
    mine = service.progress(rater, campaign_id)
    assert (mine.written_total, mine.written_rejected) == (1, 1)
    assert "**1** rejected by a lead: see History for the note" in progress_line(mine, "demonstration")
    assert "rejected" not in progress_line(mine, "judgment")
    revised = service.revise_demonstration(rater, first, text="Water boils at 100 C.", claims=[], time_on_task_s=2.0)
    (item,) = service.history(rater)
    assert (item.item_id, item.review) == (revised, None)  # a revision is unreviewed
    assert service.open_demonstration(rater, revised).verdict is None
    assert service.progress(rater, campaign_id).written_rejected == 0  # the revision awaits a lead again


def test_a_revised_calibration_item_looks_like_any_other_and_keeps_its_first_answer_for_scoring(engine):
    """Revisable without changing the calibration score: neither probation nor the quality engine moves."""
    campaign_id, (rater, _) = seed(engine, pairs=0, calibration=1, raters=2, rate=1.0)  # expected: A much better
    service = StudioService(engine, rng=random.Random(0))
    wrong = 2 if service.next_pair(rater, campaign_id).left_text == "A0" else -2  # display terms for "B much better"
    original, _ = judge(service, rater, campaign_id, wrong)
    view = service.open_judgment(rater, original)
    assert not any("expected" in field or "gold" in field or "accepted" in field for field in vars(view))
    service.revise_judgment(rater, original, JudgmentAnswer(choice=-wrong, **GOOD))  # now the expected answer
    progress = service.progress(rater, campaign_id)
    assert (progress.calibration_correct, progress.calibration_answered) == (0, 1)
    with Session(engine) as s:
        judgments = judgment_frame_for(session=s, campaign_id=campaign_id)
        gold = calibration_frame_for(session=s, campaign_id=campaign_id)
    assert judgments["judgment_id"].tolist() == [original]
    assert rater_table(judgments, calibration=gold).loc[rater, "calibration_accuracy"] == 0.0


def test_a_revised_judgment_exports_with_its_new_choice_and_counts_once_in_agreement(engine, tmp_path):
    campaign_id, raters = seed(engine, pairs=1, raters=3, k=3)
    service = StudioService(engine, rng=random.Random(0))
    ids = {}
    for rater, side in zip(raters, ("A", "A", "B"), strict=True):
        task = service.next_pair(rater, campaign_id)
        a_on_left = task.left_text == "A0"
        choice = -2 if (side == "A") == a_on_left else 2  # "much better" for the named response
        ids[rater] = service.submit_judgment(rater, task.assignment_id, JudgmentAnswer(choice=choice, **GOOD))
        ids[rater] = (ids[rater].judgment_id, a_on_left)
    first, a_on_left = ids[raters[0]]
    service.revise_judgment(raters[0], first, JudgmentAnswer(choice=2 if a_on_left else -2, **GOOD))  # now B

    export_campaign(engine=engine, campaign="c", kind="preference", out_dir=tmp_path / "out", test_fraction=0.0)
    (row,) = load_from_disk(str(tmp_path / "out" / "dataset"))["train"]
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"], row["n_judgments"]) == ("B0", "A0", 3)
    with Session(engine) as s:
        frame = judgment_frame_for(session=s, campaign_id=campaign_id)
    assert sorted(frame["rater"]) == sorted(raters) and first not in set(frame["judgment_id"])
    agreement = campaign_agreement(frame, n_boot=0)
    assert agreement.raw_agreement.value == pytest.approx(1 / 3)  # B, A, B: one of three rater pairs agrees
    assert agreement.n_items == 1 and agreement.fleiss_raters == 3
