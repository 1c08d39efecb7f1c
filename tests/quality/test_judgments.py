import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from storage.quality.judgments import COLUMNS, judgment_frame, majority, reliability_matrix


def _row(**changes):
    row = {"item": 1, "rater": "r1", "preference": 1, "both_bad": False, "left": "a", "time_on_task_s": 3.0}
    return {**row, "reasoning": "B cites a source", **changes}


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="missing column.*left"):
        judgment_frame(pd.DataFrame([_row()]).drop(columns="left"), columns=COLUMNS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("preference", 3),
        ("preference", None),
        ("left", "c"),
        ("both_bad", "maybe"),
        ("time_on_task_s", -1.0),
        ("time_on_task_s", "slow"),
        ("item", None),
        ("rater", None),
        ("reasoning", 5),
    ],
)
def test_bad_value_names_row_and_field(field, value):
    rows = [_row(), _row(rater="r2"), _row(**{field: value}), _row(**{field: value})]
    with pytest.raises(ValueError, match=rf"row 2: field '{field}' .* \(and 1 more rows\)"):
        judgment_frame(pd.DataFrame(rows), columns=COLUMNS)


def test_mapping_of_arrays_is_accepted_and_direction_added():
    frame = judgment_frame({"item": np.array([1, 1, 2]), "rater": np.array([1, 2, 1]), "preference": [-2, 0, 1.0]})
    assert frame["direction"].tolist() == [-1, 0, 1]
    assert frame["preference"].dtype.kind == "i"


def test_missing_reasoning_reads_as_empty():
    frame = judgment_frame(pd.DataFrame([_row(reasoning=None)]), columns=COLUMNS)
    assert frame["reasoning"].tolist() == [""]


def test_a_repeated_judgment_counts_once_in_the_matrix():
    frame = pd.DataFrame({"item": [7, 7, 7], "rater": ["r1", "r1", "r2"], "preference": [2, -2, 1]})
    matrix = reliability_matrix(frame)
    assert matrix.loc["r1", 7] == 2 and matrix.loc["r2", 7] == 1


def test_majority_needs_a_single_top_label():
    counts = np.array([[2, 1, 0], [1, 0, 1], [0, 0, 0], [0, 3, 1]])
    np.testing.assert_array_equal(majority(counts), [-1, np.nan, np.nan, 0])


matrices = hnp.arrays(
    float,
    st.tuples(st.integers(1, 5), st.integers(1, 12)),
    elements=st.sampled_from([-2.0, -1.0, 0.0, 1.0, 2.0, np.nan]),
)


@settings(max_examples=50, deadline=None)
@given(matrix=matrices, seed=st.integers(0, 2**16))
def test_long_table_round_trips_to_the_reliability_matrix(matrix, seed):
    raters, items = np.nonzero(~np.isnan(matrix))
    order = np.random.default_rng(seed).permutation(len(raters))
    long = pd.DataFrame({"item": items[order], "rater": raters[order], "preference": matrix[raters, items][order]})
    if long.empty:
        return
    rebuilt = reliability_matrix(long)
    expected = pd.DataFrame(matrix).loc[rebuilt.index, rebuilt.columns]
    assert set(rebuilt.index) == set(raters) and set(rebuilt.columns) == set(items)
    np.testing.assert_array_equal(rebuilt.to_numpy(), expected.to_numpy())
