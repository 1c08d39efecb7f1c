"""Chunked imports through a hidden staging campaign (storage.staging): any chunk size writes the same rows, nothing
is visible before it is published, a killed import is discarded or completed by the next, and rows another import
added meanwhile are merged, not doubled. SQLite and PostgreSQL."""

import json

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from storage import imports, staging
from storage.imports import ImportArguments, import_file
from storage.models import AuditEvent, CalibrationItem, Campaign, Demonstration, ImportJob, Pair, Prompt, Response
from tests.storage.test_imports import all_rows, snapshot


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def pairs_file(tmp_path):
    rows = [
        {"prompt": "What is 2+2?", "response_a": "4", "response_b": "5", "preference": -2, "license": "CC0"},
        {"prompt": "Name a colour.", "response_a": "Blue.", "response_b": "Loud.", "preference": 1},
        {"prompt": "Say hi.", "response_a": "Hi!", "response_b": "Hello!"},
    ]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def _content(engine, campaign):
    """What a campaign holds, by content rather than id."""
    with Session(engine) as session:
        cid = session.exec(select(Campaign.id).where(Campaign.name == campaign)).one()
        prompts = {p.id: p.content_hash for p in session.exec(select(Prompt).where(Prompt.campaign_id == cid))}
        texts = {r.id: (prompts[r.prompt_id], r.author, r.text) for r in session.exec(select(Response))
                 if r.prompt_id in prompts}  # fmt: skip
        pairs = sorted(
            (p.content_hash, prompts[p.prompt_id], texts[p.response_a_id], texts[p.response_b_id], p.prior_preference)
            for p in session.exec(select(Pair).where(Pair.campaign_id == cid))
        )
        demonstrations = sorted(
            (prompts[d.prompt_id], d.messages[0]["content"]) for d in session.exec(select(Demonstration))
            if d.prompt_id in prompts
        )  # fmt: skip
        items = session.exec(select(func.count()).select_from(CalibrationItem)).one()
    return sorted(prompts.values()), sorted(texts.values()), pairs, demonstrations, items


@pytest.mark.parametrize("chunk_rows", [1, 7, 500])
def test_any_chunk_size_writes_the_same_rows(engine, shared_data, chunk_rows):
    path = shared_data / "oasst_en_100" / "en_100_tree.jsonl"
    report = import_file(path, engine=engine, campaign="c", known_as="calibration",
                         limits=ImportArguments(chunk_rows=chunk_rows))  # fmt: skip
    assert (report.prompts, report.pairs, report.demonstrations, report.responses) == (480, 754, 670, 641)
    prompts, responses, pairs, demonstrations, items = _content(engine, "c")
    assert (len(prompts), len(responses), len(pairs), len(demonstrations), items) == (480, 641, 754, 670, 754)
    with Session(engine) as session:  # nothing staged is left behind
        assert [c.name for c in session.exec(select(Campaign))] == ["c"]
        assert session.exec(select(func.count()).select_from(ImportJob)).one() == 0


def test_an_import_into_a_live_campaign_merges_its_prompts_and_skips_its_pairs(engine, tmp_path):
    import_file(pairs_file(tmp_path), engine=engine, campaign="c", known_as="calibration")
    more = [{"prompt": "Say hi.", "response_a": "Hey.", "response_b": "Yo."},  # a prompt the campaign holds
            {"prompt": "What is 2+2?", "response_a": "5", "response_b": "4"},  # a pair it holds, swapped
            {"prompt": "New.", "response_a": "x", "response_b": "y", "preference": 2}]  # fmt: skip
    report = import_file(write_jsonl(tmp_path / "more.jsonl", more), engine=engine, campaign="c",
                         known_as="calibration", limits=ImportArguments(chunk_rows=1))  # fmt: skip
    assert (report.prompts, report.pairs, report.responses, report.duplicates, report.calibration_items) == (
        1,
        2,
        4,
        1,
        1,
    )
    prompts, _, pairs, _, items = _content(engine, "c")
    assert (len(prompts), len(pairs), items) == (4, 5, 3)
    assert len(all_rows(engine, Prompt)) == 4  # the staged copy of "Say hi." was merged into the campaign's own


def test_staged_rows_stay_hidden_until_the_import_is_published(engine, tmp_path, monkeypatch):
    from storage import members
    from storage.accounts import create_user
    from storage.models import Role, UserCreate
    from studio.service import StudioService

    import_file(pairs_file(tmp_path), engine=engine, campaign="live")
    with Session(engine) as session, session.begin():
        rater = create_user(session=session, user=UserCreate(username="rater", password="password1")).id
        admin = create_user(
            session=session, user=UserCreate(username="boss", password="password1", role=Role.admin)
        ).id
    service, live = StudioService(engine), all_rows(engine, Campaign)[0].id
    checks, visible = [], ["live"]

    def check():
        with Session(engine) as session:
            staged = session.exec(select(ImportJob.campaign_id)).one()
            users = {u: session.get(members.User, u) for u in (rater, admin)}
            assert [c.name for c in members.rateable_campaigns(session=session, user=users[rater])] == visible
            assert [c.name for c in members.led_campaigns(session=session, user=users[admin])] == visible
            assert not members.may_rate(session=session, user=users[rater], campaign_id=staged)
            assert not members.may_lead(session=session, user=users[admin], campaign_id=staged)
            live_pairs = session.exec(select(func.count()).select_from(Pair).where(Pair.campaign_id == live)).one()
        assert live_pairs == 3 and [name for name, _ in service.campaigns_for(user_id=rater)] == visible
        task = service.next_pair(rater, live)
        assert task.pair_id in {p.id for p in all_rows(engine, Pair) if p.campaign_id == live}
        checks.append(staged)

    original = imports._chunks

    def chunks_then_check(records, size):
        for chunk in original(records, size):
            yield chunk
            check()

    monkeypatch.setattr(imports, "_chunks", chunks_then_check)
    rows = [{"prompt": f"q{i}", "response_a": "x", "response_b": "y"} for i in range(6)]
    bulk = write_jsonl(tmp_path / "bulk.jsonl", rows)
    import_file(bulk, engine=engine, campaign="bulk", limits=ImportArguments(chunk_rows=2))  # a new campaign
    visible.insert(0, "bulk")
    import_file(bulk, engine=engine, campaign="live", limits=ImportArguments(chunk_rows=2))  # and a live one
    assert len(checks) == 6
    names = [name for name, _ in service.campaigns_for(user_id=rater)]
    assert names == ["bulk", "live"] and len(all_rows(engine, Pair)) == 3 + 6 + 6


def _crash_after(monkeypatch, name):
    """Make storage.staging.<name> die as a killed process would: nothing after it runs, no clean-up."""

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(staging, name, killed)
    monkeypatch.setattr(imports, "_discard", lambda *args: None)


def _age_jobs(engine):
    with Session(engine) as session, session.begin():
        for job in session.exec(select(ImportJob)):
            job.beat_at = job.beat_at - staging.ABANDONED_AFTER * 2


def test_an_import_killed_while_writing_is_discarded_by_the_next(engine, tmp_path, monkeypatch):
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    before = snapshot(engine)
    rows = [{"prompt": f"q{i}", "response_a": "x", "response_b": "y"} for i in range(5)]
    with monkeypatch.context() as patched:
        _crash_after(patched, "publish")
        with pytest.raises(KeyboardInterrupt):
            import_file(write_jsonl(tmp_path / "more.jsonl", rows), engine=engine, campaign="c",
                        limits=ImportArguments(chunk_rows=2))  # fmt: skip
    assert len(all_rows(engine, ImportJob)) == 1 and len(all_rows(engine, Pair)) == 3 + 5  # staged, hidden
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")  # a live job is left alone
    assert len(all_rows(engine, ImportJob)) == 1
    _age_jobs(engine)
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    assert snapshot(engine) == before | {"auditevent": snapshot(engine)["auditevent"]}
    assert len(all_rows(engine, AuditEvent)) == 3  # the first import and the two that found only duplicates


def test_an_import_killed_while_moving_is_completed_by_the_next(engine, tmp_path, monkeypatch):
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    rows = [{"prompt": f"q{i}", "response_a": "x", "response_b": "y"} for i in range(5)]
    with monkeypatch.context() as patched:
        _crash_after(patched, "_move")
        with pytest.raises(KeyboardInterrupt):
            import_file(write_jsonl(tmp_path / "more.jsonl", rows), engine=engine, campaign="c")
    assert [job.state for job in all_rows(engine, ImportJob)] == ["moving"]
    _age_jobs(engine)
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    prompts, _, pairs, _, _ = _content(engine, "c")
    assert (len(prompts), len(pairs), all_rows(engine, ImportJob)) == (8, 8, [])
    assert [(a.target, a.details["pairs"]) for a in all_rows(engine, AuditEvent)] == [("c", 3), ("c", 5), ("c", 0)]


def test_rows_another_import_added_meanwhile_are_merged_not_doubled(engine, tmp_path, monkeypatch):
    rows = [{"prompt": f"q{i}", "response_a": "x", "response_b": f"y{i}"} for i in range(6)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    original, other = imports._chunks, []

    def chunks(records, size):
        for chunk in original(records, size):
            yield chunk
            if not other:  # while the first import is still writing, a second one publishes the same file
                other.append(None)
                other[0] = import_file(path, engine=engine, campaign="c", limits=ImportArguments(chunk_rows=4))

    monkeypatch.setattr(imports, "_chunks", chunks)
    first = import_file(path, engine=engine, campaign="c", limits=ImportArguments(chunk_rows=2))
    assert (other[0].pairs, other[0].prompts) == (6, 6)
    assert (first.pairs, first.prompts, first.duplicates, first.responses) == (0, 0, 6, 0)
    prompts, responses, pairs, _, _ = _content(engine, "c")
    assert (len(prompts), len(responses), len(pairs)) == (6, 12, 6)
    assert (len(all_rows(engine, Prompt)), len(all_rows(engine, Response)), len(all_rows(engine, Campaign))) == (
        6,
        12,
        1,
    )


def test_an_import_waits_for_the_write_lock_by_asking_often_and_gives_up_in_time(sqlite_engine, monkeypatch):
    import threading
    import time

    from sqlalchemy.exc import OperationalError

    writer = staging.writer_engine(sqlite_engine)
    assert writer is not sqlite_engine

    holding = threading.Event()

    def hold(seconds):
        with staging.transaction(sqlite_engine) as session:  # a rater's transaction, say
            session.add(Campaign(name=f"held {seconds}"))
            session.flush()
            holding.set()
            time.sleep(seconds)

    importer = threading.get_ident()
    naps = []  # every sleep the import takes while it waits for the lock
    sleep = time.sleep

    def counted_sleep(seconds):
        if threading.get_ident() == importer:
            naps.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(staging.time, "sleep", counted_sleep)
    holder = threading.Thread(target=hold, args=(0.3,))
    holder.start()
    assert holding.wait(10)  # the write lock is held (a fixed sleep raced with the thread under CI's load)
    with staging.transaction(writer) as session:
        session.add(Campaign(name="after"))
    holder.join()
    polls, yielded = naps[:-1], naps[-1]
    assert len(polls) > 3  # it asked again and again while the rater held the lock ...
    assert set(polls) == {staging.LOCK_POLL_S}  # ... each time after the same short nap, never a backed-off sleep
    assert yielded >= staging.LOCK_YIELD_S  # and having found the lock taken, it left it free afterwards
    monkeypatch.setattr(staging, "LOCK_WAIT_S", 0.2)
    holding.clear()
    holder = threading.Thread(target=hold, args=(1.0,))
    holder.start()
    assert holding.wait(10)
    with pytest.raises(OperationalError, match="locked"):
        with staging.transaction(writer):
            pass
    holder.join()
    assert {c.name for c in all_rows(sqlite_engine, Campaign)} == {"held 0.3", "after", "held 1.0"}
    writer.dispose()
