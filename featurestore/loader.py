"""Pending rows -> batches of decoded images: the batch cuts, the DataLoader and its ``spawn`` worker processes.

Batches never straddle a chunk (a chunk's pending rows are cut into batches at fixed offsets from the chunk's
first row) and a short batch is padded to the full batch size, so a chunk's values come from forward passes of the
same shape over the same images whether the run was interrupted or not. Decoding runs in ``spawn`` worker processes
(not ``fork``: zarr, dask and torch threads), one torch thread each, and a worker ends when its parent dies. A
worker applies the backbone's PIL transform, or on the device path (``featurestore.preprocess``) only decodes to
uint8, and images of different sizes then come as a list.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from featurestore.preprocess import collate_images
from featurestore.stimuli import StimulusError, StimulusSource
from featurestore.store import RowPlan

__all__ = ["chunk_batches", "image_loader", "padded"]


class _PendingImages(Dataset):
    """Row index -> (transformed image tensor, row index, problem), for the rows a plan computes.

    ``problem`` is "" or why the image could not be read (a StimulusError naming the file); a blank image then
    stands in, so the batch keeps its shape, and the main process decides to stop or skip. A worker never raises for
    a bad image: DataLoader would wrap the error in a worker traceback."""

    def __init__(self, source: StimulusSource, transform: Any, nsd_ids: np.ndarray) -> None:
        self.source = source
        self.transform = transform
        self.nsd_ids = nsd_ids

    def __len__(self) -> int:
        return self.nsd_ids.size

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int, str]:
        try:
            image: Image.Image = self.source.load(int(self.nsd_ids[row]))
        except StimulusError as error:
            return self.transform(Image.new("RGB", (1, 1))), row, str(error)
        return self.transform(image), row, ""


def _init_worker(parent_pid: int, _worker_id: int) -> None:
    """DataLoader worker init: one torch thread per decoding worker (no oversubscription), and a watch that ends the
    worker when its parent dies (a SIGKILLed extraction's workers otherwise decoded on for minutes)."""
    torch.set_num_threads(1)
    threading.Thread(
        target=_exit_with_parent, args=(parent_pid,), name="featurestore-parent-watch", daemon=True
    ).start()


def _exit_with_parent(parent_pid: int, poll_s: float = 0.25) -> None:
    """Return never: poll the parent pid and end this process at once when the parent is gone (re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)


def chunk_batches(rows: RowPlan, batch_size: int) -> Iterator[tuple[int, list[int]]]:
    """(task position, row indices) per batch; batches are cut at fixed offsets from each chunk's first row."""
    for position, task in enumerate(rows.tasks):
        first_cut = task.start + ((task.compute_from - task.start) // batch_size + 1) * batch_size
        cuts = [task.compute_from, *range(first_cut, task.stop, batch_size), task.stop]
        for begin, end in zip(cuts, cuts[1:]):
            yield position, list(range(begin, end))


def image_loader(
    source: StimulusSource,
    transform: Any,
    nsd_ids: np.ndarray,
    batches: Sequence[list[int]],
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    """A DataLoader giving (images, row indices, problems) for each batch of row indices, in order; ``num_workers``
    ``spawn`` processes decode (0 decodes in this process). ``images`` is one tensor, or a list of tensors when the
    transformed images differ in size."""
    return DataLoader(
        _PendingImages(source, transform, nsd_ids),
        batch_sampler=batches,
        collate_fn=collate_images,
        num_workers=num_workers,
        multiprocessing_context="spawn" if num_workers > 0 else None,
        worker_init_fn=functools.partial(_init_worker, os.getpid()) if num_workers > 0 else None,
        pin_memory=pin_memory,
    )


def padded(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A short batch padded to ``batch_size`` by repeating its last image: every forward pass then has one shape,
    so a row's float bits do not depend on where a (possibly resumed) run's batches happened to end."""
    missing = batch_size - images.shape[0]
    return torch.cat([images, images[-1:].expand(missing, *images.shape[1:])]) if missing > 0 else images
