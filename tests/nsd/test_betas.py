"""One session's betas: the volume's int16 scaled by 1/300, and the per-session z-score against scikit-learn."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from nsd.betas import read_session, zscore
from nsd.tree import RawNsdError


def test_volume_betas_are_int16_over_300(raw_nsd):
    path = raw_nsd.root / raw_nsd.volume_betas.format(s=1) / "betas_session02.nii.gz"
    raw = np.asarray(nib.load(path).dataobj)
    assert raw.dtype == np.int16
    mask = np.zeros(raw.shape[:3], dtype=bool)
    mask[1:4, 2, :] = True
    np.testing.assert_array_equal(read_session(path, mask, raw.shape[-1]), raw[mask].T / 300.0)
    with pytest.raises(RawNsdError, match=r"has 20 trials, expected 21"):
        read_session(path, mask, 21)


def test_zscore_matches_standard_scaler_with_constant_and_nan_columns():
    rng = np.random.default_rng(0)
    betas = rng.normal(3, 2, (40, 6))
    betas[:, 2] = 7.0  # constant: scaled by 1, as StandardScaler does
    betas[5, 4] = np.nan  # NaN ignored in the statistics and kept
    expected = StandardScaler().fit_transform(betas)
    np.testing.assert_allclose(zscore(betas), expected, rtol=1e-12, atol=1e-12)
    assert np.isnan(zscore(betas)[5, 4]) and np.isfinite(np.delete(zscore(betas)[:, 4], 5)).all()
