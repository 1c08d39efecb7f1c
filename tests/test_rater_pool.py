"""The rater-pool benchmark at a tiny size, simulation and detection only: the planted bad raters get flagged."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RATERS = {"careful": 6, "random": 2, "position": 2, "tie_lazy": 2}


@pytest.fixture
def rater_pool(shared_data, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package
    return importlib.import_module("benchmarks.rater_pool")


@pytest.mark.slow
def test_tiny_pool_flags_the_planted_raters_for_what_they_do(rater_pool, sqlite_engine, tmp_path):
    pool = rater_pool.build_pool(sqlite_engine, tmp_path, raters=RATERS, pairs=500, seed=0)
    assert pool.kinds.value_counts().to_dict() == RATERS

    # Judged through the service in display terms: a left/right mix-up would put careful raters near 22%, not 72%.
    consensus = rater_pool.consensus_accuracy(sqlite_engine, pool)
    assert 0.62 <= consensus["judgment_accuracy_by_kind"]["careful"] <= 0.82, consensus
    assert consensus["judgment_accuracy_by_kind"]["random"] < 0.55, consensus

    detection = rater_pool.detect(sqlite_engine, pool)
    for found in detection.values():
        assert found["recall_by_kind"] | {"length": 1.0} == dict.fromkeys(rater_pool.BAD_KINDS, 1.0), found
        assert found["false_flag_rate"] <= 0.17, found  # at most one of the six careful raters
    reasons = detection["without_gold"]["flags_by_kind"]
    assert "too_fast 2" in reasons["random"] and "position_bias 2" in reasons["position"], reasons
    assert "many_ties 2" in reasons["tie_lazy"], reasons
