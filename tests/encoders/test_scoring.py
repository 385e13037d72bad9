"""Scores against scipy / sklearn and the Algonauts challenge rules."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import r2_score as sk_r2_score

from encoders.scoring import constant_columns, noise_normalized_score, pearson_r, r2_score, roi_medians

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
    np.testing.assert_allclose(r2_score(Y_TRUE, Y_PRED), sk_r2_score(Y_TRUE, Y_PRED, multioutput="raw_values"),
                               rtol=1e-10)


def test_noise_normalized_score_follows_the_challenge_rules():
    r = np.array([0.5, -0.2, 0.9, np.nan, 0.3])
    ceiling = np.array([50.0, 40.0, 60.0, 80.0, 0.0])
    per_vertex, mean_percent = noise_normalized_score(r, ceiling)
    # 0.25 / 0.5; negative r -> 0; 0.81 / 0.6 capped at 1; NaN r -> 0; zero ceiling excluded
    np.testing.assert_allclose(per_vertex, [0.5, 0.0, 1.0, 0.0, np.nan])
    assert mean_percent == pytest.approx(37.5)
    with pytest.raises(ValueError, match="same length"):
        noise_normalized_score(r, ceiling[:4])


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
