"""Variance partitioning of a banded model of the grid on its validation rows: each space's share of the joint
prediction's R^2 (`encoders.partition.r2_score_split`) and, from refits without each space, the variance each
space explains uniquely and the variance the spaces share (`encoders.partition.variance_partition`).

The leave-one-space-out models are refitted inside the combination's task on the same training rows and the same
per-space PCA components, their penalties chosen again by cross-validation on the training rows (so a space's
unique variance is what dropping it costs a model that may re-tune the others): 1 + n_spaces banded fits per task.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from sklearn.base import clone

from encoders.partition import r2_score_split, variance_partition
from encoders.ridge import BandedRidgeCV
from encoders.scoring import r2_score

__all__ = ["PARTITION_VARIABLES", "partition_validation"]

# names in the results of what `variance_partition` returns, per vertex (per ROI with a ``roi_`` prefix)
PARTITION_VARIABLES = {
    "joint": "r2_joint",
    "leave_one_out": "r2_without_space",
    "unique": "unique_r2",
    "shared": "shared_r2",
    "r2_split": "r2_split",
}


def partition_validation(
    ridge: BandedRidgeCV,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    names: Sequence[str],
) -> xr.Dataset:
    """Partition the validation R^2 of a fitted banded ``ridge`` (fitted on ``x_train``, ``y_train``) between its
    spaces -> Dataset with dims (space, vertex), variables named as `PARTITION_VARIABLES` says."""
    split = ridge.predict_split(x_val)
    joint = r2_score(y_val, split.sum(axis=0) + ridge.intercept_)
    slices = ridge.space_slices_
    without = []
    for k in range(len(slices)):
        keep = [j for j in range(len(slices)) if j != k]
        columns = np.concatenate([np.arange(slices[j].start, slices[j].stop) for j in keep])
        widths = [slices[j].stop - slices[j].start for j in keep]
        refit = clone(ridge).set_params(spaces=widths).fit(x_train[:, columns], y_train)
        without.append(r2_score(y_val, refit.predict(x_val[:, columns])))
    parts = variance_partition(
        joint, np.stack(without), spaces=list(names), target_dim="vertex", r2_split=r2_score_split(y_val, split)
    )
    return parts.rename(PARTITION_VARIABLES)
