"""Writing a feature store: the writer lock, the provenance check, row plans, whole-chunk writes and done markers.

``FeatureStore`` is the store's one public object: a ``StoreReader`` that also writes, since every write step
reads first (the group, its planned ids, markers and layouts). The write protocol of a run, in order: ``lock``,
``plan`` (nothing written), ``check_provenance``, ``apply_plan`` (ids, arrays and markers sized for the plan), then
``write_chunk`` per chunk, each raising its marker only after its data (see ``featurestore.store.layout``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from zarr.codecs import BloscCodec

from featurestore.store.layout import (
    DONE_GROUP,
    ID_ARRAY,
    MISSING_ID,
    SKIPPED_ATTR,
    ChunkTask,
    LayerLayout,
    RowPlan,
    check_name,
    plan_new_group,
    plan_rows,
    storage_chunking,
)
from featurestore.store.lock import FileLock, LeaseLock, WriterLock
from featurestore.store.provenance import (
    ProvenanceError,
    provenance_differences,
    version_differences,
)
from featurestore.store.reader import StoreReader

__all__ = ["FeatureStore", "open_store"]

# zstd level 1: level 5 compressed AlexNet activations at 15 MB/s, slower than the forward pass (BENCHMARKS.md)
_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


class FeatureStore(StoreReader):
    """A feature store opened for reading (mode "r") or reading and writing (mode "a")."""

    def _require_writable(self) -> None:
        """Refuse writes through a store opened with mode 'r'."""
        if self.mode != "a":
            raise PermissionError(f"Feature store {self.url} is open read-only; open it with mode='a' to write")

    def lock(self, backbone: str, *, wait: bool | float = False, stale_after: float | None = None) -> WriterLock:
        """Take the one-writer lock of ``backbone`` (StoreLockedError naming the holder when busy)."""
        self._require_writable()
        check_name(backbone, "backbone")
        description = f"backbone {backbone!r} of feature store {self.url}"
        if self.local_root is not None:
            lock: WriterLock = FileLock(self.zarr_store, backbone, description, self.local_root)
        else:
            options = {} if stale_after is None else {"stale_after": stale_after}
            lock = LeaseLock(self.zarr_store, backbone, description, **options)
        return lock.acquire(wait=wait)

    def check_provenance(
        self, backbone: str, provenance: Mapping[str, Any], layouts: Sequence[LayerLayout] = ()
    ) -> None:
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
                f"store provenance differs for backbone {backbone!r} in {self.url}: "
                + "; ".join(problems)
                + ". Write these features to another store (or another backbone name) instead of mixing them."
            )
        versions = version_differences(stored, provenance)
        if versions:
            warnings.warn(
                f"backbone {backbone!r} in {self.url} was extracted with other library versions: "
                + "; ".join(versions)
                + " (features are kept; re-extract to a new store to be safe)",
                UserWarning,
                stacklevel=2,
            )

    def plan(self, backbone: str, requested_ids: np.ndarray, layers: Sequence[str], chunk_rows: int) -> RowPlan:
        """Plan a run for ``layers`` over ``requested_ids`` without writing anything."""
        if not self.has_backbone(backbone):
            return plan_new_group(requested_ids, layers, chunk_rows, backbone)
        done = {layer: self.done_counts(backbone, layer) for layer in layers}
        return plan_rows(self.planned_ids(backbone), done, requested_ids, chunk_rows, backbone)

    def apply_plan(self, plan: RowPlan, provenance: Mapping[str, Any], layouts: Sequence[LayerLayout]) -> None:
        """Create or grow the group's arrays for ``plan``: ids first, then layer arrays and their markers."""
        self._require_writable()
        check_name(plan.backbone, "backbone")
        for layout in layouts:
            check_name(layout.name, "layer")
        rows, n_rows = plan.chunk_rows, plan.nsd_ids.size
        group = self.root.require_group(plan.backbone)
        if "provenance" not in group.attrs:
            group.attrs["provenance"] = dict(provenance)
        if ID_ARRAY not in group.array_keys():
            group.create_array(
                ID_ARRAY, shape=(0,), chunks=(rows,), dtype="int64", fill_value=MISSING_ID, compressors=_COMPRESSOR
            )
        ids = group[ID_ARRAY]
        if ids.shape[0] != plan.n_kept:
            ids.resize((plan.n_kept,))
        if plan.new_ids.size:
            ids.resize((n_rows,))
            ids[plan.n_kept :] = plan.new_ids
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
                group.create_array(
                    layout.name,
                    shape=(n_rows, layout.n_features),
                    chunks=tuple(storage["chunks"]),
                    shards=tuple(storage["shards"]) if "shards" in storage else None,
                    dtype=dtype,
                    fill_value=np.nan,
                    compressors=_COMPRESSOR,
                    attributes={**layout.attrs(), "storage": storage},
                )

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
            raise ValueError(
                f"chunk {task.index} of layer {layer!r}: expected computed rows of shape {expected}, "
                f"got {computed.shape}"
            )
        kept = task.done[layer]
        fresh = computed[task.start + kept - task.compute_from :].astype(array.dtype, copy=False)
        block = np.concatenate([array[task.start : task.start + kept], fresh]) if kept else fresh
        array[task.start : task.stop] = block
        group[f"{DONE_GROUP}/{layer}"][task.index] = task.stop - task.start


def open_store(url: str | Path, mode: str = "r", storage_options: Mapping[str, Any] | None = None) -> FeatureStore:
    """Open the feature store at ``url`` (local path or fsspec URL); mode "a" creates it when missing."""
    return FeatureStore(url, mode, storage_options)
