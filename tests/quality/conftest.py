"""Simulated campaigns with planted rater accuracies, shared by the quality tests."""

import numpy as np
import pandas as pd
import pytest


def simulate_campaign(
    accuracies: list[float],
    *,
    n_items: int = 300,
    per_item: int = 5,
    seed: int = 0,
    priors: tuple[float, float, float] = (0.45, 0.1, 0.45),
) -> tuple[pd.DataFrame, np.ndarray]:
    """Judgments where rater r gives the true A/tie/B direction with probability accuracies[r], else another one.

    Returns the judgment table (rows in the order they were made) and the true direction of each item.
    """
    rng = np.random.default_rng(seed)
    truth = rng.choice([-1, 0, 1], size=n_items, p=priors)
    item = np.repeat(np.arange(n_items), per_item)
    rater = np.concatenate([rng.choice(len(accuracies), per_item, replace=False) for _ in range(n_items)])
    right = rng.random(len(item)) < np.asarray(accuracies)[rater]
    # A wrong label is one of the two other directions, each as likely: (truth + 1 or 2) mod 3.
    wrong = (truth[item] + 1 + rng.integers(1, 3, len(item))) % 3 - 1
    direction = np.where(right, truth[item], wrong)
    frame = pd.DataFrame(
        {
            "item": item,
            "rater": [f"r{r}" for r in rater],
            "preference": direction * rng.integers(1, 3, len(item)),
            "both_bad": rng.random(len(item)) < 0.05,
            "left": rng.choice(["a", "b"], len(item)),
            "time_on_task_s": rng.gamma(4.0, 10.0, len(item)),
            "reasoning": [f"reason {i}" for i in range(len(item))],
        }
    )
    return frame, truth


@pytest.fixture
def simulate():
    """The simulator itself, for tests that plant their own raters."""
    return simulate_campaign


@pytest.fixture
def campaign():
    """Eight raters, two of them close to random (accuracy 0.35), three raters per item, 400 items."""
    return simulate_campaign([0.85] * 6 + [0.35] * 2, n_items=400, per_item=3, seed=7)
