"""The rater-pool benchmark at the small team's size, simulation and detection only: the planted bad raters get
flagged, the careful ones do not; once the flagged ones are excluded, the others judge their pairs to k again."""

import importlib
from pathlib import Path

import pytest
from sqlmodel import Session

from storage.models import Campaign
from storage.progress import judgment_coverage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rater_pool(shared_data, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package
    return importlib.import_module("benchmarks.rater_pool")


@pytest.mark.slow
def test_tiny_pool_flags_the_planted_raters_for_what_they_do(rater_pool, sqlite_engine, tmp_path):
    team = rater_pool.SMALL_TEAM  # of --detection-only: six careful raters and one of each bad kind, ~250 pairs
    pool = rater_pool.build_pool(sqlite_engine, tmp_path, raters=team["raters"], pairs=team["pairs"], seed=0,
                                 training=False)  # fmt: skip
    assert pool.kinds.value_counts().to_dict() == team["raters"] and 240 <= len(pool.truth) <= 260
    assert pool.names[pool.kinds == "length"].tolist() == ["length-00"]

    # Judged through the service in display terms: a left/right mix-up would put careful raters near 22%, not 72%.
    consensus = rater_pool.consensus_accuracy(sqlite_engine, pool)
    assert 0.62 <= consensus["judgment_accuracy_by_kind"]["careful"] <= 0.82, consensus
    assert consensus["judgment_accuracy_by_kind"]["random"] < 0.55, consensus

    detection = rater_pool.detect(sqlite_engine, pool)
    for found in detection.values():  # with gold and without
        assert found["recall"] == 1.0 and found["missed"] == [], found
        assert found["false_flag_rate"] == 0.0 and found["careful_flagged"] == [], found
    reasons = detection["without_gold"]["flags_by_kind"]
    assert "too_fast 1" in reasons["random"] and "position_bias 1" in reasons["position"], reasons
    assert "length_bias 1" in reasons["length"] and "many_ties 1" in reasons["tie_lazy"], reasons

    # The lead excludes the flagged raters: the others judge the pairs they had judged again, to k without them.
    refill = rater_pool.exclude_flagged(sqlite_engine, pool, seed=0)
    assert refill["excluded_by_kind"] == {kind: 1 for kind in rater_pool.BAD_KINDS}, refill
    with Session(sqlite_engine) as session:
        campaign = session.get(Campaign, pool.campaign_id)
        collected, needed = judgment_coverage(session=session, campaign=campaign)
    assert collected == needed and refill["excluded_judgments"] > 100 and refill["judgments"] > 100, refill
