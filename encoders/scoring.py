"""Per-target accuracy scores computed for all targets at once: Pearson r, R^2, the Algonauts noise-normalised
score and ROI medians."""

from __future__ import annotations

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
        raise ValueError(f"scores need arrays of shape (n_samples >= 2,) or (n_samples >= 2, n_targets); "
                         f"got {tuple(y_true.shape)}")
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
    blocks = [_pearson_block(y_true[:, start : start + width], y_pred[:, start : start + width], xp)
              for start in range(0, y_true.shape[1], width)]
    return blocks[0] if len(blocks) == 1 else xp.asarray(np.concatenate([xp.to_numpy(b) for b in blocks]))


def _pearson_block(y_true: Any, y_pred: Any, xp: ModuleType) -> Any:
    """:func:`pearson_r` of one column block (NaN where either column is constant)."""
    yt = y_true - xp.mean(y_true, axis=0)
    yp = y_pred - xp.mean(y_pred, axis=0)
    norm = xp.sqrt(xp.sum(yt * yt, axis=0) * xp.sum(yp * yp, axis=0))
    constant = (xp.max(y_true, axis=0) == xp.min(y_true, axis=0)) | (
        xp.max(y_pred, axis=0) == xp.min(y_pred, axis=0))
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


def noise_normalized_score(r: Any, noise_ceiling: Any) -> tuple[np.ndarray, float]:
    """Algonauts 2023 score: squared correlation over the noise ceiling, per vertex and as a mean percentage.

    As in the challenge: negative r counts as 0, ``r**2 / (noise_ceiling / 100)`` is capped at 1, and only vertices
    with a non-zero noise ceiling count. A NaN r (a constant prediction) counts as 0.

    Parameters
    ----------
    r : array-like of shape (n_vertices,)
        Pearson r per vertex.
    noise_ceiling : array-like of shape (n_vertices,)
        Noise ceiling in percent of explainable variance (0..100).

    Returns
    -------
    per_vertex : ndarray of shape (n_vertices,)
        Noise-normalised accuracy in [0, 1]; NaN where the noise ceiling is 0.
    mean_percent : float
        Mean of ``per_vertex`` over vertices with a non-zero ceiling, times 100 (NaN if there are none).
    """
    r = np.asarray(r, dtype=np.float64)
    nc = np.asarray(noise_ceiling, dtype=np.float64) / 100.0
    if r.shape != nc.shape or r.ndim != 1:
        raise ValueError(f"r and noise_ceiling must be 1-D of the same length; got {r.shape} and {nc.shape}")
    explained = np.nan_to_num(np.clip(r, 0.0, None), nan=0.0) ** 2
    valid = nc != 0
    per_vertex = np.full_like(r, np.nan)
    per_vertex[valid] = np.minimum(explained[valid] / nc[valid], 1.0)
    mean_percent = float(per_vertex[valid].mean() * 100.0) if valid.any() else float("nan")
    return per_vertex, mean_percent


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
