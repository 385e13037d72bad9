"""The forward-pass loop of an extraction: batches of images -> model -> reduced, finite rows -> whole chunks.

Images come decoded (uint8, resized on the model's device by the backbone's device transform) or already transformed
by the PIL transform in the decoding workers. One forward pass per batch gives every requested layer; reductions and
the cast to the storage dtype run on the model's device; rows are buffered per chunk, and a finished chunk is
compressed and written by one background thread (overlapping the next chunk's forward passes) and only then marked
done, chunks in order, the writer lock refreshed between them. Rows the storage dtype cannot hold stop the run
before their chunk is written.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from featurestore.backbones._base import Backbone
from featurestore.catalog import CatalogEntry
from featurestore.errors import FeatureStoreError
from featurestore.loader import chunk_batches, image_loader, padded
from featurestore.preprocess import decode_uint8
from featurestore.reduction import Reducer
from featurestore.stimuli import StimulusError, StimulusSource
from featurestore.store import ChunkTask, FeatureStore, LayerLayout, RowPlan
from featurestore.store.lock import WriterLock

__all__ = ["NonFiniteFeaturesError", "write_pending"]


class NonFiniteFeaturesError(FeatureStoreError, ValueError):
    """A layer gave NaN/inf rows (typically float16 overflow); nothing of the affected chunk was written."""


def _write_chunk_layers(store: FeatureStore, backbone: str, task: ChunkTask, chunk: Mapping[str, np.ndarray]) -> None:
    """Write every computed layer of one chunk (each layer's marker follows its own data)."""
    for name, rows in chunk.items():
        store.write_chunk(backbone, name, task, rows)


def _finite_rows(values: torch.Tensor, dtype: str, entry: CatalogEntry, layer: str, device: torch.device) -> np.ndarray:
    """Rows as a numpy array of the storage dtype; NonFiniteFeaturesError naming the layer if any is not finite.
    The cast and the check run where the values are: on a GPU only the stored bytes cross to the host."""
    as_float = values.float()
    stored = as_float.to(getattr(torch, dtype))
    if bool(torch.isfinite(stored).all()):
        # for float32 rows on the CPU this is a view of the model's output (nothing writes to it after the forward
        # pass; layers that a later operation modifies in place are cloned by the extractor)
        return stored.cpu().numpy()
    if bool(torch.isfinite(as_float).all()):
        raise NonFiniteFeaturesError(
            f"backbone {entry.name!r} layer {layer!r}: values up to {float(as_float.abs().max()):.4g} overflow "
            f"{dtype} (largest finite {np.finfo(dtype).max:.4g}); extract with dtype='float32' (CLI: --dtype "
            f"float32) into a new store (this group stores {dtype}). Chunks already written are kept."
        )
    hint = ""
    if device.type == "cuda":
        hint = " (on CUDA the forward pass ran under float16 autocast: try dtype='float32')"
    raise NonFiniteFeaturesError(
        f"backbone {entry.name!r} layer {layer!r}: the model produced NaN or inf values"
        f"{hint}. Chunks already written are kept."
    )


def _to_device(images: torch.Tensor | list[torch.Tensor], device: torch.device) -> torch.Tensor | list[torch.Tensor]:
    """A batch (or a list of differently sized images) moved to the model's device."""
    if isinstance(images, torch.Tensor):
        return images.to(device, non_blocking=True)
    return [image.to(device, non_blocking=True) for image in images]


def write_pending(
    store: FeatureStore,
    lock: WriterLock,
    backbone: Backbone,
    layouts: Sequence[LayerLayout],
    reducers: Mapping[str, Reducer],
    source: StimulusSource,
    rows: RowPlan,
    dtype: str,
    batch_size: int,
    num_workers: int,
    progress: bool,
    skip_bad_images: bool,
) -> tuple[int, int, list[dict[str, Any]]]:
    """Run the plan's pending rows through the model and write every chunk; (rows computed, chunks written, skipped
    images). An unreadable image stops the run (StimulusError naming the file) before its chunk is written, or with
    ``skip_bad_images`` is recorded in the group (before its chunk) and its row written as NaN."""
    device = backbone.device
    batches = list(chunk_batches(rows, batch_size))
    on_device = backbone.device_transform  # None: the workers apply the PIL transform
    loader = image_loader(
        source,
        backbone.transform if on_device is None else decode_uint8,
        rows.nsd_ids,
        [batch for _, batch in batches],
        num_workers,
        pin_memory=device.type == "cuda",
    )
    names = [layout.name for layout in layouts]
    extractor = backbone.extractor(names)
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if device.type == "cuda" and dtype == "float16"
        else contextlib.nullcontext()
    )
    buffers: dict[str, list[np.ndarray]] = {name: [] for name in names}
    computed = written = 0
    skipped: list[dict[str, Any]] = []
    chunk_skipped: list[dict[str, Any]] = []
    last_batch_of_task = {position: index for index, (position, _) in enumerate(batches)}
    bar = tqdm(
        total=rows.ids_to_compute.size, unit="img", desc=backbone.entry.name, disable=not progress, file=sys.stderr
    )
    # compressing and writing a chunk overlaps the next chunk's forward passes (the write cost about as much as the
    # forward pass in BENCHMARKS.md); chunks still go out in order, each marked done only after its data
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featurestore-writer")
    writing: Future | None = None
    with bar, torch.inference_mode(), writer:
        for index, (images, batch_rows, problems) in enumerate(loader):
            bad = [i for i, problem in enumerate(problems) if problem]
            if bad and not skip_bad_images:
                raise StimulusError(
                    f"{problems[bad[0]]}; fix or remove the file, or pass skip_bad_images=True "
                    f"(CLI: --skip-bad-images) to skip unreadable images"
                )
            chunk_skipped += [
                {
                    "nsd_id": int(rows.nsd_ids[batch_rows[i]]),
                    "path": source.describe(int(rows.nsd_ids[batch_rows[i]])),
                    "reason": problems[i],
                }
                for i in bad
            ]
            images = _to_device(images, device)
            if on_device is not None:
                images = on_device(images)
            elif isinstance(images, list):
                images = torch.stack(images)  # sizes differ: torch names them
            n_images = images.shape[0]
            with autocast:
                outputs = extractor(padded(images, batch_size))
            for name in names:
                reduced = reducers[name](outputs[name][:n_images])
                values = _finite_rows(reduced, dtype, backbone.entry, name, device)
                if bad:
                    values = values.copy()
                    values[bad] = np.nan  # the fill value of rows never written; readers never see these rows
                buffers[name].append(values)
            computed += n_images
            bar.update(n_images)
            position = batches[index][0]
            if last_batch_of_task[position] != index:
                continue
            task = rows.tasks[position]
            chunk = {name: np.concatenate(buffers[name]) for name in task.layers}
            if chunk_skipped:
                store.record_skipped_images(backbone.entry.name, chunk_skipped)
                skipped += chunk_skipped
                chunk_skipped = []
            if writing is not None:
                writing.result()  # at most one chunk in flight; re-raises a failed write here
                lock.refresh()
            writing = writer.submit(_write_chunk_layers, store, backbone.entry.name, task, chunk)
            buffers = {name: [] for name in names}
            written += 1
        if writing is not None:
            writing.result()
            lock.refresh()
    return computed, written, skipped
