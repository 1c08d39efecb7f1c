import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.quality.competence import dawid_skene
from storage.quality.judgments import judgment_frame, label_counts, majority


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_planted_reliabilities(simulate, seed):
    planted = np.array([0.9, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35])
    frame, truth = simulate(list(planted), n_items=1200, per_item=4, seed=seed)
    raters = [f"r{r}" for r in range(len(planted))]
    estimated = dawid_skene(frame).reliability.loc[raters].to_numpy()
    # Accuracy does not depend on the true class here, so each rater's share of right labels is their reliability.
    right = np.sign(frame["preference"]).to_numpy() == truth[frame["item"]]
    realised = pd.Series(right, index=frame["rater"]).groupby(level=0).mean().loc[raters].to_numpy()
    np.testing.assert_allclose(estimated, realised, atol=0.05)
    np.testing.assert_allclose(estimated, planted, atol=0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beats_majority_vote_when_most_raters_are_noisy(simulate, seed):
    frame, truth = simulate([0.9] * 3 + [0.45] * 7, n_items=400, per_item=5, seed=seed)
    posterior = dawid_skene(frame).posterior
    weighted = posterior.to_numpy().argmax(axis=1) - 1
    counts = label_counts(judgment_frame(frame))
    votes = majority(counts.to_numpy())
    # A majority tie is scored as a coin toss among the tied labels.
    tied = (counts.to_numpy() == counts.to_numpy().max(axis=1, keepdims=True)).sum(axis=1)
    majority_accuracy = np.where(np.isnan(votes), 1 / tied, votes == truth).mean()
    assert (weighted == truth).mean() > majority_accuracy + 0.05


def test_estimates_are_probabilities(campaign):
    frame, _ = campaign
    competence = dawid_skene(frame)
    np.testing.assert_allclose(competence.posterior.sum(axis=1), 1.0)
    np.testing.assert_allclose(competence.confusion.sum(axis=2), 1.0)
    assert competence.priors.sum() == pytest.approx(1.0)
    assert list(competence.reliability.index) == sorted(frame["rater"].unique())
    assert len(competence.posterior) == frame["item"].nunique()


def test_a_rater_who_always_says_a_is_not_reliable(campaign):
    frame, _ = campaign
    frame = frame.copy()
    frame.loc[frame["rater"] == "r0", "preference"] = -2
    reliability = dawid_skene(frame).reliability
    assert reliability["r0"] < 0.55 < reliability.drop(["r0", "r6", "r7"]).min()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(-2, 2)), min_size=1, max_size=40))
def test_any_small_campaign_gives_finite_probabilities(rows):
    frame = pd.DataFrame(rows, columns=["item", "rater", "preference"])
    competence = dawid_skene(frame)
    assert np.isfinite(competence.posterior.to_numpy()).all()
    np.testing.assert_allclose(competence.posterior.sum(axis=1), 1.0)
    assert ((competence.reliability > 0) & (competence.reliability < 1)).all()
