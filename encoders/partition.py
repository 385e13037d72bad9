"""Variance partitioning of a banded (multi-space) encoding model: which feature space explains which variance.

Two complementary answers, per target (vertex):
- the R^2 split (himalaya's ``r2_score_split``, the product measure): each space's share of the joint model's R^2,
  ``R2_k = sum_i (2 y_i yhat_k,i - yhat_k,i sum_j yhat_j,i) / sum_i y_i^2``, which sums over spaces to the joint R^2;
- unique and shared variance from refits (the set-theoretic partition of Lescroart et al. 2015 and de Heer et al.
  2017): ``unique_k = R2(all spaces) - R2(all spaces but k)`` and ``shared = R2(all) - sum_k unique_k``, what the
  joint model explains that no single space explains alone (for two spaces, ``R2(A) + R2(B) - R2(A, B)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from sklearn.base import clone

from .errors import InvalidArgumentError
from .ridge import resolve_spaces
from .scoring import r2_score


def r2_score_split(y_true: Any, y_pred_split: Any, *, include_correlation: bool = True) -> np.ndarray:
    """Each space's share of the joint R^2 (the product measure of himalaya's ``r2_score_split``).

    Both ``y_true`` and each space's prediction are centred over samples first (himalaya asks its caller to centre
    ``y_true``), so an intercept drops out and the shares sum to the R^2 of the centred joint prediction.

    Parameters
    ----------
    y_true : array-like of shape (n_samples, n_targets)
    y_pred_split : array-like of shape (n_spaces, n_samples, n_targets)
        Each space's contribution, e.g. :meth:`encoders.BandedRidgeCV.predict_split`.
    include_correlation : bool, default=True
        Count the products between spaces' predictions (the shares then sum to the joint R^2); False gives each
        space's R^2 as if the predictions were uncorrelated.

    Returns
    -------
    ndarray of shape (n_spaces, n_targets)
        NaN where ``y_true`` is constant.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    split = np.asarray(y_pred_split, dtype=np.float64)
    if y_true.ndim != 2 or split.ndim != 3 or split.shape[1:] != y_true.shape:
        raise InvalidArgumentError(
            f"r2_score_split needs y_true (n_samples, n_targets) and y_pred_split (n_spaces, n_samples, n_targets) "
            f"with matching samples and targets; got {y_true.shape} and {split.shape}"
        )
    y_true = y_true - y_true.mean(axis=0)
    split = split - split.mean(axis=1, keepdims=True)
    total = np.sum(y_true * y_true, axis=0)
    cross = split.sum(axis=0) if include_correlation else None
    shares = np.empty(split.shape[::2])
    for k, part in enumerate(split):
        overlap = part * cross if include_correlation else part * part
        shares[k] = np.sum(2.0 * y_true * part - overlap, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, shares / total, np.nan)


def variance_partition(
    joint: Any,
    leave_one_out: Any,
    *,
    spaces: Sequence[str] | None = None,
    target_dim: str = "vertex",
    r2_split: Any = None,
) -> xr.Dataset:
    """Unique and shared variance per target from the R^2 of the joint fit and of each leave-one-space-out fit.

    Parameters
    ----------
    joint : array-like of shape (n_targets,)
        Held-out R^2 of the model on all spaces.
    leave_one_out : array-like of shape (n_spaces, n_targets)
        Held-out R^2 of the model refitted without space k (row k).
    spaces : sequence of str or None
        Space names (default ``space0``, ...).
    target_dim : str, default="vertex"
    r2_split : array-like of shape (n_spaces, n_targets) or None
        The joint model's R^2 split (:func:`r2_score_split`), stored alongside when given.

    Returns
    -------
    xarray.Dataset
        ``joint`` (target), ``leave_one_out`` and ``unique`` (space, target), ``shared`` (target) and, if given,
        ``r2_split`` (space, target). A negative unique or shared value is kept (it is what the data say: e.g. a
        space whose extra penalty search overfits), not clipped.
    """
    joint = np.asarray(joint, dtype=np.float64)
    loo = np.asarray(leave_one_out, dtype=np.float64)
    if joint.ndim != 1 or loo.ndim != 2 or loo.shape[1] != joint.shape[0]:
        raise InvalidArgumentError(
            f"variance_partition needs joint (n_targets,) and leave_one_out (n_spaces, n_targets); "
            f"got {joint.shape} and {loo.shape}"
        )
    names = list(spaces) if spaces is not None else [f"space{k}" for k in range(loo.shape[0])]
    if len(names) != loo.shape[0]:
        raise InvalidArgumentError(f"spaces names {len(names)} spaces ({names}) but leave_one_out has {loo.shape[0]}")
    unique = joint[None, :] - loo
    data = {
        "joint": ((target_dim,), joint),
        "leave_one_out": (("space", target_dim), loo),
        "unique": (("space", target_dim), unique),
        "shared": ((target_dim,), joint - unique.sum(axis=0)),
    }
    if r2_split is not None:
        data["r2_split"] = (("space", target_dim), np.asarray(r2_split, dtype=np.float64))
    return xr.Dataset(
        data,
        coords={"space": names, target_dim: np.arange(joint.shape[0])},
        attrs={
            "unique": "R2(all spaces) - R2(all spaces but this one)",
            "shared": "R2(all spaces) - sum of unique over spaces",
        },
    )


def partition_variance(
    model: Any, X_train: Any, Y_train: Any, X_test: Any, Y_test: Any, *, target_dim: str = "vertex"
) -> xr.Dataset:
    """Fit a :class:`encoders.BandedRidgeCV` on all spaces and once without each space (penalties chosen again by
    CV on the training rows each time), score R^2 on the test rows and partition it (:func:`variance_partition`,
    with the joint model's :func:`r2_score_split`).

    Parameters
    ----------
    model : BandedRidgeCV
        Unfitted template; its ``spaces`` give the column blocks of X (at least 2 spaces).
    X_train, Y_train, X_test, Y_test : array-like
        Training rows (used for fitting and penalty choice) and held-out rows (used only for scoring).
    target_dim : str, default="vertex"

    Returns
    -------
    xarray.Dataset
        As :func:`variance_partition`, with ``r2_split``.
    """
    names, _ = resolve_spaces(model.spaces)
    if len(names) < 2:
        raise InvalidArgumentError(f"partition_variance needs at least 2 spaces; got {list(names)}")
    joint = clone(model).fit(np.asarray(X_train), np.asarray(Y_train))
    return partition_fitted(joint, X_train, Y_train, X_test, Y_test, target_dim=target_dim)


def partition_fitted(
    joint: Any,
    X_train: Any,
    Y_train: Any,
    X_test: Any,
    Y_test: Any,
    *,
    names: Sequence[str] | None = None,
    target_dim: str = "vertex",
) -> xr.Dataset:
    """:func:`partition_variance` for a :class:`encoders.BandedRidgeCV` already fitted on ``X_train``, ``Y_train``
    (the grid has its joint model: only the leave-one-space-out refits run here); ``names`` label the spaces
    (default: the model's ``space_names_``)."""
    X_train, X_test = np.asarray(X_train), np.asarray(X_test)
    Y_train, Y_test = np.asarray(Y_train), np.asarray(Y_test)
    Y_test_2d = Y_test[:, None] if Y_test.ndim == 1 else Y_test
    split = joint.predict_split(X_test)
    split = split[..., None] if split.ndim == 2 else split
    joint_r2 = r2_score(Y_test_2d, split.sum(axis=0) + np.atleast_1d(joint.intercept_))
    labels, slices = joint.space_names_, joint.space_slices_
    leave_one_out = []
    for k in range(len(slices)):
        keep = [j for j in range(len(slices)) if j != k]
        columns = np.concatenate([np.arange(slices[j].start, slices[j].stop) for j in keep])
        widths = [(labels[j], slices[j].stop - slices[j].start) for j in keep]
        reduced = clone(joint).set_params(spaces=widths).fit(X_train[:, columns], Y_train)
        prediction = reduced.predict(X_test[:, columns])
        leave_one_out.append(r2_score(Y_test_2d, prediction[:, None] if prediction.ndim == 1 else prediction))
    return variance_partition(
        joint_r2,
        np.stack(leave_one_out),
        spaces=list(labels if names is None else names),
        target_dim=target_dim,
        r2_split=r2_score_split(Y_test_2d, split),
    )


def partition_by_roi(parts: xr.Dataset, masks: Mapping[str, Any], *, target_dim: str = "vertex") -> xr.Dataset:
    """Mean of every variable of a partition over the vertices of each ROI (NaN ignored), along a new ``roi`` dim.

    Means, not medians: R^2 shares add up, so per ROI ``joint = sum(unique) + shared`` still holds.

    Parameters
    ----------
    parts : xarray.Dataset
        From :func:`variance_partition` or :func:`partition_variance`.
    masks : mapping of ROI name to bool array of shape (n_vertices,)
    target_dim : str, default="vertex"
    """
    n_targets = parts.sizes[target_dim]
    per_roi = []
    for name, mask in masks.items():
        mask = np.asarray(mask)
        if mask.shape != (n_targets,) or mask.dtype != bool:
            raise InvalidArgumentError(
                f"ROI mask {name!r} must be a bool array of shape ({n_targets},); got {mask.dtype} {mask.shape}"
            )
        per_roi.append(parts.isel({target_dim: np.flatnonzero(mask)}).mean(target_dim, skipna=True))
    return xr.concat(per_roi, dim="roi").assign_coords(roi=list(masks))
