"""PCA solvers: pure functions from a matrix read in blocks to a frozen :class:`PCASolution`, and their registry.

Each ``solve_pca_<method>(X, n_components, ...)`` reads ``X`` (numpy, dask, zarr or an xarray.DataArray) through
``_streaming`` and returns the leading eigenvalues of the centred scatter, the column means, the total sum of
squares and what the scores and axes are made from; :data:`PCA_SOLVERS` maps each method name of
:class:`~encoders.pca.PCA` to its solver, so the estimator only validates and dispatches (as ``ridge._solvers``).

- ``gram``: the n x n Gram matrix of the centred data, accumulated in one pass over column blocks, then its top
  eigenpairs (exact; n^2 p). For p >> n: no p x p matrix, never the whole layer in memory.
- ``randomized``: subspace iteration on the implicit Gram matrix (``n_iter + 2`` products of 4 n p w, w the sketch
  width); the centred matrix stays in memory up to :data:`CENTRED_IN_MEMORY_BYTES`, else each product is one more
  pass.
- ``covariance``: the p x p scatter matrix accumulated over row blocks (exact; only when n_features <= n_samples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import get_backend
from ._streaming import _axis_edges, _centred_column_blocks, _default_block_size, _matrix_source, _read, _streamed_gram

# "randomized" keeps the centred training matrix (in the compute dtype) in memory up to this size, else streams it
# once per power iteration (unrelated to encoders.grid.pipeline.IN_MEMORY_BYTES, which bounds a layer read)
CENTRED_IN_MEMORY_BYTES = 2 * 2**30
# "randomized" rounds its sketch up to a multiple of this many columns: thin products run near the full matmul rate
# only when their width fills whole SIMD / GEMM tiles (bench/thin_products.py, MKL, 9,000 x 9,216 float32: a power
# iteration took 129 ms with 110 columns and 116 ms with 112), and extra columns are extra oversampling
SKETCH_MULTIPLE = 16


@dataclass(frozen=True)
class PCASolution:
    """Result of a PCA solver (numpy arrays), for ``n_components`` components of an (n_samples, n_features) matrix.

    eigvals: (n_components,) leading eigenvalues of the centred scatter matrix, descending (squared singular
    values); mean: (n_features,) column means; total: sum of squares of the centred matrix (all eigenvalues);
    scores: (n_samples, n_components) training scores ``U S``, or None where they cost a pass over ``X`` (the
    covariance solver); scaled_left: (n_samples, n_components) ``U / S`` (0 for a zero singular value), from which
    the axes are ``scaled_left.T @ (X - mean)``, None for the covariance solver; components: (n_components,
    n_features) principal axes, or None where they cost one more pass over ``X`` (gram, and randomized over the
    in-memory budget); n_iter: power iterations run (0 for the exact solvers). Signs make the largest-magnitude entry
    of each left singular vector (gram, randomized) or axis (covariance) positive.
    """

    eigvals: np.ndarray
    mean: np.ndarray
    total: float
    scores: np.ndarray | None
    scaled_left: np.ndarray | None
    components: np.ndarray | None
    n_iter: int


def sketch_width(n_components: int, n_oversamples: int, n_samples: int, n_features: int) -> int:
    """Columns of the randomized sketch: ``n_components + n_oversamples`` rounded up to a multiple of
    ``SKETCH_MULTIPLE``, at most ``min(n_samples, n_features)``."""
    wanted = -(-(n_components + n_oversamples) // SKETCH_MULTIPLE) * SKETCH_MULTIPLE
    return min(wanted, n_samples, n_features)


def _auto_iterations(n: int, p: int, k: int) -> int:
    """scikit-learn's ``iterated_power="auto"``: 7 power iterations for few components, else 4."""
    return 7 if k < 0.1 * min(n, p) else 4


def _flip_signs(vectors: np.ndarray) -> np.ndarray:
    """Signs (+1/-1 per column, in the dtype of ``vectors``, so flipping keeps it) that make the largest-magnitude
    entry of each column positive."""
    largest = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]
    return np.where(largest < 0, -1.0, 1.0).astype(vectors.dtype)


def _check_problem(X: Any, n_components: int) -> Any:
    """The unread 2-D matrix behind ``X``, refused unless ``n_components <= min(n_samples, n_features)``."""
    data = _matrix_source(X)
    n, p = data.shape
    if n_components > min(n, p):
        raise ValueError(
            f"n_components={n_components} must be <= min(n_samples, n_features)={min(n, p)} for X of shape {(n, p)}"
        )
    return data


def _gram_solution(
    eigvals: np.ndarray,
    left: np.ndarray,
    mean: np.ndarray,
    total: float,
    centred: Any,
    n_components: int,
    n_iter: int,
    xp: ModuleType,
    dtype: str,
) -> PCASolution:
    """Solution from eigenpairs of the Gram matrix (descending, at least ``n_components``): signs, scores and
    ``U / S``; with the centred matrix still in memory the axes cost one small product instead of a later pass."""
    left = left[:, :n_components] * _flip_signs(left[:, :n_components])
    singular = np.sqrt(eigvals[:n_components])
    scaled_left = left / np.where(singular > 0, singular, np.inf)
    components = (
        None if centred is None else xp.to_numpy(xp.matmul(xp.ascontiguous(xp.asarray(scaled_left.T, dtype)), centred))
    )
    return PCASolution(eigvals[:n_components], mean, total, left * singular, scaled_left, components, n_iter)


def solve_pca_gram(
    X: Any,
    n_components: int,
    *,
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
    block_size: int | None = None,
) -> PCASolution:
    """Exact PCA from the n x n Gram matrix of the centred data, accumulated in one pass over column blocks; only
    the ``n_components`` leading eigenpairs are computed.

    Parameters
    ----------
    X : ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
    n_components : int
        At most min(n_samples, n_features).
    backend : str or module, default="auto"
    dtype : {"float64", "float32"}, default="float64"
        Accumulation and output precision.
    block_size : int or None, default=None
        Columns per block; None picks about 64 MiB per block.

    Returns
    -------
    PCASolution
        ``components`` is None: the axes cost one more pass over ``X``.
    """
    data = _check_problem(X, n_components)
    xp = get_backend(backend)
    gram, mean = _streamed_gram(data, xp, dtype, block_size)
    total = float(xp.to_numpy(xp.sum(gram.diagonal())))
    eigvals, eigvecs = xp.eigh_top(gram, n_components)
    eigvals = np.clip(xp.to_numpy(xp.flip(eigvals, 0)), 0.0, None)
    return _gram_solution(eigvals, xp.to_numpy(xp.flip(eigvecs, 1)), mean, total, None, n_components, 0, xp, dtype)


def solve_pca_randomized(
    X: Any,
    n_components: int,
    *,
    n_oversamples: int = 10,
    n_iter: int | str = "auto",
    random_state: int = 0,
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
    block_size: int | None = None,
) -> PCASolution:
    """PCA by randomized subspace iteration on the implicit Gram matrix, Rayleigh-Ritz at the end.

    The first pass over column blocks gives the means, the total and the sketch ``Xc @ omega``; each iteration then
    multiplies by ``Xc Xc^T``: in memory when the centred matrix fits in :data:`CENTRED_IN_MEMORY_BYTES` (kept from
    the first pass), else by one more pass ``sum_b Xc_b (Xc_b^T Q)``.

    Parameters
    ----------
    X : ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
    n_components : int
        At most min(n_samples, n_features).
    n_oversamples : int, default=10
        Extra random directions, at least: the sketch width is :func:`sketch_width`.
    n_iter : int or "auto", default="auto"
        Power iterations; "auto" is 7 when n_components < 0.1 min(n_samples, n_features), else 4.
    random_state : int, default=0
        Seed of the Gaussian test matrix (drawn block by block: the same matrix for any block size).
    backend, dtype, block_size
        As in :func:`solve_pca_gram`.

    Returns
    -------
    PCASolution
        ``components`` is None when the centred matrix was over the in-memory budget.
    """
    data = _check_problem(X, n_components)
    xp = get_backend(backend)
    n, p = data.shape
    n_iter = _auto_iterations(n, p, n_components) if n_iter == "auto" else n_iter
    width = sketch_width(n_components, n_oversamples, n, p)
    rng = np.random.default_rng(random_state)
    mean = np.empty(p, dtype=dtype)
    total = 0.0
    sketch = xp.zeros((n, width), dtype)
    in_memory = n * p * np.dtype(dtype).itemsize <= CENTRED_IN_MEMORY_BYTES
    centred = xp.zeros((n, p), dtype) if in_memory else None
    for cols, block, block_mean in _centred_column_blocks(data, xp, dtype, block_size):
        # drawing block by block gives the same test matrix as one (p, width) draw, for any block size
        omega = xp.asarray(rng.standard_normal((cols.stop - cols.start, width)), dtype)
        sketch += xp.matmul(block, omega)
        mean[cols] = xp.to_numpy(block_mean)
        total += float(xp.to_numpy(xp.sum(block * block)))
        if centred is not None:
            centred[:, cols] = block
    if not np.isfinite(total):
        raise ValueError("X contains NaN or infinite values")
    for _ in range(n_iter + 1):
        basis = xp.qr(sketch)
        # Xc (Xc^T Q) computed as Xc (Q^T Xc)^T with Q^T in row-major order: on the torch CPU backend a
        # transposed left operand halves the rate of the thin product (MKL; 210 against 140 GFLOP/s)
        basis_t = xp.ascontiguous(basis.T)
        if centred is not None:
            sketch = xp.matmul(centred, xp.matmul(basis_t, centred).T)
            continue
        sketch = xp.zeros((n, width), dtype)
        for _cols, block, _mean in _centred_column_blocks(data, xp, dtype, block_size):
            sketch += xp.matmul(block, xp.matmul(basis_t, block).T)
    projected = xp.matmul(basis.T, sketch)
    eigvals, eigvecs = xp.eigh((projected + projected.T) / 2)
    left = xp.to_numpy(xp.matmul(basis, xp.flip(eigvecs, 1)))
    eigvals = np.clip(xp.to_numpy(xp.flip(eigvals, 0)), 0.0, None)
    return _gram_solution(eigvals, left, mean, total, centred, n_components, n_iter, xp, dtype)


def solve_pca_covariance(
    X: Any,
    n_components: int,
    *,
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
    block_size: int | None = None,
) -> PCASolution:
    """Exact PCA from the p x p scatter matrix accumulated over row blocks (shifted by the first block's mean
    against cancellation); only for n_features <= n_samples.

    Parameters
    ----------
    X : ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
    n_components : int
        At most n_features.
    backend, dtype
        As in :func:`solve_pca_gram`.
    block_size : int or None, default=None
        Rows per block; None picks about 64 MiB per block.

    Returns
    -------
    PCASolution
        ``scores`` and ``scaled_left`` are None: the training scores cost one more pass over ``X``.
    """
    data = _check_problem(X, n_components)
    n, p = data.shape
    if p > n:
        raise ValueError(
            f"method='covariance' forms a p x p matrix and needs n_features <= n_samples; got X "
            f"of shape {(n, p)}; use method='gram' or 'randomized'"
        )
    xp = get_backend(backend)
    block_size = block_size or _default_block_size(p, dtype, data, axis=0)
    scatter = xp.zeros((p, p), dtype)
    offset_sum = xp.zeros(p, dtype)
    shift = None
    for start, stop in _axis_edges(data, 0, block_size):
        block = _read(data, slice(start, stop), slice(None), xp, dtype)
        shift = xp.mean(block, axis=0) if shift is None else shift
        block = block - shift
        scatter += xp.matmul(block.T, block)
        offset_sum += xp.sum(block, axis=0)
    offset = offset_sum / n
    scatter = scatter - n * offset[:, None] * offset[None, :]
    total = float(xp.to_numpy(xp.sum(scatter.diagonal())))
    if not np.isfinite(total):
        raise ValueError("X contains NaN or infinite values")
    eigvals, eigvecs = xp.eigh(scatter)
    axes = xp.to_numpy(xp.flip(eigvecs, 1))
    axes = axes * _flip_signs(axes)
    eigvals = np.clip(xp.to_numpy(xp.flip(eigvals, 0)), 0.0, None)
    return PCASolution(
        eigvals[:n_components], xp.to_numpy(shift + offset), total, None, None, axes[:, :n_components].T, 0
    )


PCA_SOLVERS: dict[str, Callable[..., PCASolution]] = {
    "gram": solve_pca_gram,
    "randomized": solve_pca_randomized,
    "covariance": solve_pca_covariance,
}
