"""The NSD experimental design (``nsd_expdesign.mat``): which NSD image each subject saw on each trial.

The .mat file is 1-based (MATLAB): ``masterordering`` (1, n_trials) indexes the columns of ``subjectim``
(8, n_images_per_subject), which holds NSD ids; ``sharedix`` lists the ids every subject was shown. Everything
here is 0-based, as NSD ids are in the stimulus file and in the challenge's image names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from nsd.tree import EXPDESIGN_FILE, RawNsdError

__all__ = ["ExpDesign", "load_expdesign"]


@dataclass(frozen=True)
class ExpDesign:
    """The design, 0-based: ``masterordering[t]`` is the subject image column of trial ``t``, ``subjectim[s - 1, c]``
    subject ``s``'s NSD id of column ``c``, ``shared`` the ids shown to every subject (the shared 1000)."""

    path: Path
    masterordering: np.ndarray
    subjectim: np.ndarray
    shared: np.ndarray

    @property
    def n_trials(self) -> int:
        """Trials in the full design (30,000 in NSD: 40 sessions of 750)."""
        return len(self.masterordering)

    def trial_ids(self, subject: int, trials: Sequence[int] | np.ndarray) -> np.ndarray:
        """NSD ids (int64) that ``subject`` saw on the given 0-based trials."""
        trials = np.asarray(trials, dtype=np.int64)
        if trials.size and (trials.min() < 0 or trials.max() >= self.n_trials):
            raise RawNsdError(
                f"{self.path}: masterordering has {self.n_trials} trials but trial {int(trials.max()) + 1} was asked "
                "for; the expdesign does not match the betas"
            )
        return self.subjectim[subject - 1, self.masterordering[trials]]


def _field(mat: dict, path: Path, name: str, ndim: int) -> np.ndarray:
    """One 1-based integer field of the .mat file, returned 0-based as int64."""
    if name not in mat:
        keys = sorted(key for key in mat if not key.startswith("__"))
        raise RawNsdError(f"{path} has no variable {name!r}; it holds {keys}")
    value = np.asarray(mat[name])
    if value.ndim != 2 or (ndim == 1 and 1 not in value.shape) or value.dtype.kind not in "fiu":
        raise RawNsdError(f"{path}: {name} has shape {value.shape} dtype {value.dtype}, expected a 2-D numeric array")
    if value.size and value.min() < 1:
        raise RawNsdError(f"{path}: {name} has values below 1 ({value.min()}); the design's indices are 1-based")
    value = value.astype(np.int64) - 1
    return value.ravel() if ndim == 1 else value


def load_expdesign(nsd_dir: str | Path) -> ExpDesign:
    """Read ``nsddata/experiments/nsd/nsd_expdesign.mat`` under ``nsd_dir`` and check it is self-consistent."""
    path = Path(nsd_dir) / EXPDESIGN_FILE
    if not path.is_file():
        raise RawNsdError(f"Missing file {path} (the NSD experimental design)")
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, OSError, NotImplementedError) as error:
        raise RawNsdError(f"Cannot read {path} as a MATLAB file: {error}") from error
    masterordering = _field(mat, path, "masterordering", 1)
    subjectim = _field(mat, path, "subjectim", 2)
    shared = _field(mat, path, "sharedix", 1) if "sharedix" in mat else subjectim[0, :1000]
    if masterordering.size and masterordering.max() >= subjectim.shape[1]:
        raise RawNsdError(
            f"{path}: masterordering reaches column {int(masterordering.max()) + 1} but subjectim has "
            f"{subjectim.shape[1]} columns"
        )
    return ExpDesign(path, masterordering, subjectim, np.sort(shared))
