"""Bootstrap of median r: exact agreement with a slow scipy loop, nominal coverage, paired comparisons."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from encoders.bootstrap import bootstrap_median_r, paired_bootstrap, resample_indices


def _responses(n_images: int, n_vertices: int, rho: float | np.ndarray, seed: int):
    """Predictions and measurements with population correlation `rho` per vertex."""
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((n_images, n_vertices))
    rho = np.broadcast_to(rho, (n_vertices,))
    true = rho * pred + np.sqrt(1 - rho**2) * rng.standard_normal((n_images, n_vertices))
    return true.astype(np.float32), pred.astype(np.float32)


def _slow_medians(y_true, y_pred, indices, mask):
    """Reference: per resample, per vertex scipy.stats.pearsonr, then the median."""
    cols = np.flatnonzero(mask)
    y_true, y_pred = np.float64(y_true), np.float64(y_pred)
    return np.array(
        [np.median([pearsonr(y_true[idx, v], y_pred[idx, v])[0] for v in cols]) for idx in indices]
    )


def test_matches_slow_scipy_loop():
    y_true, y_pred = _responses(30, 7, np.linspace(0.1, 0.8, 7), seed=1)
    groups = {"first": np.arange(7) < 3, "all": np.ones(7, bool)}
    out = bootstrap_median_r(y_true, y_pred, groups=groups, n_boot=25, seed=3, batch_size=10)
    indices = resample_indices(30, 25, seed=3)
    for name, mask in groups.items():
        np.testing.assert_allclose(out[name].samples, _slow_medians(y_true, y_pred, indices, mask), atol=1e-9)
        full = np.median([pearsonr(*np.float64([y_true[:, v], y_pred[:, v]]))[0] for v in np.flatnonzero(mask)])
        assert out[name].estimate == pytest.approx(full, abs=1e-9)
        lo, hi = np.percentile(out[name].samples, [2.5, 97.5])
        assert (out[name].low, out[name].high) == pytest.approx((lo, hi))


def test_seeded_and_batch_size_independent():
    y_true, y_pred = _responses(40, 5, 0.5, seed=2)
    a = bootstrap_median_r(y_true, y_pred, n_boot=50, seed=7, batch_size=7)["all"]
    b = bootstrap_median_r(y_true, y_pred, n_boot=50, seed=7, batch_size=64)["all"]
    c = bootstrap_median_r(y_true, y_pred, n_boot=50, seed=8)["all"]
    np.testing.assert_allclose(a.samples, b.samples, atol=1e-12)
    assert not np.allclose(a.samples, c.samples)


def test_constant_vertex_is_ignored_and_empty_group_is_nan():
    y_true, y_pred = _responses(20, 4, 0.6, seed=3)
    y_true[:, 0] = 1.0
    out = bootstrap_median_r(
        y_true, y_pred, groups={"ok": np.array([0, 1, 1, 1], bool), "empty": np.zeros(4, bool)}, n_boot=20
    )
    ref = np.median([pearsonr(*np.float64([y_true[:, v], y_pred[:, v]]))[0] for v in (1, 2, 3)])
    assert out["ok"].estimate == pytest.approx(ref)
    assert np.isfinite(out["ok"].samples).all()
    assert np.isnan(out["empty"].estimate) and np.isnan(out["empty"].low)


def test_interval_covers_truth_at_about_nominal_rate():
    """One vertex: the statistic is r itself, whose percentile interval should cover rho ~90% of the time."""
    rho, hits, n_sim = 0.5, 0, 300
    for sim in range(n_sim):
        y_true, y_pred = _responses(80, 1, rho, seed=100 + sim)
        ci = bootstrap_median_r(y_true, y_pred, n_boot=300, level=0.9, seed=sim)["all"]
        hits += ci.low <= rho <= ci.high
    assert 0.8 <= hits / n_sim <= 0.96


def test_paired_bootstrap_same_resamples_and_direction():
    y_true, good = _responses(60, 9, 0.7, seed=4)
    rng = np.random.default_rng(5)
    bad = good + 1.5 * rng.standard_normal(good.shape).astype(np.float32)
    mask = np.arange(9) % 2 == 0
    better = paired_bootstrap(y_true, bad, good, mask=mask, n_boot=40, seed=11)
    indices = resample_indices(60, 40, seed=11)
    diff = _slow_medians(y_true, good, indices, mask) - _slow_medians(y_true, bad, indices, mask)
    np.testing.assert_allclose(better.difference.samples, diff, atol=1e-9)
    assert better.p_value == pytest.approx(np.mean(diff <= 0))
    assert better.difference.low > 0 and better.p_value < 0.05
    worse = paired_bootstrap(y_true, good, bad, mask=mask, n_boot=40, seed=11)
    assert worse.p_value > 0.95
    same = paired_bootstrap(y_true, good, good, n_boot=40)
    assert same.p_value == 1.0 and same.difference.estimate == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y_pred=np.zeros((10, 3))), r"shape \(n_images, n_vertices\)"),
        (dict(level=1.5), "level must be in"),
        (dict(n_boot=0), "n_boot must be"),
        (dict(groups={"roi": np.ones(2, bool)}), "group 'roi'"),
    ],
)
def test_bad_inputs(kwargs, match):
    y_true, y_pred = _responses(10, 4, 0.5, seed=0)
    args = dict(y_true=y_true, y_pred=y_pred) | kwargs
    with pytest.raises(ValueError, match=match):
        bootstrap_median_r(args.pop("y_true"), args.pop("y_pred"), **args)
