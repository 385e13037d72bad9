"""Run one measured call in a fresh spawned process, with a time limit, and report its peak memory.

A fresh process per run means nothing is warm or shared between methods and the child's peak resident set size
(VmHWM) is that method's alone; ``spawn`` (not fork) keeps torch, zarr and dask threads sane.
"""

from __future__ import annotations

import multiprocessing
import queue
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

GB = 1e9  # memory figures are in decimal GB, the unit of issue 6's goal (runs before 2026-12-02 recorded GiB)


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (10^9 bytes).

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process image alone (``ru_maxrss`` of a
    spawned child also counts the parent's size at fork time, as Linux carries it across exec). Elsewhere
    ``ru_maxrss`` (KiB on Linux and BSD, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / GB if sys.platform == "darwin" else maxrss * 1024 / GB


def _child(target: Callable[..., dict[str, Any]], args: tuple, results: Any) -> None:
    """Child process body: run ``target`` and send back its result dict plus the peak RSS."""
    outcome = target(*args)
    results.put({**outcome, "peak_rss_gb": peak_rss_gb()})


def run_isolated(target: Callable[..., dict[str, Any]], args: tuple, *, timeout: float) -> dict[str, Any]:
    """``target(*args)`` in a spawned process; its dict plus ``peak_rss_gb``, or ``status`` saying why not (with
    ``sampled_peak_rss_gb``, the largest RSS seen from outside, in every case).

    ``target`` must be importable (a module-level function) and return a small JSON-able dict. A run still going
    after ``timeout`` seconds is killed and reported with ``status`` "timed out after N s" and ``lower_bound_s``.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_child, args=(target, args, results))
    child.start()
    deadline = time.monotonic() + timeout
    sampled = 0.0  # RSS seen from outside once a second: a lower bound on the peak when the child never reports
    while True:
        try:
            outcome = results.get(timeout=1.0)
            break
        except queue.Empty:
            sampled = max(sampled, _rss_of(child.pid))
            if not child.is_alive():  # it may have sent its result just before exiting
                try:
                    outcome = results.get(timeout=1.0)
                    break
                except queue.Empty:
                    return {
                        "status": f"failed (exit code {child.exitcode}; see the traceback above)",
                        "sampled_peak_rss_gb": sampled,
                    }
            if time.monotonic() > deadline:
                child.kill()
                child.join()
                return {
                    "status": f"timed out after {timeout:.0f} s",
                    "lower_bound_s": timeout,
                    "sampled_peak_rss_gb": sampled,
                }
    child.join()
    return {"status": "ok", **outcome, "sampled_peak_rss_gb": sampled}


def _rss_of(pid: int | None) -> float:
    """Current resident set size of process ``pid`` in GB (0 once it is gone)."""
    try:
        return psutil.Process(pid).memory_info().rss / GB
    except (psutil.NoSuchProcess, ValueError):
        return 0.0
