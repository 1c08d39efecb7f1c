"""Bradley-Terry ratings of models from pairwise votes, as Chatbot Arena reports them: pure functions over arrays.

A vote is (model A, model B, outcome): 1 A won, 0.5 tie, 0 B won. Votes are pooled into cells, one per pairing of
models, counting the first model's wins, the ties and its losses.

- ``fit_bt``: Bradley-Terry, P(i beats j) = sigmoid(theta_i - theta_j), a tie counted as half a win for each side
  (Chatbot Arena's reading): a logistic regression without intercept on +1/-1 model indicators, fitted by Newton's
  method (scipy's trust-exact) to a gradient below 1e-10.
- ``fit_davidson``: Davidson's (1970) tie model, P(i beats j) = pi_i / (pi_i + pi_j + nu sqrt(pi_i pi_j)) and
  P(tie) = nu sqrt(pi_i pi_j) / (...), with pi = exp(theta): ties are evidence of closeness rather than half wins,
  and nu says how often the raters call ties. Chosen over Rao-Kupper because its likelihood equations still credit
  each tie as half a win, so its ratings stay close to the half-win fit while it fits the tie rate too.

Theta is on the natural log-odds scale and sums to zero; ratings are shown as Arena does, 1000 + 400/ln(10) theta
(a 400-point gap: 10:1 odds). ``l2`` adds (l2 / 2) |theta|^2 to the loss (sklearn's ``C = 1 / l2``): the default
0.01 is a N(0, 10^2) prior on each log-strength, negligible beside a few dozen votes, which keeps a model that never
lost at a finite rating. Intervals are percentile bootstrap intervals over votes resampled with replacement
(``resample``, seeded). A model's rank is 1 + the number of models whose lower bound exceeds its upper bound.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log1p

SCALE, BASE_RATING = 400 / math.log(10), 1000.0
L2 = 0.01
GTOL = 1e-10


def vote_cells(model_a: Sequence[str], model_b: Sequence[str], outcome: Sequence[float], models: Sequence[str]):
    """(i, j, counts): the pairing of model i < model j of each cell, and counts[:, 0..2] = i's wins, ties, j's wins.
    Votes of a model against itself are refused."""
    index = {name: k for k, name in enumerate(models)}
    a, b = np.array([index[m] for m in model_a], int), np.array([index[m] for m in model_b], int)
    outcome = np.asarray(outcome, float)
    if (a == b).any():
        raise ValueError("a vote between a model and itself says nothing of their ratings")
    if not np.isin(outcome, (0.0, 0.5, 1.0)).all():
        raise ValueError("outcomes must be 1 (A won), 0.5 (tie) or 0 (B won)")
    i, j = np.minimum(a, b), np.maximum(a, b)
    first_won = np.where(a == i, outcome, 1 - outcome)  # 1: the cell's first model won
    column = np.select([first_won == 1, first_won == 0.5], [0, 1], 2)
    cells, where = np.unique(np.stack([i, j]), axis=1, return_inverse=True)
    counts = np.zeros((cells.shape[1], 3))
    np.add.at(counts, (where.ravel(), column), 1)
    return cells[0], cells[1], counts


def _basis(n: int) -> np.ndarray:
    """theta = basis @ z keeps sum(theta) = 0 with n - 1 free parameters."""
    return np.vstack([-np.ones(n - 1), np.eye(n - 1)])


def _connected(i: np.ndarray, j: np.ndarray, n: int) -> bool:
    reached, frontier = {0}, [0]
    while frontier:
        node = frontier.pop()
        for other in np.concatenate([j[i == node], i[j == node]]).tolist():
            if other not in reached:
                reached.add(other)
                frontier.append(other)
    return len(reached) == n


def fit_bt(i, j, counts, n_models: int, *, l2: float = L2, start=None) -> np.ndarray:
    """Bradley-Terry log-strengths (sum zero), ties as half wins; see the module."""
    wins, losses = counts[:, 0] + counts[:, 1] / 2, counts[:, 2] + counts[:, 1] / 2
    if l2 == 0 and not _connected(i[counts.sum(axis=1) > 0], j[counts.sum(axis=1) > 0], n_models):
        raise ValueError("some models were never compared with the others, directly or through a chain of models")
    basis = _basis(n_models)
    design = np.zeros((len(i), n_models))
    design[np.arange(len(i)), i], design[np.arange(len(i)), j] = 1.0, -1.0
    x = design @ basis

    def loss(z):
        margin, theta = x @ z, basis @ z
        p = expit(margin)
        value = -(wins * -log1p(np.exp(-margin)) + losses * -log1p(np.exp(margin))).sum() + l2 / 2 * theta @ theta
        gradient = -x.T @ (wins * (1 - p) - losses * p) + l2 * basis.T @ theta
        return value, gradient

    def hessian(z):
        p = expit(x @ z)
        return (x.T * ((wins + losses) * p * (1 - p))) @ x + l2 * basis.T @ basis

    z0 = np.zeros(n_models - 1) if start is None else np.asarray(start, float)[1:]  # theta[1:] is z
    found = minimize(loss, z0, jac=True, hess=hessian, method="trust-exact", options={"gtol": GTOL})
    return basis @ found.x


def fit_davidson(i, j, counts, n_models: int, *, l2: float = L2, start=None) -> tuple[np.ndarray, float]:
    """Davidson's tie model: (log-strengths summing to zero, nu); nu is 0 when nobody called a tie. ``start``: the
    Bradley-Terry fit of the same counts, if at hand."""
    if start is None:
        start = fit_bt(i, j, counts, n_models, l2=l2)
    wins, ties, losses = counts[:, 0], counts[:, 1], counts[:, 2]
    if ties.sum() == 0:
        return np.asarray(start), 0.0
    basis, total = _basis(n_models), counts.sum(axis=1)
    design = np.zeros((len(i), n_models))
    design[np.arange(len(i)), i], design[np.arange(len(i)), j] = 0.5, -0.5  # half the gap: d = (theta_i - theta_j) / 2
    x = design @ basis

    def terms(params):
        d, nu = x @ params[:-1], math.exp(params[-1])
        up, down = np.exp(d), np.exp(-d)
        return d, nu, up, down, up + down + nu

    def loss(params):
        d, nu, up, down, s = terms(params)
        theta = basis @ params[:-1]
        value = -((wins - losses) * d + ties * params[-1] - total * np.log(s)).sum() + l2 / 2 * theta @ theta
        grad_d = -(wins - losses) + total * (up - down) / s
        grad_nu = (-ties + total * nu / s).sum()
        return value, np.concatenate([x.T @ grad_d + l2 * basis.T @ theta, [grad_nu]])

    def hessian(params):
        d, nu, up, down, s = terms(params)
        dd = total * ((up + down) * s - (up - down) ** 2) / s**2
        d_nu = -total * (up - down) * nu / s**2
        top = np.hstack([(x.T * dd) @ x + l2 * basis.T @ basis, (x.T @ d_nu)[:, None]])
        return np.vstack([top, np.append(x.T @ d_nu, (total * nu * (s - nu) / s**2).sum())])

    begin = np.append(np.asarray(start, float)[1:], 0.0)
    found = minimize(loss, begin, jac=True, hess=hessian, method="trust-exact", options={"gtol": GTOL})
    return basis @ found.x[:-1], math.exp(found.x[-1])


def resample(counts: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the cell counts: the votes drawn again with replacement, as many as there
    were (one multinomial draw over every cell and outcome)."""
    total = int(counts.sum())
    draws = np.random.default_rng(seed).multinomial(total, counts.ravel() / total, size=n_boot)
    return draws.reshape(n_boot, *counts.shape).astype(float)


def arena_ranks(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Chatbot Arena's rank: 1 + the number of models whose lower bound is above this model's upper bound."""
    return 1 + (low[None, :] > high[:, None]).sum(axis=1)


def win_rates(i, j, counts, n_models: int) -> tuple[np.ndarray, np.ndarray]:
    """(rate, votes): rate[a, b] is a's share of its votes against b, ties as half; NaN where they never met."""
    rate, votes = np.full((n_models, n_models), np.nan), np.zeros((n_models, n_models))
    n = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        first = (counts[:, 0] + counts[:, 1] / 2) / n
    rate[i, j], rate[j, i] = first, 1 - first
    votes[i, j] = votes[j, i] = n
    rate[votes == 0] = np.nan
    return rate, votes


def votes_to_separate(rating, low, high, n_votes: int, order: np.ndarray) -> dict[str, Any]:
    """How many votes in all the top two need before their intervals part, if the gap stays as estimated and the
    intervals narrow as 1 / sqrt(votes) (more votes in the same mix of pairings)."""
    first, second = order[0], order[1]
    gap, spread = rating[first] - rating[second], (rating[first] - low[first]) + (high[second] - rating[second])
    separated = bool(low[first] > high[second])
    needed = n_votes if separated else (math.ceil(n_votes * (spread / gap) ** 2) if gap > 0 else None)
    return {"models": [int(first), int(second)], "separated": separated, "votes": n_votes, "votes_needed": needed,
            "more_votes": None if needed is None else max(needed - n_votes, 0)}  # fmt: skip


def _interval(replicates: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():  # two models that never met: NaN, said so in the report
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(replicates, [alpha, 1 - alpha], axis=0)
    return low, high


def to_rating(theta: np.ndarray) -> np.ndarray:
    return BASE_RATING + SCALE * np.asarray(theta)


def _refit(i, j, counts, n_models: int, l2: float, start: np.ndarray) -> np.ndarray:
    """A replicate's fit; NaN (left out of the intervals) where, without a ridge, it left a model unconnected."""
    try:
        return fit_bt(i, j, counts, n_models, l2=l2, start=start)
    except ValueError:
        return np.full(n_models, np.nan)


def _per_model(models, rating, low, high, i, j, counts) -> list[dict[str, Any]]:
    n = len(models)
    totals = np.zeros((n, 3))
    np.add.at(totals, i, counts)
    np.add.at(totals, j, counts[:, ::-1])
    return [
        {"model": models[m], "rating": rating[m], "low": low[m], "high": high[m], "votes": int(totals[m].sum()),
         "wins": int(totals[m, 0]), "ties": int(totals[m, 1]), "losses": int(totals[m, 2]),
         "win_rate": (totals[m, 0] + totals[m, 1] / 2) / totals[m].sum()}
        for m in range(n)
    ]  # fmt: skip


def rate_models(
    model_a: Sequence[str], model_b: Sequence[str], outcome: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
    confidence: float = 0.95, l2: float = L2,
) -> dict[str, Any]:  # fmt: skip
    """Ratings, intervals, ranks, the win-rate matrix, Davidson's tie model and the votes the top two need to part;
    models in rating order, plain Python values (NaN where two models never met)."""
    models = sorted(set(model_a) | set(model_b))
    if len(models) < 2:
        raise ValueError(f"ratings need votes between two models or more; got {models}")
    n = len(models)
    i, j, counts = vote_cells(model_a, model_b, outcome, models)
    theta, replicates = fit_bt(i, j, counts, n, l2=l2), resample(counts, n_boot, seed)
    boot = np.array([_refit(i, j, r, n, l2, theta) for r in replicates])
    low, high = (to_rating(bound) for bound in _interval(boot, confidence))
    rating = to_rating(theta)
    davidson, nu = fit_davidson(i, j, counts, n, l2=l2, start=theta)
    boot_davidson = [fit_davidson(i, j, r, n, l2=l2, start=t) if np.isfinite(t).all() else (t, math.nan)
                     for r, t in zip(replicates, boot, strict=True)]  # fmt: skip
    d_low, d_high = _interval(np.array([t for t, _ in boot_davidson]), confidence)
    nu_low, nu_high = _interval(np.array([v for _, v in boot_davidson]), confidence)
    rate, votes = win_rates(i, j, counts, n)
    rate_low, rate_high = _interval(np.array([win_rates(i, j, r, n)[0] for r in replicates]), confidence)
    order = np.argsort(-rating, kind="stable")
    ranks = arena_ranks(low, high)
    rows = _per_model(models, rating, low, high, i, j, counts)
    for m, row in enumerate(rows):
        row |= {"rank": int(ranks[m]), "davidson": to_rating(davidson[m]), "davidson_low": to_rating(d_low[m]),
                "davidson_high": to_rating(d_high[m])}  # fmt: skip
    separation = votes_to_separate(rating, low, high, int(counts.sum()), order)
    separation["models"] = [models[m] for m in separation["models"]]
    pick = np.ix_(order, order)
    return {
        "models": [models[m] for m in order], "n_votes": int(counts.sum()), "n_boot": n_boot,
        "n_boot_unconnected": int(np.isnan(boot).any(axis=1).sum()),
        "confidence": confidence, "l2": l2, "ratings": [rows[m] for m in order],
        "win_rate": {"rate": rate[pick], "low": rate_low[pick], "high": rate_high[pick], "votes": votes[pick]},
        "predicted": expit(theta[:, None] - theta[None, :])[pick],
        "tie_model": {"name": "davidson", "nu": nu, "nu_low": float(nu_low), "nu_high": float(nu_high),
                      "tie_rate": float(counts[:, 1].sum() / counts.sum())},
        "separation": separation,
    }  # fmt: skip
