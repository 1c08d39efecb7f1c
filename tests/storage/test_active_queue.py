"""Active selection in the work queue: with ``queue_order`` uncertainty or disagreement the open pairs come in the
order the PairScore rows of the run that scored the campaign last give, and every queue guarantee holds as in fifo."""

import random
import threading
from datetime import timedelta

import pandas as pd
import pytest
from sqlmodel import Session, col, func, select

from storage import active, queue
from storage.db import write_session
from storage.models import (
    Adjudication,
    Assignment,
    Campaign,
    Judgment,
    PairScore,
    QueueOrder,
    TrainingRun,
    utcnow,
)
from storage.scores import store_scores
from studio.service import StudioService
from studio.validation import JudgmentAnswer
from tests.storage.test_queue import add_pairs, add_users, judge, lease_pair


@pytest.fixture
def session(engine):
    with write_session(engine) as session:
        yield session


def make_campaign(session, order, k=1, n_pairs=5, **fields):
    campaign = Campaign(name=f"c-{random.random()}", overlap_k=k, calibration_rate=0.0, queue_order=order, **fields)
    session.add(campaign)
    session.flush()
    return campaign, add_pairs(session, campaign, n_pairs)


def store(session, pairs, margins, *, name=None, stds=None, at=None):
    """A finished reward run that scored ``pairs`` with these margins (None: not scored), written directly."""
    run = TrainingRun(name=name or f"rm-{random.random()}", method="reward", status="finished")
    session.add(run)
    session.flush()
    for i, (pair, margin) in enumerate(zip(pairs, margins, strict=True)):
        if margin is not None:
            session.add(PairScore(pair_id=pair.id, run_id=run.id, score_a=margin / 2, score_b=-margin / 2,
                                  margin_std=stds[i] if stds else 0.0, scored_at=at or utcnow()))  # fmt: skip
    session.flush()
    return run


def served(session, rater, campaign):
    """Every pair the rater is given, judging each at once, until the queue has nothing more for them."""
    order = []
    while (assignment := lease_pair(session, rater, campaign)) is not None:
        order.append(assignment.pair_id)
        judge(session, assignment)
    return order


def add_judgments(session, pair, preferences, raters):
    rows = [Judgment(pair_id=pair.id, rater_id=rater.id, preference=p, left="a", guideline_version=1)
            for p, rater in zip(preferences, raters, strict=False)]  # fmt: skip
    session.add_all(rows)
    session.flush()
    return rows


def test_fifo_ignores_stored_scores(session):
    campaign, pairs = make_campaign(session, QueueOrder.fifo)
    store(session, pairs, [5.0, 4.0, 3.0, 2.0, 0.1])
    (rater,) = add_users(session, 1)
    assert served(session, rater, campaign) == [p.id for p in pairs]


def test_uncertainty_serves_the_smallest_margin_first_and_unscored_pairs_last(session):
    campaign, pairs = make_campaign(session, QueueOrder.uncertainty, n_pairs=6)
    store(session, pairs, [2.0, -0.1, None, 0.5, -3.0, 0.0])
    (rater,) = add_users(session, 1)
    assert served(session, rater, campaign) == [pairs[i].id for i in (5, 1, 3, 0, 4, 2)]


def test_a_margin_is_read_in_units_of_its_mc_dropout_spread(session):
    campaign, pairs = make_campaign(session, QueueOrder.uncertainty, n_pairs=3)
    store(session, pairs, [0.2, 0.5, 1.0], stds=[0.01, 1.0, 0.5])  # confidence 20, 0.5, 2
    (rater,) = add_users(session, 1)
    assert served(session, rater, campaign) == [pairs[i].id for i in (1, 2, 0)]


def test_the_run_that_scored_last_decides_and_without_any_the_queue_is_fifo(session):
    campaign, pairs = make_campaign(session, QueueOrder.uncertainty, k=3, n_pairs=4)
    ada, bob, cy = add_users(session, 3)
    _, elsewhere = make_campaign(session, QueueOrder.uncertainty, n_pairs=2)
    assert served(session, ada, campaign) == [p.id for p in pairs]  # no run has scored it: fifo
    first = store(session, pairs, [0.1, 0.2, 0.3, 0.4])
    store(session, pairs, [3.0, 2.0, 1.0, 0.5])
    store(session, elsewhere, [9.0, 9.0])  # another campaign scored later: no matter
    assert served(session, bob, campaign) == [p.id for p in reversed(pairs)]
    scores = pd.DataFrame({"pair_id": [p.id for p in pairs], "score_a": [0.1, 0.2, 0.3, 0.4], "score_b": 0.0,
                           "margin_std": 0.0})  # fmt: skip
    store_scores(session=session, run_id=first.id, scores=scores)  # the first run scores it again: now it is newest
    assert active.latest_scoring(session=session, campaign_id=campaign.id).run_id == first.id
    assert served(session, cy, campaign) == [p.id for p in pairs]


def test_disagreement_serves_disputed_pairs_first_then_by_load_and_uncertainty(session):
    campaign, pairs = make_campaign(session, QueueOrder.disagreement, k=3, n_pairs=7)
    others = add_users(session, 3)
    # consensus (mean preference; negative: A better) against the model's margin (positive: A better)
    add_judgments(session, pairs[0], [-2, -1], others)  # A, the model agrees (margin +2): load 2
    add_judgments(session, pairs[1], [-1], others)  # A, the model says B surely (-3): disputed, confidence 3
    add_judgments(session, pairs[2], [1, 2], others)  # B, the model says A (+0.5): disputed, 0.5
    add_judgments(session, pairs[5], [2, 2], others)  # B, the model says A (+0.2): disputed, 0.2
    (revised,) = add_judgments(session, pairs[6], [-2], others)  # A at first ...
    session.add(
        Judgment(
            pair_id=pairs[6].id,
            rater_id=others[0].id,
            preference=2,
            left="a",
            guideline_version=1,
            supersedes_id=revised.id,
        )
    )  # ... revised to B; the model says A (+1): disputed, 1
    session.flush()
    store(session, pairs, [2.0, -3.0, 0.5, 0.1, 1.0, 0.2, 1.0])  # 3 and 4 unjudged: by uncertainty, after load
    (rater,) = add_users(session, 1)
    assert served(session, rater, campaign) == [pairs[i].id for i in (1, 6, 2, 5, 0, 3, 4)]


def test_a_tie_or_an_agreeing_model_is_no_dispute(session):
    campaign, pairs = make_campaign(session, QueueOrder.disagreement, k=3, n_pairs=3)
    others = add_users(session, 2)
    add_judgments(session, pairs[0], [-1, 1], others)  # a tie
    add_judgments(session, pairs[1], [1], others)  # B, and the model agrees
    store(session, pairs, [5.0, -5.0, 0.1])
    (rater,) = add_users(session, 1)
    assert served(session, rater, campaign) == [pairs[i].id for i in (0, 1, 2)]  # load 2, load 1, then load 0


@pytest.mark.parametrize("order", [QueueOrder.uncertainty, QueueOrder.disagreement])
def test_many_raters_never_push_a_pair_past_k_and_fill_the_most_uncertain_first(session, order):
    campaign, pairs = make_campaign(session, order, k=2, n_pairs=8)
    store(session, pairs, [0.8, -0.05, 0.3, -0.6, 0.01, 2.0, -1.5, 0.2])
    raters, now = add_users(session, 10), utcnow()
    got = [queue.next_pair_assignment(session=session, user=r, campaign=campaign, rng=random.Random(i), now=now,
                                      lease=timedelta(minutes=30)) for i, r in enumerate(raters)]  # fmt: skip
    firsts = [pairs[i].id for i in (4, 1, 7, 2, 3)]  # the five smallest margins, two raters each
    assert [a.pair_id for a in got] == [pid for pid in firsts for _ in range(2)]
    for assignment in got[::2]:
        judge(session, assignment, preference=-1)
    later = add_users(session, 20)
    more = [lease_pair(session, r, campaign, now=now) for r in later]
    assert [a.pair_id for a in more if a] == [pairs[i].id for i in (0, 0, 6, 6, 5, 5)]
    assert more[6:] == [None] * 14
    claims = session.exec(select(Assignment.pair_id, func.count()).group_by(Assignment.pair_id)).all()
    assert dict(claims) == {p.id: 2 for p in pairs}


@pytest.mark.parametrize("order", [QueueOrder.uncertainty, QueueOrder.disagreement])
def test_an_expired_lease_frees_its_slot_and_a_rater_never_gets_a_pair_twice(session, order):
    campaign, pairs = make_campaign(session, order, k=2, n_pairs=3)
    store(session, pairs, [0.1, 0.2, 0.3])
    ada, bob, cy = add_users(session, 3)
    start = utcnow()
    first = lease_pair(session, ada, campaign, now=start)
    assert first.pair_id == pairs[0].id
    judge(session, lease_pair(session, bob, campaign, now=start), preference=2)  # pairs[0]: now full
    later = start + timedelta(hours=1)  # ada's lease has expired: a slot of pairs[0] is open again
    assert lease_pair(session, cy, campaign, now=later).pair_id == pairs[0].id
    renewed = lease_pair(session, ada, campaign, now=later)  # ada's own expired lease: no room left
    assert renewed is None or renewed.pair_id != pairs[0].id
    assert sorted(served(session, bob, campaign)) == [pairs[1].id, pairs[2].id]  # never pairs[0] again


def test_domains_and_calibration_still_apply(session):
    campaign, pairs = make_campaign(session, QueueOrder.uncertainty, n_pairs=2)
    medical = add_pairs(session, campaign, 1, domain="medical")
    calibration = add_pairs(session, campaign, 1, calibration="factual_priority")
    store(session, [*pairs, *medical, *calibration], [1.0, 0.5, 0.0, 0.0])
    (rater,) = add_users(session, 1)
    # no medical pair; the calibration item only once regular work runs out (calibration rate 0), as in fifo
    assert served(session, rater, campaign) == [pairs[1].id, pairs[0].id, calibration[0].id]
    campaign.calibration_rate = 1.0
    (other,) = add_users(session, 1)
    assert lease_pair(session, other, campaign).pair_id == calibration[0].id


def test_disputed_pairs_for_the_leads_review(session):
    campaign, pairs = make_campaign(session, QueueOrder.fifo, k=3, n_pairs=5)
    others = add_users(session, 2)
    add_judgments(session, pairs[0], [-2, -1], others)  # A; model B surely: the first dispute
    add_judgments(session, pairs[1], [2], others)  # B; model A, less sure
    add_judgments(session, pairs[2], [1, 1], others)  # B; the model agrees
    add_judgments(session, pairs[3], [-1], others)  # A; model B, but a lead has decided it
    session.add(Adjudication(pair_id=pairs[3].id, preference=1, note="model was right"))
    run = store(session, pairs, [-4.0, 1.0, -2.0, 3.0, 9.0])  # pairs[4]: unjudged, never a dispute
    found = active.disputed_pairs(session=session, campaign_id=campaign.id, run_id=run.id)
    assert [d.pair_id for d in found] == [pairs[0].id, pairs[1].id]
    assert (found[0].n_judgments, found[0].mean_preference, found[0].margin) == (2, -1.5, -4.0)
    assert found[0].confidence > found[1].confidence and not found[0].is_calibration


def test_raters_racing_through_the_service_follow_the_scores_and_never_exceed_k(engine):
    with write_session(engine) as session, session.begin():
        campaign, pairs = make_campaign(session, QueueOrder.uncertainty, k=3, n_pairs=12, min_reasoning_chars=0)
        rng = random.Random(7)
        margins = [rng.uniform(-2, 2) for _ in pairs]
        store(session, pairs, margins)
        raters = [u.id for u in add_users(session, 8)]
        campaign_id, by_margin = (
            campaign.id,
            [p.id for _, p in sorted(zip(map(abs, margins), pairs, strict=True), key=lambda x: x[0])],
        )
    service, errors, taken = StudioService(engine, rng=random.Random(0)), [], []

    def work(rater_id: int) -> None:
        try:
            for _ in range(3):  # 24 judgments: 8 of the 12 pairs can be full
                if (task := service.next_pair(rater_id, campaign_id)) is None:
                    return
                taken.append(task.pair_id)
                answer = JudgmentAnswer(choice=-1, both_bad=False, criteria={}, reasoning="fine", confidence=3,
                                        time_on_task_s=5.0)  # fmt: skip
                service.submit_judgment(rater_id, task.assignment_id, answer)
        except BaseException as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(rater,)) for rater in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(taken) == 24
    with Session(engine) as s:
        per_pair = dict(s.exec(select(Judgment.pair_id, func.count()).group_by(Judgment.pair_id)).all())
        held = set(s.exec(select(Assignment.pair_id).where(col(Assignment.closed_at).is_(None))).all())
    assert max(per_pair.values()) <= 3 and sum(per_pair.values()) == 24
    # A pair is opened only while it is the most uncertain unopened one: whatever the interleaving, the pairs judged or
    # held (each submit leased its rater's next pair) are the smallest margins, and some stay unjudged.
    claimed = set(per_pair) | held
    assert claimed == set(by_margin[: len(claimed)]) and len(per_pair) < 12
