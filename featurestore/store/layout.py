"""The store's layout: node names, how a layer is stored and chunked, and which rows and chunks a run writes.

On disk (the store is any fsspec URL: a local path, ``s3://bucket/features.zarr``, ...)::

    zarr.json                   root group
    <backbone>/                 group; attrs["provenance"]: what made the features (see build_provenance);
                                attrs["skipped_images"]: unreadable images skipped on request (nsd_id, path,
                                reason); their rows stay planned, hold NaN and are hidden from readers
    <backbone>/nsd_id           int64 (n_rows,), chunks (chunk_rows,): the NSD id of every row
    <backbone>/<layer>          float16 | float32 (n_rows, n_features), one object per row chunk of chunk_rows
                                rows x all features (plain or sharded, below), blosc-zstd; attrs: feature_shape
                                (before flattening), reduce, reduce_seed, inplace, tokens, storage (the chunking used)
    <backbone>/_done/<layer>    int32 (n_chunks,), chunks (1,): per row chunk, how many of its leading rows
                                hold final values (one object per chunk, so no two chunks share a marker)
    _locks/<backbone>           the writer lock (featurestore.store.lock)

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
the array grows; arrays without the attribute (stores written before sharding) are plain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestore.errors import InvalidParameterError
from featurestore.store.provenance import short

__all__ = ["ChunkTask", "LayerLayout", "RowPlan", "plan_new_group", "plan_rows", "storage_chunking"]

ID_ARRAY = "nsd_id"
DONE_GROUP = "_done"
SKIPPED_ATTR = "skipped_images"
MISSING_ID = -1  # the fill value of nsd_id: rows past a torn plan's end
INNER_CHUNK_BYTES = 2**20  # target uncompressed size of one inner chunk (chunk_rows x feature_block) of a wide layer
SHARD_MIN_BLOCKS = 4  # a layer is sharded when its rows span more than this many feature blocks


def check_name(name: str, what: str) -> None:
    """Refuse group/array names that would clash with the layout's own nodes."""
    if not name or "/" in name or name.startswith(("_", ".")) or (what == "layer" and name == ID_ARRAY):
        raise InvalidParameterError(
            f"{what} name {name!r} cannot be stored: names must be non-empty, contain no '/', not start with "
            f"'_' or '.', and a layer cannot be called {ID_ARRAY!r}"
        )


@dataclass(frozen=True)
class LayerLayout:
    """How one layer is stored: the shape the model gives, the reduction (and its seed, for random projections),
    the stored row width, whether the model modifies the layer's output in place, and the ViT tokens kept (``cls``,
    ``mean``, ``all``; None: the layer's whole output, as in groups written before token selection)."""

    name: str
    feature_shape: tuple[int, ...]
    n_features: int
    reduce: str | None = None
    reduce_seed: int | None = None
    inplace: bool = False
    tokens: str | None = None

    def attrs(self) -> dict[str, Any]:
        """The layer array's attributes."""
        return {
            "feature_shape": list(self.feature_shape),
            "n_features": self.n_features,
            "reduce": self.reduce,
            "reduce_seed": self.reduce_seed,
            "inplace": self.inplace,
            "tokens": self.tokens,
        }

    @classmethod
    def from_attrs(cls, name: str, attrs: Mapping[str, Any]) -> LayerLayout:
        """Read a layout back from a layer array's attributes."""
        return cls(
            name=name,
            feature_shape=tuple(attrs["feature_shape"]),
            n_features=int(attrs["n_features"]),
            reduce=attrs.get("reduce"),
            reduce_seed=attrs.get("reduce_seed"),
            inplace=bool(attrs.get("inplace", False)),
            tokens=attrs.get("tokens"),
        )

    def differences(self, other: LayerLayout) -> list[str]:
        """'layer X reduce None != srp:64' for each recipe difference with another layout of the same layer."""
        keys = ("feature_shape", "n_features", "reduce", "reduce_seed", "tokens")
        mine, theirs = self.attrs(), other.attrs()
        return [
            f"layer {self.name} {key} {short(mine[key])} != {short(theirs[key])}"
            for key in keys
            if mine[key] != theirs[key]
        ]


def storage_chunking(n_features: int, chunk_rows: int, dtype: str) -> dict[str, Any]:
    """How a new layer array is chunked: {"layout": "plain", "chunks"} or {"layout": "sharded", "shards", "chunks"}.

    A shard covers (chunk_rows, n_features rounded up to whole feature blocks): one object per row chunk.
    """
    row_bytes = chunk_rows * np.dtype(dtype).itemsize
    feature_block = 2 ** int(math.log2(max(1, INNER_CHUNK_BYTES // row_bytes)))
    if n_features <= SHARD_MIN_BLOCKS * feature_block:
        return {"layout": "plain", "chunks": [chunk_rows, n_features]}
    return {
        "layout": "sharded",
        "shards": [chunk_rows, math.ceil(n_features / feature_block) * feature_block],
        "chunks": [chunk_rows, feature_block],
    }


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

    @property
    def ids_to_compute(self) -> np.ndarray:
        """NSD ids of the rows that go through the model, in row order."""
        if not self.tasks:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.nsd_ids[t.compute_from : t.stop] for t in self.tasks])

    @property
    def n_unavailable(self) -> int:
        """Planned rows left pending: their chunks need images that are not in this run's stimuli."""
        return sum(t.stop - t.compute_from for t in self.unavailable)

    def rows_to_write(self, layer: str) -> int:
        """How many rows of ``layer`` this plan writes (rows already final in a rewritten chunk excluded)."""
        return sum(t.stop - t.start - t.done[layer] for t in self.tasks if layer in t.done)


def plan_rows(
    stored_ids: np.ndarray,
    done: Mapping[str, np.ndarray],
    requested_ids: np.ndarray,
    chunk_rows: int,
    backbone: str = "",
) -> RowPlan:
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
        (tasks if available[task.compute_from : stop].all() else unavailable).append(task)
    return RowPlan(
        backbone=backbone,
        chunk_rows=chunk_rows,
        n_kept=stored_ids.size,
        new_ids=new_ids,
        nsd_ids=nsd_ids,
        tasks=tuple(tasks),
        unavailable=tuple(unavailable),
    )


def plan_new_group(requested_ids: np.ndarray, layers: Sequence[str], chunk_rows: int, backbone: str) -> RowPlan:
    """The plan of a backbone group not created yet: no row stored, no chunk done."""
    return plan_rows(
        np.zeros(0, np.int64), {layer: np.zeros(0, np.int32) for layer in layers}, requested_ids, chunk_rows, backbone
    )
