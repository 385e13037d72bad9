"""The Zarr v3 feature store: one group per backbone, one row-chunked array per layer, rows keyed by NSD id.

Layout (the store is any fsspec URL: a local path, ``s3://bucket/features.zarr``, ...)::

    zarr.json                   root group
    <backbone>/                 group; attrs["provenance"]: what made the features (see build_provenance);
                                attrs["skipped_images"]: unreadable images skipped on request (nsd_id, path,
                                reason); their rows stay planned, hold NaN and are hidden from readers
    <backbone>/nsd_id           int64 (n_rows,), chunks (chunk_rows,): the NSD id of every row
    <backbone>/<layer>          float16 | float32 (n_rows, n_features), one object per row chunk of chunk_rows
                                rows x all features (plain or sharded, below), blosc-zstd; attrs: feature_shape
                                (before flattening), reduce, reduce_seed, inplace, storage (the chunking used)
    <backbone>/_done/<layer>    int32 (n_chunks,), chunks (1,): per row chunk, how many of its leading rows
                                hold final values (one object per chunk, so no two chunks share a marker)
    _locks/<backbone>           the writer lock (featurestore.lock)

Rows are planned before anything is computed: the ids to add (requested minus already planned, sorted)
are appended to ``nsd_id`` in one go, then each layer's rows are written one whole chunk at a time (one
atomic object write) and only then is the chunk's marker raised. A killed run therefore resumes exactly:
rows planned earlier are finished first, in the same positions, then new ids are appended. An append
that starts inside a partly filled last chunk rewrites that chunk whole (its finished rows are read back
and kept byte for byte) and raises its marker from the old row count to the new one; readers only ever
see rows below a chunk's marker.

Wide layers are sharded so that column blocks (the Gram matrix of ``encoders.pca`` streams feature columns) decode
only the columns they need. The object written per row chunk is then a shard of (chunk_rows, all features) holding
inner chunks of (chunk_rows, feature_block) columns, each compressed on its own and located through the shard's
index; a write still replaces one whole object, so writes stay atomic and the markers are unchanged. feature_block
is the largest power of two of columns whose inner chunk stays within ``INNER_CHUNK_BYTES`` (1 MiB uncompressed:
2048 columns for 256 float16 rows). A layer is sharded when its rows span more than ``SHARD_MIN_BLOCKS`` (4) such
blocks, i.e. a row chunk over 4 MiB; narrower layers keep one plain (chunk_rows, n_features) chunk per object,
where reading a whole row chunk for any column block costs little. The choice is made when a layer's array is
created, recorded in its ``storage`` attribute ({"layout": "plain"|"sharded", "shards", "chunks"}) and kept when
the array grows; arrays without the attribute (stores written before sharding) are plain. ``open_features``
gives dask chunks of feature_block columns (whole inner chunks) and whole row chunks, grouped up to
``READ_TASK_BYTES`` per full-width band, and every read is a contiguous slice (zarr 3.1 orthogonal/fancy reads of
sharded arrays are slow; row selections are left to dask).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.abc.store import Store
from zarr.codecs import BloscCodec
from zarr.storage import FsspecStore, LocalStore

from featurestore.errors import FeatureStoreError, InvalidParameterError, MissingEntryError, check_type
from featurestore.lock import FileLock, LeaseLock, StoreLockedError, WriterLock

__all__ = [
    "ChunkTask",
    "FeatureStore",
    "LayerLayout",
    "ProvenanceError",
    "RowPlan",
    "StoreLockedError",
    "build_provenance",
    "open_features",
    "open_store",
    "plan_rows",
    "storage_chunking",
]

ID_ARRAY = "nsd_id"
DONE_GROUP = "_done"
SKIPPED_ATTR = "skipped_images"
DTYPES = ("float16", "float32")
VERSIONED_PACKAGES = ("torch", "torchvision", "open_clip_torch", "zarr", "numpy", "nsd-featurestore")
# zstd level 1: level 5 compressed AlexNet activations at 15 MB/s, slower than the forward pass (BENCHMARKS.md)
_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
_MISSING_ID = -1
INNER_CHUNK_BYTES = 2**20  # target uncompressed size of one inner chunk (chunk_rows x feature_block) of a wide layer
SHARD_MIN_BLOCKS = 4  # a layer is sharded when its rows span more than this many feature blocks
# A dask task that reads a layer covers whole stored row chunks, grouped while a full-width band stays within this
# many bytes: each zarr read call has a fixed cost of a few ms, so with one task per 1 MB inner chunk a 9,000 x
# 9,216 float16 layer took 0.92 s to read, against 0.55 s with 1,792-row tasks.
READ_TASK_BYTES = 32 * 2**20


class ProvenanceError(FeatureStoreError, ValueError):
    """Features requested with a different recipe than the ones already stored."""


def _check_name(name: str, what: str) -> None:
    """Refuse group/array names that would clash with the layout's own nodes."""
    if not name or "/" in name or name.startswith(("_", ".")) or (what == "layer" and name == ID_ARRAY):
        raise InvalidParameterError(
            f"{what} name {name!r} cannot be stored: names must be non-empty, contain no '/', not start with "
            f"'_' or '.', and a layer cannot be called {ID_ARRAY!r}"
        )


def library_versions() -> dict[str, str | None]:
    """Versions of the packages that shape the features (None when not installed)."""
    versions: dict[str, str | None] = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def build_provenance(entry: Mapping[str, Any], weights: Mapping[str, Any], preprocessing: Mapping[str, Any],
                     dtype: str, chunk_rows: int) -> dict[str, Any]:
    """The group attribute that records what made a backbone's features (JSON-able)."""
    if dtype not in DTYPES:
        raise InvalidParameterError(f"Unknown dtype={dtype!r}; expected one of {list(DTYPES)}")
    return {
        "entry": dict(entry),
        "weights": dict(weights),
        "preprocessing": dict(preprocessing),
        "dtype": dtype,
        "chunk_rows": int(chunk_rows),
        "versions": library_versions(),
    }


def _short(value: Any) -> str:
    """A compact rendering of a differing value (hashes cut to 12 characters)."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + ".."
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def _differences(stored: Any, requested: Any, prefix: str) -> list[str]:
    """'key stored != requested' for every leaf where two JSON-like values differ."""
    if isinstance(stored, Mapping) and isinstance(requested, Mapping):
        out: list[str] = []
        for key in sorted(set(stored) | set(requested)):
            out += _differences(stored.get(key), requested.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    if isinstance(stored, (list, tuple)) and isinstance(requested, (list, tuple)):
        stored, requested = list(stored), list(requested)
    return [] if stored == requested else [f"{prefix} {_short(stored)} != {_short(requested)}"]


def provenance_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """What differs between two provenances in ways that change the features (not library versions).

    Compared: the model's source and architecture, the weights' sha256, the resolved preprocessing, the
    storage dtype and chunk_rows. The catalog entry's name, default layers and metadata do not change a
    stored value and are not compared.
    """
    def identity(p: Mapping[str, Any]) -> dict[str, Any]:
        entry = p.get("entry", {})
        return {"source": entry.get("source"), "architecture": entry.get("architecture"),
                "weights sha256": p.get("weights", {}).get("sha256"), "preprocessing": p.get("preprocessing"),
                "dtype": p.get("dtype"), "chunk_rows": p.get("chunk_rows")}

    return _differences(identity(stored), identity(requested), "")


def version_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Library versions that differ between the run that made a group and this one."""
    return _differences(stored.get("versions", {}), requested.get("versions", {}), "")


@dataclass(frozen=True)
class LayerLayout:
    """How one layer is stored: the shape the model gives, the reduction (and its seed, for random projections),
    the stored row width, and whether the model modifies the layer's output in place."""

    name: str
    feature_shape: tuple[int, ...]
    n_features: int
    reduce: str | None = None
    reduce_seed: int | None = None
    inplace: bool = False

    def attrs(self) -> dict[str, Any]:
        """The layer array's attributes."""
        return {"feature_shape": list(self.feature_shape), "n_features": self.n_features, "reduce": self.reduce,
                "reduce_seed": self.reduce_seed, "inplace": self.inplace}

    @classmethod
    def from_attrs(cls, name: str, attrs: Mapping[str, Any]) -> LayerLayout:
        """Read a layout back from a layer array's attributes."""
        return cls(name=name, feature_shape=tuple(attrs["feature_shape"]), n_features=int(attrs["n_features"]),
                   reduce=attrs.get("reduce"), reduce_seed=attrs.get("reduce_seed"),
                   inplace=bool(attrs.get("inplace", False)))

    def differences(self, other: LayerLayout) -> list[str]:
        """'layer X reduce None != srp:64' for each recipe difference with another layout of the same layer."""
        keys = ("feature_shape", "n_features", "reduce", "reduce_seed")
        mine, theirs = self.attrs(), other.attrs()
        return [f"layer {self.name} {key} {_short(mine[key])} != {_short(theirs[key])}"
                for key in keys if mine[key] != theirs[key]]


def storage_chunking(n_features: int, chunk_rows: int, dtype: str) -> dict[str, Any]:
    """How a new layer array is chunked: {"layout": "plain", "chunks"} or {"layout": "sharded", "shards", "chunks"}.

    A shard covers (chunk_rows, n_features rounded up to whole feature blocks): one object per row chunk.
    """
    row_bytes = chunk_rows * np.dtype(dtype).itemsize
    feature_block = 2 ** int(math.log2(max(1, INNER_CHUNK_BYTES // row_bytes)))
    if n_features <= SHARD_MIN_BLOCKS * feature_block:
        return {"layout": "plain", "chunks": [chunk_rows, n_features]}
    return {"layout": "sharded", "shards": [chunk_rows, math.ceil(n_features / feature_block) * feature_block],
            "chunks": [chunk_rows, feature_block]}


def _read_chunks(array: zarr.Array) -> tuple[int, int]:
    """Dask chunks for reading a layer: the stored (inner, when sharded) chunk's columns, so a column block decodes
    only its own chunks, and as many whole row chunks as fit in a full-width band of ``READ_TASK_BYTES``."""
    rows, cols = array.chunks
    band = rows * array.shape[1] * array.dtype.itemsize
    return rows * max(1, READ_TASK_BYTES // max(band, 1)), cols


def _object_rows(array: zarr.Array) -> int:
    """Rows per stored object (shard or plain chunk) of a layer array: the chunk_rows it was written with."""
    return (array.shards or array.chunks)[0]


@dataclass(frozen=True)
class ChunkTask:
    """One row chunk to (re)write: rows [compute_from, stop) go through the model; ``done[layer]`` is how many
    leading rows of the chunk are already final for each layer whose chunk is (re)written."""

    index: int
    start: int
    stop: int
    compute_from: int
    done: Mapping[str, int]

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers whose chunk is written."""
        return tuple(self.done)


@dataclass(frozen=True)
class RowPlan:
    """Which rows a run adds and which chunks it writes, computed before any forward pass."""

    backbone: str
    chunk_rows: int
    n_kept: int
    new_ids: np.ndarray
    nsd_ids: np.ndarray
    tasks: tuple[ChunkTask, ...]
    unavailable: tuple[ChunkTask, ...] = ()
    layers: tuple[str, ...] = ()

    @property
    def ids_to_compute(self) -> np.ndarray:
        """NSD ids of the rows that go through the model, in row order."""
        if not self.tasks:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.nsd_ids[t.compute_from:t.stop] for t in self.tasks])

    def rows_to_write(self, layer: str) -> int:
        """How many rows of ``layer`` this plan writes (rows already final in a rewritten chunk excluded)."""
        return sum(t.stop - t.start - t.done[layer] for t in self.tasks if layer in t.done)


def plan_rows(stored_ids: np.ndarray, done: Mapping[str, np.ndarray], requested_ids: np.ndarray,
              chunk_rows: int, backbone: str = "") -> RowPlan:
    """Plan a run: append the unseen requested ids (sorted), list every chunk some layer still needs.

    ``stored_ids`` are the rows already planned (in row order), ``done[layer]`` the per-chunk count of final
    rows of each requested layer. Chunks whose rows to compute include ids outside ``requested_ids`` (their
    images are not in this run's stimuli) are listed as ``unavailable`` instead of ``tasks``.
    """
    if chunk_rows < 1:
        raise InvalidParameterError(f"chunk_rows must be >= 1, got {chunk_rows}")
    stored_ids = np.asarray(stored_ids, dtype=np.int64)
    requested_ids = np.unique(np.asarray(requested_ids, dtype=np.int64))
    new_ids = np.setdiff1d(requested_ids, stored_ids)
    nsd_ids = np.concatenate([stored_ids, new_ids])
    available = np.isin(nsd_ids, requested_ids)
    tasks: list[ChunkTask] = []
    unavailable: list[ChunkTask] = []
    for index in range(math.ceil(nsd_ids.size / chunk_rows)):
        start, stop = index * chunk_rows, min((index + 1) * chunk_rows, nsd_ids.size)
        counts = {layer: min(int(d[index]) if index < d.size else 0, stop - start) for layer, d in done.items()}
        need = {layer: count for layer, count in counts.items() if count < stop - start}
        if not need:
            continue
        task = ChunkTask(index, start, stop, start + min(need.values()), need)
        (tasks if available[task.compute_from:stop].all() else unavailable).append(task)
    return RowPlan(backbone=backbone, chunk_rows=chunk_rows, n_kept=stored_ids.size, new_ids=new_ids,
                   nsd_ids=nsd_ids, tasks=tuple(tasks), unavailable=tuple(unavailable), layers=tuple(done))


def _check_local_root(root: Path, read_only: bool) -> None:
    """Refuse, naming the path and what to do, a local store path that cannot be read (or, to write, written).

    To write, the path must be missing, an empty folder or a feature store whose folder and top-level sub-folders
    are writable (a store made read-only as a whole, ``chmod -R a-w``, is refused before any lock file is tried).
    """
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"feature store path {root} is a file, not a folder; give the path of a store "
                                 f"folder (or of a new one, to create it)")
    is_store = (root / "zarr.json").is_file()
    if read_only and not is_store:
        raise FileNotFoundError(f"No feature store at {root} (no zarr.json there); check the path, or create the "
                                f"store with `featurestore extract --store {root} ...`")
    if read_only or not root.exists():
        return
    if not is_store and any(root.iterdir()):
        raise FileExistsError(f"{root} holds other files and is not a feature store (no zarr.json there); give a "
                              f"new or empty folder to create a store")
    for folder in (root, *(child for child in root.iterdir() if child.is_dir())):
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"feature store {root} is read-only (no write permission on {folder}); make it "
                                  f"writable (chmod -R u+w) or extract into another store")


def _open_zarr_store(url: str | Path, read_only: bool,
                     storage_options: Mapping[str, Any] | None) -> tuple[Store, Path | None]:
    """A zarr store for a local path (atomic file writes) or any other fsspec URL; the local root or None."""
    text = str(url)
    if isinstance(url, Path) or "://" not in text or text.startswith("file://"):
        root = Path(text.removeprefix("file://")).expanduser().absolute()
        _check_local_root(root, read_only)
        return LocalStore(root, read_only=read_only), root
    return FsspecStore.from_url(text, storage_options=dict(storage_options or {}), read_only=read_only), None


class FeatureStore:
    """A feature store opened for reading (mode "r") or reading and writing (mode "a")."""

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
        return f"FeatureStore({self.url!r}, mode={self.mode!r})"

    # -- reading -----------------------------------------------------------------------------------------

    def backbones(self) -> list[str]:
        """Names of the backbone groups."""
        return sorted(name for name in self.root.group_keys() if not name.startswith("_"))

    def has_backbone(self, backbone: str) -> bool:
        """True when a group for ``backbone`` exists."""
        return backbone in self.backbones()

    def _group(self, backbone: str) -> zarr.Group:
        """The backbone's group (MissingEntryError listing the stored backbones when absent)."""
        _check_name(backbone, "backbone")
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
            raise MissingEntryError(f"No layer {layer!r} stored for backbone {backbone!r} in {self.url}; "
                           f"stored: {self.layers(backbone)}")
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
        missing = np.flatnonzero(ids == _MISSING_ID)
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
        attrs = {"backbone": backbone, "layer": layer, "feature_shape": list(layout.feature_shape),
                 "reduce": layout.reduce or "none", "provenance": json.dumps(self.provenance(backbone), sort_keys=True)}
        if layout.reduce_seed is not None:
            attrs["reduce_seed"] = layout.reduce_seed
        return xr.DataArray(data, dims=("nsd_id", "feature"), coords={"nsd_id": self.planned_ids(backbone)[rows]},
                            name=layer, attrs=attrs)

    def summary(self) -> pd.DataFrame:
        """One row per stored (backbone, layer): finished ids, feature shape, dtype, bytes on disk."""
        records = []
        for backbone in self.backbones():
            for layer in self.layers(backbone):
                array = self._layer_array(backbone, layer)
                layout = self.layout(backbone, layer)
                records.append({"backbone": backbone, "layer": layer, "n_ids": self.ids(backbone, layer).size,
                                "feature_shape": layout.feature_shape, "n_features": layout.n_features,
                                "reduce": layout.reduce, "dtype": str(array.dtype),
                                "storage": self.storage(backbone, layer)["layout"],
                                "nbytes_stored": array.nbytes_stored()})
        columns = ["backbone", "layer", "n_ids", "feature_shape", "n_features", "reduce", "dtype", "storage",
                   "nbytes_stored"]
        return pd.DataFrame.from_records(records, columns=columns)

    # -- writing -----------------------------------------------------------------------------------------

    def _require_writable(self) -> None:
        """Refuse writes through a store opened with mode 'r'."""
        if self.mode != "a":
            raise PermissionError(f"Feature store {self.url} is open read-only; open it with mode='a' to write")

    def lock(self, backbone: str, *, wait: bool | float = False, stale_after: float | None = None) -> WriterLock:
        """Take the one-writer lock of ``backbone`` (StoreLockedError naming the holder when busy)."""
        self._require_writable()
        _check_name(backbone, "backbone")
        description = f"backbone {backbone!r} of feature store {self.url}"
        if self.local_root is not None:
            lock: WriterLock = FileLock(self.zarr_store, backbone, description, self.local_root)
        else:
            options = {} if stale_after is None else {"stale_after": stale_after}
            lock = LeaseLock(self.zarr_store, backbone, description, **options)
        return lock.acquire(wait=wait)

    def check_provenance(self, backbone: str, provenance: Mapping[str, Any],
                         layouts: Sequence[LayerLayout] = ()) -> None:
        """Refuse (ProvenanceError naming each difference) to mix features made another way; warn on versions."""
        if not self.has_backbone(backbone):
            return
        stored = self.provenance(backbone)
        problems = provenance_differences(stored, provenance)
        stored_layers = self.layers(backbone)
        for layout in layouts:
            if layout.name in stored_layers:
                problems += self.layout(backbone, layout.name).differences(layout)
        if problems:
            raise ProvenanceError(
                f"store provenance differs for backbone {backbone!r} in {self.url}: " + "; ".join(problems)
                + ". Write these features to another store (or another backbone name) instead of mixing them."
            )
        versions = version_differences(stored, provenance)
        if versions:
            warnings.warn(f"backbone {backbone!r} in {self.url} was extracted with other library versions: "
                          + "; ".join(versions) + " (features are kept; re-extract to a new store to be safe)",
                          UserWarning, stacklevel=2)

    def plan(self, backbone: str, requested_ids: np.ndarray, layers: Sequence[str], chunk_rows: int) -> RowPlan:
        """Plan a run for ``layers`` over ``requested_ids`` without writing anything."""
        if not self.has_backbone(backbone):
            return plan_rows(np.zeros(0, np.int64), {layer: np.zeros(0, np.int32) for layer in layers},
                             requested_ids, chunk_rows, backbone)
        done = {layer: self.done_counts(backbone, layer) for layer in layers}
        return plan_rows(self.planned_ids(backbone), done, requested_ids, chunk_rows, backbone)

    def apply_plan(self, plan: RowPlan, provenance: Mapping[str, Any], layouts: Sequence[LayerLayout]) -> None:
        """Create or grow the group's arrays for ``plan``: ids first, then layer arrays and their markers."""
        self._require_writable()
        _check_name(plan.backbone, "backbone")
        for layout in layouts:
            _check_name(layout.name, "layer")
        rows, n_rows = plan.chunk_rows, plan.nsd_ids.size
        group = self.root.require_group(plan.backbone)
        if "provenance" not in group.attrs:
            group.attrs["provenance"] = dict(provenance)
        if ID_ARRAY not in group.array_keys():
            group.create_array(ID_ARRAY, shape=(0,), chunks=(rows,), dtype="int64", fill_value=_MISSING_ID,
                               compressors=_COMPRESSOR)
        ids = group[ID_ARRAY]
        if ids.shape[0] != plan.n_kept:
            ids.resize((plan.n_kept,))
        if plan.new_ids.size:
            ids.resize((n_rows,))
            ids[plan.n_kept:] = plan.new_ids
        dtype = provenance["dtype"]
        done = group.require_group(DONE_GROUP)
        n_chunks = math.ceil(n_rows / rows)
        for layout in layouts:
            if layout.name in done.array_keys():
                done[layout.name].resize((n_chunks,))
            else:
                done.create_array(layout.name, shape=(n_chunks,), chunks=(1,), dtype="int32", fill_value=0)
            if layout.name in group.array_keys():
                group[layout.name].resize((n_rows, layout.n_features))
            else:
                storage = storage_chunking(layout.n_features, rows, dtype)
                group.create_array(layout.name, shape=(n_rows, layout.n_features), chunks=tuple(storage["chunks"]),
                                   shards=tuple(storage["shards"]) if "shards" in storage else None, dtype=dtype,
                                   fill_value=np.nan, compressors=_COMPRESSOR,
                                   attributes={**layout.attrs(), "storage": storage})

    def record_skipped_images(self, backbone: str, records: Sequence[Mapping[str, Any]]) -> None:
        """Add unreadable images ({"nsd_id", "path", "reason"}) to the group's ``skipped_images`` attribute, by id.

        Called before the chunk holding their rows is written: a row is hidden from readers before its marker
        says it is final, so a kill at any point never exposes it."""
        self._require_writable()
        group = self._group(backbone)
        merged = {record["nsd_id"]: record for record in group.attrs.get(SKIPPED_ATTR, [])}
        merged.update({int(record["nsd_id"]): {**record, "nsd_id": int(record["nsd_id"])} for record in records})
        group.attrs[SKIPPED_ATTR] = [merged[nsd_id] for nsd_id in sorted(merged)]

    def write_chunk(self, backbone: str, layer: str, task: ChunkTask, computed: np.ndarray) -> None:
        """Write one whole chunk of ``layer`` (rows [task.compute_from, task.stop) in ``computed``), then mark it.

        Rows already final (below the old marker) are read back and rewritten unchanged, so the chunk (the shard,
        for a sharded layer) goes out in a single object write.
        """
        self._require_writable()
        group = self._group(backbone)
        array = group[layer]
        expected = (task.stop - task.compute_from, array.shape[1])
        if computed.shape != expected:
            raise ValueError(f"chunk {task.index} of layer {layer!r}: expected computed rows of shape {expected}, "
                             f"got {computed.shape}")
        kept = task.done[layer]
        fresh = computed[task.start + kept - task.compute_from:].astype(array.dtype, copy=False)
        block = np.concatenate([array[task.start:task.start + kept], fresh]) if kept else fresh
        array[task.start:task.stop] = block
        group[f"{DONE_GROUP}/{layer}"][task.index] = task.stop - task.start


def open_store(url: str | Path, mode: str = "r", storage_options: Mapping[str, Any] | None = None) -> FeatureStore:
    """Open the feature store at ``url`` (local path or fsspec URL); mode "a" creates it when missing."""
    return FeatureStore(url, mode, storage_options)


def open_features(store: str | Path | FeatureStore, backbone: str, layer: str, *,
                  storage_options: Mapping[str, Any] | None = None) -> xr.DataArray:
    """A lazy ``xarray.DataArray`` of one layer's finished rows.

    Dims ``("nsd_id", "feature")``, an int64 ``nsd_id`` coordinate, dask-backed: a dask chunk spans the columns of
    one stored chunk (an inner chunk when sharded) and whole stored row chunks, as many as fit a full-width band of
    ``READ_TASK_BYTES``. Attrs ``backbone``, ``layer``, ``feature_shape``, ``reduce`` (and ``reduce_seed`` for random
    projections) and ``provenance`` (JSON). ``.sel(nsd_id=ids)`` returns rows in the order asked.
    """
    opened = store if isinstance(store, FeatureStore) else open_store(store, "r", storage_options)
    return opened.features(backbone, layer)
