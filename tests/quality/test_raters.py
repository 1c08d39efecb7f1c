import math

import pandas as pd
import pytest
from scipy.stats import binomtest, mannwhitneyu

from storage.quality.raters import calibration_frame, rater_table

A, TIE, B = -1, 0, 1


def _judgments(*rows: tuple) -> pd.DataFrame:
    """(item, rater, preference) or (item, rater, preference, overrides) rows -> a full judgment table."""
    defaults = {"both_bad": False, "left": "a", "time_on_task_s": 10.0, "reasoning": ""}
    records = []
    for item, rater, preference, *extra in rows:
        records.append({"item": item, "rater": rater, "preference": preference, **defaults, **dict(*extra)})
    return pd.DataFrame(records)


@pytest.fixture
def small():
    # Items 1-3: r1 and r2 say A, r3 says B. Item 4: all say A, then r3 judges it again as B.
    # Item 5: r1 and r2 call it a tie, then r1 repeats the tie.
    rows = [(i, r, B if r == "r3" else A) for i in (1, 2, 3) for r in ("r1", "r2", "r3")]
    rows += [(4, "r1", A), (4, "r2", A), (4, "r3", A), (5, "r1", TIE), (5, "r2", TIE), (4, "r3", B), (5, "r1", TIE)]
    return _judgments(*rows)


def test_peer_agreement_uses_the_majority_of_the_others(small):
    table = rater_table(small)
    # r1 and r2 face a 1-1 split of peers on items 1-3 (no majority), and agree on items 4 and 5.
    assert table.loc["r1", ["peer_agreement", "n_peer_items"]].tolist() == [1.0, 2]
    assert table.loc["r2", ["peer_agreement", "n_peer_items"]].tolist() == [1.0, 2]
    # r3 is outvoted on items 1-3 and agrees on item 4 (its first judgment, A): 1 of 4.
    assert table.loc["r3", ["peer_agreement", "n_peer_items"]].tolist() == [0.25, 4]


def test_consistency_on_repeated_items(small):
    table = rater_table(small)
    assert table.loc["r1", ["consistency", "n_repeated"]].tolist() == [1.0, 1]
    assert table.loc["r3", ["consistency", "n_repeated"]].tolist() == [0.0, 1]
    assert math.isnan(table.loc["r2", "consistency"]) and table.loc["r2", "n_repeated"] == 0


def test_position_bias_counts_left_choices_among_non_ties():
    lefty = [(i, "lefty", A, {"left": "a"}) for i in range(20)]
    lefty += [(i, "lefty", B, {"left": "b"}) for i in range(20, 40)]
    lefty += [(i, "lefty", TIE) for i in range(40, 45)]
    fair = [(i, "fair", A, {"left": "a" if i % 2 else "b"}) for i in range(30)]
    table = rater_table(_judgments(*lefty, *fair))
    assert table.loc["lefty", ["n_decided", "left_rate"]].tolist() == [40, 1.0]
    assert table.loc["lefty", "position_p"] == pytest.approx(binomtest(40, 40).pvalue)
    assert table.loc["fair", ["left_rate", "position_p"]].tolist() == [0.5, 1.0]


def test_tie_and_both_bad_rates():
    rows = [(1, "r1", TIE), (2, "r1", A, {"both_bad": True}), (3, "r1", B, {"both_bad": True}), (4, "r1", B)]
    table = rater_table(_judgments(*rows))
    assert table.loc["r1", ["n_judgments", "tie_rate", "both_bad_rate"]].tolist() == [4, 0.25, 0.5]


def test_speed_is_relative_to_the_campaign_median():
    times = {"slow": [40.0, 60.0], "usual": [20.0, 20.0, 30.0], "fast": [2.0, 3.0]}
    rows = [(i, rater, A, {"time_on_task_s": t}) for rater, ts in times.items() for i, t in enumerate(ts)]
    table = rater_table(_judgments(*rows))
    # Campaign median of 2, 3, 20, 20, 30, 40, 60 is 20.
    assert table["median_time_s"].to_dict() == {"fast": 2.5, "slow": 50.0, "usual": 20.0}
    assert table["time_ratio"].to_dict() == {"fast": 0.125, "slow": 2.5, "usual": 1.0}


def test_reasoning_length_and_copy_paste():
    texts = {"r1": ["same", "same", "unique one"], "r2": ["copied", ""], "r3": [" copied ", "  "]}
    rows = [(i, rater, A, {"reasoning": text}) for rater, ts in texts.items() for i, text in enumerate(ts)]
    table = rater_table(_judgments(*rows))
    assert table["duplicate_reasoning_rate"].to_dict() == pytest.approx({"r1": 2 / 3, "r2": 1.0, "r3": 1.0})
    assert table["median_reasoning_chars"].to_dict() == {"r1": 4.0, "r2": 3.0, "r3": 3.0}


def test_calibration_accuracy_with_tolerance_by_kind_and_recent_window():
    calibration = {
        "item": [100, 101, 102],
        "accepted": [[-2, -1], [0], [1, 2]],
        "kind": ["safety", "sycophancy_trap", "factual_priority"],
    }
    rows = [(100, "r1", -1), (1, "r1", A), (101, "r1", 1), (102, "r1", 2), (1, "r2", A)]
    table = rater_table(_judgments(*rows), calibration=calibration, calibration_window=2)
    r1 = table.loc["r1"]
    assert r1["calibration_n"] == 3 and r1["calibration_accuracy"] == pytest.approx(2 / 3)
    assert r1["calibration_recent_accuracy"] == 0.5  # the last two: 101 wrong, 102 right
    by_kind = r1[["calibration_safety", "calibration_sycophancy_trap", "calibration_factual_priority"]]
    assert by_kind.tolist() == [1.0, 0.0, 1.0]
    assert table.loc["r2", "calibration_n"] == 0 and math.isnan(table.loc["r2", "calibration_accuracy"])


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({"item": [1], "accepted": [[]], "kind": ["safety"]}, "row 0 .*'accepted' must be a non-empty list"),
        ({"item": [1, 2], "accepted": [[0], [3]], "kind": ["safety", "safety"]}, r"row 1 \(item 2\).*-2..2"),
        ({"item": [1], "accepted": [[0]], "kind": [""]}, "field 'kind'"),
        ({"item": [1, 1], "accepted": [[0], [1]], "kind": ["safety", "safety"]}, "item 1 is listed twice"),
        ({"item": [1], "accepted": [[0]]}, "missing column.*kind"),
    ],
)
def test_bad_calibration_items_are_named(calibration, message):
    with pytest.raises(ValueError, match=message):
        calibration_frame(calibration)


def test_competence_separates_good_from_noisy_raters(campaign):
    frame, _ = campaign
    reliability = rater_table(frame)["reliability"]
    assert reliability[["r6", "r7"]].max() < 0.6 < reliability.drop(["r6", "r7"]).min()


def test_length_bias_counts_longer_picks_among_decided_judgments_of_unequal_length():
    # "long" picks the longer response 30 times in 30; "fair" half the time; ties and equal lengths do not count.
    long_rows = [
        (i, "long", A if i % 2 else B, {"length_a": 900 if i % 2 else 100, "length_b": 500}) for i in range(30)
    ]
    fair = [(i, "fair", A, {"length_a": 900 if i % 2 else 100, "length_b": 500}) for i in range(30)]
    extra = [(30, "fair", TIE, {"length_a": 10, "length_b": 900}), (31, "fair", B, {"length_a": 50, "length_b": 50})]
    table = rater_table(_judgments(*long_rows, *fair, *extra))
    assert table.loc["long", ["n_length", "longer_rate", "longer_rate_others"]].tolist() == [30, 1.0, 0.5]
    assert table.loc["fair", ["n_length", "longer_rate", "longer_rate_others"]].tolist() == [30, 0.5, 1.0]
    assert table.loc["long", "n_longer"] == 30 and table.loc["fair", "n_longer"] == 15


def test_length_signal_needs_both_lengths_and_refuses_bad_ones():
    rows = [(i, "r1", A) for i in range(5)]
    assert "longer_rate" not in rater_table(_judgments(*rows)).columns  # older frames carry no lengths
    with pytest.raises(ValueError, match="'length_b' must be a number of characters >= 0"):
        rater_table(_judgments(*[(i, "r1", A, {"length_a": 5, "length_b": -1}) for i in range(5)]))


def test_ties_agreement_and_speed_are_set_against_the_other_raters():
    # "lazy" ties on 18 of 20 items, answers in 2 s and disagrees with the three others, who agree on every item.
    rows = [(i, r, A, {"time_on_task_s": 30.0 + i}) for i in range(20) for r in ("r1", "r2", "r3")]
    rows += [(i, "lazy", TIE if i < 18 else B, {"time_on_task_s": 2.0}) for i in range(20)]
    table = rater_table(_judgments(*rows))
    lazy = table.loc["lazy"]
    assert lazy[["n_ties", "tie_rate", "tie_rate_others"]].tolist() == [18, 0.9, 0.0]
    assert lazy[["n_peer_agreed", "peer_agreement", "peer_agreement_others"]].tolist() == [0, 0.0, 1.0]
    others = [t for i in range(20) for t in (30.0 + i,) * 3]
    assert lazy["speed_p"] == pytest.approx(mannwhitneyu([2.0] * 20, others, alternative="less").pvalue)
    assert table.loc["r1", "speed_p"] > 0.5
