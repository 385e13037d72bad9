"""PCA of an (n_samples, n_features) matrix read in column blocks from numpy, dask or xarray.

For p >> n the n x n Gram matrix of the centred data is accumulated in one streaming pass and eigendecomposed (no
p x p matrix, never the whole layer in memory); small p uses the p x p covariance; ``randomized`` runs subspace
iteration on the implicit Gram matrix (in memory when the centred matrix fits in 2 GiB, else one pass per
iteration). ``transform`` streams full-width row blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._validation import Integers, Options, check_features, check_params
from .backend import ALL_BACKENDS, get_backend

_BLOCK_BYTES = 64 * 2**20  # one block in the accumulation dtype
# "randomized" keeps the centred training matrix (in the compute dtype) in memory up to this size, else streams it
# once per power iteration (unrelated to encoders.grid.pipeline.IN_MEMORY_BYTES, which bounds a layer read)
CENTRED_IN_MEMORY_BYTES = 2 * 2**30
# "randomized" rounds its sketch up to a multiple of this many columns: thin products run near the full matmul rate
# only when their width fills whole SIMD / GEMM tiles (bench/thin_products.py, MKL, 9,000 x 9,216 float32: a power
# iteration took 129 ms with 110 columns and 116 ms with 112), and extra columns are extra oversampling
SKETCH_MULTIPLE = 16


def _matrix_source(X: Any, name: str = "X") -> Any:
    """The unread 2-D array behind ``X``: a numpy or dask array, or the data of an xarray DataArray."""
    data = X.data if hasattr(X, "dims") else X
    if not (hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__")):
        data = np.asarray(data)
    if len(data.shape) != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {tuple(data.shape)}")
    return data


def _block_edges(chunk_sizes: Sequence[int], block_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges of at most ``block_size`` along one axis, made of whole storage chunks
    (a chunk wider than ``block_size`` is split, so memory stays bounded even for row-chunked stores)."""
    edges: list[tuple[int, int]] = []
    start = stop = 0
    for size in chunk_sizes:
        if stop > start and stop - start + size > block_size:
            edges.append((start, stop))
            start = stop
        if size > block_size:
            edges.extend((a, min(a + block_size, stop + size)) for a in range(stop, stop + size, block_size))
            start = stop = stop + size
        else:
            stop += size
    if stop > start:
        edges.append((start, stop))
    return edges


def _chunk_sizes(data: Any, axis: int) -> Sequence[int]:
    """Storage chunk sizes along ``axis`` of a dask/zarr array (one chunk for numpy)."""
    length = data.shape[axis]
    chunks = getattr(data, "chunks", None)
    if chunks is None:
        return [length]
    if isinstance(chunks[axis], tuple):  # dask: explicit chunk sizes per axis
        return chunks[axis]
    full, rest = divmod(length, chunks[axis])  # zarr / h5py: one regular chunk shape
    return [chunks[axis]] * full + ([rest] if rest else [])


def _axis_edges(data: Any, axis: int, block_size: int) -> list[tuple[int, int]]:
    """Block ranges along ``axis`` aligned to the chunks of a dask/zarr array (one chunk for numpy)."""
    return _block_edges(_chunk_sizes(data, axis), block_size)


def _default_block_size(n_rows: int, dtype: str, data: Any = None, axis: int = 1) -> int:
    """Blocks along ``axis`` of about 64 MiB for ``n_rows`` in ``dtype``, widened to the widest storage chunk of
    ``data`` when that stays within 4x: a chunk split across blocks would be read and decoded once per block."""
    size = max(1, _BLOCK_BYTES // (n_rows * np.dtype(dtype).itemsize))
    widest = max(_chunk_sizes(data, axis), default=0) if data is not None else 0
    return max(size, widest) if widest <= 4 * size else size


def _read(data: Any, rows: slice, cols: slice, xp: ModuleType, dtype: str) -> Any:
    """One block of ``data`` read (dask computes it here) and moved to the backend in ``dtype``."""
    return xp.asarray(np.asarray(data[rows, cols]), dtype)


def _prefetched(reads: Sequence[Callable[[], Any]]) -> Iterator[Any]:
    """Results of ``reads`` in order, the next one running in a background thread while the caller computes (I/O
    and decompression overlap the matrix products; one block is read ahead)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(reads[0]) if reads else None
        for i in range(len(reads)):
            result = pending.result()
            pending = pool.submit(reads[i + 1]) if i + 1 < len(reads) else None
            yield result


def _centred_column_blocks(data: Any, xp: ModuleType, dtype: str, block_size: int | None
                           ) -> Iterator[tuple[slice, Any, Any]]:
    """Yield ``(columns, centred block, block column means)`` over consecutive column blocks of ``data``."""
    block_size = block_size or _default_block_size(data.shape[0], dtype, data)
    columns = [slice(start, stop) for start, stop in _axis_edges(data, 1, block_size)]
    reads = [partial(_read, data, slice(None), cols, xp, dtype) for cols in columns]
    for cols, block in zip(columns, _prefetched(reads), strict=True):
        mean = xp.mean(block, axis=0)
        yield cols, block - mean, mean


def _streamed_gram(data: Any, xp: ModuleType, dtype: str, block_size: int | None) -> tuple[Any, np.ndarray]:
    """Gram matrix of the column-centred data (backend array, n x n) and the column means, in one pass."""
    gram = xp.zeros((data.shape[0], data.shape[0]), dtype)
    mean = np.empty(data.shape[1], dtype=dtype)
    for cols, block, block_mean in _centred_column_blocks(data, xp, dtype, block_size):
        gram += xp.matmul(block, block.T)
        mean[cols] = xp.to_numpy(block_mean)
    if not np.isfinite(float(xp.to_numpy(xp.sum(gram)))):
        raise ValueError("X contains NaN or infinite values")
    return gram, mean


def gram_matrix(X: Any, *, block_size: int | None = None, backend: str | ModuleType = "auto",
                dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix ``(X - mean) @ (X - mean).T`` and the column means, streaming ``X`` once in column blocks.

    Parameters
    ----------
    X : ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
        Read lazily, one block of columns at a time (blocks follow the dask chunks).
    block_size : int or None, default=None
        Columns per block; None picks about 64 MiB per block.
    backend : str or module, default="auto"
    dtype : {"float64", "float32"}, default="float64"
        Accumulation precision.

    Returns
    -------
    gram : ndarray of shape (n_samples, n_samples)
    mean : ndarray of shape (n_features,)
    """
    xp = get_backend(backend)
    gram, mean = _streamed_gram(_matrix_source(X), xp, dtype, block_size)
    return xp.to_numpy(gram), mean


def cross_gram_matrix(X_new: Any, X: Any, mean: np.ndarray, *, block_size: int | None = None,
                      backend: str | ModuleType = "auto", dtype: str = "float64") -> np.ndarray:
    """Cross Gram matrix ``(X_new - mean) @ (X - mean).T``, streaming both matrices in matching column blocks.

    Parameters
    ----------
    X_new : array-like of shape (n_new, n_features)
    X : array-like of shape (n_samples, n_features)
    mean : ndarray of shape (n_features,)
        Column means of the training matrix (from :func:`gram_matrix`).
    block_size, backend, dtype
        As in :func:`gram_matrix`.

    Returns
    -------
    ndarray of shape (n_new, n_samples)
    """
    xp = get_backend(backend)
    new, data = _matrix_source(X_new, "X_new"), _matrix_source(X)
    if new.shape[1] != data.shape[1] or len(mean) != data.shape[1]:
        raise ValueError(f"X_new has {new.shape[1]} features, X has {data.shape[1]} and mean has {len(mean)}; "
                         "they must match")
    block_size = block_size or _default_block_size(data.shape[0] + new.shape[0], dtype, data)
    cross = xp.zeros((new.shape[0], data.shape[0]), dtype)
    for start, stop in _axis_edges(data, 1, block_size):
        cols = slice(start, stop)
        block_mean = xp.asarray(mean[cols], dtype)
        a = _read(new, slice(None), cols, xp, dtype) - block_mean
        b = _read(data, slice(None), cols, xp, dtype) - block_mean
        cross += xp.matmul(a, b.T)
    return xp.to_numpy(cross)


def _auto_method(n: int, p: int, k: int) -> str:
    """scikit-learn's ``svd_solver="auto"`` rule: randomized for a few components of a large matrix, else exact."""
    if max(n, p) > 500 and k < 0.8 * min(n, p):
        return "randomized"
    return "covariance" if p <= n else "gram"


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


class PCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Principal component analysis of a matrix streamed in blocks, for n_features up to millions.

    Parameters
    ----------
    n_components : int, default=100
        Number of components kept, at most min(n_samples, n_features).
    method : {"auto", "gram", "covariance", "randomized"}, default="auto"
        "gram": eigendecomposition of the n x n Gram matrix of the centred data, accumulated in one pass over
        column blocks (exact; cost n^2 p). "covariance": eigendecomposition of the p x p covariance accumulated
        over row blocks (exact; only when n_features <= n_samples). "randomized": subspace iteration on the
        implicit Gram matrix, ``n_iter + 2`` products of cost 4 n p w each (w: the sketch width, below); the
        centred matrix is read once and kept in memory when it takes at most 2 GiB in ``dtype``, else each
        product is one more pass over the data.
        "auto": as scikit-learn's ``PCA(svd_solver="auto")``: "randomized" when max(n_samples, n_features) > 500
        and n_components < 0.8 min(n_samples, n_features), else "covariance" when n_features <= n_samples, else
        "gram". Randomized keeps the leading components to ~1e-3 and the captured variance within ~0.1 % of the
        optimum on decaying spectra, for a fraction of the cost (at 9,000 x 9,216: 5 s against 49 s for "gram",
        whose top-k eigensolver dominates); ask for "gram" or "covariance" for exact trailing components.
    backend : {"auto", "numpy", "torch", "torch_cuda"}, default="auto"
    block_size : int or None, default=None
        Block length in the streamed direction: columns per block for the passes over the training matrix of
        "gram" and "randomized" (and for ``components_``), rows per block for "covariance" and for
        :meth:`transform`. Blocks are made of whole storage chunks when they fit. None picks about 64 MiB per
        block.
    dtype : {"float64", "float32"}, default="float64"
        Accumulation and output precision.
    n_oversamples : int, default=10
        Extra random directions for "randomized", at least: the sketch (``n_components + n_oversamples`` columns)
        is rounded up to a multiple of 16, at which its thin products run at the full matrix-multiply rate.
    n_iter : int or "auto", default="auto"
        Power (subspace) iterations for "randomized"; "auto" is 7 when n_components < 0.1 min(n_samples,
        n_features), else 4 (scikit-learn's rule).
    random_state : int, default=0
        Seed of the random test matrix for "randomized".

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Principal axes. For "gram" and "randomized" it is computed on first access by one more pass over the
        training matrix, which the estimator keeps a reference to (``X_fit_``).
    explained_variance_ : ndarray of shape (n_components,)
    explained_variance_ratio_ : ndarray of shape (n_components,)
    singular_values_ : ndarray of shape (n_components,)
    mean_ : ndarray of shape (n_features,)
    n_components_, n_samples_, n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Column names of a DataFrame X (only then).
    method_ : str
        The method used ("auto" resolved).
    n_iter_ : int
        Power iterations run by "randomized" ("auto" resolved); 0 for the exact methods.
    X_fit_ : the training matrix (not copied)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((50, 400))
    >>> PCA(n_components=5, backend="numpy").fit_transform(X).shape
    (50, 5)
    """

    _constraints: dict = {
        "n_components": [Integers(1)],
        "method": [Options(frozenset({"auto", "gram", "covariance", "randomized"}))],
        "backend": [Options(frozenset({"auto", *ALL_BACKENDS}))],
        "block_size": [Integers(1), None],
        "dtype": [Options(frozenset({"float32", "float64"}))],
        "n_oversamples": [Integers(0)],
        "n_iter": [Integers(0), Options(frozenset({"auto"}))],
        "random_state": [Integers(0)],
    }

    def __init__(self, n_components: int = 100, *, method: str = "auto", backend: str = "auto",
                 block_size: int | None = None, dtype: str = "float64", n_oversamples: int = 10,
                 n_iter: int | str = "auto", random_state: int = 0) -> None:
        self.n_components = n_components
        self.method = method
        self.backend = backend
        self.block_size = block_size
        self.dtype = dtype
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.random_state = random_state

    def fit(self, X: Any, y: None = None) -> PCA:
        """Fit the principal axes of ``X``.

        Parameters
        ----------
        X : ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self : PCA
        """
        self._fit(X)
        return self

    def fit_transform(self, X: Any, y: None = None) -> np.ndarray:
        """Fit and return the component scores of the training rows (free for "gram" and "randomized").

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        return self._fit(X)

    def transform(self, X: Any) -> np.ndarray:
        """Component scores ``(X - mean_) @ components_.T`` of new rows, streamed in full-width row blocks (each
        stored chunk of ``X`` is read once; the next block is read while the current one is projected).

        Parameters
        ----------
        X : ndarray, dask array or xarray.DataArray of shape (n_rows, n_features)

        Returns
        -------
        ndarray of shape (n_rows, n_components)
        """
        check_is_fitted(self)
        data = _matrix_source(check_features(self, X, reset=False, stream=True))
        n_rows, p = data.shape
        xp = get_backend(self.backend)
        components = xp.asarray(self.components_.T, self.dtype)
        mean = xp.asarray(self.mean_, self.dtype)
        scores = np.empty((n_rows, self.n_components_), dtype=self.dtype)
        block_size = self.block_size or _default_block_size(p, self.dtype, data, axis=0)
        rows = [slice(start, stop) for start, stop in _axis_edges(data, 0, block_size)]
        reads = [partial(_read, data, block_rows, slice(None), xp, self.dtype) for block_rows in rows]
        for block_rows, block in zip(rows, _prefetched(reads), strict=True):
            scores[block_rows] = xp.to_numpy(xp.matmul(block - mean, components))
        if not np.isfinite(scores).all():  # NaN or infinities in X spread into their rows' scores
            raise ValueError("X contains NaN or infinite values")
        return scores

    @property
    def components_(self) -> np.ndarray:
        """Principal axes, ndarray of shape (n_components, n_features) (one more pass over ``X_fit_`` the first
        time for the "gram" and "randomized" methods)."""
        check_is_fitted(self)
        if self._components is None:
            self._components = self._principal_axes()
        return self._components

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: the output dtype is ``dtype``, whatever the input's."""
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [self.dtype]
        return tags

    @property
    def _n_features_out(self) -> int:
        """Output width, for scikit-learn's ``get_feature_names_out`` ("pca0", "pca1", ...)."""
        return self.n_components_

    def _fit(self, X: Any) -> np.ndarray:
        """Validate, fit, set the learned attributes and return the training scores."""
        check_params(self, self._constraints)
        X = check_features(self, X, reset=True, stream=True, min_samples=2)
        data = _matrix_source(X)
        n, p = data.shape
        if self.n_components > min(n, p):
            raise ValueError(f"n_components={self.n_components} must be <= min(n_samples, n_features)="
                             f"{min(n, p)} for X of shape {(n, p)}")
        method = _auto_method(n, p, self.n_components) if self.method == "auto" else self.method
        if method == "covariance" and p > n:
            raise ValueError(f"method='covariance' forms a p x p matrix and needs n_features <= n_samples; got X "
                             f"of shape {(n, p)}; use method='gram' or 'randomized'")
        xp = get_backend(self.backend)
        k = self.n_components
        self.n_iter_ = 0 if method != "randomized" else (
            _auto_iterations(n, p, k) if self.n_iter == "auto" else self.n_iter)
        if method == "covariance":
            eigvals, axes, mean, total = self._covariance_eigh(data, xp)
            self._components, self._scaled_left = axes[:, :k].T, None
        else:
            eigvals, left, mean, total, centred = (self._gram_eigh if method == "gram" else self._randomized_eigh)(
                data, xp)
            left = left[:, :k] * _flip_signs(left[:, :k])
            singular = np.sqrt(eigvals[:k])
            self._scaled_left = left / np.where(singular > 0, singular, np.inf)
            # with the centred matrix still in memory the axes cost one small product instead of a later pass
            self._components = None if centred is None else xp.to_numpy(
                xp.matmul(xp.ascontiguous(xp.asarray(self._scaled_left.T, self.dtype)), centred))
        self.method_, self.X_fit_, self.mean_ = method, X, mean
        self.n_samples_, self.n_components_ = n, k
        self.singular_values_ = np.sqrt(eigvals[:k])
        self.explained_variance_ = eigvals[:k] / (n - 1)
        self.explained_variance_ratio_ = eigvals[:k] / total
        if method == "covariance":
            return self.transform(X)
        return left * self.singular_values_

    def _gram_eigh(self, data: Any, xp: ModuleType) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, None]:
        """The leading eigenvalues (descending) and eigenvectors, column means and total sum of squares from the
        Gram matrix (only n_components eigenpairs are computed); no centred matrix is kept (None)."""
        gram, mean = _streamed_gram(data, xp, self.dtype, self.block_size)
        total = float(xp.to_numpy(xp.sum(gram.diagonal())))
        eigvals, eigvecs = xp.eigh_top(gram, self.n_components)
        return (np.clip(xp.to_numpy(xp.flip(eigvals, 0)), 0.0, None), xp.to_numpy(xp.flip(eigvecs, 1)),
                mean, total, None)

    def _randomized_eigh(self, data: Any, xp: ModuleType) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, Any]:
        """Leading eigenpairs of the implicit Gram matrix by randomized subspace iteration (Rayleigh-Ritz at the
        end). The first pass over column blocks gives the means, the total and the sketch ``Xc @ omega``; each
        iteration then multiplies by ``Xc Xc^T``: in memory when the centred matrix fits in
        ``CENTRED_IN_MEMORY_BYTES`` (kept from the first pass), else by one more pass ``sum_b Xc_b (Xc_b^T Q)``."""
        n, p = data.shape
        width = sketch_width(self.n_components, self.n_oversamples, n, p)
        rng = np.random.default_rng(self.random_state)
        mean = np.empty(p, dtype=self.dtype)
        total = 0.0
        sketch = xp.zeros((n, width), self.dtype)
        in_memory = n * p * np.dtype(self.dtype).itemsize <= CENTRED_IN_MEMORY_BYTES
        centred = xp.zeros((n, p), self.dtype) if in_memory else None
        for cols, block, block_mean in _centred_column_blocks(data, xp, self.dtype, self.block_size):
            # drawing block by block gives the same test matrix as one (p, width) draw, for any block size
            omega = xp.asarray(rng.standard_normal((cols.stop - cols.start, width)), self.dtype)
            sketch += xp.matmul(block, omega)
            mean[cols] = xp.to_numpy(block_mean)
            total += float(xp.to_numpy(xp.sum(block * block)))
            if centred is not None:
                centred[:, cols] = block
        if not np.isfinite(total):
            raise ValueError("X contains NaN or infinite values")
        for _ in range(self.n_iter_ + 1):
            basis = xp.qr(sketch)
            # Xc (Xc^T Q) computed as Xc (Q^T Xc)^T with Q^T in row-major order: on the torch CPU backend a
            # transposed left operand halves the rate of the thin product (MKL; 210 against 140 GFLOP/s)
            basis_t = xp.ascontiguous(basis.T)
            if centred is not None:
                sketch = xp.matmul(centred, xp.matmul(basis_t, centred).T)
                continue
            sketch = xp.zeros((n, width), self.dtype)
            for _cols, block, _mean in _centred_column_blocks(data, xp, self.dtype, self.block_size):
                sketch += xp.matmul(block, xp.matmul(basis_t, block).T)
        projected = xp.matmul(basis.T, sketch)
        eigvals, eigvecs = xp.eigh((projected + projected.T) / 2)
        left = xp.matmul(basis, xp.flip(eigvecs, 1))
        return np.clip(xp.to_numpy(xp.flip(eigvals, 0)), 0.0, None), xp.to_numpy(left), mean, total, centred

    def _covariance_eigh(self, data: Any, xp: ModuleType) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Eigenvalues (descending), axes (columns), column means and total sum of squares from the p x p scatter
        matrix accumulated over row blocks (shifted by the first block's mean against cancellation)."""
        n, p = data.shape
        block_size = self.block_size or _default_block_size(p, self.dtype, data, axis=0)
        scatter = xp.zeros((p, p), self.dtype)
        offset_sum = xp.zeros(p, self.dtype)
        shift = None
        for start, stop in _axis_edges(data, 0, block_size):
            block = _read(data, slice(start, stop), slice(None), xp, self.dtype)
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
        return (np.clip(xp.to_numpy(xp.flip(eigvals, 0)), 0.0, None), axes, xp.to_numpy(shift + offset),
                total)

    def _principal_axes(self) -> np.ndarray:
        """``components_`` from one pass over the training matrix: ``(U / S)^T (X - mean)`` per column block."""
        xp = get_backend(self.backend)
        data = _matrix_source(self.X_fit_)
        scaled_left = xp.asarray(self._scaled_left, self.dtype)
        components = np.empty((self.n_components_, self.n_features_in_), dtype=self.dtype)
        for cols, block, _mean in _centred_column_blocks(data, xp, self.dtype, self.block_size):
            components[:, cols] = xp.to_numpy(xp.matmul(scaled_left.T, block))
        return components
