"""Train/validation index splits: the Algonauts 2023 devkit split and seeded k-fold, without global RNG state."""

from __future__ import annotations

import numpy as np

DEVKIT_SEED = 4  # the seed notebook's ``rand_seed = 4``


def devkit_split(n: int, seed: int = DEVKIT_SEED, train_fraction: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` as the Algonauts 2023 devkit does and cut it into train and validation indices.

    The devkit calls ``np.random.seed(seed); np.random.shuffle(idxs)`` and keeps
    ``int(np.round(n / 100 * 90))`` rows for training; a private ``RandomState(seed)`` draws the same permutation
    without touching numpy's global random state.

    Parameters
    ----------
    n : int
        Number of rows (training images of one subject).
    seed : int, default=4
        The seed notebook's ``rand_seed = 4``. Some copies of the tutorial set 5; ``seed=5`` reproduces those.
    train_fraction : float, default=0.9
        Fraction of rows used for training, in (0, 1].

    Returns
    -------
    train_idx, val_idx : ndarray of shape (n_train,) and (n - n_train,)
        Row indices in shuffled order.
    """
    if n < 1:
        raise ValueError(f"devkit_split needs n >= 1 rows; got n={n}")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1]; got {train_fraction}")
    idxs = np.arange(n)
    np.random.RandomState(seed).shuffle(idxs)
    num_train = int(np.round(n / 100 * (train_fraction * 100)))
    return idxs[:num_train], idxs[num_train:]


def kfold(n: int, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold splits of ``range(n)``, identical to ``sklearn.model_selection.KFold(k, shuffle=True,
    random_state=seed)``.

    Parameters
    ----------
    n : int
        Number of rows.
    k : int, default=5
        Number of folds, 2 <= k <= n.
    seed : int, default=0
        Seed of the shuffle.

    Returns
    -------
    list of (train_idx, val_idx)
        ``k`` pairs of ascending index arrays; validation sets partition ``range(n)``, the first ``n % k`` of
        them one row larger.
    """
    if not 2 <= k <= n:
        raise ValueError(f"kfold needs 2 <= k <= n; got k={k}, n={n}")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    folds = []
    for val in np.array_split(order, k):
        in_val = np.zeros(n, dtype=bool)
        in_val[val] = True
        folds.append((np.flatnonzero(~in_val), np.flatnonzero(in_val)))
    return folds
