import numpy as np
import pandas as pd
import pytest

from storage.quality.flags import REASONS, STATUSES, FlagArguments, campaign_flags, flag_raters
from storage.quality.raters import rater_table


@pytest.fixture
def planted(campaign):
    """The campaign with one planted problem per rater r0..r3; r4 and r5 are good, r6 and r7 are noisy."""
    frame, _ = campaign
    frame = frame.copy()
    rater = frame["rater"]
    # r0 always picks the response shown on the left.
    frame.loc[rater == "r0", "left"] = frame["preference"].map(lambda p: "a" if p < 0 else "b")
    # r1 calls four judgments in five a tie.
    frame.loc[(rater == "r1") & (frame.index % 5 != 0), "preference"] = 0
    # r2 answers in a second.
    frame.loc[rater == "r2", "time_on_task_s"] = 1.0
    # The first 30 items are calibration items where B is right; everyone gets them right but r3.
    calibration = {"item": list(range(30)), "accepted": [[1, 2]] * 30, "kind": ["safety"] * 30}
    on_calibration = frame["item"] < 30
    frame.loc[on_calibration, "preference"] = 1
    frame.loc[on_calibration & (rater == "r3"), "preference"] = -2
    return frame, calibration


def test_each_planted_problem_is_flagged_with_its_reason(planted):
    frame, calibration = planted
    flags = flag_raters(rater_table(frame, calibration=calibration))
    reasons = {rater: {r for r in REASONS if flags.loc[rater, r]} for rater in flags.index}
    assert reasons["r0"] == {"position_bias"}
    assert "many_ties" in reasons["r1"]
    assert reasons["r2"] == {"too_fast"}
    assert reasons["r3"] == {"low_calibration"}
    assert reasons["r4"] == set() and reasons["r5"] == set()
    assert reasons["r6"] == reasons["r7"] == {"low_competence"}
    assert flags["flagged"].to_dict() == {rater: bool(found) for rater, found in reasons.items()}


def test_few_judgments_flag_nothing_but_calibration(planted):
    frame, calibration = planted
    table = rater_table(frame, calibration=calibration)
    flags = flag_raters(table, FlagArguments(min_judgments=int(table["n_judgments"].max()) + 1))
    assert flags["flagged"].to_dict() == {rater: rater == "r3" for rater in flags.index}
    assert flags.loc["r3", "low_calibration"]
    # Everyone else waits for evidence: the planted problems are seen (pending), not flagged.
    assert (flags.drop(index="r3")["status"] == "not enough evidence yet").all()
    assert flags.loc["r0", "position_bias_pending"] and flags.loc["r2", "too_fast_pending"]
    assert not flags.loc["r4", [f"{reason}_pending" for reason in REASONS]].any()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_calibration_accuracy": 1.5}, "min_calibration_accuracy must lie in"),
        ({"left_rate_low": 0.7, "left_rate_high": 0.6}, "left_rate_low <= left_rate_high"),
        ({"min_judgments": 0}, "at least 1"),
        ({"correction": "sidak-ish"}, "correction must be one of"),
    ],
)
def test_bad_thresholds_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        FlagArguments(**changes)


def test_campaign_flags_use_the_campaigns_calibration_threshold_and_window(planted):
    frame, calibration = planted
    # r3 gets the last 3 of its 14 calibration answers right: the window decides whether the early misses still count.
    answers = frame.index[(frame["rater"] == "r3") & (frame["item"] < 30)]
    frame.loc[answers[-3:], "preference"] = 2

    def flags(threshold: float, window: int):
        return campaign_flags(frame, calibration, min_calibration_accuracy=threshold, calibration_window=window)

    table = flags(0.7, 20)
    assert set(REASONS) | {"flagged", "status", "calibration_recent_accuracy", "n_judgments"} <= set(table.columns)
    assert table.loc["r3", "low_calibration"] and table.loc["r0", "position_bias"]
    assert set(table.index[table["flagged"]]) == {"r0", "r1", "r2", "r3", "r6", "r7"}
    # Over the last 5 answers r3 has 3 right: 60% is under 70%, but five answers cannot show it is no chance.
    recent = flags(0.7, 5).loc["r3"]
    assert not recent["flagged"] and recent["low_calibration_pending"] and recent["status"] == STATUSES[1]
    assert not flags(0.0, 20).loc["r3", "flagged"]


def test_correction_across_raters_keeps_a_borderline_rater_unflagged(planted):
    frame, calibration = planted
    # r3 right on 5 of its 14 calibration answers: one-sided binomial p = 0.008 against 70%, alone significant, but
    # not once eight raters are tested (Holm: 0.066).
    answers = frame.index[(frame["rater"] == "r3") & (frame["item"] < 30)]
    frame.loc[answers[-5:], "preference"] = 2
    table = rater_table(frame, calibration=calibration)
    holm, alone = flag_raters(table), flag_raters(table, FlagArguments(correction="none"))
    assert alone.loc["r3", "low_calibration"] and alone.loc["r3", "low_calibration_p_corrected"] < 0.01
    assert not holm.loc["r3", "low_calibration"] and holm.loc["r3", "status"] == "not enough evidence yet"
    assert holm.loc["r3", "low_calibration_p_corrected"] > 0.05


def test_a_rater_picking_the_longer_response_is_flagged_for_length_bias(campaign):
    frame, _ = campaign
    rng = np.random.default_rng(1)
    frame = frame.assign(length_a=rng.integers(50, 1500, len(frame)), length_b=rng.integers(50, 1500, len(frame)))
    longer = np.sign(frame["length_b"] - frame["length_a"])
    frame.loc[frame["rater"] == "r5", "preference"] = longer * 2
    flags = flag_raters(rater_table(frame))
    assert flags["length_bias"].to_dict() == {rater: rater == "r5" for rater in flags.index}
    assert flags.loc["r5", "length_bias_p_corrected"] < 1e-6


def _lefty(n: int, left_share: float, rater: str, start: int) -> pd.DataFrame:
    """``n`` judgments by ``rater``, the left response chosen in ``left_share`` of them, response A always on the
    left; times and reasons alike, so only position differs."""
    chose_left = np.arange(n) < round(n * left_share)
    return pd.DataFrame(
        {"item": np.arange(start, start + n), "rater": rater, "preference": np.where(chose_left, -1, 1),
         "both_bad": False, "left": "a", "time_on_task_s": 30.0, "reasoning": ""}
    )  # fmt: skip


def test_a_rate_just_past_the_line_is_not_enough_evidence_but_far_past_it_is_a_flag():
    frame = pd.concat(
        [_lefty(200, 0.5, "fair", 0), _lefty(200, 0.63, "edge", 1000), _lefty(200, 0.78, "far", 2000)],
        ignore_index=True,
    )
    flags = flag_raters(rater_table(frame))
    assert flags["position_bias"].to_dict() == {"edge": False, "fair": False, "far": True}
    assert flags["status"].to_dict() == {"edge": STATUSES[1], "fair": STATUSES[2], "far": STATUSES[0]}
    # 63% of 200 is past 60%, but a rater whose true rate is 60% gets there one time in five.
    assert flags.loc["edge", "position_bias_pending"] and flags.loc["edge", "position_bias_p_corrected"] > 0.3
