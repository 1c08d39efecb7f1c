"""A reward model as a judge: its agreement with the human majority, beside one rater's with the others'."""

import pandas as pd
import pytest

from storage.quality.evaluation import evaluation_report, votes
from storage.quality.judge import judge_agreement, judge_line, rater_agreement


def _frame(rows):
    return pd.DataFrame(rows, columns=["item", "rater", "preference", "model_a", "model_b", "category"]).assign(
        calibration=False
    )


# item 1: 3 votes for A; item 2: A, B, B (majority B); item 3: tie, A (majority A); item 4: A, B (no majority)
HUMANS = _frame([
    (1, 1, -1, "x", "y", None), (1, 2, -2, "x", "y", None), (1, 3, -1, "x", "y", None),
    (2, 1, -1, "y", "z", None), (2, 2, 1, "y", "z", None), (2, 3, 2, "y", "z", None),
    (3, 1, 0, "x", "z", None), (3, 2, -1, "x", "z", None),
    (4, 1, -1, "x", "y", None), (4, 2, 1, "x", "y", None),
])  # fmt: skip


def test_a_raters_agreement_with_the_others_majority_is_counted_by_hand():
    # item 1: each vote against two A votes: 3 agree. item 2: rater 1's A against B+B: no; each B against A+B: a tie,
    # not counted. item 3: the tie against A: no; A against a tie: not counted. item 4: each against the other: no x2.
    figures = rater_agreement(votes(HUMANS))
    assert figures["n"] == 3 + 1 + 1 + 2 and figures["rate"] == pytest.approx(3 / 7)
    assert figures["low"] < figures["rate"] < figures["high"]


def test_the_judge_is_counted_on_pairs_with_a_human_majority():
    margins = pd.Series({1: 0.8, 2: 0.3, 3: -0.1, 4: 2.0, 5: 1.0})  # item 5 no human judged; 4 has no majority
    figures = judge_agreement(votes(HUMANS), margins)
    assert figures["n"] == 3 and figures["rate"] == pytest.approx(1 / 3)  # A on 1 (right), A on 2, B on 3 (wrong)


def test_the_report_puts_the_judge_beside_the_humans():
    scored = pd.DataFrame({"item": [1, 2, 3, 4], "model_a": ["x", "y", "x", "x"], "model_b": ["y", "z", "z", "y"],
                           "margin": [0.8, -0.3, 0.1, 2.0]})  # fmt: skip
    report = evaluation_report(HUMANS, judge=("rm-1", scored), n_boot=50)
    judge = report["judge"]
    assert judge["run"] == "rm-1" and judge["n_pairs"] == 4 and judge["agreement"]["rate"] == 1.0
    human_order = [r["model"] for r in report["overall"]["ratings"]]
    assert [r["model"] for r in judge["ratings"]["ratings"]] == human_order == ["x", "z", "y"]
    assert judge["rank_correlation"] == pytest.approx(1.0)
    line = judge_line(judge)
    assert line.startswith("Reward model rm-1 as judge on 4 pairs: agrees with the human majority on 100%")
    assert "one rater with the others' majority: 43%" in line and "Rank correlation" in line
    assert evaluation_report(HUMANS, n_boot=50)["judge"] is None
