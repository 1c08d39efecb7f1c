"""Pairs formed from stored responses: strategies, balance over pairings and sides, identical texts, idempotence."""

import itertools
from collections import Counter

import pytest
from sqlmodel import Session, select

from storage.db import write_session
from storage.imports import import_file
from storage.models import Campaign, CampaignKind, Pair, Response
from storage.pairing import form_pairs
from tests.storage.test_imports import write_jsonl

MODELS = ("m1", "m2", "m3", "m4")


def responses_campaign(engine, tmp_path, n_prompts=6, identical=()):
    """Each model answers every prompt; (prompt index, model) in ``identical`` answers like m1 does."""
    for model in MODELS:
        rows = [{"prompt": f"question {i}", "response": f"{'m1' if (i, model) in identical else model} answer {i}"}
                for i in range(n_prompts)]  # fmt: skip
        import_file(write_jsonl(tmp_path / f"{model}.jsonl", rows), engine=engine, campaign="ev", model=model)
    with Session(engine) as session:
        return session.exec(select(Campaign.id).where(Campaign.name == "ev")).one()


def pair(engine, campaign_id, **options):
    with write_session(engine) as session, session.begin():
        return form_pairs(session=session, campaign_id=campaign_id, **options)


def pairs_by_models(engine) -> list[tuple[str, str, str, str]]:
    with Session(engine) as session:
        rows = []
        for p in session.exec(select(Pair)):
            a, b = session.get(Response, p.response_a_id), session.get(Response, p.response_b_id)
            rows.append((a.author, b.author, a.text, b.text))
        return rows


def test_all_models_pairs_every_pairing_balanced_on_both_sides_and_is_idempotent(engine, tmp_path):
    campaign_id = responses_campaign(engine, tmp_path, identical={(0, "m2")})
    report = pair(engine, campaign_id, strategy="all-models", evaluation=True)
    assert (report.created, report.identical_skipped, report.prompts) == (6 * 6 - 1, 1, 6)
    rows = pairs_by_models(engine)
    assert all(a != b and ta.strip() != tb.strip() for a, b, ta, tb in rows)
    per_pairing = Counter(tuple(sorted((a, b))) for a, b, _, _ in rows)
    assert set(per_pairing) == set(itertools.combinations(MODELS, 2))
    assert per_pairing[("m1", "m2")] == 5 and all(n == 6 for p, n in per_pairing.items() if p != ("m1", "m2"))
    on_a = Counter((tuple(sorted((a, b))), a) for a, b, _, _ in rows)
    for x, y in per_pairing:
        assert abs(on_a[(x, y), x] - on_a[(x, y), y]) <= 1, (x, y)
    with Session(engine) as session:
        assert session.exec(select(Campaign.kind).where(Campaign.id == campaign_id)).one() == CampaignKind.evaluation
    again = pair(engine, campaign_id, strategy="all-models")
    assert (again.created, again.existing) == (0, 35)


def test_vs_reference_pairs_each_model_against_the_reference(engine, tmp_path):
    campaign_id = responses_campaign(engine, tmp_path)
    report = pair(engine, campaign_id, strategy="vs-reference", reference="m3")
    assert report.created == 3 * 6
    assert {tuple(sorted((a, b))) for a, b, _, _ in pairs_by_models(engine)} == {("m1", "m3"), ("m2", "m3"),
                                                                                    ("m3", "m4")}  # fmt: skip
    with pytest.raises(ValueError, match="vs-reference needs --reference, one of the campaign's models"):
        pair(engine, campaign_id, strategy="vs-reference", reference="nope")


def test_random_k_spreads_pairs_evenly_and_a_rerun_adds_nothing(engine, tmp_path):
    campaign_id = responses_campaign(engine, tmp_path, n_prompts=12)
    report = pair(engine, campaign_id, strategy="random-k", k=2, seed=3)
    assert report.created == 12 * 2
    rows = pairs_by_models(engine)
    per_prompt = Counter(ta.split()[-1] for _, _, ta, _ in rows)
    assert set(per_prompt.values()) == {2}
    per_pairing = Counter(tuple(sorted((a, b))) for a, b, _, _ in rows)
    assert len(per_pairing) == 6 and set(per_pairing.values()) == {4}  # 24 pairs over 6 pairings
    assert pair(engine, campaign_id, strategy="random-k", k=2, seed=3).created == 0
    assert pair(engine, campaign_id, strategy="random-k", k=3, seed=3).created == 12  # one more per prompt
    with pytest.raises(ValueError, match="random-k needs --k"):
        pair(engine, campaign_id, strategy="random-k")
