"""The NSD stimulus file (``nsd_stimuli.hdf5``, dataset ``imgBrick``): image i is NSD id i, read lazily."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from featurestore.stimuli import StimulusError, StimulusSource

IMAGE_SHAPE = (425, 425, 3)
# the release's place of the stimulus file, relative to the NSD root (nsd.tree.STIMULI_FILE)
_NSD_ROOT_DEPTH = len(Path("nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5").parts)


def subject_ids(path: str | os.PathLike, subjects: int | str | Sequence[int | str]) -> np.ndarray:
    """Sorted NSD ids of the images the design shows to ``subjects`` (their ``subjectim`` rows, 10,000 each), read
    from ``nsd_expdesign.mat`` of the NSD tree that holds the hdf5 file at its release path."""
    from nsd.expdesign import load_expdesign  # imports the encoders' errors: only when subjects are asked for
    from nsd.tree import RawNsdError, check_nsd_subject

    path = Path(path).resolve()
    if len(path.parents) < _NSD_ROOT_DEPTH:
        raise StimulusError(f"{path} is not in an NSD tree (nsddata_stimuli/stimuli/nsd/): subjects need its design")
    root = path.parents[_NSD_ROOT_DEPTH - 1]
    try:
        numbers = [check_nsd_subject(s) for s in ([subjects] if isinstance(subjects, (int, str)) else subjects)]
        design = load_expdesign(root)
    except RawNsdError as error:
        raise StimulusError(f"images of subjects {subjects!r} from {path}: {error}") from error
    return np.unique(np.concatenate([design.subjectim[n - 1, np.unique(design.masterordering)] for n in numbers]))


class NSDHdf5(StimulusSource):
    """Images of the NSD stimulus hdf5 file, indexed by NSD id.

    The file is opened on first read in each process and never pickled, so the source can be
    sent to DataLoader worker processes (``spawn`` or ``fork``).

    Parameters
    ----------
    path : str or path-like
        The hdf5 file, e.g. ``nsd_stimuli.hdf5``.
    dataset : str, default="imgBrick"
        Dataset of shape (N, 425, 425, 3), dtype uint8; row i is NSD id i.
    ids : sequence of int, default=None
        Restrict the source to these NSD ids; None means all N rows.
    """

    def __init__(self, path: str | os.PathLike, dataset: str = "imgBrick", ids: Sequence[int] | None = None):
        self.path = Path(path)
        self.dataset = dataset
        n_images = self._check_layout()
        if ids is None:
            chosen = np.arange(n_images, dtype=np.int64)
        else:
            chosen = np.unique(np.asarray(ids, dtype=np.int64))
            outside = chosen[(chosen < 0) | (chosen >= n_images)]
            if outside.size:
                raise StimulusError(
                    f"ids {outside[:10].tolist()} are outside {self.path}[{dataset}], "
                    f"which holds NSD ids 0..{n_images - 1}"
                )
        chosen.flags.writeable = False
        self._ids = chosen
        self._file: h5py.File | None = None
        self._file_pid: int | None = None

    def _check_layout(self) -> int:
        """Check the dataset's shape and dtype; return its number of images."""
        try:
            with h5py.File(self.path, "r") as file:
                if self.dataset not in file:
                    raise StimulusError(f"{self.path} has no dataset {self.dataset!r}; it holds {sorted(file.keys())}")
                data = file[self.dataset]
                shape, dtype = data.shape, data.dtype
        except OSError as error:
            raise StimulusError(f"cannot open hdf5 file {self.path}: {error}") from error
        if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE or dtype != np.uint8:
            raise StimulusError(
                f"{self.path}[{self.dataset}] should have shape (N, {', '.join(map(str, IMAGE_SHAPE))}) "
                "and dtype uint8; "
                f"got shape {tuple(shape)} and dtype {dtype}"
            )
        return int(shape[0])

    def _images(self) -> h5py.Dataset:
        """The image dataset, opening the file once per process."""
        if self._file is None or self._file_pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._file_pid = os.getpid()
        return self._file[self.dataset]

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def load(self, nsd_id: int) -> Image.Image:
        if nsd_id not in self:
            raise self._unknown_id(nsd_id)
        return Image.fromarray(self._images()[int(nsd_id)])

    def describe(self, nsd_id: int) -> str:
        if nsd_id not in self:
            raise self._unknown_id(nsd_id)
        return f"{self.path}[{self.dataset}][{int(nsd_id)}]"

    def close(self) -> None:
        """Close this process's file handle (it reopens on the next read)."""
        if self._file is not None and self._file_pid == os.getpid():
            self._file.close()
        self._file = None
        self._file_pid = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_file_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"NSDHdf5({str(self.path)!r}, dataset={self.dataset!r}, n_ids={len(self._ids)})"
