"""Write-time feature reductions: flatten, spatial/token average pooling, seeded sparse random projection.

A reducer maps a batch of layer outputs ``(B, *feature_shape)`` to rows ``(B, out_features)`` on the
batch's own device, so huge layers shrink before they leave the GPU.

``"srp:<k>"`` is the very sparse random projection of Li, Hastie & Church (2006), the same matrix law as
scikit-learn's ``SparseRandomProjection(density="auto")``: with ``F`` input features and density
``d = 1 / sqrt(F)``, each entry of the ``(F, k)`` matrix is ``+sqrt(1/d)/sqrt(k)`` or ``-sqrt(1/d)/sqrt(k)``
with probability ``d/2`` each and 0 otherwise, so squared norms are preserved in expectation
(Johnson-Lindenstrauss). The matrix is drawn on the CPU from ``numpy.random.default_rng(seed)`` and
depends only on ``(seed, F, k)``: every device and every run gets the same projection.
"""

from __future__ import annotations

import math
import re
from typing import Protocol

import numpy as np
import torch

from featurestore.errors import InvalidParameterError

_SRP_PATTERN = re.compile(r"^srp:(\d+)$")


class Reducer(Protocol):
    """What the extraction engine needs from a reduction."""

    spec: str | None
    seed: int
    feature_shape: tuple[int, ...]
    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def _check_batch(x: torch.Tensor, feature_shape: tuple[int, ...], spec: str | None) -> None:
    """Refuse a batch whose per-image shape differs from the shape the reducer was built for."""
    if tuple(x.shape[1:]) != feature_shape:
        raise ValueError(
            f"reduce={spec!r} was built for feature shape {feature_shape}, got a batch of shape {tuple(x.shape)}"
        )


class Flatten:
    """No reduction: each image's activation flattened to one row."""

    spec: str | None = None

    def __init__(self, feature_shape: tuple[int, ...], seed: int = 0) -> None:
        self.feature_shape = tuple(feature_shape)
        self.seed = seed
        self.out_features = math.prod(self.feature_shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, self.feature_shape, self.spec)
        return x.reshape(x.shape[0], -1)


class AvgPool:
    """Mean over spatial dims of a (C, H, W) conv map, or over tokens of a (T, D) token map."""

    spec: str | None = "avgpool"

    def __init__(self, feature_shape: tuple[int, ...], seed: int = 0) -> None:
        self.feature_shape = tuple(feature_shape)
        self.seed = seed
        if len(self.feature_shape) == 3:
            self._dims: tuple[int, ...] = (2, 3)
            self.out_features = self.feature_shape[0]
        elif len(self.feature_shape) == 2:
            self._dims = (1,)
            self.out_features = self.feature_shape[1]
        else:
            raise InvalidParameterError(
                f"reduce='avgpool' needs a (C, H, W) conv map or a (tokens, dim) token map, "
                f"got feature shape {self.feature_shape}"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, self.feature_shape, self.spec)
        return x.float().mean(dim=self._dims)


def sparse_projection_matrix(n_features: int, n_components: int, seed: int) -> torch.Tensor:
    """The (n_features, n_components) very sparse random projection matrix as a CPU float32 COO tensor."""
    density = 1.0 / math.sqrt(n_features)
    value = math.sqrt(1.0 / density) / math.sqrt(n_components)
    rng = np.random.default_rng(seed)
    counts = rng.binomial(n_features, density, size=n_components)
    rows = [rng.choice(n_features, size=int(c), replace=False) for c in counts]
    row_index = np.concatenate(rows).astype(np.int64)
    col_index = np.repeat(np.arange(n_components, dtype=np.int64), counts)
    signs = rng.integers(0, 2, size=row_index.size) * 2 - 1
    values = (signs * value).astype(np.float32)
    indices = torch.from_numpy(np.stack([row_index, col_index]))
    matrix = torch.sparse_coo_tensor(
        indices, torch.from_numpy(values), (n_features, n_components), check_invariants=True
    )
    return matrix.coalesce()


class SparseRandomProjection:
    """Seeded very sparse random projection of the flattened activation to k dims."""

    def __init__(self, feature_shape: tuple[int, ...], n_components: int, seed: int = 0) -> None:
        self.feature_shape = tuple(feature_shape)
        self.seed = seed
        self.spec = f"srp:{n_components}"
        self.out_features = n_components
        n_features = math.prod(self.feature_shape)
        if not 0 < n_components < n_features:
            raise InvalidParameterError(
                f"reduce={self.spec!r} needs 0 < k < the {n_features} features of shape {self.feature_shape}; "
                f"store the layer unreduced instead"
            )
        self._matrix_t = sparse_projection_matrix(n_features, n_components, seed).t().coalesce()
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def matrix(self) -> torch.Tensor:
        """The projection matrix (n_features, k) as a dense CPU tensor (small layers and tests only)."""
        return self._matrix_t.to_dense().t()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, self.feature_shape, self.spec)
        if x.device not in self._on_device:
            self._on_device[x.device] = self._matrix_t.to(x.device)
        flat = x.reshape(x.shape[0], -1).float()
        return (self._on_device[x.device] @ flat.t()).t()


def make_reducer(spec: str | None, feature_shape: tuple[int, ...], seed: int = 0) -> Reducer:
    """Build the reducer named by ``spec`` (None, "avgpool" or "srp:<k>") for one layer's feature shape."""
    if spec is None:
        return Flatten(feature_shape, seed)
    if spec == "avgpool":
        return AvgPool(feature_shape, seed)
    match = _SRP_PATTERN.match(spec)
    if match:
        return SparseRandomProjection(feature_shape, int(match.group(1)), seed)
    raise InvalidParameterError(f"Unknown reduce={spec!r}; expected None, 'avgpool' or 'srp:<k>' (e.g. 'srp:4096')")
