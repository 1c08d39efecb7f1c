import random
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlmodel import col, select, text

from storage import demonstrations, members, progress, queue
from storage.db import write_session
from storage.models import (
    Assignment,
    CalibrationItem,
    CalibrationKind,
    Campaign,
    CampaignKind,
    Demonstration,
    DemonstrationCreate,
    JudgmentCreate,
    Pair,
    Prompt,
    Response,
    ReviewStatus,
    Role,
    Side,
    TaskKind,
    User,
    utcnow,
)

LEASE = timedelta(minutes=30)


def add_users(session, count, **fields):
    users = [
        User(username=f"u{i}-{random.random()}", password_hash="x", role=Role.rater, **fields) for i in range(count)
    ]
    session.add_all(users)
    session.flush()
    return users


def add_pairs(session, campaign, count, *, domain=None, calibration=None):
    """``count`` pairs, each on its own prompt; with ``calibration`` (a kind) each gets a CalibrationItem."""
    pairs = []
    for _ in range(count):
        tag = f"{len(pairs)}-{random.random()}"
        prompt = Prompt(
            campaign_id=campaign.id, messages=[{"role": "user", "content": tag}], content_hash=tag, domain=domain
        )
        session.add(prompt)
        session.flush()
        a, b = Response(prompt_id=prompt.id, text=f"A {tag}"), Response(prompt_id=prompt.id, text=f"B {tag}")
        session.add_all([a, b])
        session.flush()
        pair = Pair(
            campaign_id=campaign.id, prompt_id=prompt.id, response_a_id=a.id, response_b_id=b.id, content_hash=tag
        )
        session.add(pair)
        session.flush()
        if calibration:
            session.add(CalibrationItem(pair_id=pair.id, expected=-2, accepted=[-2, -1], kind=calibration))
        pairs.append(pair)
    session.flush()
    return pairs


@pytest.fixture
def session(engine):
    with write_session(engine) as session:
        yield session


@pytest.fixture
def campaign(session):
    campaign = Campaign(name="c", overlap_k=2, calibration_rate=0.0)
    session.add(campaign)
    session.flush()
    return campaign


def lease_pair(session, user, campaign, rng=None, now=None):
    return queue.next_pair_assignment(
        session=session, user=user, campaign=campaign, rng=rng or random.Random(0), now=now or utcnow(), lease=LEASE
    )


def judge(session, assignment, preference=0):
    judgment = JudgmentCreate(pair_id=assignment.pair_id, preference=preference, left=assignment.left)
    return queue.record_judgment(
        session=session,
        judgment=judgment,
        rater_id=assignment.rater_id,
        guideline_version=1,
        now=utcnow(),
        assignment=assignment,
    )


def test_overlap_k_is_respected_and_nearly_done_items_come_first(session, campaign):
    first, second = add_pairs(session, campaign, 2)
    raters = add_users(session, 5)
    got = [lease_pair(session, rater, campaign) for rater in raters]
    assert [a.pair_id for a in got[:4]] == [first.id, first.id, second.id, second.id]
    assert got[4] is None


def test_a_started_pair_comes_before_a_lower_unstarted_one(session):
    campaign = Campaign(name="k3", overlap_k=3, calibration_rate=0.0)
    session.add(campaign)
    session.flush()
    low, started, _ = add_pairs(session, campaign, 3)
    a, b, c, d, e = add_users(session, 5)
    long_ago = utcnow() - 2 * LEASE
    assert [lease_pair(session, r, campaign, now=long_ago).pair_id for r in (a, b, c)] == [low.id] * 3  # expire
    judge(session, lease_pair(session, d, campaign, now=long_ago))  # the only claim that lasts
    assert lease_pair(session, e, campaign).pair_id == started.id


def test_a_pair_another_rater_is_claiming_is_passed_over_and_waited_for_only_when_nothing_else_is_open(engine):
    """Fifty raters asking at once on PostgreSQL used to queue on the row lock of the one pair closest to k."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite lets one writer in at a time: no other transaction holds a row")
    with write_session(engine) as session, session.begin():
        campaign = Campaign(name="locks", overlap_k=2, calibration_rate=0.0)
        session.add(campaign)
        session.flush()
        first, second = add_pairs(session, campaign, 2)
        ann, bob, cat = add_users(session, 3)
    with write_session(engine) as claiming, claiming.begin():
        claiming.exec(select(Pair).where(Pair.id == first.id).with_for_update(key_share=True)).one()
        for rater in (ann, bob):
            with write_session(engine) as session, session.begin():
                session.exec(text("SET LOCAL lock_timeout = '300ms'"))  # a wait fails the test instead of hanging it
                assert lease_pair(session, rater, campaign).pair_id == second.id
        with write_session(engine) as session, session.begin():  # the second is full: cat waits for the first
            session.exec(text("SET LOCAL lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock"):
                lease_pair(session, cat, campaign)
    with write_session(engine) as session, session.begin():
        assert lease_pair(session, cat, campaign).pair_id == first.id


def test_of_the_pairs_being_claimed_the_first_free_one_in_queue_order_is_leased(engine):
    """The candidates are tried in one statement however many are held (storage.queue._lock_first): the held ones
    are passed, the order of the rest is kept."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite lets one writer in at a time: no other transaction holds a row")
    with write_session(engine) as session, session.begin():
        campaign = Campaign(name="order", overlap_k=1, calibration_rate=0.0)
        session.add(campaign)
        session.flush()
        pairs = [pair.id for pair in add_pairs(session, campaign, 4)]
        ann, bob = add_users(session, 2)
    with write_session(engine) as claiming, claiming.begin():
        held = select(Pair).where(col(Pair.id).in_(pairs[::2])).with_for_update(key_share=True)
        assert len(claiming.exec(held).all()) == 2
        tries = []
        event.listen(
            engine,
            "before_cursor_execute",
            lambda *args: tries.append("FROM pair" in args[2] and "SKIP LOCKED" in args[2]),
        )
        for rater, expected in ((ann, pairs[1]), (bob, pairs[3])):
            with write_session(engine) as session, session.begin():
                session.exec(text("SET LOCAL lock_timeout = '300ms'"))
                assert lease_pair(session, rater, campaign).pair_id == expected
    assert sum(tries) == 2  # one each, where trying pair by pair took two (ann) and three (bob)


def test_a_rater_never_gets_the_same_pair_twice(session, campaign):
    campaign.overlap_k = 3
    pairs = add_pairs(session, campaign, 4)
    (rater,) = add_users(session, 1)
    seen = []
    while (assignment := lease_pair(session, rater, campaign)) is not None:
        seen.append(assignment.pair_id)
        judge(session, assignment)
    assert sorted(seen) == sorted(p.id for p in pairs)


def test_held_assignment_is_resumed_not_duplicated(session, campaign):
    add_pairs(session, campaign, 3)
    (rater,) = add_users(session, 1)
    first = lease_pair(session, rater, campaign)
    assert lease_pair(session, rater, campaign).id == first.id
    assert len(session.exec(select(Assignment)).all()) == 1


def test_expired_lease_no_longer_counts_toward_k(session, campaign):
    campaign.overlap_k = 1
    (pair,) = add_pairs(session, campaign, 1)
    late, other = add_users(session, 2)
    stale = lease_pair(session, late, campaign)
    assert lease_pair(session, other, campaign) is None
    stale.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    taken = lease_pair(session, other, campaign)
    assert taken.pair_id == pair.id
    # The late rater's item is full again, so they get nothing rather than a renewed lease beyond k.
    assert lease_pair(session, late, campaign) is None


def test_expired_own_lease_is_renewed_while_there_is_room(session, campaign):
    add_pairs(session, campaign, 2)
    (rater,) = add_users(session, 1)
    held = lease_pair(session, rater, campaign)
    held.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    renewed = lease_pair(session, rater, campaign)
    assert renewed.id == held.id and renewed.expires_at > utcnow()


def test_repeat_calibration_items_come_back_once_others_never(session, campaign):
    campaign.calibration_rate = 1.0
    (repeat,) = add_pairs(session, campaign, 1, calibration=CalibrationKind.repeat)
    (trap,) = add_pairs(session, campaign, 1, calibration=CalibrationKind.sycophancy_trap)
    (rater,) = add_users(session, 1)
    seen = []
    while (assignment := lease_pair(session, rater, campaign)) is not None:
        assert assignment.is_calibration
        seen.append(assignment.pair_id)
        judge(session, assignment)
    assert sorted(seen) == sorted([repeat.id, repeat.id, trap.id])


def test_calibration_is_not_limited_by_k_and_falls_back_both_ways(session, campaign):
    campaign.overlap_k, campaign.calibration_rate = 1, 0.0
    (calibration,) = add_pairs(session, campaign, 1, calibration=CalibrationKind.safety)
    first, second = add_users(session, 2)
    # No regular pair exists, so a rater drawing "regular" falls back to the calibration item; k=1 does not bind.
    assert lease_pair(session, first, campaign).pair_id == calibration.id
    assert lease_pair(session, second, campaign).pair_id == calibration.id
    campaign.calibration_rate = 1.0
    (regular,) = add_pairs(session, campaign, 1)
    (third,) = add_users(session, 1)
    judge(session, lease_pair(session, third, campaign))
    assert lease_pair(session, third, campaign).pair_id == regular.id


def test_calibration_rate_is_roughly_honoured(session, campaign):
    campaign.calibration_rate, campaign.overlap_k = 0.3, 1
    campaign.probation = False  # this rater answers every calibration item wrong
    add_pairs(session, campaign, 60, calibration=CalibrationKind.factual_priority)
    add_pairs(session, campaign, 100)
    (rater,) = add_users(session, 1)
    rng = random.Random(7)
    drawn = []
    for _ in range(100):
        assignment = lease_pair(session, rater, campaign, rng=rng)
        drawn.append(assignment.is_calibration)
        judge(session, assignment)
    assert 0.18 <= sum(drawn) / len(drawn) <= 0.42


def test_left_right_stays_balanced_per_rater(session, campaign):
    campaign.calibration_rate, campaign.overlap_k = 0.5, 3
    add_pairs(session, campaign, 10)
    add_pairs(session, campaign, 5, calibration=CalibrationKind.safety)
    raters = add_users(session, 3)
    rng = random.Random(3)
    counts = {rater.id: {Side.a: 0, Side.b: 0} for rater in raters}
    for _ in range(12):
        for rater in raters:
            assignment = lease_pair(session, rater, campaign, rng=rng)
            counts[rater.id][assignment.left] += 1
            assert abs(counts[rater.id][Side.a] - counts[rater.id][Side.b]) <= 1
            judge(session, assignment)
    assert all(c[Side.a] + c[Side.b] == 12 for c in counts.values())


def test_domains_are_respected(session, campaign):
    (medical,) = add_pairs(session, campaign, 1, domain="medicine")
    (general,) = add_pairs(session, campaign, 1)
    (layperson,) = add_users(session, 1)
    (doctor,) = add_users(session, 1, domains=["medicine"])
    seen = []
    while (assignment := lease_pair(session, layperson, campaign)) is not None:
        seen.append(assignment.pair_id)
        judge(session, assignment)
    assert seen == [general.id]
    assert lease_pair(session, doctor, campaign).pair_id in {medical.id, general.id}


def test_inactive_user_gets_nothing(session, campaign):
    add_pairs(session, campaign, 2)
    (rater,) = add_users(session, 1, active=False)
    assert lease_pair(session, rater, campaign) is None


def test_demonstration_queue_counts_raters_not_imports(session):
    campaign = Campaign(name="d", kind=CampaignKind.demonstration, overlap_k=1)
    session.add(campaign)
    session.flush()
    (pair,) = add_pairs(session, campaign, 1)
    imported = Demonstration(prompt_id=pair.prompt_id, messages=[{"role": "assistant", "content": "old"}])
    session.add(imported)
    first, second = add_users(session, 2)
    now = utcnow()
    assignment = queue.next_prompt_assignment(session=session, user=first, campaign=campaign, now=now, lease=LEASE)
    assert (assignment.prompt_id, assignment.task) == (pair.prompt_id, TaskKind.demonstration)
    assert queue.next_prompt_assignment(session=session, user=second, campaign=campaign, now=now, lease=LEASE) is None
    assert lease_pair(session, first, campaign) is None  # a demonstration campaign holds no pair work
    assert queue.draft_response(session=session, prompt_id=pair.prompt_id).text.startswith("A ")


def _writing_campaign(session, k, prompts):
    campaign = Campaign(name=f"w-{random.random()}", kind=CampaignKind.demonstration, overlap_k=k)
    session.add(campaign)
    session.flush()
    return campaign, [pair.prompt_id for pair in add_pairs(session, campaign, prompts)]


def lease_prompt(session, user, campaign):
    return queue.next_prompt_assignment(session=session, user=user, campaign=campaign, now=utcnow(), lease=LEASE)


def write(session, user, prompt_id, assignment=None, supersedes=None):
    text = DemonstrationCreate(
        prompt_id=prompt_id, messages=[{"role": "assistant", "content": "an answer"}], supersedes_id=supersedes
    )
    return queue.record_demonstration(
        session=session, demonstration=text, rater_id=user.id, guideline_version=1, now=utcnow(), assignment=assignment
    )


def review(session, demonstration, status):
    demonstrations.record_review(session=session, demonstration=demonstration, status=status, note="", actor_id=None)


def written(session, campaign):
    return progress.demonstration_coverage(session=session, campaign=campaign)


def test_a_rejected_demonstration_frees_its_place_and_a_revision_takes_one_again(session):
    campaign, (prompt_id,) = _writing_campaign(session, k=1, prompts=1)
    ada, bob = add_users(session, 2)
    first = write(session, ada, prompt_id, lease_prompt(session, ada, campaign))
    assert lease_prompt(session, bob, campaign) is None and written(session, campaign) == (1, 1)
    review(session, first, ReviewStatus.accepted)
    review(session, first, ReviewStatus.rejected)  # the newest review counts
    assert written(session, campaign) == (0, 1)
    assert lease_prompt(session, ada, campaign) is None  # never the same writer twice
    assert lease_prompt(session, bob, campaign).prompt_id == prompt_id
    write(session, ada, prompt_id, supersedes=first.id)  # ada revises it: unreviewed, it holds a place again
    assert written(session, campaign) == (1, 1)
    review(session, first, ReviewStatus.rejected)  # a review of a replaced version changes nothing
    assert written(session, campaign) == (1, 1)


def test_an_excluded_writers_demonstrations_free_their_places_unless_a_lead_accepted_them(session):
    campaign, (kept, freed, rejected) = _writing_campaign(session, k=1, prompts=3)
    ada, bob = add_users(session, 2)
    verdicts = {kept: ReviewStatus.accepted, rejected: ReviewStatus.rejected}  # ``freed`` stays unreviewed
    for _ in range(3):
        assignment = lease_prompt(session, ada, campaign)
        found = write(session, ada, assignment.prompt_id, assignment)
        if found.prompt_id in verdicts:
            review(session, found, verdicts[found.prompt_id])
    # the accepted one and the unreviewed one hold their places; the rejected prompt is open again
    assert written(session, campaign) == (2, 3)
    members.set_member(session=session, campaign=campaign, user=ada, role=Role.excluded, actor_id=None)
    assert written(session, campaign) == (1, 3)
    assert [lease_prompt(session, bob, campaign).prompt_id for _ in range(2)] == [freed, freed]  # held: resumed
    cara, dan = add_users(session, 2)
    assert lease_prompt(session, cara, campaign).prompt_id == rejected
    assert lease_prompt(session, dan, campaign) is None


def test_probation_serves_only_calibration_until_the_rater_passes_again(session, campaign):
    campaign.calibration_rate, campaign.calibration_window = 0.0, 5
    calibration = add_pairs(session, campaign, 3, calibration=CalibrationKind.factual_priority)
    add_pairs(session, campaign, 20)
    (rater,) = add_users(session, 1)
    for _ in range(3):  # calibration rate 0: regular pairs only
        assert not (assignment := lease_pair(session, rater, campaign)).is_calibration
        judge(session, assignment)
    for pair in [*calibration, *calibration[:2]]:  # five wrong answers (expected -2, accepted -2 and -1)
        wrong = JudgmentCreate(pair_id=pair.id, preference=1, left=Side.a)
        queue.record_judgment(session=session, judgment=wrong, rater_id=rater.id, guideline_version=1, now=utcnow())
    assert queue.calibration_standing(session=session, rater_id=rater.id, campaign=campaign) == (0, 5)
    assert queue.on_probation(session=session, rater_id=rater.id, campaign=campaign)
    calibration_ids = {pair.id for pair in calibration}
    for _ in range(4):  # already-seen calibration items come back; regular work waits; 4 of the last 5 pass
        assignment = lease_pair(session, rater, campaign)
        assert assignment.is_calibration and assignment.pair_id in calibration_ids
        judge(session, assignment, preference=-2)
    assert queue.calibration_standing(session=session, rater_id=rater.id, campaign=campaign) == (4, 5)
    assert not lease_pair(session, rater, campaign).is_calibration
    campaign.probation = False
    assert not queue.on_probation(session=session, rater_id=rater.id, campaign=campaign)
