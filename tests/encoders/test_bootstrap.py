"""Bootstrap of median r: exact agreement with a slow scipy loop, nominal coverage, paired comparisons."""

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr

from encoders.bootstrap import (
    MIN_IMAGES,
    BootstrapIntervalWarning,
    bootstrap_median_r,
    paired_bootstrap,
    percentile_interval,
    resample_indices,
)


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
    return np.array([np.median([pearsonr(y_true[idx, v], y_pred[idx, v])[0] for v in cols]) for idx in indices])


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


@pytest.mark.parametrize("level", [0.8, 0.9])
def test_bounds_are_the_percentiles_of_the_seeded_resamples_at_the_level(level):
    """The documented seed reproduces the resamples; the bounds are their percentiles at (1 -+ level) / 2."""
    y_true, good = _responses(30, 7, np.linspace(0.1, 0.8, 7), seed=1)
    bad = good + np.random.default_rng(2).standard_normal(good.shape).astype(np.float32)
    indices = resample_indices(30, 60, seed=5)
    every = np.ones(7, bool)
    slow = {"a": _slow_medians(y_true, bad, indices, every), "b": _slow_medians(y_true, good, indices, every)}
    slow["difference"] = slow["b"] - slow["a"]
    tail = (1 - level) / 2 * 100
    single = bootstrap_median_r(y_true, good, n_boot=60, level=level, seed=5)["all"]
    paired = paired_bootstrap(y_true, bad, good, n_boot=60, level=level, seed=5)
    for name, ci in (("b", single), ("a", paired.a), ("b", paired.b), ("difference", paired.difference)):
        np.testing.assert_allclose(ci.samples, slow[name], atol=1e-9)
        assert ci.level == level
        assert (ci.low, ci.high) == pytest.approx(tuple(np.percentile(slow[name], [tail, 100 - tail])), abs=1e-12)
        # the level matters: the default 95 % bounds are elsewhere
        assert (ci.low, ci.high) != pytest.approx(tuple(np.percentile(slow[name], [2.5, 97.5])), abs=1e-6)


def test_too_few_images_give_nan_bounds_and_a_warning():
    y_true, y_pred = _responses(4, 5, 0.6, seed=6)
    with pytest.warns(
        BootstrapIntervalWarning,
        match=r"4 validation images are too few for a bootstrap interval "
        rf"\(at least {MIN_IMAGES}\); the bounds are NaN",
    ):
        ci = bootstrap_median_r(y_true, y_pred, n_boot=50)["all"]
    assert np.isnan(ci.low) and np.isnan(ci.high)
    assert np.isfinite(ci.estimate) and ci.samples.shape == (50,)
    with pytest.warns(BootstrapIntervalWarning, match="4 validation images are too few"):
        paired = paired_bootstrap(y_true, y_pred, y_pred[::-1], n_boot=50)
    assert np.isnan(paired.p_value)
    for ci in (paired.a, paired.b, paired.difference):
        assert np.isnan(ci.low) and np.isnan(ci.high) and np.isfinite(ci.estimate)
    y_true, y_pred = _responses(MIN_IMAGES, 5, 0.6, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BootstrapIntervalWarning)
        ci = bootstrap_median_r(y_true, y_pred, n_boot=50)["all"]
    assert ci.low <= ci.estimate <= ci.high


def test_an_interval_that_would_exclude_its_estimate_is_nan():
    """Median r of 200 vertices at rho=0.9 from 10 images: the resamples' medians are biased upwards by more than
    their spread, and the 95 % percentile interval would lie above the estimate."""
    y_true, y_pred = _responses(10, 200, 0.9, seed=16)
    with pytest.warns(
        BootstrapIntervalWarning,
        match=r"the 95% bootstrap interval \[0.9076, 0.9333\] excludes its "
        r"estimate 0.9066",
    ):
        ci = bootstrap_median_r(y_true, y_pred, n_boot=200, seed=16)["all"]
    assert ci.estimate < np.percentile(ci.samples, 2.5)
    assert np.isnan(ci.low) and np.isnan(ci.high)
    # percentile_interval itself gives the bounds whatever the estimate (the leaderboard passes a placeholder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BootstrapIntervalWarning)
        outside = percentile_interval(0.0, np.array([0.1, 0.2, np.nan, 0.3]), 0.9)
    assert (outside.low, outside.high) == pytest.approx((0.11, 0.29))


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
