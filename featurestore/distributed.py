"""Sharded extraction on a dask.distributed cluster: the pending chunks of a row plan become one task each.

The client (the ``extract`` call) plans, checks provenance, holds the backbone's writer lock and sizes the arrays,
exactly as a single-process run does; then every pending chunk is a task. A worker loads the backbone once (cached
per worker process, one GPU per worker when it sees several), runs the chunk's fixed batches through the same
forward-pass loop as a single-process run (``featurestore.forward.write_pending``) and writes the whole chunk, then
its done markers. Chunks own disjoint objects, so the store ends byte-identical to a single-process run, in any
order of completion. A worker that dies mid-task loses only its chunk: the scheduler reruns the task elsewhere
(dask's ``allowed-failures``) and the rewrite replaces the torn chunk whole.

``scheduler`` is ``"local:N"`` (a ``LocalCluster`` of N single-threaded worker processes on this machine), a
scheduler address (``tcp://host:8786``), a ``distributed.Client`` or a cluster object (dask-jobqueue's
``SLURMCluster``, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import multiprocessing
import re
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from featurestore.catalog import CatalogEntry
from featurestore.errors import FeatureStoreError, InvalidParameterError
from featurestore.stimuli import StimulusSource
from featurestore.store import FeatureStore, LayerLayout, RowPlan, StoreLockedError
from featurestore.store.lock import WriterLock

if TYPE_CHECKING:
    import torch

    from featurestore.backbones._base import Backbone

__all__ = [
    "ChunkJob",
    "ClusterError",
    "SchedulerUnreachableError",
    "WorkerSetupError",
    "check_scheduler",
    "client_factory",
    "connect",
    "write_distributed",
]

# how long to try reaching a scheduler address before giving up (dask retries a refused connection until then)
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 60.0
logger = logging.getLogger(__name__)
_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^(\w+://\S+|[\w.-]+:\d+)$")


class SchedulerUnreachableError(FeatureStoreError, OSError):
    """No dask scheduler answered at the given address; nothing was written."""


class WorkerSetupError(FeatureStoreError, RuntimeError):
    """A worker cannot load the backbone as the client did (missing or different weights file); names the worker."""


class ClusterError(FeatureStoreError, RuntimeError):
    """The cluster gave up on a chunk (its workers kept dying); finished chunks are kept, a rerun resumes."""


def _is_client(scheduler: Any) -> bool:
    """True for a ``distributed.Client`` (checked without importing distributed for other values)."""
    return type(scheduler).__name__ == "Client" and type(scheduler).__module__.startswith("distributed")


@contextlib.contextmanager
def _local_cluster(n_workers: int) -> Iterator[Any]:
    """A LocalCluster of ``n_workers`` processes, one dask thread each, this machine's cores shared among their
    torch threads (dask's nanny would otherwise pin every worker to one torch thread). A close that times out (a
    worker slow to exit on a loaded machine) is logged, not raised: the chunks are written by then."""
    import distributed

    from featurestore.extract import usable_cores

    threads = str(max(1, usable_cores() // n_workers))
    cluster = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads},
    )
    try:
        yield cluster
    finally:
        try:
            cluster.close(timeout=CLOSE_TIMEOUT_S)
        except TimeoutError:
            logger.warning(
                "the LocalCluster did not close within %.0f s; its workers end with this process", CLOSE_TIMEOUT_S
            )


def check_scheduler(scheduler: Any) -> None:
    """Refuse (InvalidParameterError) a scheduler that is neither None, "local:N" (N >= 1), an address such as
    "tcp://host:8786" or "host:8786", a ``distributed.Client`` nor a cluster object; checked before any work."""
    if scheduler is None or _is_client(scheduler) or hasattr(scheduler, "scheduler_address"):
        return
    if isinstance(scheduler, str):
        local = _LOCAL.fullmatch(scheduler)
        if (local and int(local.group(1)) >= 1) or (not local and _ADDRESS.fullmatch(scheduler)):
            return
    raise InvalidParameterError(
        f"Unknown scheduler={scheduler!r}; expected 'local:N' (N >= 1 worker processes on this machine), a "
        f"scheduler address such as 'tcp://host:8786', a distributed.Client or a cluster object"
    )


@contextlib.contextmanager
def connect(scheduler: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler`` ("local:N", an address, a Client or a cluster object); closes
    what it started (client, and the LocalCluster of "local:N") on exit, never a Client it was given.

    An address no scheduler answers within ``CONNECT_TIMEOUT_S`` raises SchedulerUnreachableError."""
    if _is_client(scheduler):
        yield scheduler
        return
    check_scheduler(scheduler)
    import distributed

    with contextlib.ExitStack() as stack:
        local = _LOCAL.fullmatch(scheduler) if isinstance(scheduler, str) else None
        target = stack.enter_context(_local_cluster(int(local.group(1)))) if local else scheduler
        try:
            client = distributed.Client(target, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise SchedulerUnreachableError(
                f"cannot reach the dask scheduler at {scheduler} within {CONNECT_TIMEOUT_S:.0f} s "
                f"({type(error).__name__}); start it (`dask scheduler`) or check the address; nothing was written"
            ) from None
        stack.enter_context(client)
        yield client


def client_factory(scheduler: Any, stack: contextlib.ExitStack) -> Callable[[], Any]:
    """A function giving the Client of ``scheduler``, closed with ``stack``. An address is reached now, so an
    unreachable one fails before the store is touched; a "local:N" cluster starts on the first call, so a run with
    nothing left to compute never starts one."""
    connected = functools.cache(lambda: stack.enter_context(connect(scheduler)))
    if not (isinstance(scheduler, str) and _LOCAL.fullmatch(scheduler)):
        connected()
    return connected


@dataclass(frozen=True)
class ChunkJob:
    """Everything a worker needs to compute and write any chunk of one run (scattered to the workers once)."""

    entry: CatalogEntry
    device: str | None
    preprocess_on: str
    weights: Mapping[str, str]
    store: str
    storage_options: Mapping[str, Any]
    layouts: tuple[LayerLayout, ...]
    source: StimulusSource
    rows: RowPlan
    dtype: str
    batch_size: int
    num_workers: int
    skip_bad_images: bool
    lock_token: str


@dataclass(frozen=True)
class ChunkResult:
    """What one task did: images through the model, the chunk's skipped images, and who did it."""

    index: int
    rows_computed: int
    skipped: tuple[dict[str, Any], ...]
    worker: str


class _ClientLock(WriterLock):
    """The client's writer lock seen from a worker: before each chunk it checks that the lock still names the
    client's token (a stale lease taken over by another writer stops the worker before it writes)."""

    def __init__(self, store: FeatureStore, backbone: str, token: str) -> None:
        super().__init__(store.zarr_store, backbone, f"backbone {backbone!r} of feature store {store.url}")
        self.token = token
        self.held = True

    def _try_acquire(self) -> dict[str, Any] | None:  # the client acquired it
        return None

    def release(self) -> None:  # the client releases it
        self.held = False

    def refresh(self) -> None:
        holder = self.holder()
        if holder.get("token") != self.token:
            raise StoreLockedError(
                f"{self.description}: the run's writer lock is now held by {self._who(holder)}; this worker stopped "
                f"before writing (chunks already marked done are kept)"
            )


class _SharedStore(FeatureStore):
    """A worker's store: the group attribute of skipped images is updated under a cluster-wide lock, since
    several workers may record skipped images at once (chunk data and markers are disjoint objects)."""

    def record_skipped_images(self, backbone: str, records: Sequence[Mapping[str, Any]]) -> None:
        import distributed

        with distributed.Lock(f"featurestore-skipped:{self.url}:{backbone}"):
            super().record_skipped_images(backbone, records)


_CACHE_LOCK = threading.Lock()
_BACKBONES: dict[str, tuple[Backbone, dict[str, Any]]] = {}


def _worker_name() -> str:
    """This worker in words: its address and host (or this process, outside a worker)."""
    try:
        import distributed

        worker = distributed.get_worker()
        return f"worker {worker.address} (name {worker.name!r}, host {socket.gethostname()})"
    except (ImportError, ValueError):
        return f"process on host {socket.gethostname()}"


def _worker_device(requested: str | None) -> str | None:
    """The device of this worker: with several visible GPUs and no index asked for, GPU ``i % count`` where ``i`` is
    the trailing number of the worker's name (LocalCluster names its workers 0..N-1; a name ending in ``-2`` is
    worker 2 of its job), else a hash of its address."""
    import torch

    if requested not in (None, "cuda") or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return requested
    import distributed

    try:
        worker = distributed.get_worker()
    except ValueError:
        return requested
    number = re.search(r"(\d+)$", str(worker.name))
    index = int(number.group(1)) if number else sum(worker.address.encode())
    return f"cuda:{index % torch.cuda.device_count()}"


def _check_weights(entry: CatalogEntry) -> None:
    """Refuse, naming this worker and the path, a weights file that is missing here."""
    path = entry.weights_file
    if path is None:
        return
    if not Path(path).is_file():
        raise WorkerSetupError(
            f"{_worker_name()} has no weights file {path} (backbone {entry.name!r}); copy it to the same path on "
            f"every worker, or put it on a shared file system"
        )


def _backbone_for(job: ChunkJob) -> tuple[Backbone, dict[str, Any]]:
    """The job's backbone and reducers, loaded once per worker process and entry (cached across tasks)."""
    from featurestore import backbones
    from featurestore.extract import _layouts

    layers = [layout.name for layout in job.layouts]
    key = json.dumps([job.entry.to_dict(), job.device, job.preprocess_on, layers], sort_keys=True, default=str)
    with _CACHE_LOCK:
        if key not in _BACKBONES:
            _check_weights(job.entry)
            model = backbones.load_backbone(job.entry, _worker_device(job.device), job.preprocess_on)
            if model.weights_id["sha256"] != job.weights["sha256"]:
                raise WorkerSetupError(
                    f"{_worker_name()}: weights of backbone {job.entry.name!r} ({job.entry.weights}) have sha256 "
                    f"{model.weights_id['sha256'][:12]} here and {job.weights['sha256'][:12]} on the client; "
                    f"give every worker the same weights file"
                )
            layouts, reducers = _layouts(model, layers)
            if tuple(layouts) != tuple(job.layouts):
                raise WorkerSetupError(
                    f"{_worker_name()}: backbone {job.entry.name!r} gives other layer layouts here than on the "
                    f"client ({layouts} != {job.layouts}); check the library versions of the workers"
                )
            _BACKBONES.clear()  # one backbone per worker at a time: a new run's model replaces the last one
            _BACKBONES[key] = (model, reducers)
        return _BACKBONES[key]


def compute_chunk(job: ChunkJob, position: int) -> ChunkResult:
    """Task body: run the plan's chunk ``position`` through the (cached) backbone and write it, then its markers."""
    from featurestore.forward import write_pending

    if job.num_workers > 0 and multiprocessing.current_process().daemon:
        raise InvalidParameterError(
            f"{_worker_name()} is a daemonic process and cannot start num_workers={job.num_workers} decode "
            f"processes; leave num_workers (--workers) unset, or start the workers with the dask config "
            f"distributed.worker.daemon: false"
        )
    model, reducers = _backbone_for(job)
    task = job.rows.tasks[position]
    store = _SharedStore(job.store, "a", job.storage_options)
    lock = _ClientLock(store, job.entry.name, job.lock_token)
    lock.refresh()
    one_chunk = dataclasses.replace(job.rows, tasks=(task,), unavailable=())
    computed, _, skipped = write_pending(
        store,
        lock,
        model,
        job.layouts,
        reducers,
        job.source,
        one_chunk,
        job.dtype,
        job.batch_size,
        job.num_workers,
        False,
        job.skip_bad_images,
    )
    return ChunkResult(task.index, computed, tuple(skipped), _worker_name())


def write_distributed(
    client: Any,
    store: FeatureStore,
    lock: WriterLock,
    backbone: Backbone,
    layouts: Sequence[LayerLayout],
    source: StimulusSource,
    rows: RowPlan,
    dtype: str,
    batch_size: int,
    num_workers: int | None,
    progress: bool,
    skip_bad_images: bool,
    device: str | torch.device | None,
) -> tuple[int, int, list[dict[str, Any]]]:
    """Compute and write every pending chunk of ``rows`` as one task each on ``client``'s cluster; (rows
    computed, chunks written, skipped images), like ``featurestore.forward.write_pending``.

    The client refreshes its writer lock as chunks finish and shows one progress bar (images). The first failing
    task cancels the others and its error is raised here (finished chunks stay marked done; a rerun resumes)."""
    import distributed

    job = ChunkJob(
        entry=backbone.entry,
        device=None if device is None else str(device),
        preprocess_on=backbone.preprocessing["path"],  # the client's path, recorded in the provenance
        weights=dict(backbone.weights_id),
        store=store.url if store.local_root is None else str(store.local_root),  # workers' cwd may differ
        storage_options=dict(store.storage_options),
        layouts=tuple(layouts),
        source=source,
        rows=rows,
        dtype=dtype,
        batch_size=batch_size,
        num_workers=0 if num_workers is None else num_workers,  # a dask worker decodes its chunk inline by default
        skip_bad_images=skip_bad_images,
        lock_token=lock.token,
    )
    run = uuid.uuid4().hex[:8]
    [shared] = client.scatter([job], broadcast=True, hash=False)
    futures = [
        client.submit(compute_chunk, shared, position, key=f"featurestore-chunk-{task.index}-{run}", pure=False)
        for position, task in enumerate(rows.tasks)
    ]
    computed = written = 0
    skipped: list[dict[str, Any]] = []
    bar = tqdm(
        total=rows.ids_to_compute.size, unit="img", desc=backbone.entry.name, disable=not progress, file=sys.stderr
    )
    try:
        with bar:
            for future in distributed.as_completed(futures, loop=client.loop):
                try:
                    result: ChunkResult = future.result()
                except distributed.KilledWorker as error:
                    raise ClusterError(
                        f"the cluster gave up on a chunk of backbone {backbone.entry.name!r} after its workers died "
                        f"{_allowed_failures()} times ({error}); finished chunks are kept, rerun to resume"
                    ) from None
                lock.refresh()
                computed += result.rows_computed
                written += 1
                skipped += result.skipped
                bar.update(result.rows_computed)
    finally:
        client.cancel([*futures, shared], force=True)
    return computed, written, sorted(skipped, key=lambda record: record["nsd_id"])


def _allowed_failures() -> int:
    """How many worker deaths dask's scheduler tolerates per task before giving up."""
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures"))
