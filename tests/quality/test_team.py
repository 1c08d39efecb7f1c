"""A small team, simulated in the test: careful raters about 72% right, one rater of each bad kind, three per item.

The same kinds as benchmarks/rater_pool.py, without the database: the engine must flag every bad rater, for what
it does, and no careful one, on every seed; a team too new to judge is told to wait, not flagged.
"""

import numpy as np
import pandas as pd
import pytest

from storage.quality.flags import REASONS, STATUSES, flag_raters
from storage.quality.raters import rater_table

TEAM = ("careful",) * 6 + ("random", "position", "length", "tie_lazy")
SECONDS = {"careful": 45.0, "random": 5.0, "position": 25.0, "length": 15.0, "tie_lazy": 20.0}
EXPECTED = {"random": "too_fast", "position": "position_bias", "length": "length_bias", "tie_lazy": "many_ties"}


def _direction(kind: str, rng: np.random.Generator, truth: int, left: str, longer: int) -> int:
    """A/tie/B (-1, 0, +1) as a rater of ``kind`` answers; careful raters: 72% right, 6% tie, else wrong."""
    if kind == "random":
        return int(rng.integers(-1, 2))
    if kind == "position":
        picks_left = rng.random() < 0.85
        return -1 if picks_left == (left == "a") else 1
    if kind == "length":
        return longer
    if kind == "tie_lazy" and rng.random() < 0.6:
        return 0
    roll = rng.random()
    return truth if roll < 0.72 else 0 if roll < 0.78 else -truth


def simulate_team(seed: int, *, n_items: int = 250, k: int = 3) -> pd.DataFrame:
    """Judgments of ``TEAM`` (rater ids "careful-0" ..) on ``n_items`` pairs, ``k`` raters each, with lengths."""
    rng = np.random.default_rng(seed)
    names = [f"{kind}-{i}" for i, kind in enumerate(TEAM)]
    rows = []
    for item in range(n_items):
        truth, length_a, length_b = int(rng.choice([-1, 1])), *rng.integers(50, 1500, 2).tolist()
        for rater in rng.choice(len(TEAM), k, replace=False):
            kind, left = TEAM[rater], str(rng.choice(["a", "b"]))
            direction = _direction(kind, rng, truth, left, int(np.sign(length_b - length_a)))
            rows.append(
                {
                    "item": item, "rater": names[rater], "preference": direction * int(rng.integers(1, 3)),
                    "both_bad": False, "left": left, "reasoning": "",
                    "time_on_task_s": rng.lognormal(np.log(SECONDS[kind]), 0.5),
                    "length_a": length_a, "length_b": length_b,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(4))
def test_a_small_team_flags_each_bad_rater_for_what_it_does_and_no_careful_one(seed):
    frame = simulate_team(seed)
    flags = flag_raters(rater_table(frame))
    kinds = flags.index.str.rsplit("-", n=1).str[0]
    assert not flags.loc[kinds == "careful", "flagged"].any(), flags.loc[kinds == "careful", list(REASONS)]
    for rater, kind in zip(flags.index, kinds, strict=True):
        if kind != "careful":
            assert flags.loc[rater, EXPECTED[kind]], (rater, flags.loc[rater, list(REASONS)].to_dict())


def test_without_response_lengths_the_length_biased_rater_goes_unseen():
    # The length signal is what catches it: none of the other signals does, on this seed.
    flags = flag_raters(rater_table(simulate_team(0).drop(columns=["length_a", "length_b"])))
    assert not flags.loc["length-8", "flagged"] and flags.loc["position-7", "flagged"]


def test_a_team_that_has_just_started_is_told_to_wait_not_flagged():
    frame = simulate_team(1, n_items=40)  # about 12 judgments each: under the 20 every behaviour test needs
    flags = flag_raters(rater_table(frame))
    assert not flags["flagged"].any()
    assert (flags["status"] == STATUSES[1]).all()
    # The tie-lazy rater's ties are already visible, as pending, not as a flag.
    assert flags.loc["tie_lazy-9", "many_ties_pending"]
