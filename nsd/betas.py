"""One session of NSD single-trial betas: read (fsaverage .mgh per hemisphere, or the 1.8 mm volume as int16
scaled by 1/300), restricted to a mask, and z-scored per vertex within the session as the organisers do
(scikit-learn's ``StandardScaler``: population sd, a constant vertex scaled by 1, NaN ignored and kept)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from nsd.tree import RawNsdError

__all__ = ["VOLUME_SCALE", "read_session", "zscore"]

VOLUME_SCALE = 300.0  # the 1.8 mm betas are int16 percent signal change x 300


def read_session(path: Path, mask: np.ndarray, n_trials: int | None = None) -> np.ndarray:
    """The betas of ``path`` at the ``mask`` vertices/voxels as float64 (n_trials, n_selected).

    ``mask`` is a bool array with the shape of one trial (fsaverage: (n_vertices,); volume: (X, Y, Z)); ``n_trials``
    (when given) is the trial count every session must have.
    """
    if not path.is_file():
        raise RawNsdError(f"Missing session file {path}")
    try:
        image = nib.load(path)
        volume = path.name.endswith((".nii", ".nii.gz"))
        data = np.asanyarray(image.dataobj.get_unscaled() if volume else image.dataobj)
    except Exception as error:  # nibabel raises many kinds for a truncated or corrupt file
        raise RawNsdError(f"Cannot read session file {path}: {error}") from error
    if not volume:  # FreeSurfer surface data: (n_vertices, 1, 1, n_trials)
        data = data.reshape(data.shape[0], -1)
    if data.ndim != mask.ndim + 1 or data.shape[:-1] != mask.shape:
        what = "vertices" if mask.ndim == 1 else "voxels"
        raise RawNsdError(
            f"{path}: betas have shape {data.shape}, expected {(*mask.shape, n_trials or 'n_trials')} "
            f"({what} of the mask, then trials)"
        )
    if n_trials is not None and data.shape[-1] != n_trials:
        raise RawNsdError(
            f"{path}: has {data.shape[-1]} trials, expected {n_trials} (the trials of session 1 and of the design)"
        )
    selected = data[mask].T.astype(np.float64)
    return selected / VOLUME_SCALE if volume else selected


def zscore(betas: np.ndarray) -> np.ndarray:
    """Z-score each column (vertex) over rows (trials): population sd, sd 0 -> 1, NaN ignored (and kept)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN vertex: its mean is NaN, and it is dropped
        mean = np.nanmean(betas, axis=0) if np.isnan(betas).any() else betas.mean(axis=0)
        centred = betas - mean
        sd = np.sqrt(np.nanmean(centred**2, axis=0))
    sd[~(sd > 0)] = 1.0
    return centred / sd
