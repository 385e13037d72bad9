"""The torch backend on the first CUDA device: the CPU torch backend with the device changed."""

from __future__ import annotations

from typing import Any

import torch

from .torch import *  # noqa: F401,F403 (same function set; only where new tensors live differs)
from .torch import _tensor_on

if not torch.cuda.is_available():
    raise RuntimeError(
        "backend='torch_cuda' needs a CUDA device, but torch.cuda.is_available() is False; "
        "use backend='torch' or backend='auto'"
    )

name = "torch_cuda"
device = "cuda"


def is_available() -> bool:
    """True when torch sees a CUDA device."""
    return torch.cuda.is_available()


def asarray(x: Any, dtype: str | None = None) -> torch.Tensor:
    """Tensor on the CUDA device from ``x`` (tensor, numpy, dask or anything numpy accepts)."""
    return _tensor_on(x, dtype, device)


def zeros(shape: int | tuple[int, ...], dtype: str = "float64") -> torch.Tensor:
    """Tensor of zeros on the CUDA device."""
    return torch.zeros(shape, dtype=getattr(torch, dtype), device=device)
