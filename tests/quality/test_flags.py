import pytest

from storage.quality.flags import REASONS, FlagArguments, campaign_flags, flag_raters
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
    assert not flags[["many_ties", "too_fast", "low_competence"]].any().any()
    assert flags.loc["r3", "low_calibration"] and flags.loc["r0", "position_bias"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_calibration_accuracy": 1.5}, "min_calibration_accuracy must lie in"),
        ({"left_rate_low": 0.7, "left_rate_high": 0.6}, "left_rate_low <= left_rate_high"),
        ({"min_judgments": 0}, "at least 1"),
    ],
)
def test_bad_thresholds_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        FlagArguments(**changes)


def test_campaign_flags_use_the_campaigns_calibration_threshold_and_window(planted):
    frame, calibration = planted
    # r3 gets the last 5 of its calibration answers right: the window decides whether the early misses still count.
    answers = frame.index[(frame["rater"] == "r3") & (frame["item"] < 30)]
    frame.loc[answers[-5:], "preference"] = 2

    def flagged(threshold: float, window: int) -> set[str]:
        flags = campaign_flags(frame, calibration, min_calibration_accuracy=threshold, calibration_window=window)
        return set(flags.index[flags["flagged"]])

    table = campaign_flags(frame, calibration, min_calibration_accuracy=0.7, calibration_window=20)
    assert set(REASONS) | {"flagged", "calibration_recent_accuracy", "n_judgments"} <= set(table.columns)
    assert table.loc["r3", "low_calibration"] and table.loc["r0", "position_bias"]
    assert flagged(0.7, 20) == {"r0", "r1", "r2", "r3", "r6", "r7"}
    assert "r3" not in flagged(0.7, 5) and "r3" not in flagged(0.0, 20)
