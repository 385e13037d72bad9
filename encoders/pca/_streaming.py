"""Reading an (n_samples, n_features) matrix in blocks, and the streamed products the PCA solvers are built from.

A layer of a network can have millions of features: it is never read whole. Blocks are contiguous ranges of whole
storage chunks (dask, zarr, h5py; numpy is one chunk) of about 64 MiB, read one ahead in a background thread so that
I/O and decompression overlap the products. Column blocks give the n x n Gram matrix of the centred data
(:func:`gram_matrix`, one pass), the cross Gram matrix of new rows (:func:`cross_gram_matrix`) and the principal
axes from the left singular vectors; full-width row blocks give the scores of new rows. Kept apart from the solvers
(``_solvers``) so that ridge on the Gram matrix reuses them without the PCA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import get_backend

_BLOCK_BYTES = 64 * 2**20  # one block in the accumulation dtype


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


def _centred_column_blocks(
    data: Any, xp: ModuleType, dtype: str, block_size: int | None
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


def gram_matrix(
    X: Any, *, block_size: int | None = None, backend: str | ModuleType = "auto", dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray]:
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


def cross_gram_matrix(
    X_new: Any,
    X: Any,
    mean: np.ndarray,
    *,
    block_size: int | None = None,
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
) -> np.ndarray:
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
        raise ValueError(
            f"X_new has {new.shape[1]} features, X has {data.shape[1]} and mean has {len(mean)}; they must match"
        )
    block_size = block_size or _default_block_size(data.shape[0] + new.shape[0], dtype, data)
    cross = xp.zeros((new.shape[0], data.shape[0]), dtype)
    for start, stop in _axis_edges(data, 1, block_size):
        cols = slice(start, stop)
        block_mean = xp.asarray(mean[cols], dtype)
        a = _read(new, slice(None), cols, xp, dtype) - block_mean
        b = _read(data, slice(None), cols, xp, dtype) - block_mean
        cross += xp.matmul(a, b.T)
    return xp.to_numpy(cross)


def _streamed_axes(
    data: Any, scaled_left: np.ndarray, xp: ModuleType, dtype: str, block_size: int | None
) -> np.ndarray:
    """Principal axes ``(U / S)^T (X - mean)`` (n_components, n_features) from one pass over column blocks of
    ``data``, ``scaled_left`` being the (n_samples, n_components) left singular vectors over the singular values."""
    scaled_left = xp.asarray(scaled_left, dtype)
    components = np.empty((scaled_left.shape[1], data.shape[1]), dtype=dtype)
    for cols, block, _mean in _centred_column_blocks(data, xp, dtype, block_size):
        components[:, cols] = xp.to_numpy(xp.matmul(scaled_left.T, block))
    return components


def _streamed_scores(
    data: Any, components: np.ndarray, mean: np.ndarray, xp: ModuleType, dtype: str, block_size: int | None
) -> np.ndarray:
    """Scores ``(X - mean) @ components.T`` (n_rows, n_components) streamed in full-width row blocks of ``data``
    (each stored chunk is read once; the next block is read while the current one is projected)."""
    n_rows, p = data.shape
    components = xp.asarray(components.T, dtype)
    mean = xp.asarray(mean, dtype)
    scores = np.empty((n_rows, components.shape[1]), dtype=dtype)
    block_size = block_size or _default_block_size(p, dtype, data, axis=0)
    rows = [slice(start, stop) for start, stop in _axis_edges(data, 0, block_size)]
    reads = [partial(_read, data, block_rows, slice(None), xp, dtype) for block_rows in rows]
    for block_rows, block in zip(rows, _prefetched(reads), strict=True):
        scores[block_rows] = xp.to_numpy(xp.matmul(block - mean, components))
    if not np.isfinite(scores).all():  # NaN or infinities in X spread into their rows' scores
        raise ValueError("X contains NaN or infinite values")
    return scores
