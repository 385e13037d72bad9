"""The extraction engine: stimuli -> backbone -> reduced layer rows -> whole Zarr chunks, resumable and idempotent.

One run: resolve the catalog entry, open the stimuli, take the backbone's writer lock, plan the rows (ids
already stored are skipped), check provenance, then stream the pending rows through a torch DataLoader
(``featurestore.loader``: image decoding in ``spawn`` worker processes, batches cut within chunks), one forward
pass per batch for all requested layers, reductions on the model's device, rows buffered into whole chunks that are
written then marked done (``featurestore.forward``). This module decides what a run does (plan, recipe check,
storage dtype, layer layouts) and reports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch

from featurestore import backbones
from featurestore.backbones._base import Backbone, sha256_file
from featurestore.catalog import CatalogEntry, get_entry
from featurestore.distributed import check_scheduler, client_factory, write_distributed
from featurestore.errors import InvalidParameterError, check_type
from featurestore.forward import NonFiniteFeaturesError, write_pending
from featurestore.reduction import Reducer, make_reducer
from featurestore.stimuli import StimulusSource, open_stimuli
from featurestore.store import (
    FeatureStore,
    LayerLayout,
    RowPlan,
    build_provenance,
    open_store,
)
from featurestore.store.layout import plan_new_group
from featurestore.store.provenance import check_dtype, provenance_differences

__all__ = ["ExtractPlan", "ExtractReport", "NonFiniteFeaturesError", "extract"]

DEFAULT_CHUNK_ROWS = 256


@dataclass(frozen=True)
class ExtractPlan:
    """What a run will write, known before any image goes through the model."""

    backbone: str
    store: str
    group_exists: bool
    n_images: int
    rows: RowPlan
    layouts: tuple[LayerLayout, ...]
    dtype: str
    chunk_rows: int

    def table(self) -> pd.DataFrame:
        """Per layer: rows to add, feature shape, stored row width, reduction, chunking, estimated bytes."""
        itemsize = np.dtype(self.dtype).itemsize
        records = [
            {
                "layer": layout.name,
                "rows_to_add": self.rows.rows_to_write(layout.name),
                "feature_shape": layout.feature_shape,
                "reduce": layout.reduce or "-",
                "stored_features": layout.n_features,
                "dtype": self.dtype,
                "chunks": f"({self.chunk_rows}, {layout.n_features})",
                "est_bytes": self.rows.rows_to_write(layout.name) * layout.n_features * itemsize,
            }
            for layout in self.layouts
        ]
        return pd.DataFrame.from_records(records)

    def describe(self) -> str:
        """The plan in words and a table (what --dry-run prints)."""
        rows = self.rows
        table = self.table()
        lines = [
            f"backbone {self.backbone!r} -> store {self.store} ({'existing' if self.group_exists else 'new'} group)",
            f"images: {self.n_images} in the stimuli, {rows.n_kept} rows already in the group, {rows.new_ids.size} "
            f"new ids; "
            f"{rows.ids_to_compute.size} images to run through the model in {len(rows.tasks)} chunk(s) of up to "
            f"{self.chunk_rows} rows",
            table.to_string(index=False, formatters={"est_bytes": _human_bytes}),
            f"est_bytes = rows_to_add x stored_features x {np.dtype(self.dtype).itemsize} bytes: an uncompressed upper "
            f"bound (blosc-zstd usually stores less); total {_human_bytes(int(table['est_bytes'].sum()))}",
        ]
        if rows.unavailable:
            lines.append(
                f"{rows.n_unavailable} planned rows of an earlier run are left pending: their images are "
                f"not in these stimuli"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class ExtractReport:
    """What a run did: its plan, images run through the model, chunks written, unreadable images skipped."""

    plan: ExtractPlan
    rows_computed: int
    chunks_written: int
    dry_run: bool
    seconds: float
    skipped_images: tuple[dict[str, Any], ...] = ()


def _human_bytes(n: int) -> str:
    """Bytes as B / KB / MB / GB / TB (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, as in a container or job slot)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Measured with bench/bench_workers.py and bench/bench_extraction.py (BENCHMARKS.md): a spawned decode worker costs
# about 6 s before its first image (it imports torch and this package); decoding a 425 x 425 PNG takes about 7 ms
# of CPU, and the main process spends about 2.4 ms per image on other work (casting, chunk writes).
WORKER_START_S = 6.0
DECODE_S = 0.007
MAIN_S = 0.0024
# On a 2-core CPU one worker paid off from about 1,330 pending images (340: 7.9 s inline, 12.5 s with one worker;
# 3,000: 68.3 s inline, 60.6 s with one): below this count the CPU default decodes inline.
CPU_MIN_PENDING = 2000


def default_num_workers(device: torch.device, n_pending: int) -> int:
    """Decoding processes for ``n_pending`` images, never slower than decoding inline (0) as measured.

    On a GPU decoding is the bottleneck, so every core but the one feeding the GPU decodes (up to 16 processes,
    each holding its own torch), once the time they save outweighs their start-up: inline, the main process spends
    ``DECODE_S + MAIN_S`` per image; with ``k`` workers, the larger of ``MAIN_S`` and ``DECODE_S / k``. On the CPU
    the forward pass needs the cores itself: min(4, cores - 1) workers, from ``CPU_MIN_PENDING`` images on.
    """
    cores = usable_cores()
    if device.type == "cuda":
        workers = min(16, cores - 1)
        saved = DECODE_S + MAIN_S - max(MAIN_S, DECODE_S / max(workers, 1))
        return workers if workers >= 1 and n_pending * saved >= WORKER_START_S else 0
    return max(0, min(4, cores - 1)) if n_pending >= CPU_MIN_PENDING else 0


def _projection_seed(spec: str | None, seed: int) -> int | None:
    """The seed that shapes a layer's values: only random projections have one."""
    return seed if spec is not None and spec.startswith("srp:") else None


def _storage_dtype(requested: str | None, entry: CatalogEntry, stored: Mapping[str, Any]) -> str:
    """The dtype to store: the one asked for; else the group's, while its catalog entry still says what it said
    when the group was made; else the entry's. A catalog edit of ``dtype`` is thus checked like ``dtype=``
    (ProvenanceError naming both dtypes), and a group made with an explicit dtype keeps it on reruns."""
    if requested is not None:
        return requested
    if stored and stored["entry"].get("dtype") == entry.dtype:
        return stored["dtype"]
    return entry.dtype


def _layouts(backbone: Backbone, layers: Sequence[str]) -> tuple[tuple[LayerLayout, ...], dict[str, Reducer]]:
    """Stored layout and reducer of each layer, from the backbone's probed output shapes and the entry's reduce."""
    entry = backbone.entry
    shapes = {info.name: info.shape for info in backbone.layer_info}
    tokens = {info.name: info.tokens for info in backbone.layer_info}
    inplace = backbone.inplace_layers()
    reducers = {
        layer: make_reducer(entry.reduce.get(layer), tuple(shapes[layer]), entry.reduce_seed) for layer in layers
    }
    layouts = tuple(
        LayerLayout(
            name=layer,
            feature_shape=tuple(shapes[layer]),
            n_features=reducers[layer].out_features,
            reduce=reducers[layer].spec,
            reduce_seed=_projection_seed(reducers[layer].spec, entry.reduce_seed),
            inplace=layer in inplace,
            tokens=tokens[layer],
        )
        for layer in layers
    )
    return layouts, reducers


def _recipe_differences(
    store: FeatureStore, entry: CatalogEntry, layers: Sequence[str], dtype: str, chunk_rows: int
) -> list[str]:
    """Differences visible without loading the model: entry identity, weights file hash, dtype, chunking, reduce."""
    weights = {} if entry.weights_file is None else {"sha256": sha256_file(entry.weights_file)}
    requested = {"entry": entry.to_dict(), "weights": weights, "dtype": dtype, "chunk_rows": chunk_rows}
    problems = provenance_differences(store.provenance(entry.name), requested, resolved=False)
    for layer in layers:
        stored = store.layout(entry.name, layer)
        spec = entry.reduce.get(layer)
        # the layer's shape follows from the entry (compared above) and its reduction
        problems += stored.differences(
            dataclasses.replace(
                stored,
                reduce=spec,
                reduce_seed=_projection_seed(spec, entry.reduce_seed),
                tokens=entry.tokens.get(layer),
            )
        )
    return problems


def _open_target(
    store: str | Path | FeatureStore, dry_run: bool, storage_options: Mapping[str, Any] | None
) -> FeatureStore | None:
    """The store to write (created if missing), or for a dry run the existing store read-only / None."""
    if isinstance(store, FeatureStore):
        return store
    if not dry_run:
        return open_store(store, "a", storage_options)
    try:
        return open_store(store, "r", storage_options)
    except FileNotFoundError:
        return None


def extract(
    backbone: str | CatalogEntry,
    images: str | Path | StimulusSource,
    store: str | Path | FeatureStore,
    *,
    layers: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    chunk_rows: int | None = None,
    dtype: str | None = None,
    catalog: str | Path | Sequence[str | Path] = (),
    subjects: int | str | Sequence[int | str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    progress: bool = True,
    wait: bool | float = False,
    skip_bad_images: bool = False,
    scheduler: Any = None,
    preprocess_on: str | None = None,
    out: TextIO | None = None,
) -> ExtractReport:
    """Extract ``layers`` of ``backbone`` for every image of ``images`` into ``store``; skip what is stored.

    Parameters
    ----------
    backbone : str or CatalogEntry
        A catalog name (built-in ``catalog.yaml`` plus ``catalog`` files) or a resolved entry.
    images : str, Path or StimulusSource
        Algonauts data dir / subject dir, NSD ``.hdf5`` file, or an opened source (see ``open_stimuli``).
    store : str, Path or FeatureStore
        Local path or fsspec URL (``s3://bucket/features.zarr``) of the feature store; created if missing.
    layers : sequence of str, default=None
        Layers to store; None takes the entry's default layers.
    device : str, default=None
        "cpu" or "cuda"; None uses CUDA when available. On CUDA with float16 storage the forward pass runs
        under float16 autocast.
    batch_size : int, default=32
        Images per forward pass (batches never cross a chunk boundary).
    num_workers : int, default=None
        DataLoader worker processes decoding images (``spawn``); 0 decodes inline. None chooses from the device,
        the cores and the images pending, never slower than 0 as measured (`default_num_workers`).
    chunk_rows : int, default=None
        Rows per stored chunk; None keeps an existing group's, else 256.
    dtype : {"float16", "float32"}, default=None
        Storage dtype; None keeps an existing group's unless the catalog entry's dtype changed since the group was
        made (then the entry's is asked for, and a mismatch is refused like an explicit dtype), else the entry's.
    catalog : path or sequence of paths, default=()
        User catalog files adding or overriding entries.
    subjects : int, str or sequence, default=None
        Algonauts subjects whose images to take (None: all).
    storage_options : mapping, default=None
        fsspec options for a remote store (endpoint_url, key, secret, ...).
    dry_run : bool, default=False
        Print the plan (rows to add, feature shapes, dtype, chunking, estimated bytes) and stop before any
        image goes through the model; nothing is written.
    progress : bool, default=True
        Show a tqdm progress bar (images/s) on stderr.
    wait : bool or float, default=False
        When another process writes this backbone: False refuses (StoreLockedError), True waits, a number
        waits up to that many seconds.
    skip_bad_images : bool, default=False
        An unreadable (corrupt, empty, truncated) image stops the run with a StimulusError naming the file; chunks
        finished before are kept. With True it is skipped instead: listed in the group's ``skipped_images``
        attribute (NSD id, path, reason) and in the report, its row (planned like any other, so chunks and resume
        stay as they are) holds NaN and is hidden from ``open_features``, ``ids`` and ``ls``. A skipped id stays
        skipped in this store, also after its file is fixed.
    scheduler : str, distributed.Client or cluster, default=None
        None computes in this process. ``"local:N"`` starts a ``LocalCluster`` of N single-threaded worker
        processes; a scheduler address (``"tcp://host:8786"``), a ``distributed.Client`` or a cluster object
        (dask-jobqueue's ``SLURMCluster``) runs each pending chunk as a task on that cluster
        (``featurestore.distributed``): the store ends byte-identical to a single-process run. The scheduler is
        reached before the store is touched (an unreachable one writes nothing); each worker decodes its chunk's
        images inline unless ``num_workers`` is given.
    preprocess_on : {"device", "pil"}, default=None
        Where images are resized, cropped and normalised: "device" on the model's device (decoding workers only
        decode; within 2/255 per pixel of PIL, ``featurestore.preprocess``; backbones whose transform has no
        device version use PIL), "pil" in the decoding workers. None keeps an existing group's path, else the
        device on CUDA and PIL on the CPU (with a ``scheduler``: PIL, since the workers' devices are not known
        here; pass "device" for GPU workers). Recorded in the provenance: a group refuses the other path.
    out : text stream, default=None
        Where a dry run prints its plan (stdout when None).

    Returns
    -------
    ExtractReport
    """
    started = time.monotonic()
    if batch_size < 1 or (num_workers is not None and num_workers < 0):
        raise InvalidParameterError(
            f"batch_size must be >= 1 and num_workers >= 0, got batch_size={batch_size}, num_workers={num_workers}"
        )
    check_type("backbone", backbone, (str, CatalogEntry), "a catalog name (str) or a CatalogEntry")
    if layers is not None and (isinstance(layers, str) or not all(isinstance(layer, str) for layer in layers)):
        # a str would be iterated as one-character layer names
        raise InvalidParameterError(
            f"layers must be a list of layer names (str), e.g. ['features.12']; got {type(layers).__name__} {layers!r}"
        )
    check_scheduler(scheduler)
    entry = backbone if isinstance(backbone, CatalogEntry) else get_entry(backbone, catalog)
    layers = list(dict.fromkeys(layers or entry.layers))
    source = open_stimuli(images, subjects=subjects)
    with contextlib.ExitStack() as cluster:
        client = None if scheduler is None or dry_run else client_factory(scheduler, cluster)
        return _extract_into(
            entry,
            layers,
            source,
            store,
            client,
            device,
            batch_size,
            num_workers,
            chunk_rows,
            dtype,
            storage_options,
            dry_run,
            progress,
            wait,
            skip_bad_images,
            preprocess_on,
            out,
            started,
        )


def _extract_into(
    entry: CatalogEntry,
    layers: list[str],
    source: StimulusSource,
    store: str | Path | FeatureStore,
    client: Callable[[], Any] | None,
    device: str | torch.device | None,
    batch_size: int,
    num_workers: int | None,
    chunk_rows: int | None,
    dtype: str | None,
    storage_options: Mapping[str, Any] | None,
    dry_run: bool,
    progress: bool,
    wait: bool | float,
    skip_bad_images: bool,
    preprocess_on: str | None,
    out: TextIO | None,
    started: float,
) -> ExtractReport:
    """The body of ``extract`` once its arguments are checked; ``client()`` gives the cluster's Client (None: this
    process computes)."""
    target = _open_target(store, dry_run, storage_options)
    exists = target is not None and target.has_backbone(entry.name)
    stored = target.provenance(entry.name) if exists else {}
    dtype = _storage_dtype(dtype, entry, stored)
    check_dtype(dtype)
    chunk_rows = chunk_rows or stored.get("chunk_rows") or DEFAULT_CHUNK_ROWS
    store_url = target.url if target is not None else str(store)
    lock = target.lock(entry.name, wait=wait) if not dry_run else contextlib.nullcontext()
    with lock:
        if target is None:
            rows = plan_new_group(source.ids, layers, chunk_rows, entry.name)
        else:
            rows = target.plan(entry.name, source.ids, layers, chunk_rows)
        if rows.unavailable:
            warnings.warn(
                f"{rows.n_unavailable} planned rows of backbone {entry.name!r} in {store_url} stay "
                f"pending: their images are not in {source!r}; rerun with the stimuli of the interrupted run "
                f"to finish them",
                UserWarning,
                stacklevel=2,
            )
        nothing_to_do = not rows.tasks and exists and set(layers) <= set(target.layers(entry.name))
        if preprocess_on is not None and exists:  # another path than the group's is checked on the loaded model
            nothing_to_do = nothing_to_do and preprocess_on == stored["preprocessing"].get("path", "pil")
        if nothing_to_do and not _recipe_differences(target, entry, layers, dtype, chunk_rows):
            layouts = tuple(target.layout(entry.name, layer) for layer in layers)
            plan = ExtractPlan(entry.name, store_url, exists, source.ids.size, rows, layouts, dtype, chunk_rows)
            if dry_run:
                print(plan.describe(), file=out or sys.stdout)
            return ExtractReport(plan, 0, 0, dry_run, time.monotonic() - started)
        if preprocess_on is None and stored:  # a group keeps its path (groups made before the device path: PIL)
            preprocess_on = stored["preprocessing"].get("path", "pil")
        # with a cluster the client only probes layer shapes, the weights' identity and the preprocessing path
        # (the workers preprocess on the path recorded here): the workers run the model
        model = backbones.load_backbone(entry, "cpu" if client is not None else device, preprocess_on)
        backbones.validate_layers(model, layers)
        layouts, reducers = _layouts(model, layers)
        provenance = build_provenance(entry.to_dict(), model.weights_id, model.preprocessing, dtype, chunk_rows)
        if target is not None:
            target.check_provenance(entry.name, provenance, layouts)
        plan = ExtractPlan(entry.name, store_url, exists, source.ids.size, rows, layouts, dtype, chunk_rows)
        if dry_run:
            print(plan.describe(), file=out or sys.stdout)
            return ExtractReport(plan, 0, 0, True, time.monotonic() - started)
        target.apply_plan(rows, provenance, layouts)
        if not rows.tasks:
            return ExtractReport(plan, 0, 0, False, time.monotonic() - started)
        if client is not None:
            computed, written, skipped = write_distributed(
                client(),
                target,
                lock,
                model,
                layouts,
                source,
                rows,
                dtype,
                batch_size,
                num_workers,
                progress,
                skip_bad_images,
                device,
            )
            return ExtractReport(plan, computed, written, False, time.monotonic() - started, tuple(skipped))
        pending = int(rows.ids_to_compute.size)
        workers = default_num_workers(model.device, pending) if num_workers is None else num_workers
        computed, written, skipped = write_pending(
            target, lock, model, layouts, reducers, source, rows, dtype, batch_size, workers, progress, skip_bad_images
        )
    return ExtractReport(plan, computed, written, False, time.monotonic() - started, tuple(skipped))
