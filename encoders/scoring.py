"""Per-target accuracy scores computed for all targets at once: Pearson r, R^2, the Algonauts 2023 challenge score
and ROI medians."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from .backend import get_backend

# Scores are computed over column blocks of about this many elements (4 MB in float32), so that the dozen
# passes over a block hit the cache instead of memory.
_BLOCK_ELEMENTS = 2**20


def _check_pair(y_true: Any, y_pred: Any, xp: ModuleType) -> tuple[Any, Any]:
    """Both arrays on backend ``xp`` as 2-D (n_samples, n_targets) floats; shapes must match."""
    y_true, y_pred = xp.asarray(y_true), xp.asarray(y_pred)
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(f"y_true has shape {tuple(y_true.shape)} but y_pred has shape {tuple(y_pred.shape)}")
    if y_true.ndim not in (1, 2) or y_true.shape[0] < 2:
        raise ValueError(
            f"scores need arrays of shape (n_samples >= 2,) or (n_samples >= 2, n_targets); got {tuple(y_true.shape)}"
        )
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    dtype = "float64" if "64" in xp.dtype_name(y_true) + xp.dtype_name(y_pred) else "float32"
    return xp.asarray(y_true, dtype), xp.asarray(y_pred, dtype)


def constant_columns(y: Any) -> np.ndarray:
    """Indices of the columns of ``y`` (n_samples, n_targets) whose values are all equal (Pearson r is undefined)."""
    y = np.asarray(y)
    y = y[:, None] if y.ndim == 1 else y
    return np.flatnonzero(np.all(y == y[:1], axis=0))


def pearson_r(y_true: Any, y_pred: Any, *, backend: str | ModuleType = "numpy") -> Any:
    """Pearson correlation between matching columns of ``y_true`` and ``y_pred``, all targets in one pass.

    Equal to ``scipy.stats.pearsonr`` column by column; a column that is constant in either array gets NaN,
    silently (find those with :func:`constant_columns`).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples, n_targets) or (n_samples,)
    backend : str or module, default="numpy"
        Backend that computes; the result is that backend's array type (numpy by default).

    Returns
    -------
    r : array of shape (n_targets,)
    """
    xp = get_backend(backend)
    y_true, y_pred = _check_pair(y_true, y_pred, xp)
    width = max(1, _BLOCK_ELEMENTS // y_true.shape[0])
    blocks = [
        _pearson_block(y_true[:, start : start + width], y_pred[:, start : start + width], xp)
        for start in range(0, y_true.shape[1], width)
    ]
    return blocks[0] if len(blocks) == 1 else xp.asarray(np.concatenate([xp.to_numpy(b) for b in blocks]))


def _pearson_block(y_true: Any, y_pred: Any, xp: ModuleType) -> Any:
    """:func:`pearson_r` of one column block (NaN where either column is constant)."""
    yt = y_true - xp.mean(y_true, axis=0)
    yp = y_pred - xp.mean(y_pred, axis=0)
    norm = xp.sqrt(xp.sum(yt * yt, axis=0) * xp.sum(yp * yp, axis=0))
    constant = (xp.max(y_true, axis=0) == xp.min(y_true, axis=0)) | (xp.max(y_pred, axis=0) == xp.min(y_pred, axis=0))
    r = xp.sum(yt * yp, axis=0) / xp.where(constant | (norm == 0), 1.0, norm)
    return xp.where(constant, float("nan"), xp.clip(r, -1.0, 1.0))


def r2_score(y_true: Any, y_pred: Any, *, backend: str | ModuleType = "numpy") -> Any:
    """Coefficient of determination per target (``sklearn.metrics.r2_score(..., multioutput="raw_values",
    force_finite=False)``): NaN where ``y_true`` is constant.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples, n_targets) or (n_samples,)
    backend : str or module, default="numpy"

    Returns
    -------
    r2 : array of shape (n_targets,)
    """
    xp = get_backend(backend)
    y_true, y_pred = _check_pair(y_true, y_pred, xp)
    residual = xp.sum((y_true - y_pred) ** 2, axis=0)
    yt = y_true - xp.mean(y_true, axis=0)
    total = xp.sum(yt * yt, axis=0)
    constant = xp.max(y_true, axis=0) == xp.min(y_true, axis=0)
    r2 = 1.0 - residual / xp.where(constant, 1.0, total)
    return xp.where(constant, float("nan"), r2)


CHALLENGE_NC_FLOOR = 1e-14  # the organisers' stand-in for a noise ceiling of exactly 0


def challenge_score(r: Any, noise_ceiling: Any) -> tuple[np.ndarray, float]:
    """The Algonauts 2023 noise-normalised score of one hemisphere, per vertex and its mean (percent).

    As the organisers' ``03_test_encoding.py`` computes it: negative r -> 0; r^2; a noise ceiling of exactly 0
    becomes 1e-14 (the vertex still counts, with 100 unless r <= 0); ``100 * r^2 / NC`` capped at 100; the mean
    over all vertices. The challenge scores held-out test images with the test split's noise ceiling; on other
    images (the grid's validation rows) it is an estimate of that score.

    A NaN r (a constant prediction or response) counts as r = 0, with a warning: the organisers' script would
    make the whole mean NaN.

    Parameters
    ----------
    r : array-like of shape (n_vertices,)
        Pearson r per vertex.
    noise_ceiling : array-like of shape (n_vertices,)
        The challenge's noise ceiling, a fraction of explainable variance in [0, 1]
        (``test_split/noise_ceiling/{lh,rh}_noise_ceiling.npy``).

    Returns
    -------
    per_vertex : ndarray of shape (n_vertices,)
        Noise-normalised accuracy in percent, 0..100.
    mean : float
        Mean of ``per_vertex`` over all vertices (NaN when there are none).
    """
    r = np.asarray(r, dtype=np.float64)
    nc = np.asarray(noise_ceiling, dtype=np.float64)
    if r.shape != nc.shape or r.ndim != 1:
        raise ValueError(f"r and noise_ceiling must be 1-D of the same length; got {r.shape} and {nc.shape}")
    if nc.size and (np.nanmax(nc) > 1 or np.nanmin(nc) < 0 or np.isnan(nc).any()):
        raise ValueError(
            f"noise_ceiling must be a fraction in [0, 1] (the challenge's units); got values from "
            f"{np.nanmin(nc):g} to {np.nanmax(nc):g}{' and NaN' if np.isnan(nc).any() else ''}"
        )
    n_nan = int(np.isnan(r).sum())
    if n_nan:
        warnings.warn(
            f"{n_nan} of {r.size} vertices have r = NaN (constant prediction or response); they count as r = 0",
            RuntimeWarning,
            stacklevel=2,
        )
    per_vertex = _challenge_per_vertex(r, nc)
    return per_vertex, float(per_vertex.mean()) if per_vertex.size else float("nan")


def _challenge_per_vertex(r: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """The official per-vertex score of r (any leading shape, NaN as 0) against a checked fraction-unit ceiling."""
    r2 = np.nan_to_num(np.clip(r, 0.0, None), nan=0.0) ** 2
    return np.minimum(100.0 * r2 / np.where(nc == 0, CHALLENGE_NC_FLOOR, nc), 100.0)


def challenge_score_rows(r: Any, noise_ceiling: Any) -> np.ndarray:
    """`challenge_score`'s mean for each row of ``r`` (n_rows, n_vertices), e.g. bootstrap resamples; NaN r
    counts as 0 without a warning."""
    r = np.asarray(r, dtype=np.float64)
    nc = np.asarray(noise_ceiling, dtype=np.float64)
    if r.ndim != 2 or r.shape[1:] != nc.shape:
        raise ValueError(f"r must have shape (n_rows, {nc.size}) to match noise_ceiling; got {r.shape}")
    return _challenge_per_vertex(r, nc).mean(axis=1)


def roi_medians(r: Any, masks: Mapping[str, Any]) -> dict[str, float]:
    """Median of ``r`` inside each ROI mask, ignoring NaN (NaN for an empty ROI).

    Parameters
    ----------
    r : array-like of shape (n_vertices,)
    masks : mapping of ROI name to bool array of shape (n_vertices,)

    Returns
    -------
    dict
        ROI name -> median r (float).
    """
    r = np.asarray(r, dtype=np.float64)
    medians = {}
    for name, mask in masks.items():
        mask = np.asarray(mask)
        if mask.shape != r.shape:
            raise ValueError(f"ROI mask {name!r} has shape {mask.shape} but r has shape {r.shape}")
        if mask.dtype != bool:
            raise ValueError(f"ROI mask {name!r} must be boolean; got dtype {mask.dtype}")
        values = r[mask]
        values = values[~np.isnan(values)]
        medians[name] = float(np.median(values)) if values.size else float("nan")
    return medians
