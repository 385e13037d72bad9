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

from encoders.partition import partition_fitted
from encoders.ridge import BandedRidgeCV

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
    parts = partition_fitted(ridge, x_train, y_train, x_val, y_val, names=names, target_dim="vertex")
    return parts.rename(PARTITION_VARIABLES)
