"""Splits reproduce the Algonauts devkit and sklearn's KFold exactly."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from encoders.splits import devkit_split, kfold


def devkit_reference(n, seed=4):
    """The seed notebook's split, as its text reads: ``rand_seed = 4``, global seed, global shuffle, 90 %."""
    np.random.seed(seed)
    idxs = np.arange(n)
    np.random.shuffle(idxs)
    num_train = int(np.round(n / 100 * 90))
    return idxs[:num_train], idxs[num_train:]


@pytest.mark.parametrize("n", [1, 5, 15, 25, 101, 9841, 8779])
def test_devkit_split_matches_the_devkit_and_spares_the_global_rng(n):
    np.random.seed(123)
    state = np.random.get_state()
    train, val = devkit_split(n)
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(state[1:], after[1:], strict=True))
    ref_train, ref_val = devkit_reference(n)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(val, ref_val)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))


def test_seed_five_reproduces_the_tutorial_copies_that_set_it():
    for got, expected in zip(devkit_split(9841, seed=5), devkit_reference(9841, seed=5), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(devkit_split(9841)[1], devkit_split(9841, seed=5)[1])


def test_devkit_split_other_seed_and_fraction():
    train, val = devkit_split(200, seed=1, train_fraction=0.75)
    np.random.seed(1)
    idxs = np.arange(200)
    np.random.shuffle(idxs)
    np.testing.assert_array_equal(train, idxs[:150])
    np.testing.assert_array_equal(val, idxs[150:])
    with pytest.raises(ValueError, match="train_fraction must be in"):
        devkit_split(10, train_fraction=0.0)
    with pytest.raises(ValueError, match="n >= 1"):
        devkit_split(0)


@pytest.mark.parametrize(("n", "k", "seed"), [(23, 5, 0), (100, 4, 7), (9, 9, 1)])
def test_kfold_equals_sklearn_kfold(n, k, seed):
    ours = kfold(n, k, seed)
    theirs = list(KFold(k, shuffle=True, random_state=seed).split(np.zeros((n, 1))))
    assert len(ours) == k
    for (train, val), (ref_train, ref_val) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(train, ref_train)
        np.testing.assert_array_equal(val, ref_val)
    assert sorted(np.concatenate([val for _, val in ours]).tolist()) == list(range(n))


def test_kfold_errors():
    with pytest.raises(ValueError, match="2 <= k <= n"):
        kfold(3, 4)
    with pytest.raises(ValueError, match="2 <= k <= n"):
        kfold(10, 1)
