"""Stimulus sources: images keyed by their 0-based NSD id, from Algonauts folders, the NSD hdf5 file or a folder."""

from __future__ import annotations

import abc
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from featurestore.errors import FeatureStoreError

__all__ = [
    "AlgonautsImages",
    "ImageFolder",
    "NSDHdf5",
    "StimulusError",
    "StimulusSource",
    "open_stimuli",
    "parse_image_name",
    "read_image",
]


class StimulusError(FeatureStoreError, ValueError):
    """A stimulus file or folder is missing, unreadable or inconsistent."""


class StimulusSource(abc.ABC):
    """Images keyed by NSD id: ``ids`` (sorted, unique), ``load(id)`` and ``describe(id)``.

    Sources hold only paths and small indexes, so they pickle cheaply into DataLoader
    worker processes (``spawn`` start method).
    """

    @property
    @abc.abstractmethod
    def ids(self) -> np.ndarray:
        """Sorted unique NSD ids (int64) this source can load."""

    @abc.abstractmethod
    def load(self, nsd_id: int) -> Image.Image:
        """Return the image of ``nsd_id`` as an RGB ``PIL.Image.Image``."""

    @abc.abstractmethod
    def describe(self, nsd_id: int) -> str:
        """Where the image of ``nsd_id`` is stored (file path, hdf5 dataset and index)."""

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[int, Image.Image]]:
        """Yield ``(nsd_id, image)`` in increasing id order."""
        for nsd_id in self.ids:
            yield int(nsd_id), self.load(int(nsd_id))

    def __contains__(self, nsd_id: object) -> bool:
        ids = self.ids
        position = np.searchsorted(ids, nsd_id)
        return bool(position < len(ids) and ids[position] == nsd_id)

    def _unknown_id(self, nsd_id: int) -> StimulusError:
        """Error for an id this source does not hold."""
        ids = self.ids
        span = f"{len(ids)} ids in {ids[0]}..{ids[-1]}" if len(ids) else "no ids"
        return StimulusError(f"NSD id {nsd_id!r} is not in {self!r} ({span})")


def read_image(path: str | os.PathLike, data: bytes | None = None) -> Image.Image:
    """Decode an image file (or its already-read bytes) fully into RGB; any failure names the file."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError as error:
        # PIL names the in-memory stream (<_io.BytesIO object at 0x..>), not the file: say what it is instead
        size = len(data) if data is not None else os.path.getsize(path)
        reason = "the file is empty" if size == 0 else f"not an image format PIL can decode ({size} bytes)"
        raise StimulusError(f"cannot read image {os.fspath(path)}: {reason}") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise StimulusError(f"cannot read image {os.fspath(path)}: {error}") from error


# The source modules subclass StimulusSource and use read_image, defined above.
from featurestore.stimuli.algonauts import AlgonautsImages, parse_image_name  # noqa: E402
from featurestore.stimuli.folder import ImageFolder  # noqa: E402
from featurestore.stimuli.nsd_hdf5 import NSDHdf5, subject_ids  # noqa: E402

HDF5_SUFFIXES = (".hdf5", ".h5")


def open_stimuli(
    path: str | os.PathLike | StimulusSource,
    *,
    subjects: int | str | list[int | str] | None = None,
    id_map: Mapping[str, int] | str | os.PathLike | None = None,
) -> StimulusSource:
    """Open the stimulus source at ``path``, guessing its kind.

    Parameters
    ----------
    path : str, path-like or StimulusSource
        An Algonauts 2023 data dir (``subjXX/`` folders) or one subject's dir
        (``training_split/``, ``test_split/``); an NSD ``.hdf5``/``.h5`` file (dataset
        ``imgBrick``); or a plain image folder together with ``id_map``. A source is
        returned unchanged.
    subjects : int, str or list of them, default=None
        Subjects to take images from (``1`` or ``"subj01"``); None takes all. For the NSD hdf5 file, the images
        the NSD design shows them, read from ``nsd_expdesign.mat`` of the NSD tree holding the file.
    id_map : dict {filename: nsd_id} or path to a CSV with columns filename,nsd_id, default=None
        Required for a plain image folder; selects :class:`ImageFolder`.

    Returns
    -------
    StimulusSource
    """
    if isinstance(path, StimulusSource):
        if subjects is not None or id_map is not None:
            raise StimulusError("subjects= and id_map= apply only when opening a path, not an existing source")
        return path
    path = Path(path)
    if not path.exists():
        raise StimulusError(f"no such stimulus file or folder: {path}")
    if id_map is not None:
        if subjects is not None:
            raise StimulusError(f"subjects= applies only to Algonauts folders, not to a folder with id_map ({path})")
        return ImageFolder(path, id_map)
    if path.is_file() and path.suffix.lower() in HDF5_SUFFIXES:
        return NSDHdf5(path, ids=None if subjects is None else subject_ids(path, subjects))
    if path.is_dir() and AlgonautsImages.looks_like(path):
        return AlgonautsImages(path, subjects=subjects)
    raise StimulusError(
        f"cannot tell what {path} holds: expected an Algonauts 2023 data dir (subjXX/ folders), one subject's dir "
        f"(training_split/, test_split/), an NSD stimulus file ({'/'.join(HDF5_SUFFIXES)}), "
        "or an image folder together with id_map= (dict or CSV with columns filename,nsd_id)"
    )
