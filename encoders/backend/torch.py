"""The torch backend on CPU threads: same function names as the numpy backend, computed by torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import (
    numpy as _numpy_backend,  # the LAPACK calls through scipy that torch has no in-place / subset form of
)

name = "torch"
device = "cpu"
Array = torch.Tensor


def is_available() -> bool:
    """The CPU torch backend always runs."""
    return True


def asarray(x: Any, dtype: str | None = None) -> torch.Tensor:
    """Tensor on the CPU from ``x`` (tensor, numpy, dask or anything numpy accepts), cast to ``dtype`` if given."""
    return _tensor_on(x, dtype, device)


def _tensor_on(x: Any, dtype: str | None, target: str) -> torch.Tensor:
    """Tensor of ``x`` on device ``target`` (shared by the CPU and CUDA backends)."""
    torch_dtype = None if dtype is None else getattr(torch, str(np.dtype(dtype)))
    if not isinstance(x, torch.Tensor):
        array = np.asarray(x)
        if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
            array = array.copy()
        x = torch.from_numpy(array)
    return x.to(device=target, dtype=torch_dtype)


def to_numpy(x: Any) -> np.ndarray:
    """The tensor as a numpy array on the host."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def dtype_name(x: torch.Tensor) -> str:
    """Name of the element type, e.g. ``"float64"``."""
    return str(x.dtype).removeprefix("torch.")


def eps(x: torch.Tensor) -> float:
    """Machine epsilon of the floating type of ``x``."""
    return float(torch.finfo(x.dtype).eps)


def zeros(shape: int | tuple[int, ...], dtype: str = "float64") -> torch.Tensor:
    """Tensor of zeros."""
    return torch.zeros(shape, dtype=getattr(torch, dtype), device=device)


def copyto(dst: torch.Tensor, src: Any) -> torch.Tensor:
    """Write ``src`` (a numpy array or tensor) into ``dst``, cast to ``dst``'s dtype and moved to its device;
    returns ``dst`` (torch may stage a cast or a cross-device copy in a temporary)."""
    source = src if isinstance(src, torch.Tensor) else _tensor_on(src, None, "cpu")
    return dst.copy_(source)


def ascontiguous(x: torch.Tensor) -> torch.Tensor:
    """``x`` in row-major memory order (copied only when it is not already, e.g. for a transposed view)."""
    return x.contiguous()


def subtract(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a - b`` (broadcasting), written into ``out`` when given (no new allocation)."""
    return torch.sub(a, b, out=out)


def multiply(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a * b`` (broadcasting), written into ``out`` when given (``out=a`` squares in place)."""
    return torch.mul(a, b, out=out)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Matrix product."""
    return torch.matmul(a, b)


def eigh(a: torch.Tensor, overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix. ``overwrite=True`` on the CPU lets
    LAPACK (through scipy) write the eigenvectors into ``a``'s memory (``a`` is destroyed; no n x n copy)."""
    if overwrite and a.device.type == "cpu" and a.is_contiguous():
        values, vectors = _numpy_backend.eigh(a.numpy(), overwrite=True)
        return torch.from_numpy(values), torch.from_numpy(vectors)
    return torch.linalg.eigh(a)


def eigh_top(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenpairs (ascending) of a symmetric matrix: on the CPU through LAPACK's subset driver
    (scipy), several times faster than a full `eigh` when k is much smaller than the matrix; full `eigh` on GPUs."""
    n = a.shape[0]
    if k >= n:
        return eigh(a)
    if a.device.type != "cpu":
        values, vectors = torch.linalg.eigh(a)
        return values[n - k :], vectors[:, n - k :]
    values, vectors = _numpy_backend.eigh_top(a.numpy(), k)
    return torch.from_numpy(values), torch.from_numpy(vectors)


def svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``a = u @ diag(s) @ vt`` with singular values descending."""
    return torch.linalg.svd(a, full_matrices=False)


def qr(a: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (thin Q factor) of the column space of ``a``."""
    return torch.linalg.qr(a, mode="reduced")[0]


def sum(x: torch.Tensor, axis: int | None = None) -> torch.Tensor:  # noqa: A001 (backend name mirrors numpy)
    """Sum along ``axis``."""
    return torch.sum(x) if axis is None else torch.sum(x, dim=axis)


def mean(x: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean along ``axis``."""
    return torch.mean(x) if axis is None else torch.mean(x, dim=axis)


def max(x: torch.Tensor, axis: int | None = None) -> torch.Tensor:  # noqa: A001
    """Maximum along ``axis``."""
    return torch.amax(x) if axis is None else torch.amax(x, dim=axis)


def min(x: torch.Tensor, axis: int | None = None) -> torch.Tensor:  # noqa: A001
    """Minimum along ``axis``."""
    return torch.amin(x) if axis is None else torch.amin(x, dim=axis)


def argmax(x: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Index of the first maximum along ``axis``."""
    return torch.argmax(x, dim=axis)


def sqrt(x: torch.Tensor) -> torch.Tensor:
    """Element-wise square root."""
    return torch.sqrt(x)


def abs(x: torch.Tensor) -> torch.Tensor:  # noqa: A001
    """Element-wise absolute value."""
    return torch.abs(x)


def clip(x: torch.Tensor, lower: float | None, upper: float | None) -> torch.Tensor:
    """Values limited to ``[lower, upper]`` (``None`` leaves that side open)."""
    return torch.clamp(x, lower, upper)


def isnan(x: torch.Tensor) -> torch.Tensor:
    """Element-wise NaN test."""
    return torch.isnan(x)


def where(condition: torch.Tensor, a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """``a`` where ``condition`` holds, else ``b``."""
    return torch.where(condition, a, b)


def take(x: torch.Tensor, indices: np.ndarray, axis: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Entries of ``x`` at integer ``indices`` (a numpy array) along ``axis``, written into ``out`` when given."""
    index = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=x.device)
    return torch.index_select(x, axis, index, out=out)


def flip(x: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Reverse the order along ``axis``."""
    return torch.flip(x, dims=(axis,))
