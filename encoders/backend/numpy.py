"""The numpy backend: the reference implementation of the backend function set (CPU, LAPACK through numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

name = "numpy"
device = "cpu"
Array = np.ndarray


def is_available() -> bool:
    """The numpy backend always runs."""
    return True


def asarray(x: Any, dtype: str | None = None) -> np.ndarray:
    """Array of ``x`` (numpy, torch tensor, dask or anything numpy accepts), cast to ``dtype`` if given."""
    if hasattr(x, "detach"):  # a torch tensor, possibly on a GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def to_numpy(x: Any) -> np.ndarray:
    """The array as a numpy array (no copy when it already is one)."""
    return np.asarray(x)


def dtype_name(x: np.ndarray) -> str:
    """Name of the element type, e.g. ``"float64"``."""
    return x.dtype.name


def eps(x: np.ndarray) -> float:
    """Machine epsilon of the floating type of ``x``."""
    return float(np.finfo(x.dtype).eps)


def zeros(shape: int | tuple[int, ...], dtype: str = "float64") -> np.ndarray:
    """Array of zeros."""
    return np.zeros(shape, dtype=dtype)


def copyto(dst: np.ndarray, src: Any) -> np.ndarray:
    """Write ``src`` (a numpy array) into ``dst``, cast to ``dst``'s dtype; returns ``dst`` (no new allocation)."""
    np.copyto(dst, src, casting="unsafe")
    return dst


def ascontiguous(x: np.ndarray) -> np.ndarray:
    """``x`` in row-major memory order (copied only when it is not already, e.g. for a transposed view)."""
    return np.ascontiguousarray(x)


def subtract(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a - b`` (broadcasting), written into ``out`` when given (no new allocation)."""
    return np.subtract(a, b, out=out)


def multiply(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a * b`` (broadcasting), written into ``out`` when given (``out=a`` squares in place)."""
    return np.multiply(a, b, out=out)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix product."""
    return np.matmul(a, b)


def eigh(a: np.ndarray, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix. ``overwrite=True`` lets LAPACK
    write the eigenvectors into ``a``'s memory (``a`` is destroyed; no n x n copy)."""
    if overwrite and a.flags.c_contiguous:
        # a is symmetric, so a.T (Fortran order, no copy) is the same matrix in the layout LAPACK overwrites
        return scipy.linalg.eigh(a.T, overwrite_a=True, check_finite=False, driver="evd")
    return np.linalg.eigh(a)


def eigh_top(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenpairs (ascending) of a symmetric matrix; LAPACK's subset driver skips the rest,
    several times faster than a full `eigh` when k is much smaller than the matrix."""
    n = a.shape[0]
    if k >= n:
        return eigh(a)
    return scipy.linalg.eigh(a, subset_by_index=[n - k, n - 1], driver="evr")


def svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``a = u @ diag(s) @ vt`` with singular values descending."""
    return np.linalg.svd(a, full_matrices=False)


def qr(a: np.ndarray) -> np.ndarray:
    """Orthonormal basis (thin Q factor) of the column space of ``a``."""
    return np.linalg.qr(a)[0]


def sum(x: np.ndarray, axis: int | None = None) -> np.ndarray:  # noqa: A001 (backend name mirrors numpy)
    """Sum along ``axis``."""
    return np.sum(x, axis=axis)


def mean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean along ``axis``."""
    return np.mean(x, axis=axis)


def max(x: np.ndarray, axis: int | None = None) -> np.ndarray:  # noqa: A001
    """Maximum along ``axis``."""
    return np.max(x, axis=axis)


def min(x: np.ndarray, axis: int | None = None) -> np.ndarray:  # noqa: A001
    """Minimum along ``axis``."""
    return np.min(x, axis=axis)


def argmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Index of the first maximum along ``axis``."""
    return np.argmax(x, axis=axis)


def sqrt(x: np.ndarray) -> np.ndarray:
    """Element-wise square root."""
    return np.sqrt(x)


def abs(x: np.ndarray) -> np.ndarray:  # noqa: A001
    """Element-wise absolute value."""
    return np.abs(x)


def clip(x: np.ndarray, lower: float | None, upper: float | None) -> np.ndarray:
    """Values limited to ``[lower, upper]`` (``None`` leaves that side open)."""
    return np.clip(x, lower, upper)


def isnan(x: np.ndarray) -> np.ndarray:
    """Element-wise NaN test."""
    return np.isnan(x)


def where(condition: np.ndarray, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """``a`` where ``condition`` holds, else ``b``."""
    return np.where(condition, a, b)


def take(x: np.ndarray, indices: np.ndarray, axis: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Entries of ``x`` at integer ``indices`` (a numpy array) along ``axis``, written into ``out`` when given."""
    if out is None:
        return np.take(x, indices, axis=axis)
    # mode="raise" would buffer the result before copying it to a contiguous out (numpy buffers a non-contiguous
    # out in any mode); check the bounds here instead
    indices = np.asarray(indices)
    if indices.size and (indices.min() < -x.shape[axis] or indices.max() >= x.shape[axis]):
        raise IndexError(f"take: indices out of range for axis {axis} of size {x.shape[axis]}")
    return np.take(x, indices, axis=axis, out=out, mode="wrap")


def flip(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Reverse the order along ``axis``."""
    return np.flip(x, axis=axis)
