import itertools
import math

import krippendorff
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa

from storage.quality.agreement import campaign_agreement


def _long(matrix: np.ndarray) -> pd.DataFrame:
    """Raters x items matrix (NaN = not judged) -> long judgment table."""
    raters, items = np.nonzero(~np.isnan(matrix))
    return pd.DataFrame({"item": items, "rater": raters, "preference": matrix[raters, items].astype(int)})


def _random_matrix(seed: int, n_raters: int = 6, n_items: int = 80, missing: float = 0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Raters lean towards an item's latent direction, so agreement is neither 0 nor 1.
    latent = rng.integers(-2, 3, n_items)
    matrix = np.clip(latent + rng.integers(-1, 2, (n_raters, n_items)), -2, 2).astype(float)
    matrix[rng.random(matrix.shape) < missing] = np.nan
    return matrix


# Three raters, four items; rater 2 did not judge i4.
#        i1  i2  i3  i4
#   r0   -2  -1   0   1
#   r1   -1  -1   0   2
#   r2   -2   1   2   .
HAND = np.array([[-2, -1, 0, 1], [-1, -1, 0, 2], [-2, 1, 2, np.nan]])


def test_hand_computed_example():
    result = campaign_agreement(_long(HAND), n_boot=0)
    # Nominal, A/tie/B: i1 = A A A, i2 = A A B, i3 = T T B, i4 = B B. Coincidences, each ordered pair of an item's
    # values weighted 1/(m_u - 1): o_AA = 3 + 1 = 4, o_AB = o_BA = 1, o_TT = 1, o_TB = o_BT = 1, o_BB = 2.
    # n = 11 pairable values, n_A = 5, n_T = 2, n_B = 4. D_o = 4/11; D_e = (121 - 25 - 4 - 16) / (11 * 10) = 76/110.
    # alpha = 1 - (4/11) / (76/110) = 1 - 40/76 = 9/19.
    assert result.alpha_nominal.value == pytest.approx(9 / 19, abs=1e-12)
    # Ordinal, 5 points: o(-2,-2) = 1, o(-2,-1) = 1, o(-1,-1) = 1, o(-1,1) = 1, o(0,0) = 1, o(0,2) = 1, o(1,2) = 2
    # (symmetric), so n_v = 2, 3, 2, 2, 2 for -2..2, n = 11. delta(c, k) = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2:
    # delta(-2,-1) = 6.25, delta(-1,1) = 20.25, delta(0,2) = 16, delta(1,2) = 4, so sum o*delta = 2 * 46.5 = 93.
    # Over all c < k, sum n_c n_k delta(c, k) = 1166; sum e*delta = 2 * 1166 / (n - 1) = 233.2.
    # alpha = 1 - 93 / 233.2 = 701/1166.
    assert result.alpha_ordinal.value == pytest.approx(701 / 1166, abs=1e-12)
    # Fleiss: three raters is the modal count, so i4 is left out. P_i = 1, 1/3, 1/3: P = 5/9;
    # p = (5, 2, 2)/9: P_e = 33/81; kappa = (5/9 - 33/81) / (1 - 33/81) = 12/48 = 1/4.
    assert result.fleiss_kappa.value == pytest.approx(0.25, abs=1e-12)
    assert (result.fleiss_raters, result.fleiss_items, result.n_items) == (3, 3, 4)
    # Raw: pairs agreeing per item 3/3, 1/3, 1/3, 1/1 -> mean 2/3.
    assert result.raw_agreement.value == pytest.approx(2 / 3, abs=1e-12)
    assert math.isnan(result.alpha_nominal.low)


def test_perfect_agreement_scores_one():
    matrix = np.tile(np.array([-2, -1, 0, 1, 2, 2, -1, 0], dtype=float), (4, 1))
    result = campaign_agreement(_long(matrix), n_boot=0, min_shared=3)
    for estimate in (result.alpha_ordinal, result.alpha_nominal, result.fleiss_kappa, result.raw_agreement):
        assert estimate.value == pytest.approx(1.0)
    off_diagonal = result.cohen.to_numpy()[~np.eye(4, dtype=bool)]
    np.testing.assert_allclose(off_diagonal, 1.0)


def test_systematic_disagreement_is_negative():
    # Two raters who always pick opposite sides.
    first = np.array([-2, -1, 2, 1, -2, 1, -1, 2, -2, 1], dtype=float)
    result = campaign_agreement(_long(np.vstack([first, -first])), n_boot=0, min_shared=5)
    assert result.alpha_ordinal.value < 0 and result.alpha_nominal.value < 0 and result.fleiss_kappa.value < 0
    assert result.raw_agreement.value == 0
    assert result.cohen.loc[0, 1] == pytest.approx(-1.0)


def test_undefined_statistics_are_nan_not_errors():
    single = campaign_agreement(_long(np.array([[1.0, 2.0], [np.nan, np.nan]])), n_boot=10)
    assert single.n_items == 0 and math.isnan(single.alpha_ordinal.value) and math.isnan(single.fleiss_kappa.high)
    same = campaign_agreement(_long(np.ones((3, 5))), n_boot=10)
    assert math.isnan(same.alpha_nominal.value) and same.raw_agreement.value == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_matches_the_package_on_the_same_matrix(seed):
    matrix = _random_matrix(seed)
    result = campaign_agreement(_long(matrix), n_boot=0)
    ordinal = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
    nominal = krippendorff.alpha(reliability_data=np.sign(matrix), level_of_measurement="nominal")
    assert result.alpha_ordinal.value == pytest.approx(ordinal, abs=1e-6)
    assert result.alpha_nominal.value == pytest.approx(nominal, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        float,
        st.tuples(st.integers(2, 5), st.integers(2, 15)),
        elements=st.sampled_from([-2.0, -1.0, 0.0, 1.0, 2.0, np.nan]),
    )
)
def test_krippendorff_matches_the_package_on_any_matrix(matrix):
    result = campaign_agreement(_long(matrix), n_boot=0)
    pairable = ((~np.isnan(matrix)).sum(axis=0) >= 2).any()
    for level, values in (("ordinal", matrix), ("nominal", np.sign(matrix))):
        ours = getattr(result, f"alpha_{level}").value
        if not pairable or len(np.unique(values[~np.isnan(values)])) < 2:
            assert math.isnan(ours)  # the package refuses these inputs
            continue
        with np.errstate(invalid="ignore"):  # one value among the pairable ones: 0/0
            expected = krippendorff.alpha(reliability_data=values, level_of_measurement=level)
        assert ours == pytest.approx(expected, abs=1e-6, nan_ok=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_fleiss_matches_statsmodels_on_complete_data(seed):
    matrix = _random_matrix(seed, missing=0.0)
    table = np.stack([(np.sign(matrix) == value).sum(axis=0) for value in (-1, 0, 1)], axis=1)
    result = campaign_agreement(_long(matrix), n_boot=0)
    assert result.fleiss_kappa.value == pytest.approx(fleiss_kappa(table), abs=1e-6)
    assert result.fleiss_items == matrix.shape[1]


def test_fleiss_keeps_the_items_with_the_modal_number_of_raters():
    matrix = _random_matrix(3, n_raters=5, missing=0.3)
    counted = (~np.isnan(matrix)).sum(axis=0)
    modal = np.bincount(counted[counted >= 2]).argmax()
    kept = np.sign(matrix[:, counted == modal])
    table = np.stack([(kept == value).sum(axis=0) for value in (-1, 0, 1)], axis=1)
    result = campaign_agreement(_long(matrix), n_boot=0)
    assert (result.fleiss_raters, result.fleiss_items) == (modal, kept.shape[1])
    assert result.fleiss_kappa.value == pytest.approx(fleiss_kappa(table), abs=1e-6)


def test_cohen_matrix_matches_sklearn_on_shared_items():
    matrix = np.sign(_random_matrix(4, n_raters=5, n_items=60, missing=0.5))
    min_shared = 17
    result = campaign_agreement(_long(matrix), n_boot=0, min_shared=min_shared)
    checked = 0
    for a, b in itertools.permutations(range(5), 2):
        both = ~np.isnan(matrix[a]) & ~np.isnan(matrix[b])
        if both.sum() < min_shared:
            assert math.isnan(result.cohen.loc[a, b])
            continue
        expected = cohen_kappa_score(matrix[a, both], matrix[b, both])
        assert result.cohen.loc[a, b] == pytest.approx(expected, abs=1e-6)
        checked += 1
    assert 0 < checked < 20  # both branches ran


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    data = _long(_random_matrix(5, n_items=150))
    first = campaign_agreement(data, n_boot=300, seed=11)
    again = campaign_agreement(data, n_boot=300, seed=11)
    other = campaign_agreement(data, n_boot=300, seed=12)
    assert first.alpha_ordinal == again.alpha_ordinal and first.fleiss_kappa == again.fleiss_kappa
    assert first.alpha_ordinal.low != other.alpha_ordinal.low
    for estimate in (first.alpha_ordinal, first.alpha_nominal, first.fleiss_kappa, first.raw_agreement):
        assert estimate.low < estimate.value < estimate.high


def test_more_items_give_a_narrower_interval():
    small = campaign_agreement(_long(_random_matrix(6, n_items=40)), n_boot=200)
    large = campaign_agreement(_long(_random_matrix(6, n_items=640)), n_boot=200)
    width = lambda estimate: estimate.high - estimate.low  # noqa: E731
    assert width(large.alpha_ordinal) < width(small.alpha_ordinal) / 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="confidence=1.5"):
        campaign_agreement(_long(HAND), confidence=1.5)
