"""The queue's frontier: pairs below it are full, so the queue never looks at them; it moves on as pairs fill, is
stored on the campaign, and goes back when an erasure or a larger k opens full pairs again."""

import random

import pytest
from sqlmodel import Session, select, text

from storage import frontier as frontiers
from storage.campaigns import update_campaign
from storage.db import write_session
from storage.erasure import erase_user
from storage.models import Campaign, CampaignUpdate, Judgment
from studio.service import StudioService
from studio.validation import JudgmentAnswer
from tests.storage.test_queue import add_pairs, add_users

ANSWER = JudgmentAnswer(choice=-1, both_bad=False, criteria={}, reasoning="The left one answers the question.",
                        confidence=3, time_on_task_s=4.0)  # fmt: skip


def _campaign(engine, pairs: int, raters: int, k: int = 2):
    with write_session(engine) as session, session.begin():
        campaign = Campaign(name=f"c{random.random()}", overlap_k=k, calibration_rate=0.0, consent_text="")
        session.add(campaign)
        session.flush()
        pair_ids = [pair.id for pair in add_pairs(session, campaign, pairs)]
        rater_ids = [user.id for user in add_users(session, raters)]
        return campaign.id, pair_ids, rater_ids


def _judge(service, rater, campaign_id, times):
    judged = []
    for _ in range(times):
        task = service.next_pair(rater, campaign_id)
        service.submit_judgment(rater, task.assignment_id, ANSWER)
        judged.append(task.pair_id)
    return judged


def _stored(engine, campaign_id):
    with Session(engine) as session:
        return session.get(Campaign, campaign_id).queue_frontier


def test_the_frontier_follows_the_full_pairs_and_the_queue_still_finds_every_open_one(engine, monkeypatch):
    monkeypatch.setattr(frontiers, "FRONTIER_SECONDS", 0.0)  # searched again on every request
    campaign_id, pairs, (ann, bob, cat) = _campaign(engine, pairs=6, raters=3)
    # A submit leases the rater's next pair; leases that lapse at once keep the pairs' loads to their judgments.
    service = StudioService(engine, lease_minutes=0, rng=random.Random(0))
    assert _judge(service, ann, campaign_id, 3) == pairs[:3]
    assert _judge(service, bob, campaign_id, 3) == pairs[:3]  # closest to k first: ann's pairs
    assert _judge(service, cat, campaign_id, 1) == [pairs[3]]
    assert _stored(engine, campaign_id) == pairs[3]  # pairs 0-2 have k = 2 judgments
    assert _judge(service, cat, campaign_id, 2) == pairs[4:]
    assert _judge(service, ann, campaign_id, 3) == pairs[3:]
    assert service.next_pair(bob, campaign_id) is None  # every pair has k judgments
    assert _stored(engine, campaign_id) == pairs[-1] + 1


def test_a_larger_k_and_an_erasure_open_full_pairs_again(engine, monkeypatch):
    monkeypatch.setattr(frontiers, "FRONTIER_SECONDS", 0.0)
    campaign_id, pairs, (ann, bob, cat) = _campaign(engine, pairs=2, raters=3)
    service = StudioService(engine, rng=random.Random(0))
    _judge(service, ann, campaign_id, 2)
    _judge(service, bob, campaign_id, 2)
    assert service.next_pair(cat, campaign_id) is None and _stored(engine, campaign_id) == pairs[-1] + 1
    with write_session(engine) as session, session.begin():
        update_campaign(session=session, campaign_id=campaign_id, changes=CampaignUpdate(overlap_k=3), actor_id=None)
    assert _stored(engine, campaign_id) == 0
    assert _judge(service, cat, campaign_id, 2) == pairs
    with write_session(engine) as session, session.begin():
        erase_user(session=session, user_id=bob, mode="remove", actor_id=None)
    assert _stored(engine, campaign_id) == 0
    with Session(engine) as session:
        assert not session.exec(select(Judgment).where(Judgment.rater_id == bob)).all()
    with write_session(engine) as session, session.begin():
        (dan,) = add_users(session, 1)
    assert _judge(service, dan.id, campaign_id, 2) == pairs  # bob's places are open again


def test_within_its_time_a_server_does_not_search_again_unless_the_stored_frontier_was_set_back(engine, monkeypatch):
    monkeypatch.setattr(frontiers, "FRONTIER_SECONDS", 60.0)  # longer than the test, however slow the machine
    campaign_id, pairs, (ann, bob, cat) = _campaign(engine, pairs=3, raters=3)
    searches = []
    search = frontiers._first_not_full
    monkeypatch.setattr(frontiers, "_first_not_full", lambda **kw: searches.append(kw["start"]) or search(**kw))
    service = StudioService(engine, rng=random.Random(0))
    _judge(service, ann, campaign_id, 3)
    _judge(service, bob, campaign_id, 3)
    assert searches == [0]  # pairs filled meanwhile: found at the next search, at most FRONTIER_SECONDS later
    with write_session(engine) as session, session.begin():
        update_campaign(session=session, campaign_id=campaign_id, changes=CampaignUpdate(overlap_k=3), actor_id=None)
    assert _judge(service, cat, campaign_id, 3) == pairs and searches == [0, 0]


def test_a_request_finds_the_frontier_without_waiting_for_a_transaction_that_holds_the_campaign(engine, monkeypatch):
    """Every request that searched used to store its frontier, one transaction after another on the campaign's row:
    a second convoy on PostgreSQL at 50 raters. The one that finds the row held leaves the storing to a later one."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite lets one writer in at a time: no other transaction holds a row")
    monkeypatch.setattr(frontiers, "FRONTIER_SECONDS", 0.0)
    campaign_id, pairs, (ann, bob, _) = _campaign(engine, pairs=3, raters=3)
    service = StudioService(engine, lease_minutes=0, rng=random.Random(0))
    _judge(service, ann, campaign_id, 1)
    _judge(service, bob, campaign_id, 1)
    with write_session(engine) as session, session.begin():
        frontiers.forget(session=session)  # stored 0, as an erasure leaves it
    with write_session(engine) as holder, holder.begin():
        holder.exec(select(Campaign).where(Campaign.id == campaign_id).with_for_update(key_share=True)).one()
        with write_session(engine) as session, session.begin():
            session.exec(text("SET LOCAL lock_timeout = '300ms'"))  # a wait fails the test instead of hanging it
            assert frontiers.frontier(session=session, campaign=session.get(Campaign, campaign_id)) == pairs[1]
    assert _stored(engine, campaign_id) == 0
    with write_session(engine) as session, session.begin():
        assert frontiers.frontier(session=session, campaign=session.get(Campaign, campaign_id)) == pairs[1]
    assert _stored(engine, campaign_id) == pairs[1]
