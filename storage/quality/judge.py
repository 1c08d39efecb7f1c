"""A reward model as a judge of an evaluation campaign, beside its human raters. Pure functions over frames.

The judge votes once on every scored pair between two models: A when its margin (score A minus score B) is positive,
B when negative. Its ratings come from those votes (storage.quality.ratings, as the humans'). Its agreement is
counted on the pairs whose human majority is not a tie: the share where the judge picks the majority's side, beside
the same figure for one human rater against the majority of the others (leave one out), which is the bar a judge
should meet before PPO trusts it. With three models or more, Spearman's rank correlation of the two ratings says
whether the judge orders the models as the humans do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from statsmodels.stats.proportion import proportion_confint

from storage.quality.ratings import rate_models


def _share(agree: np.ndarray) -> dict[str, Any]:
    n = len(agree)
    if not n:
        return {"rate": None, "low": None, "high": None, "n": 0}
    low, high = proportion_confint(int(agree.sum()), n, method="wilson")
    return {"rate": float(agree.mean()), "low": float(low), "high": float(high), "n": n}


def rater_agreement(kept: pd.DataFrame) -> dict[str, Any]:
    """One human vote against the majority of the others on its pair (their mean sign not a tie): how often the
    vote takes the majority's side (a tie vote does not)."""
    sign = np.sign(kept["preference"].to_numpy())
    totals = pd.Series(sign).groupby(kept["item"].to_numpy()).transform("sum").to_numpy()
    others = np.sign(totals - sign)
    counted = others != 0
    return _share(sign[counted] == others[counted])


def judge_agreement(kept: pd.DataFrame, margins: pd.Series) -> dict[str, Any]:
    """The judge (``margins`` by pair id, A minus B) against the human majority of each pair it scored."""
    majority = np.sign(kept.groupby("item")["preference"].apply(lambda p: np.sign(p).sum()))
    majority = majority[(majority != 0) & majority.index.isin(margins.index)]
    judged = -np.sign(margins.loc[majority.index].to_numpy())  # a positive margin is a vote for A: preference < 0
    return _share(judged == majority.to_numpy())


def judge_figures(kept: pd.DataFrame, pairs: pd.DataFrame, human: dict[str, Any], *, n_boot: int, seed: int) -> dict:
    """The judge's ratings and agreement. ``kept``: the humans' votes (storage.quality.evaluation.votes);
    ``pairs``: the scored pairs between two models (``item``, ``model_a``, ``model_b``, ``margin``); ``human``: the
    humans' overall ratings, for the rank correlation."""
    if pairs.empty:
        raise ValueError("the judge scored no pair between two different models")
    outcome = np.select([pairs["margin"] > 0, pairs["margin"] == 0], [1.0, 0.5], 0.0)
    ratings = rate_models(pairs["model_a"], pairs["model_b"], outcome, n_boot=n_boot, seed=seed)
    figures = {
        "n_pairs": len(pairs),
        "ratings": ratings,
        "rater_agreement": rater_agreement(kept),
        "agreement": judge_agreement(kept, pairs.set_index("item")["margin"]),
        "rank_correlation": None,
    }
    theirs = {row["model"]: row["rating"] for row in ratings["ratings"]}
    shared = [row["model"] for row in human["ratings"] if row["model"] in theirs]
    if len(shared) >= 3:
        ours = [next(r["rating"] for r in human["ratings"] if r["model"] == m) for m in shared]
        figures["rank_correlation"] = float(spearmanr(ours, [theirs[m] for m in shared]).statistic)
    return figures


def judge_line(judge: dict[str, Any]) -> str:
    """One sentence: the judge's agreement with the human majority beside a rater's."""
    ours, theirs = judge["agreement"], judge["rater_agreement"]

    def share(s: dict[str, Any]) -> str:
        return "n/a (no pair with a human majority)" if s["rate"] is None else (
            f"{s['rate']:.0%} [{s['low']:.0%}, {s['high']:.0%}] of {s['n']}")  # fmt: skip

    line = (f"Reward model {judge['run']} as judge on {judge['n_pairs']} pairs: agrees with the human majority on "
            f"{share(ours)}; one rater with the others' majority: {share(theirs)}.")  # fmt: skip
    if judge["rank_correlation"] is not None:
        line += f" Rank correlation of its ratings with the humans': {judge['rank_correlation']:.2f}."
    return line
