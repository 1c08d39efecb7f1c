import numpy as np
import pandas as pd
import pytest

from storage.quality.consensus import (
    POLICIES,
    array_consensus,
    item_consensus,
    majority_consensus,
    mean_consensus,
    weighted_consensus,
)


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


def test_majority_and_mean_on_hand_built_cases():
    # items: 0 A by votes, 1 a draw between A and B, 2 tie votes win, 3 B, 4 no judgments, 5 a draw between A and tie
    items = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 5, 5])
    prefs = np.array([-2, -1, 1, 2, -1, 0, 0, 1, 1, 2, 2, -2, -1, 0])
    direction, strength = majority_consensus(items, prefs, 6)
    assert direction.tolist() == [-1, 0, 0, 1, 0, 0]
    assert strength.tolist() == pytest.approx([1.5, 0, 0, 5 / 3, 0, 0])
    direction, strength = mean_consensus(items, prefs, 6)
    assert direction.tolist() == [-1, 1, 1, 1, 0, -1]
    assert strength.tolist() == pytest.approx([2 / 3, 0.5, 1 / 3, 0.75, 0, 0.5])


def test_the_export_majority_and_the_quality_majority_share_one_draw_rule(campaign):
    frame, _ = campaign
    first = frame.drop_duplicates(["rater", "item"])
    direction, _ = majority_consensus(first["item"].to_numpy(), first["preference"].to_numpy(), 400)
    table = item_consensus(first)
    undecided = table["majority"].isna().to_numpy()
    assert undecided.any() and (direction[table.index][undecided] == 0).all()
    assert (direction[table.index][~undecided] == table["majority"][~undecided].to_numpy(int)).all()


def unreliable_outvote_reliable():
    """Three reliable raters (0-2) right on items 0..39, two unreliable ones (3, 4) guessing there; on item 40 the two
    unreliable raters outvote reliable rater 0."""
    rows = []
    for item in range(40):
        truth = 1 if item % 2 else -1
        rows += [(item, rater, truth * (1 + item % 3 % 2)) for rater in range(3)]
        rows += [(item, 3, [-1, 0, 1][item % 3]), (item, 4, [1, -1, 0][item % 3])]
    rows += [(40, 0, -2), (40, 3, 1), (40, 4, 2)]
    item, rater, preference = (np.array(column) for column in zip(*rows, strict=True))
    return item, rater, preference


def test_weighted_consensus_trusts_the_reliable_rater():
    item, rater, preference = unreliable_outvote_reliable()
    majority, _ = majority_consensus(item, preference, 41)
    direction, strength, confidence = weighted_consensus(item, preference, rater, 41)
    assert majority[40] == 1 and direction[40] == -1
    assert strength[40] == 2  # the mean |preference| of the judgments on the winning side: rater 0's alone
    assert confidence[40] > 0.8 and (direction[:40] == np.where(np.arange(40) % 2, 1, -1)).all()
    table = item_consensus({"item": item, "rater": rater, "preference": preference})
    assert (table["weighted"].to_numpy() == direction).all()  # one weighted label, in the table and in the arrays


def test_array_consensus_gives_agreement_and_confidence_per_policy():
    item, rater, preference = unreliable_outvote_reliable()
    n = 42  # item 41 has no judgment
    by_policy = {policy: array_consensus(policy, item_index=item, preference=preference, rater=rater, n_items=n)
                 for policy in POLICIES}  # fmt: skip
    assert by_policy["majority"]["agreement"][40] == pytest.approx(2 / 3)
    assert by_policy["weighted"]["agreement"][40] == pytest.approx(1 / 3)
    for policy in ("majority", "mean"):
        np.testing.assert_array_equal(by_policy[policy]["confidence"], by_policy[policy]["agreement"])
    weighted = by_policy["weighted"]
    assert 1 / 3 < weighted["confidence"][40] < 1 and weighted["direction"][41] == 0
    for labels in by_policy.values():
        assert np.isnan(labels["agreement"][41]) and np.isnan(labels["confidence"][41])
    with pytest.raises(ValueError, match="policy must be one of majority, mean, weighted; got 'vote'"):
        array_consensus("vote", item_index=item, preference=preference, rater=rater, n_items=n)
