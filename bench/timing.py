"""Repeat-and-median timing, matmul throughput and a description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import torch


@dataclass
class Timing:
    """Wall-clock seconds of every repeat of one measured call; ``median`` is what tables report."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "all_s": self.seconds}


def synchronize(device: str) -> None:
    """Wait for queued CUDA work so that wall-clock times cover it (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    fn: Callable[[], Any],
    *,
    repeats: int,
    device: str = "cpu",
    warmup: int = 0,
    setup: Callable[[], None] | None = None,
) -> tuple[Timing, Any]:
    """Call ``fn`` ``warmup`` + ``repeats`` times, ``setup`` (untimed) before each; return the timings of the
    repeats and the last result."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    result = None
    for _ in range(warmup):
        if setup is not None:
            setup()
        result = fn()
        synchronize(device)
    timing = Timing()
    for _ in range(repeats):
        if setup is not None:
            setup()
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        timing.seconds.append(time.perf_counter() - start)
    return timing, result


def matmul_gflops(device: str = "cpu", *, dtype: str = "float32", size: int = 4096, repeats: int = 5) -> float:
    """Median GFLOP/s of a ``size`` x ``size`` torch matmul in ``dtype``: the throughput that bounds dense linear
    algebra on this machine."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator, dtype=getattr(torch, dtype)).to(device)
    b = torch.randn(size, size, generator=generator, dtype=getattr(torch, dtype)).to(device)
    timing, _ = measure(lambda: a @ b, repeats=repeats, device=device, warmup=1)
    return 2.0 * size**3 / timing.median / 1e9


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _numpy_blas() -> str:
    config = np.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()


def _torch_blas() -> str:
    for item in torch.__config__.show().replace("\n", ",").split(","):
        if "BLAS_INFO=" in item:
            return item.split("=", 1)[1].strip()
    return "unknown"


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("numpy", "scipy", "torch", "torchvision", "scikit-learn", "himalaya", "zarr", "dask", "xarray"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Cores, RAM, CPU model, GPU, library versions, BLAS and current load: the context every figure needs."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "device": device,
        "cpu_model": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "torch_threads": torch.get_num_threads(),
        "numpy_blas": _numpy_blas(),
        "torch_blas": _torch_blas(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "versions": _versions(),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One line for the top of a printed table."""
    gpu = info["gpu"] or "no GPU"
    return (
        f"{info['cpu_model']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, {gpu}; device={info['device']}; "
        f"torch {info['versions']['torch']} ({info['torch_blas']}, {info['torch_threads']} threads), "
        f"numpy {info['versions']['numpy']} ({info['numpy_blas']}); load average {info['load_average_1_5_15']}"
    )
