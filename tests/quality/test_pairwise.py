"""Pairwise accuracy figures against hand-counted cases."""

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from storage.quality.pairwise import longer_scored_higher, pairwise_figures


def test_a_tie_counts_as_wrong_and_the_interval_is_wilsons():
    chosen, rejected = np.array([2.0, 1.0, 0.5, 0.3]), np.array([1.0, 1.0, 0.7, 0.1])
    figures = pairwise_figures(chosen, rejected, np.array([10, 10, 10, 10]), np.array([5, 5, 5, 5]))
    assert figures["accuracy"] == 0.5 and figures["ties"] == 1 and figures["pairs"] == 4
    assert figures["ci95"] == pytest.approx(proportion_confint(2, 4, method="wilson"), abs=1e-4)
    assert figures["mean_margin"] == pytest.approx(np.mean(chosen - rejected), abs=1e-4)


def test_a_length_only_scorer_is_visible():
    """The score is the length: right on every pair where the longer response is chosen, wrong on the others."""
    chosen_length = np.array([300, 120, 800, 50, 1500, 40])
    rejected_length = np.array([100, 400, 200, 90, 700, 40])
    figures = pairwise_figures(chosen_length, rejected_length, chosen_length, rejected_length)
    assert figures["longer_response_scored_higher"] == 1.0
    assert figures["longer_response_chosen_by_labels"] == pytest.approx(3 / 5, abs=1e-4)
    assert figures["accuracy_when_chosen_is_shorter"]["accuracy"] == 0.0
    longer = figures["accuracy_when_chosen_is_longer"]
    assert longer == {"accuracy": 1.0, "ci95": pytest.approx([0.4385, 1.0], abs=1e-4), "pairs": 3}
    buckets = figures["by_mean_response_length"]
    assert [b["pairs"] for b in buckets.values()] == [2, 2, 1, 1]  # means 200, 260, 500, 70, 1100, 40
    assert buckets["0-199 chars"]["accuracy"] == 0.0 and buckets["1000+ chars"]["accuracy"] == 1.0


def test_whether_the_longer_response_scored_higher_is_told_per_pair_of_different_lengths():
    chosen, rejected = np.array([2.0, 1.0, 0.5, 0.3, 0.9]), np.array([1.0, 1.0, 0.7, 0.1, 0.0])
    chosen_length, rejected_length = np.array([10, 10, 3, 3, 7]), np.array([5, 5, 9, 9, 7])
    # longer chosen and scored higher; longer chosen but a tie; longer rejected and scored higher; longer rejected
    # but scored lower; equal lengths: left out
    per_pair = longer_scored_higher(chosen, rejected, chosen_length, rejected_length)
    assert per_pair.tolist() == [True, False, True, False]
    figures = pairwise_figures(chosen, rejected, chosen_length, rejected_length)
    assert figures["longer_response_scored_higher"] == 0.5
