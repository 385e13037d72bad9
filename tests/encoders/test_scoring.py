"""Scores against scipy / sklearn and the Algonauts challenge rules."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import r2_score as sk_r2_score

from encoders.scoring import (
    challenge_score,
    challenge_score_rows,
    constant_columns,
    pearson_r,
    r2_score,
    roi_medians,
)

rng = np.random.default_rng(0)
Y_TRUE = rng.standard_normal((80, 40)) * rng.uniform(0.1, 10, 40) + rng.uniform(-50, 50, 40)
Y_PRED = 0.3 * Y_TRUE + rng.standard_normal((80, 40)) * 5


def test_pearson_r_equals_scipy_per_column():
    expected = [stats.pearsonr(Y_TRUE[:, j], Y_PRED[:, j])[0] for j in range(40)]
    np.testing.assert_allclose(pearson_r(Y_TRUE, Y_PRED), expected, rtol=1e-6, atol=1e-12)
    as32 = pearson_r(Y_TRUE.astype(np.float32), Y_PRED.astype(np.float32))
    assert as32.dtype == np.float32
    np.testing.assert_allclose(as32, expected, atol=1e-5)
    np.testing.assert_allclose(pearson_r(Y_TRUE[:, 3], Y_PRED[:, 3]), expected[3:4], rtol=1e-6)


def test_pearson_r_torch_backend_agrees():
    result = pearson_r(torch.from_numpy(Y_TRUE), torch.from_numpy(Y_PRED), backend="torch")
    assert isinstance(result, torch.Tensor)
    np.testing.assert_allclose(result.numpy(), pearson_r(Y_TRUE, Y_PRED), rtol=1e-12)


def test_constant_columns_give_nan_silently_and_are_reported():
    y_true, y_pred = Y_TRUE.copy(), Y_PRED.copy()
    y_true[:, 2] = 7.1
    y_pred[:, 5] = -0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = pearson_r(y_true, y_pred)
        r2 = r2_score(y_true, y_pred)
    assert np.flatnonzero(np.isnan(r)).tolist() == [2, 5]
    assert np.flatnonzero(np.isnan(r2)).tolist() == [2]
    assert constant_columns(y_true).tolist() == [2]
    assert constant_columns(y_pred).tolist() == [5]
    assert np.all(np.abs(r[~np.isnan(r)]) <= 1)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"y_true has shape \(80, 40\) but y_pred has shape \(80, 39\)"):
        pearson_r(Y_TRUE, Y_PRED[:, 1:])
    with pytest.raises(ValueError, match="n_samples >= 2"):
        pearson_r(Y_TRUE[:1], Y_PRED[:1])


def test_r2_score_equals_sklearn():
    np.testing.assert_allclose(
        r2_score(Y_TRUE, Y_PRED), sk_r2_score(Y_TRUE, Y_PRED, multioutput="raw_values"), rtol=1e-10
    )


def official_score(y_true, y_pred, noise_ceiling):
    """The organisers' 03_test_encoding.py, as its text reads: a pearsonr loop, r < 0 -> 0, r^2, NC == 0 ->
    1e-14, 100 * r^2 / NC, capped at 100; the mean over vertices. Written here independently of the package."""
    correlation = np.zeros(y_true.shape[1])
    for v in range(y_true.shape[1]):
        correlation[v] = stats.pearsonr(y_true[:, v], y_pred[:, v])[0]
    correlation[correlation < 0] = 0
    r2 = correlation**2
    nc = noise_ceiling.copy()
    nc[nc == 0] = 1e-14
    score = np.divide(r2, nc) * 100
    score[score > 100] = 100
    return score, score.mean()


def test_challenge_score_equals_the_official_script():
    gen = np.random.default_rng(3)
    y_true = gen.standard_normal((60, 200))
    sign = np.where(np.arange(200) % 4 == 0, -1.0, 1.0)  # a quarter of the vertices correlate negatively
    y_pred = sign * y_true * gen.uniform(0, 1, 200) + gen.standard_normal((60, 200))
    nc = gen.uniform(0.05, 0.9, 200).astype(np.float32)
    nc[:10] = 0.0  # exactly 0: still counted
    nc[10:20] = 0.01  # far below r^2: capped at 100
    r = pearson_r(y_true, y_pred)
    per_vertex, mean = challenge_score(r, nc)
    expected, expected_mean = official_score(y_true, y_pred, nc.astype(np.float64))
    assert (r < 0).sum() > 30 and (per_vertex == 100).sum() >= 10 and (per_vertex == 0).sum() >= 30
    np.testing.assert_allclose(per_vertex, expected, rtol=1e-9, atol=1e-9)
    assert mean == pytest.approx(expected_mean, rel=1e-12)


def test_challenge_score_hand_computed_cases():
    r = np.array([0.5, -0.2, 0.9, 0.3, 0.0, 0.6])
    nc = np.array([0.5, 0.4, 0.6, 0.0, 0.0, 1.0])
    per_vertex, mean = challenge_score(r, nc)
    # 25/0.5 = 50; negative -> 0; 81/0.6 capped at 100; NC 0 with r > 0 -> 100; NC 0 with r = 0 -> 0; 36
    np.testing.assert_allclose(per_vertex, [50.0, 0.0, 100.0, 100.0, 0.0, 36.0])
    assert mean == pytest.approx(286.0 / 6)


def test_challenge_score_of_the_issue_example():
    """Fraction-unit ceilings, r between 0.2 and 0.9 of sqrt(NC): each vertex scores 100 q^2, so about 34, never
    the 99.9 that the percent convention made of the same data."""
    q = np.linspace(0.2, 0.9, 1001)
    nc = np.random.default_rng(0).uniform(0.1, 0.8, q.size)
    assert challenge_score(q * np.sqrt(nc), nc)[1] == pytest.approx(100 * np.mean(q**2))
    assert challenge_score(q * np.sqrt(nc), nc)[1] == pytest.approx(100 * (0.9**3 - 0.2**3) / (3 * 0.7), abs=0.01)


def test_challenge_score_counts_nan_r_as_zero_with_a_warning():
    y_true = rng.standard_normal((30, 4))
    y_pred = y_true.copy()
    y_pred[:, 1] = 2.0  # a constant prediction: scipy gives NaN r
    r = pearson_r(y_true, y_pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        assert np.isnan(r[1]) and np.isnan(stats.pearsonr(y_true[:, 1], y_pred[:, 1])[0])
    with pytest.warns(RuntimeWarning, match="1 of 4 vertices have r = NaN"):
        per_vertex, mean = challenge_score(r, np.full(4, 0.5))
    np.testing.assert_allclose(per_vertex, [100.0, 0.0, 100.0, 100.0])
    assert mean == 75.0


@pytest.mark.parametrize(
    "nc, match",
    [
        (np.array([50.0, 40.0, 0.0]), r"fraction in \[0, 1\].*from 0 to 50"),
        (np.array([0.5, -0.1, 0.2]), r"fraction in \[0, 1\].*from -0.1 to 0.5"),
        (np.array([0.5, np.nan, 0.2]), r"and NaN"),
        (np.array([0.5, 0.2]), "same length"),
    ],
)
def test_challenge_score_refuses_other_units_and_shapes(nc, match):
    with pytest.raises(ValueError, match=match):
        challenge_score(np.array([0.1, 0.2, 0.3]), nc)


def test_challenge_score_rows_equal_the_score_of_each_row():
    r = rng.uniform(-0.5, 1, (7, 30))
    r[2, 4] = np.nan
    nc = rng.uniform(0, 1, 30)
    expected = [challenge_score(np.nan_to_num(row), nc)[1] for row in r]
    np.testing.assert_allclose(challenge_score_rows(r, nc), expected, rtol=1e-12)


def test_roi_medians_ignore_nan_and_handle_empty_rois():
    r = rng.standard_normal(50)
    r[[3, 10]] = np.nan
    masks = {"V1": np.arange(50) < 20, "FFA-1": np.arange(50) % 3 == 0, "empty": np.zeros(50, bool)}
    medians = roi_medians(r, masks)
    assert medians["V1"] == pytest.approx(np.nanmedian(r[:20]))
    assert medians["FFA-1"] == pytest.approx(np.nanmedian(r[::3]))
    assert np.isnan(medians["empty"])
    with pytest.raises(ValueError, match="ROI mask 'V1' has shape"):
        roi_medians(r, {"V1": np.ones(49, bool)})
    with pytest.raises(ValueError, match="must be boolean"):
        roi_medians(r, {"V1": np.ones(50, int)})
