from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from storage.db import write_session
from storage.frames import JUDGMENT_COLUMNS, calibration_frame_for, judgment_frame_for, quality_report
from storage.models import CalibrationItem, CalibrationKind, Campaign, Judgment, Pair, Prompt, Response, Side, User
from storage.quality.judgments import COLUMNS, judgment_frame
from storage.quality.raters import calibration_frame

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def add_pair(session, campaign, tag):
    prompt = Prompt(campaign_id=campaign.id, messages=[{"role": "user", "content": tag}], content_hash=tag)
    session.add(prompt)
    session.flush()
    a, b = (
        Response(prompt_id=prompt.id, text=f"A {tag}"),
        Response(prompt_id=prompt.id, text=f"B {tag}, the longer one"),
    )
    session.add_all([a, b])
    session.flush()
    pair = Pair(campaign_id=campaign.id, prompt_id=prompt.id, response_a_id=a.id, response_b_id=b.id, content_hash=tag)
    session.add(pair)
    session.flush()
    return pair


def judge(session, pair, rater, preference, minutes, **fields):
    judgment = Judgment(
        pair_id=pair.id, rater_id=rater.id, preference=preference, left=Side.a, guideline_version=1,
        server_time=T0 + timedelta(minutes=minutes), reasoning=f"{rater.username} on {pair.id}", **fields,
    )  # fmt: skip
    session.add(judgment)
    session.flush()
    return judgment


@pytest.fixture
def seeded(engine):
    """Campaign "c": two pairs, two raters, an edit chain on pair one; campaign "other" with one judgment."""
    with write_session(engine) as session, session.begin():
        campaign, other = Campaign(name="c", calibration_threshold=0.9, calibration_window=3), Campaign(name="other")
        ann, bob = User(username="ann", password_hash="x"), User(username="bob", password_hash="x")
        session.add_all([campaign, other, ann, bob])
        session.flush()
        one, two, elsewhere = (
            add_pair(session, campaign, "one"),
            add_pair(session, campaign, "two"),
            add_pair(session, other, "elsewhere"),
        )
        # Made out of time order on purpose: the frame must sort by server_time, not by id.
        late = judge(session, two, bob, 2, minutes=50, both_bad=True, time_on_task_s=12.5)
        first = judge(session, one, ann, -2, minutes=10)
        second = judge(session, one, ann, -1, minutes=20, supersedes_id=first.id)
        third = judge(session, one, ann, 0, minutes=30, supersedes_id=second.id)
        early = judge(session, one, bob, 1, minutes=5)
        judge(session, elsewhere, ann, 2, minutes=1)
        session.add(CalibrationItem(pair_id=two.id, expected=2, accepted=[1], kind=CalibrationKind.safety))
        session.add(CalibrationItem(pair_id=elsewhere.id, expected=0, accepted=[], kind=CalibrationKind.repeat))
        ids = dict(campaign=campaign.id, one=one.id, two=two.id, ann=ann.id, bob=bob.id)
        ids |= {"order": [early.id, third.id, late.id], "pseudonyms": {ann.id: ann.pseudonym, bob.id: bob.pseudonym}}
    return engine, ids


def test_judgment_frame_holds_current_judgments_in_server_time_order(seeded):
    engine, ids = seeded
    with write_session(engine) as session:
        frame = judgment_frame_for(session=session, campaign_id=ids["campaign"])
    assert tuple(frame.columns) == JUDGMENT_COLUMNS
    assert frame["judgment_id"].tolist() == ids["order"]  # superseded edits and the other campaign left out
    assert frame["item"].tolist() == [ids["one"], ids["one"], ids["two"]]
    assert frame["rater"].tolist() == [ids["bob"], ids["ann"], ids["bob"]]
    assert frame["preference"].tolist() == [1, 0, 2]
    assert frame["both_bad"].tolist() == [False, False, True]
    assert frame["time_on_task_s"].tolist() == [0.0, 0.0, 12.5]
    assert frame["server_time"].tolist() == [T0 + timedelta(minutes=m) for m in (5, 30, 50)]
    assert frame["pseudonym"].tolist() == [ids["pseudonyms"][r] for r in frame["rater"]]
    assert frame["reasoning"].iloc[1] == f"ann on {ids['one']}"
    assert frame[["length_a", "length_b"]].to_numpy().tolist() == [[5, 21]] * 3  # "A one", "B one, the longer one"
    judgment_frame(frame, columns=COLUMNS)  # the quality engine accepts it as it is


def test_judgment_frame_of_a_campaign_without_judgments_is_empty_but_typed(engine):
    with write_session(engine) as session, session.begin():
        campaign = Campaign(name="empty")
        session.add(campaign)
        session.flush()
        frame = judgment_frame_for(session=session, campaign_id=campaign.id)
    assert frame.empty and tuple(frame.columns) == JUDGMENT_COLUMNS
    assert frame["both_bad"].dtype == bool and isinstance(frame["server_time"].dtype, pd.DatetimeTZDtype)


def test_calibration_frame_accepts_the_expected_answer(seeded):
    engine, ids = seeded
    with write_session(engine) as session:
        frame = calibration_frame_for(session=session, campaign_id=ids["campaign"])
    assert frame.to_dict("records") == [{"item": ids["two"], "accepted": [1, 2], "kind": "safety"}]
    assert calibration_frame(frame).loc[ids["two"], "accepted"] == [1, 2]


def test_quality_report_names_a_missing_campaign_or_one_without_judgments(seeded):
    engine, _ = seeded
    with pytest.raises(ValueError, match="no campaign named 'nope'"):
        quality_report(engine=engine, campaign="nope", n_boot=0)
    with write_session(engine) as session, session.begin():
        session.add(Campaign(name="fresh"))
    with pytest.raises(ValueError, match="'fresh' has no judgments"):
        quality_report(engine=engine, campaign="fresh", n_boot=0)


def test_quality_report_reads_the_campaign(seeded):
    engine, ids = seeded
    report = quality_report(engine=engine, campaign="c", n_boot=0)
    assert report["campaign"] == "c"
    # Flagged under the campaign's own calibration settings, as the export excludes raters.
    assert report["thresholds"]["min_calibration_accuracy"] == 0.9 and report["thresholds"]["calibration_window"] == 3
    assert report["thresholds"]["probation"] is True and report["thresholds"]["probation_min_answers"] == 5
    assert report["summary"]["n_judgments"] == 3 and report["summary"]["n_calibration_judgments"] == 1
    raters = {r["pseudonym"]: r for r in report["raters"]}
    bob = raters[ids["pseudonyms"][ids["bob"]]]
    assert bob["calibration_n"] == 1 and bob["calibration_by_kind"]["safety"] == {"accuracy": 1.0, "n": 1}
    assert [d["item"] for d in report["disagreements"]] == [ids["one"]]  # pair two is a calibration item
