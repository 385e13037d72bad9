"""Algonauts 2023 image folders: NSD ids parsed from file names, union over subjects, deduplicated by id."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from featurestore.stimuli import StimulusError, StimulusSource, read_image
from nsd.layout import SPLIT_FOLDERS, SUBJECT_FOLDER, LayoutError, parse_image_name, subject_folder_name

__all__ = ["AlgonautsImages", "parse_image_name"]


def _is_subject_folder(path: Path) -> bool:
    """Whether ``path`` holds one subject's training_split/ or test_split/."""
    return any((path / split).is_dir() for split, _ in SPLIT_FOLDERS.values())


def _subject_folders(data_dir: Path, subjects: int | str | Sequence[int | str] | None) -> list[Path]:
    """The subject folders to read: all subjXX under ``data_dir`` (or ``data_dir`` itself), filtered by ``subjects``."""
    if not data_dir.is_dir():
        raise StimulusError(f"Algonauts data dir not found: {data_dir}")
    if _is_subject_folder(data_dir):
        available = {data_dir.name: data_dir}
    else:
        available = {p.name: p for p in sorted(data_dir.iterdir()) if p.is_dir() and SUBJECT_FOLDER.fullmatch(p.name)}
        if not available:
            raise StimulusError(
                f"{data_dir} is not an Algonauts 2023 data dir: "
                "no subjXX/ folders and no training_split/ or test_split/"
            )
    if subjects is None:
        return list(available.values())
    if isinstance(subjects, (int, np.integer, str)):
        subjects = [subjects]
    wanted = [subject_folder_name(s) for s in subjects]
    missing = [name for name in wanted if name not in available]
    if missing:
        raise StimulusError(f"subjects {missing} not found in {data_dir}; found {sorted(available)}")
    return [available[name] for name in dict.fromkeys(wanted)]


def _image_files(image_dir: Path) -> list[Path]:
    """Files in ``image_dir`` sorted by name, skipping hidden ones (.DS_Store); none if the folder is absent."""
    if not image_dir.is_dir():
        return []
    with os.scandir(image_dir) as entries:
        names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
    return [image_dir / name for name in names]


def _read_bytes(path: Path) -> bytes:
    """The raw bytes of an image file; a failure names the file."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise StimulusError(f"cannot read image {path}: {error}") from error


def _read_identical(nsd_id: int, paths: Sequence[Path]) -> Image.Image:
    """Decode the image stored in several files, checking that all hold the same pixels (bytes first, then pixels)."""
    first_bytes = _read_bytes(paths[0])
    image = read_image(paths[0], first_bytes)
    pixels = None
    for other in paths[1:]:
        other_bytes = _read_bytes(other)
        if other_bytes == first_bytes:
            continue
        if pixels is None:
            pixels = np.asarray(image)
        other_pixels = np.asarray(read_image(other, other_bytes))
        if other_pixels.shape != pixels.shape or not np.array_equal(other_pixels, pixels):
            raise StimulusError(f"NSD id {nsd_id} is stored with different pixels in {paths[0]} and {other}")
    return image


class AlgonautsImages(StimulusSource):
    """Training and test images of Algonauts 2023 subjects, one entry per NSD id.

    Parameters
    ----------
    data_dir : str or path-like
        The challenge data dir holding ``subjXX/`` folders, or one subject's folder.
    subjects : int, str or sequence of them, default=None
        Subjects to include (``1`` or ``"subj01"``); None includes every subject found.

    Attributes
    ----------
    subjects : tuple of str
        Subject folder names read, e.g. ``("subj01", "subj02")``.
    files : dict {int: tuple of Path}
        NSD id -> every file holding that image (several when subjects share it). Their pixels are
        compared when the id is loaded (or all at once by :meth:`verify_shared`).
    """

    def __init__(self, data_dir: str | os.PathLike, subjects: int | str | Sequence[int | str] | None = None):
        self.data_dir = Path(data_dir)
        folders = _subject_folders(self.data_dir, subjects)
        self.subjects = tuple(folder.name for folder in folders)
        files: dict[int, list[Path]] = {}
        for folder in folders:
            image_dirs = {split: folder.joinpath(*parts) for split, parts in SPLIT_FOLDERS.items()}
            if not any(d.is_dir() for d in image_dirs.values()):
                raise StimulusError(f"{folder} has neither training_split/training_images/ nor test_split/test_images/")
            for split, image_dir in image_dirs.items():
                for path in _image_files(image_dir):
                    try:
                        found_split, _, nsd_id = parse_image_name(path)
                    except LayoutError as error:
                        raise StimulusError(str(error)) from error
                    if found_split != split:
                        raise StimulusError(f"{path} is named as a {found_split} image but lies in {image_dir.name}/")
                    files.setdefault(nsd_id, []).append(path)
        self.files: dict[int, tuple[Path, ...]] = {nsd_id: tuple(files[nsd_id]) for nsd_id in sorted(files)}
        self._ids = np.fromiter(self.files, dtype=np.int64, count=len(self.files))
        self._ids.flags.writeable = False

    @staticmethod
    def looks_like(path: str | os.PathLike) -> bool:
        """Whether ``path`` is an Algonauts data dir (subjXX/ folders) or one subject's folder."""
        path = Path(path)
        return _is_subject_folder(path) or any(p.is_dir() and SUBJECT_FOLDER.fullmatch(p.name) for p in path.iterdir())

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def load(self, nsd_id: int) -> Image.Image:
        paths = self._paths(nsd_id)
        return read_image(paths[0]) if len(paths) == 1 else _read_identical(int(nsd_id), paths)

    def describe(self, nsd_id: int) -> str:
        first, *others = self._paths(nsd_id)
        return f"{first} (same image in {', '.join(map(str, others))})" if others else str(first)

    def verify_shared(self) -> int:
        """Check now that every id held by several files has identical pixels; return how many ids were checked."""
        shared = {nsd_id: paths for nsd_id, paths in self.files.items() if len(paths) > 1}
        for nsd_id, paths in shared.items():
            _read_identical(nsd_id, paths)
        return len(shared)

    def _paths(self, nsd_id: int) -> tuple[Path, ...]:
        try:
            return self.files[int(nsd_id)]
        except KeyError:
            raise self._unknown_id(nsd_id) from None

    def __repr__(self) -> str:
        return f"AlgonautsImages({str(self.data_dir)!r}, subjects={list(self.subjects)})"
