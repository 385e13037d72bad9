"""Opening a feature store and reading it: backbones, layers, finished ids, provenance, lazy features.

Readers only ever see finished rows: those below their chunk's done marker and not skipped (see
``featurestore.store.layout``). ``open_features`` gives dask chunks of feature_block columns (whole inner chunks of a
sharded layer) and whole row chunks, grouped up to ``READ_TASK_BYTES`` per full-width band, and every read is a
contiguous slice (zarr 3.1 orthogonal/fancy reads of sharded arrays are slow; row selections are left to dask).

Reading needs only zarr, dask and xarray (no torch), so analysis processes never pay for the extraction engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from featurestore.errors import InvalidParameterError, MissingEntryError, check_type
from featurestore.store.layout import (
    DONE_GROUP,
    ID_ARRAY,
    MISSING_ID,
    SKIPPED_ATTR,
    LayerLayout,
    check_name,
)

__all__ = ["StoreReader", "open_features"]

# A dask task that reads a layer covers whole stored row chunks, grouped while a full-width band stays within this
# many bytes: each zarr read call has a fixed cost of a few ms, so with one task per 1 MB inner chunk a 9,000 x
# 9,216 float16 layer took 0.92 s to read, against 0.55 s with 1,792-row tasks.
READ_TASK_BYTES = 32 * 2**20


def _check_local_root(root: Path, read_only: bool) -> None:
    """Refuse, naming the path and what to do, a local store path that cannot be read (or, to write, written).

    To write, the path must be missing, an empty folder or a feature store whose folder and top-level sub-folders
    are writable (a store made read-only as a whole, ``chmod -R a-w``, is refused before any lock file is tried).
    """
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"feature store path {root} is a file, not a folder; give the path of a store "
            f"folder (or of a new one, to create it)"
        )
    is_store = (root / "zarr.json").is_file()
    if read_only and not is_store:
        raise FileNotFoundError(
            f"No feature store at {root} (no zarr.json there); check the path, or create the "
            f"store with `featurestore extract --store {root} ...`"
        )
    if read_only or not root.exists():
        return
    if not is_store and any(root.iterdir()):
        raise FileExistsError(
            f"{root} holds other files and is not a feature store (no zarr.json there); give a "
            f"new or empty folder to create a store"
        )
    for folder in (root, *(child for child in root.iterdir() if child.is_dir())):
        if not os.access(folder, os.W_OK):
            raise PermissionError(
                f"feature store {root} is read-only (no write permission on {folder}); make it "
                f"writable (chmod -R u+w) or extract into another store"
            )


def _open_zarr_store(
    url: str | Path, read_only: bool, storage_options: Mapping[str, Any] | None
) -> tuple[Store, Path | None]:
    """A zarr store for a local path (atomic file writes) or any other fsspec URL; the local root or None."""
    text = str(url)
    if isinstance(url, Path) or "://" not in text or text.startswith("file://"):
        root = Path(text.removeprefix("file://")).expanduser().absolute()
        _check_local_root(root, read_only)
        return LocalStore(root, read_only=read_only), root
    return FsspecStore.from_url(text, storage_options=dict(storage_options or {}), read_only=read_only), None


def _read_chunks(array: zarr.Array) -> tuple[int, int]:
    """Dask chunks for reading a layer: the stored (inner, when sharded) chunk's columns, so a column block decodes
    only its own chunks, and as many whole row chunks as fit in a full-width band of ``READ_TASK_BYTES``."""
    rows, cols = array.chunks
    band = rows * array.shape[1] * array.dtype.itemsize
    return rows * max(1, READ_TASK_BYTES // max(band, 1)), cols


def _object_rows(array: zarr.Array) -> int:
    """Rows per stored object (shard or plain chunk) of a layer array: the chunk_rows it was written with."""
    return (array.shards or array.chunks)[0]


class StoreReader:
    """A feature store opened for reading (mode "r"), or created when missing (mode "a"; see ``FeatureStore``)."""

    def __init__(self, url: str | Path, mode: str = "r", storage_options: Mapping[str, Any] | None = None) -> None:
        if mode not in ("r", "a"):
            raise InvalidParameterError(f"Unknown mode={mode!r}; expected 'r' or 'a'")
        self.url = str(url)
        self.mode = mode
        self.storage_options = dict(storage_options or {})
        self.zarr_store, self.local_root = _open_zarr_store(url, mode == "r", storage_options)
        try:
            self.root = zarr.open_group(self.zarr_store, mode=mode, zarr_format=3)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"No feature store at {self.url}") from error

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, mode={self.mode!r})"

    def backbones(self) -> list[str]:
        """Names of the backbone groups."""
        return sorted(name for name in self.root.group_keys() if not name.startswith("_"))

    def has_backbone(self, backbone: str) -> bool:
        """True when a group for ``backbone`` exists."""
        return backbone in self.backbones()

    def _group(self, backbone: str) -> zarr.Group:
        """The backbone's group (MissingEntryError listing the stored backbones when absent)."""
        check_name(backbone, "backbone")
        try:
            group = self.root[backbone]
        except KeyError:
            group = None
        if not isinstance(group, zarr.Group):
            raise MissingEntryError(f"No backbone {backbone!r} in store {self.url}; stored: {self.backbones()}")
        return group

    def layers(self, backbone: str) -> list[str]:
        """Names of the layers stored for ``backbone``."""
        return sorted(name for name in self._group(backbone).array_keys() if name != ID_ARRAY)

    def _layer_array(self, backbone: str, layer: str) -> zarr.Array:
        """A layer's 2-D array (MissingEntryError listing the stored layers when absent)."""
        try:
            array = self._group(backbone)[layer]
        except KeyError:
            array = None
        if layer == ID_ARRAY or not isinstance(array, zarr.Array):
            raise MissingEntryError(
                f"No layer {layer!r} stored for backbone {backbone!r} in {self.url}; stored: {self.layers(backbone)}"
            )
        return array

    def provenance(self, backbone: str) -> dict[str, Any]:
        """The provenance recorded when the backbone's group was created."""
        return dict(self._group(backbone).attrs["provenance"])

    def layout(self, backbone: str, layer: str) -> LayerLayout:
        """How ``layer`` is stored (feature shape, reduction)."""
        return LayerLayout.from_attrs(layer, self._layer_array(backbone, layer).attrs)

    def storage(self, backbone: str, layer: str) -> dict[str, Any]:
        """How ``layer`` is chunked ({"layout": "plain"} for arrays written before the attribute existed)."""
        return dict(self._layer_array(backbone, layer).attrs.get("storage", {"layout": "plain"}))

    def planned_ids(self, backbone: str) -> np.ndarray:
        """NSD ids of all planned rows in row order, finished or not (a torn plan's tail is cut off)."""
        ids = self._group(backbone)[ID_ARRAY][:]
        missing = np.flatnonzero(ids == MISSING_ID)
        return ids[: missing[0]] if missing.size else ids

    def done_counts(self, backbone: str, layer: str) -> np.ndarray:
        """Per row chunk, how many leading rows of ``layer`` are final (empty for a layer not stored yet)."""
        try:
            return self._group(backbone)[f"{DONE_GROUP}/{layer}"][:]
        except KeyError:
            return np.zeros(0, dtype=np.int32)

    def skipped_images(self, backbone: str) -> list[dict[str, Any]]:
        """Images that could not be read and were skipped ({"nsd_id", "path", "reason"}, by id): their rows hold
        no features and are hidden from every reader."""
        return list(self._group(backbone).attrs.get(SKIPPED_ATTR, []))

    def _finished_rows(self, backbone: str, layer: str) -> np.ndarray:
        """Row indices of ``layer`` that readers may see (below their chunk's marker, not skipped), ascending."""
        array = self._layer_array(backbone, layer)
        chunk_rows = _object_rows(array)
        n_rows = min(self.planned_ids(backbone).size, array.shape[0])
        counts = self.done_counts(backbone, layer)
        rows = [np.arange(c * chunk_rows, c * chunk_rows + int(k)) for c, k in enumerate(counts) if k]
        rows_all = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        rows_all = rows_all[rows_all < n_rows]
        skipped = [record["nsd_id"] for record in self.skipped_images(backbone)]
        return rows_all[~np.isin(self.planned_ids(backbone)[rows_all], skipped)] if skipped else rows_all

    def ids(self, backbone: str, layer: str) -> np.ndarray:
        """NSD ids whose features for ``layer`` are final, in row order."""
        return self.planned_ids(backbone)[self._finished_rows(backbone, layer)]

    def features(self, backbone: str, layer: str) -> xr.DataArray:
        """The layer as a lazy (dask) DataArray of finished rows; see ``open_features``."""
        check_type("backbone", backbone, str, "a backbone group name (str)")
        check_type("layer", layer, str, "a layer name (str)")
        array = self._layer_array(backbone, layer)
        rows = self._finished_rows(backbone, layer)
        data = da.from_zarr(array, chunks=_read_chunks(array))
        data = data[: rows.size] if np.array_equal(rows, np.arange(rows.size)) else data[rows]
        layout = self.layout(backbone, layer)
        attrs = {
            "backbone": backbone,
            "layer": layer,
            "feature_shape": list(layout.feature_shape),
            "reduce": layout.reduce or "none",
            "provenance": json.dumps(self.provenance(backbone), sort_keys=True),
        }
        if layout.reduce_seed is not None:
            attrs["reduce_seed"] = layout.reduce_seed
        return xr.DataArray(
            data,
            dims=("nsd_id", "feature"),
            coords={"nsd_id": self.planned_ids(backbone)[rows]},
            name=layer,
            attrs=attrs,
        )

    def summary(self) -> pd.DataFrame:
        """One row per stored (backbone, layer): finished ids, feature shape, dtype, bytes on disk."""
        records = []
        for backbone in self.backbones():
            for layer in self.layers(backbone):
                array = self._layer_array(backbone, layer)
                layout = self.layout(backbone, layer)
                records.append(
                    {
                        "backbone": backbone,
                        "layer": layer,
                        "n_ids": self.ids(backbone, layer).size,
                        "feature_shape": layout.feature_shape,
                        "n_features": layout.n_features,
                        "reduce": layout.reduce,
                        "dtype": str(array.dtype),
                        "storage": self.storage(backbone, layer)["layout"],
                        "nbytes_stored": array.nbytes_stored(),
                    }
                )
        columns = [
            "backbone",
            "layer",
            "n_ids",
            "feature_shape",
            "n_features",
            "reduce",
            "dtype",
            "storage",
            "nbytes_stored",
        ]
        return pd.DataFrame.from_records(records, columns=columns)


def open_features(
    store: str | Path | StoreReader, backbone: str, layer: str, *, storage_options: Mapping[str, Any] | None = None
) -> xr.DataArray:
    """A lazy ``xarray.DataArray`` of one layer's finished rows.

    Dims ``("nsd_id", "feature")``, an int64 ``nsd_id`` coordinate, dask-backed: a dask chunk spans the columns of
    one stored chunk (an inner chunk when sharded) and whole stored row chunks, as many as fit a full-width band of
    ``READ_TASK_BYTES``. Attrs ``backbone``, ``layer``, ``feature_shape``, ``reduce`` (and ``reduce_seed`` for random
    projections) and ``provenance`` (JSON). ``.sel(nsd_id=ids)`` returns rows in the order asked.
    """
    opened = store if isinstance(store, StoreReader) else StoreReader(store, "r", storage_options)
    return opened.features(backbone, layer)
