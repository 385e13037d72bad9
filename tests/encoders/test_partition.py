"""Variance partitioning: himalaya's r2_score_split as the reference, and a simulation with planted unique and
shared variance recovered by the joint and leave-one-space-out fits."""

import numpy as np
import pytest
from himalaya.backend import get_backend as himalaya_get_backend
from himalaya.backend import set_backend as himalaya_set_backend
from himalaya.scoring import r2_score_split as himalaya_r2_score_split

from encoders.errors import InvalidArgumentError
from encoders.partition import partition_by_roi, partition_variance, r2_score_split, variance_partition
from encoders.ridge import BandedRidgeCV
from encoders.scoring import r2_score

# planted variance of each target group: (unique to A, unique to B, shared by A and B); noise makes up the rest
PLANTED = {"A only": (0.5, 0.0, 0.0), "B only": (0.0, 0.5, 0.0), "shared": (0.0, 0.0, 0.5), "mixed": (0.2, 0.2, 0.2)}


@pytest.fixture(autouse=True)
def himalaya_numpy_backend():
    previous = himalaya_get_backend().name
    himalaya_set_backend("numpy")
    yield
    himalaya_set_backend(previous)


@pytest.mark.parametrize("include_correlation", [True, False])
def test_r2_score_split_equals_himalaya(include_correlation):
    rng = np.random.default_rng(0)
    y_true = rng.standard_normal((70, 6))
    split = 0.5 * rng.standard_normal((3, 70, 6)) + 0.3 * y_true
    ours = r2_score_split(y_true, split, include_correlation=include_correlation)
    # himalaya requires centred inputs; ours centres them itself
    centred_true, centred_split = y_true - y_true.mean(0), split - split.mean(1, keepdims=True)
    theirs = himalaya_r2_score_split(centred_true, centred_split, include_correlation=include_correlation)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    if include_correlation:  # the shares sum to the joint R^2 of the centred prediction
        np.testing.assert_allclose(ours.sum(0), r2_score(centred_true, centred_split.sum(0)), rtol=1e-12)


def simulate(n_train=1500, n_test=1500, per_group=5, seed=0):
    """Spaces A = [Z, PA] and B = [Z, PB] with Z (4 columns) in both and PA, PB (6 each) private: variance from
    PA is unique to A, from PB unique to B, from Z shared. Returns X = [A | B], Y and the planted (uA, uB, shared)
    population values per target (independent standard normal columns, so they are exact)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    common, private_a, private_b = (rng.standard_normal((n, width)) for width in (4, 6, 6))
    X = np.hstack([common, private_a, common, private_b])
    columns, truth = [], []
    for planted in PLANTED.values():
        for _ in range(per_group):
            y = np.sqrt(1.0 - sum(planted)) * rng.standard_normal(n)
            for features, variance in zip((private_a, private_b, common), planted):
                weights = rng.standard_normal(features.shape[1])
                y += features @ (weights * np.sqrt(variance / np.sum(weights**2)))
            columns.append(y)
            truth.append(planted)
    return X[:n_train], np.stack(columns, 1)[:n_train], X[n_train:], np.stack(columns, 1)[n_train:], np.array(truth)


def test_partition_recovers_planted_unique_and_shared_variance():
    """Tolerance: 0.06 per target and 0.03 per group mean (1,500 test rows: the sampling error of a held-out R^2
    of 0.5 is about 0.02; 20 features fitted on 1,500 rows cost about 0.01)."""
    X_train, Y_train, X_test, Y_test, truth = simulate()
    model = BandedRidgeCV({"A": 10, "B": 10}, alphas=np.logspace(-2, 4, 13), ratios=10, cv=5, backend="numpy")
    parts = partition_variance(model, X_train, Y_train, X_test, Y_test)
    assert parts.unique.dims == ("space", "vertex") and list(parts.space.values) == ["A", "B"]
    found = np.stack([parts.unique.sel(space="A"), parts.unique.sel(space="B"), parts.shared], axis=1)
    np.testing.assert_allclose(found, truth, atol=0.06)
    group_means = found.reshape(len(PLANTED), -1, 3).mean(axis=1)
    np.testing.assert_allclose(group_means, np.array(list(PLANTED.values())), atol=0.03)
    np.testing.assert_allclose(parts.joint, truth.sum(axis=1), atol=0.06)
    # the split sums to the joint R^2 (the test rows' mean of Y is near the training mean, so nearly exactly)
    np.testing.assert_allclose(parts.r2_split.sum("space"), parts.joint, atol=0.01)
    # a space that drives a target alone takes its whole share of the split
    a_only = slice(0, 5)
    np.testing.assert_allclose(parts.r2_split.sel(space="A")[a_only], 0.5, atol=0.06)
    np.testing.assert_allclose(parts.r2_split.sel(space="B")[a_only], 0.0, atol=0.02)


def test_variance_partition_arithmetic_for_three_spaces():
    joint = np.array([0.6, 0.3])
    leave_one_out = np.array([[0.5, 0.3], [0.4, 0.1], [0.6, 0.25]])
    parts = variance_partition(joint, leave_one_out, spaces=["a", "b", "c"], target_dim="target")
    np.testing.assert_allclose(parts.unique, [[0.1, 0.0], [0.2, 0.2], [0.0, 0.05]])
    np.testing.assert_allclose(parts.shared, [0.3, 0.05])
    assert parts.shared.dims == ("target",) and parts.unique.sel(space="b").shape == (2,)


def test_partition_by_roi_averages_and_keeps_the_sum():
    joint = np.array([0.6, 0.3, np.nan, 0.5])
    leave_one_out = np.array([[0.5, 0.3, 0.1, 0.2], [0.4, 0.1, 0.2, 0.5]])
    parts = variance_partition(joint, leave_one_out, spaces=["a", "b"])
    masks = {"V1": np.array([True, True, False, False]), "FFA": np.array([False, False, True, True])}
    by_roi = partition_by_roi(parts, masks)
    assert list(by_roi.roi.values) == ["V1", "FFA"] and by_roi.unique.dims == ("roi", "space")
    np.testing.assert_allclose(by_roi.joint, [0.45, 0.5])  # the NaN vertex is skipped
    np.testing.assert_allclose(by_roi.unique.sel(space="a"), [0.05, 0.3])
    np.testing.assert_allclose(by_roi.unique.sum("space") + by_roi.shared, by_roi.joint)
    with pytest.raises(InvalidArgumentError, match=r"ROI mask 'V1' must be a bool array of shape \(4,\); got int64"):
        partition_by_roi(parts, {"V1": np.array([1, 0, 0, 1])})


def test_bad_shapes_and_one_space_are_clear_errors():
    with pytest.raises(InvalidArgumentError, match=r"got \(3,\) and \(2, 4\)"):
        variance_partition(np.zeros(3), np.zeros((2, 4)))
    with pytest.raises(InvalidArgumentError, match=r"got \(5, 2\) and \(2, 4, 2\)"):
        r2_score_split(np.zeros((5, 2)), np.zeros((2, 4, 2)))
    X = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(InvalidArgumentError, match="at least 2 spaces; got \\['space0'\\]"):
        partition_variance(BandedRidgeCV([4], backend="numpy"), X, X[:, 0], X, X[:, 0])
