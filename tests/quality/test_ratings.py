"""Bradley-Terry ratings: hand-computed cases, and statsmodels' and sklearn's logistic regressions as references."""

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import binom
from sklearn.linear_model import LogisticRegression

from storage.quality.ratings import (
    SCALE,
    arena_ranks,
    fit_bt,
    fit_davidson,
    rate_models,
    resample,
    vote_cells,
    votes_to_separate,
)


def votes(*spec):
    """(a, b, outcome, times) -> three lists."""
    rows = [(a, b, outcome) for a, b, outcome, times in spec for _ in range(times)]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def random_votes(seed, n_models=5, n_votes=2000, tie_rate=0.2):
    rng = np.random.default_rng(seed)
    strength = rng.normal(size=n_models)
    a = rng.integers(0, n_models, n_votes)
    b = (a + rng.integers(1, n_models, n_votes)) % n_models
    p = 1 / (1 + np.exp(-(strength[a] - strength[b])))
    u = rng.random(n_votes)
    outcome = np.where(u < tie_rate, 0.5, np.where(rng.random(n_votes) < p, 1.0, 0.0))
    names = [f"model-{k}" for k in range(n_models)]
    return [names[k] for k in a], [names[k] for k in b], outcome, names


def reference_fit(i, j, counts, n_models):
    """statsmodels' GLM (IRLS): the share of half-credited wins per pairing, weighted by its votes; model 0 fixed."""
    design = np.zeros((len(i), n_models))
    design[np.arange(len(i)), i], design[np.arange(len(i)), j] = 1.0, -1.0
    total = counts.sum(axis=1)
    share = (counts[:, 0] + counts[:, 1] / 2) / total
    fit = sm.GLM(share, design[:, 1:], family=sm.families.Binomial(), var_weights=total).fit(tol=1e-14)
    theta = np.concatenate([[0.0], fit.params])
    return theta - theta.mean()


def test_hand_computed_three_models_ties_as_half_wins():
    # A-B: 3 A wins, 1 tie, 1 B win -> 3.5 : 1.5; B-C: 2 B wins, 2 ties -> 3 : 1; A and C never met.
    a, b, outcome = votes(("A", "B", 1, 3), ("B", "A", 0.5, 1), ("B", "A", 1, 1), ("C", "B", 0, 2), ("B", "C", 0.5, 2))
    i, j, counts = vote_cells(a, b, outcome, ["A", "B", "C"])
    theta = fit_bt(i, j, counts, 3, l2=0)
    gap_ab, gap_bc = math.log(3.5 / 1.5), math.log(3)
    expected = np.array([gap_ab, 0, -gap_bc]) - (gap_ab - gap_bc) / 3
    np.testing.assert_allclose(theta, expected, atol=1e-9)
    report = rate_models(a, b, outcome, n_boot=200, seed=1, l2=0)
    assert report["models"] == ["A", "B", "C"]
    np.testing.assert_allclose([r["rating"] for r in report["ratings"]], 1000 + SCALE * expected, atol=1e-6)
    rate = report["win_rate"]["rate"]
    assert rate[0, 1] == pytest.approx(3.5 / 5) and rate[1, 2] == pytest.approx(3 / 4) and np.isnan(rate[0, 2])


def test_two_models_bootstrap_interval_is_the_binomial_one():
    a, b, outcome = votes(("A", "B", 1, 70), ("A", "B", 0, 30))
    report = rate_models(a, b, outcome, n_boot=4000, seed=0, l2=0)
    top = report["ratings"][0]

    # A's rating is 1000 + SCALE * logit(k / 100) / 2 with k ~ Binomial(100, 0.7) in each replicate.
    def bound(q):
        return 1000 + SCALE * math.log(binom.ppf(q, 100, 0.7) / (100 - binom.ppf(q, 100, 0.7))) / 2

    assert top["rating"] == pytest.approx(1000 + SCALE * math.log(70 / 30) / 2, abs=1e-6)
    assert bound(0.015) <= top["low"] <= bound(0.035)
    assert bound(0.965) <= top["high"] <= bound(0.985)


def test_davidson_two_models_closed_form():
    # Two models: the saturated fit, theta_A - theta_B = log(W / L) and nu = T / sqrt(W L).
    i, j, counts = np.array([0]), np.array([1]), np.array([[30.0, 10.0, 20.0]])
    theta, nu = fit_davidson(i, j, counts, 2, l2=0)
    assert theta[0] - theta[1] == pytest.approx(math.log(30 / 20), abs=1e-8)
    assert nu == pytest.approx(10 / math.sqrt(600), abs=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_matches_statsmodels_logistic_regression(seed):
    a, b, outcome, names = random_votes(seed)
    i, j, counts = vote_cells(a, b, outcome, names)
    np.testing.assert_allclose(fit_bt(i, j, counts, len(names), l2=0), reference_fit(i, j, counts, len(names)),
                               atol=1e-6)  # fmt: skip


def test_ridge_fit_matches_sklearn_with_c_one_over_l2():
    a, b, outcome, names = random_votes(3, n_votes=300)
    i, j, counts = vote_cells(a, b, outcome, names)
    rows = np.zeros((len(i), len(names)))
    rows[np.arange(len(i)), i], rows[np.arange(len(i)), j] = 1.0, -1.0
    x, y = np.vstack([rows, rows]), np.r_[np.ones(len(i)), np.zeros(len(i))]
    weight = np.r_[counts[:, 0] + counts[:, 1] / 2, counts[:, 2] + counts[:, 1] / 2]
    model = LogisticRegression(C=1 / 0.5, fit_intercept=False, tol=1e-12, max_iter=100_000)
    model.fit(x, y, sample_weight=weight)
    np.testing.assert_allclose(fit_bt(i, j, counts, len(names), l2=0.5), model.coef_[0], atol=1e-6)


def test_intervals_match_a_reference_fit_of_every_bootstrap_replicate():
    a, b, outcome, names = random_votes(4, n_models=4, n_votes=1500)
    report = rate_models(a, b, outcome, n_boot=100, seed=7, l2=0)
    i, j, counts = vote_cells(a, b, outcome, names)
    replicates = np.array([reference_fit(i, j, r, len(names)) for r in resample(counts, 100, 7)])
    low, high = 1000 + SCALE * np.quantile(replicates, [0.025, 0.975], axis=0)
    by_name = {r["model"]: r for r in report["ratings"]}
    np.testing.assert_allclose([by_name[m]["low"] for m in names], low, atol=1e-6)
    np.testing.assert_allclose([by_name[m]["high"] for m in names], high, atol=1e-6)


def test_ranks_follow_chatbot_arena():
    low, high = np.array([10.0, 8, 1, 0]), np.array([14.0, 12, 9, 2])
    # Model 2's upper bound 9 is below model 0's lower bound 10 only; model 3's 2 below models 0's and 1's.
    assert arena_ranks(low, high).tolist() == [1, 1, 2, 3]


def test_votes_to_separate_scales_the_intervals_with_the_square_root_of_votes():
    rating, low, high = np.array([1100.0, 1050.0]), np.array([1040.0, 990.0]), np.array([1160.0, 1110.0])
    found = votes_to_separate(rating, low, high, 400, np.array([0, 1]))
    # Half-widths 60 + 60 against a gap of 50: widths must shrink by 50/120, votes grow by (120/50)^2.
    assert found == {"models": [0, 1], "separated": False, "votes": 400, "votes_needed": 2304, "more_votes": 1904}
    assert votes_to_separate(rating, low, high - 50, 400, np.array([0, 1]))["separated"] is False
    assert votes_to_separate(rating, low + 80, high, 400, np.array([0, 1]))["more_votes"] == 0


def test_a_model_that_never_lost_stays_finite_under_the_default_ridge():
    a, b, outcome = votes(("A", "B", 1, 10), ("B", "C", 1, 5), ("C", "B", 1, 5))
    report = rate_models(a, b, outcome, n_boot=50)
    assert all(np.isfinite([r["rating"], r["low"], r["high"]]).all() for r in report["ratings"])
    assert report["ratings"][0]["model"] == "A"
