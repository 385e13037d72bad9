"""A plain image folder with an explicit file -> NSD id mapping (a dict or a CSV with columns filename,nsd_id)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from featurestore.stimuli import StimulusError, StimulusSource, read_image

ID_MAP_COLUMNS = ("filename", "nsd_id")


def read_id_map(csv_path: str | os.PathLike) -> dict[str, int]:
    """Read a CSV with columns filename,nsd_id (others ignored) into {filename: nsd_id}."""
    path = Path(csv_path)
    mapping: dict[str, int] = {}
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ID_MAP_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise StimulusError(
                    f"id map {path} must have columns {','.join(ID_MAP_COLUMNS)}; got {reader.fieldnames}"
                )
            for row in reader:
                name, raw_id = (row[c].strip() if row[c] else "" for c in ID_MAP_COLUMNS)
                try:
                    nsd_id = int(raw_id)
                except ValueError:
                    raise StimulusError(
                        f"id map {path} line {reader.line_num}: nsd_id {raw_id!r} is not an integer"
                    ) from None
                if name in mapping:
                    raise StimulusError(f"id map {path} line {reader.line_num}: {name!r} is listed twice")
                mapping[name] = nsd_id
    except OSError as error:
        raise StimulusError(f"cannot read id map {path}: {error}") from error
    return mapping


class ImageFolder(StimulusSource):
    """Images in a folder, each given its NSD id by an explicit mapping.

    Parameters
    ----------
    path : str or path-like
        The folder; file names in the mapping are relative to it (sub-folders allowed).
    id_map : dict {filename: nsd_id} or path to a CSV with columns filename,nsd_id
        Which file holds which NSD id. Files not in the mapping are ignored.

    Attributes
    ----------
    files : dict {int: Path}
        NSD id -> image file.
    """

    def __init__(self, path: str | os.PathLike, id_map: Mapping[str, int] | str | os.PathLike):
        self.root = Path(path)
        if not self.root.is_dir():
            raise StimulusError(f"image folder not found: {self.root}")
        from_csv = isinstance(id_map, (str, os.PathLike))
        mapping = read_id_map(id_map) if from_csv else dict(id_map)
        origin = f"id map {os.fspath(id_map)}" if from_csv else "id_map"
        if not mapping:
            raise StimulusError(f"{origin} for {self.root} is empty")
        names_by_id: dict[int, str] = {}
        for name, nsd_id in mapping.items():
            if isinstance(nsd_id, bool) or not isinstance(nsd_id, (int, np.integer)) or nsd_id < 0:
                raise StimulusError(f"{origin}: {name!r} has NSD id {nsd_id!r}; expected a non-negative integer")
            if int(nsd_id) in names_by_id:
                raise StimulusError(
                    f"{origin}: NSD id {nsd_id} is given to two files, {names_by_id[int(nsd_id)]!r} and {name!r}"
                )
            names_by_id[int(nsd_id)] = name
        missing = [name for name in mapping if not (self.root / name).is_file()]
        if missing:
            raise StimulusError(
                f"{origin}: {len(missing)} file(s) missing from {self.root}: {missing[:5]}"
                + (" ..." if len(missing) > 5 else "")
            )
        self.files: dict[int, Path] = {nsd_id: self.root / names_by_id[nsd_id] for nsd_id in sorted(names_by_id)}
        self._ids = np.fromiter(self.files, dtype=np.int64, count=len(self.files))
        self._ids.flags.writeable = False

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def load(self, nsd_id: int) -> Image.Image:
        return read_image(self._path(nsd_id))

    def describe(self, nsd_id: int) -> str:
        return str(self._path(nsd_id))

    def _path(self, nsd_id: int) -> Path:
        try:
            return self.files[int(nsd_id)]
        except KeyError:
            raise self._unknown_id(nsd_id) from None

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, n_ids={len(self._ids)})"
