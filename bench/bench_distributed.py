"""Sharded extraction on a dask.distributed LocalCluster against one process: wall time of ``featurestore.extract``.

Three ways, in one run, over the same images into fresh stores: one process (the default decode workers), ``--scheduler
local:N`` as the command line runs it (the cluster's start and close, its workers importing torch and loading the
backbone, all timed), and the same N workers already started and holding the backbone (a long-lived cluster, as on
SLURM). Every store is checked byte for byte against the single-process one before any time is reported. Beside
wall time, the CPU seconds of all processes of each way (this one, its reaped children, the live workers): on a
shared host wall time also shows how much of the CPU each way got, CPU seconds what it cost.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zarr

from bench.bench_extraction import DEFAULT_IMAGE_ROOT, ensure_images
from bench.results import add_common_arguments, check_device, format_table, parse_with_quick, write_results
from bench.timing import describe_machine, machine_info, measure


def group_bytes(store: Path, backbone: str) -> dict[str, bytes]:
    """Every array of the backbone group (ids, layers, done markers) as raw bytes, by path."""
    group = zarr.open_group(store, mode="r")[backbone]
    return {path: array[:].tobytes() for path, array in group.members(max_depth=None) if isinstance(array, zarr.Array)}


def cpu_seconds(client: Any) -> float:
    """CPU time used so far by this process, its finished child processes (a closed LocalCluster's workers) and
    the live workers of ``client`` (when it is a distributed Client)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = time.process_time() + children.ru_utime + children.ru_stime
    if hasattr(client, "run"):
        used += sum(client.run(time.process_time).values())
    return used


def time_way(
    name: str, data_dir: Path, work: Path, scheduler: Any, args: argparse.Namespace
) -> tuple[dict[str, Any], Path]:
    """Median wall time of one way of extracting into a fresh store (and its mean CPU seconds over the repeats,
    all processes together, as ``cpu_s``); the last store's path."""
    from featurestore.extract import extract

    store = work / f"{name}.zarr"
    cpu_before = cpu_seconds(scheduler)

    def run() -> None:
        extract(
            args.backbone, data_dir, str(store), layers=list(args.layers), device=args.device, progress=False,
            chunk_rows=args.chunk_rows, scheduler=scheduler,
        )  # fmt: skip

    timing, _ = measure(run, repeats=args.repeats, device=args.device, setup=lambda: shutil.rmtree(store, True))
    return {**timing.to_dict(), "cpu_s": (cpu_seconds(scheduler) - cpu_before) / args.repeats}, store


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="images (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default: %(default)s)")
    parser.add_argument("--backbone", default="alexnet.untrained", help="catalog entry (default: %(default)s)")
    parser.add_argument("--layers", nargs="+", default=["features.12"], help="layers (default: %(default)s)")
    parser.add_argument("--chunk-rows", type=int, default=128, help="rows per stored chunk = per task (default: 128)")
    parser.add_argument(
        "--image-root", type=Path, default=DEFAULT_IMAGE_ROOT, help="image cache (default: %(default)s)"
    )
    add_common_arguments(parser, "distributed", repeats=1)
    return parse_with_quick(parser, argv, "distributed", {"images": 64, "chunk_rows": 16})


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_device(args.device)
    from featurestore.distributed import connect

    machine = machine_info(args.device)
    print(describe_machine(machine), flush=True)
    data_dir = ensure_images(args.image_root, args.images)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as folder:
        work = Path(folder)
        single, reference = time_way("single", data_dir, work, None, args)
        rows.append({"way": "1 process", "timing": single})
        print(f"1 process: {single['median_s']:.2f} s", flush=True)
        cold, store = time_way("cold", data_dir, work, f"local:{args.workers}", args)
        rows.append({"way": f"--scheduler local:{args.workers} (cluster start timed)", "timing": cold})
        print(f"local:{args.workers}, cluster start timed: {cold['median_s']:.2f} s", flush=True)
        expected = group_bytes(reference, args.backbone)
        assert group_bytes(store, args.backbone) == expected, "the LocalCluster store differs from the 1-process one"
        with connect(f"local:{args.workers}") as client:
            time_way("warmup", data_dir, work, client, args)  # workers import torch and load the backbone
            warm, store = time_way("warm", data_dir, work, client, args)
        rows.append({"way": f"{args.workers} workers, started and holding the backbone", "timing": warm})
        print(f"{args.workers} warm workers: {warm['median_s']:.2f} s", flush=True)
        assert group_bytes(store, args.backbone) == expected, "the warm cluster's store differs from the 1-process one"
    for row in rows:
        row["seconds"] = row["timing"]["median_s"]
        row["images_per_s"] = args.images / row["seconds"]
        row["x_1_process"] = row["seconds"] / single["median_s"]
        row["cpu_s"] = row["timing"]["cpu_s"]
        row["cpu_x_1_process"] = row["cpu_s"] / single["cpu_s"]
    print(format_table(rows, ["way", "seconds", "images_per_s", "x_1_process", "cpu_s", "cpu_x_1_process"]))
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "image_root")}
    result = {"benchmark": "distributed", "machine": machine, "settings": settings, "rows": rows, "identical": True}
    path = write_results(args.out, result)
    print(f"results written to {path}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
