"""Running the grid's tasks: dask's local schedulers or a distributed cluster, one progress line per task."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
from dask.system import CPU_COUNT

from encoders.challenge import ALL_VERTICES
from encoders.errors import InvalidArgumentError
from encoders.grid.combination import Combination, GridContext
from encoders.grid.pipeline import fit_combination
from encoders.grid.results import write_atomic

__all__ = ["compute", "print_progress", "run_combination", "summary"]


def run_combination(combo: Combination, ctx: GridContext, path: str) -> dict[str, Any]:
    """Task body: fit, save to ``path``, return a one-line summary for progress output."""
    dataset = fit_combination(combo, ctx)
    write_atomic(dataset, Path(path))
    return summary(combo, dataset, skipped=False)


def summary(combo: Combination, dataset: xr.Dataset, *, skipped: bool) -> dict[str, Any]:
    median = dataset["roi_median"].sel(roi=ALL_VERTICES).values
    return dict(
        model=combo.model,
        subject=combo.subject,
        median_r=float(np.nanmean(median)),
        seconds=float(dataset.attrs["fit_seconds"]),
        skipped=skipped,
    )


def print_progress(done: int, total: int, summary: Mapping[str, Any]) -> None:
    state = "reused" if summary["skipped"] else f"{summary['seconds']:.1f} s"
    print(
        f"[{done}/{total}] {summary['model']} subj{summary['subject']:02d}: "
        f"median r {summary['median_r']:.3f} ({state})",
        flush=True,
    )


def compute(tasks: list, scheduler: Any, n_workers: int | None, progress: bool, done: int, total: int) -> list:
    """Run delayed tasks on the threaded / process scheduler or a distributed cluster, printing progress."""
    if not tasks:
        return []
    client = _client_for(scheduler)
    if client is not None:
        import distributed

        futures = client.compute(tasks)
        results = []
        for future in distributed.as_completed(futures):
            results.append(future.result())
            if progress:
                print_progress(done + len(results), total, results[-1])
        if isinstance(scheduler, str):
            client.close()
        return results
    name = {None: "threads"}.get(scheduler, scheduler)
    if name not in ("threads", "processes", "synchronous"):
        raise InvalidArgumentError(
            f"Unknown scheduler={scheduler!r}; expected None/'threads', 'processes', 'synchronous', "
            "a distributed.Client, a cluster, or a scheduler address such as 'tcp://host:8786'"
        )
    from dask.callbacks import Callback

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001 - dask's callback signature
            nonlocal done
            done += 1
            if progress:
                print_progress(done, total, result)

    if name != "threads":
        with _Progress():
            return list(dask.compute(*tasks, scheduler=name, num_workers=n_workers))
    # our own pool, so that a failing task returns only once the tasks still running have finished: their
    # warnings and writes then happen before the error is reported (one line in the CLI), not after it
    pool = ThreadPoolExecutor(n_workers or CPU_COUNT)
    try:
        with _Progress():
            return list(dask.compute(*tasks, scheduler=name, pool=pool))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _client_for(scheduler: Any):
    """A distributed Client for a Client, a cluster object or a scheduler address; None for local schedulers."""
    if scheduler is None or scheduler in ("threads", "processes", "synchronous"):
        return None
    import distributed

    if isinstance(scheduler, distributed.Client):
        return scheduler
    if hasattr(scheduler, "scheduler_address"):
        return distributed.Client(scheduler, set_as_default=False)
    if isinstance(scheduler, str) and "://" in scheduler:
        return distributed.Client(scheduler, set_as_default=False)
    return None
