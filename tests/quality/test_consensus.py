import numpy as np
import pandas as pd
import pytest

from storage.quality.consensus import item_consensus


def test_hand_computed_consensus():
    rows = [(1, "r1", -2), (1, "r2", -1), (1, "r3", -2), (2, "r1", -1), (2, "r2", 1)]
    rows += [(3, "r1", 0), (3, "r2", 0), (3, "r3", 2), (3, "r3", 0)]  # r3's repeat of item 3 does not count
    table = item_consensus(pd.DataFrame(rows, columns=["item", "rater", "preference"]))
    assert table["n_raters"].tolist() == [3, 2, 3]
    assert table["majority"].tolist() == [-1, pd.NA, 0]
    assert table["mean_preference"].tolist() == pytest.approx([-5 / 3, 0.0, 2 / 3])
    assert table["agreement"].tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(table[["p_a", "p_tie", "p_b"]].sum(axis=1), 1.0)
    assert table.loc[1, "weighted"] == -1
    assert (table["weighted"] == table[["p_a", "p_tie", "p_b"]].to_numpy().argmax(axis=1) - 1).all()


def test_weighted_consensus_beats_the_majority_when_most_raters_are_noisy(simulate):
    frame, truth = simulate([0.9] * 3 + [0.45] * 7, n_items=400, per_item=5, seed=3)
    table = item_consensus(frame)
    assert (table["weighted"].to_numpy() == truth).mean() > (table["majority"].to_numpy() == truth).mean()


def test_agreement_filters_towards_correct_labels(campaign):
    frame, truth = campaign
    table = item_consensus(frame)
    correct = pd.Series(table["majority"].to_numpy() == truth, index=table.index)
    unanimous = table["agreement"] == 1.0
    assert correct[unanimous].mean() > 0.95 > correct[~unanimous].mean()
