"""Decode workers against none: wall time of ``featurestore.extract`` for several image counts and worker counts.

A spawned decode worker imports torch and the package before it decodes its first image, and on a CPU it shares
the cores with the forward pass. This measures, per number of images, whether (and from where) workers pay for
that, which is what ``featurestore.extract.default_num_workers`` decides from. Each run extracts into a fresh store
in this process (the parent's imports are warm, as in a notebook; the command line adds its own start-up to both
sides alike).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.bench_extraction import DEFAULT_IMAGE_ROOT, ensure_images
from bench.results import add_common_arguments, check_device, format_table, parse_with_quick, write_results
from bench.timing import describe_machine, machine_info, measure


def time_extraction(
    data_dir: Path, work: Path, *, backbone: str, layers: Sequence[str], workers: int, device: str, repeats: int
) -> dict[str, Any]:
    """Median wall time of ``extract`` with ``workers`` decode processes, a fresh store per repeat."""
    from featurestore.extract import extract

    store = work / "store.zarr"

    def run() -> None:
        extract(backbone, data_dir, str(store), layers=list(layers), device=device, num_workers=workers, progress=False)

    timing, _ = measure(run, repeats=repeats, device=device, setup=lambda: shutil.rmtree(store, ignore_errors=True))
    return timing.to_dict()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--images", type=int, nargs="+", default=[340, 650, 1500, 3000], help="image counts (default: %(default)s)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="decode workers (default: %(default)s)")
    parser.add_argument("--backbone", default="alexnet.untrained", help="catalog entry (default: %(default)s)")
    parser.add_argument("--layers", nargs="+", default=["features.12"], help="layers (default: %(default)s)")
    parser.add_argument(
        "--image-root", type=Path, default=DEFAULT_IMAGE_ROOT, help="image cache (default: %(default)s)"
    )
    add_common_arguments(parser, "workers", repeats=2)
    return parse_with_quick(parser, argv, "workers", {"images": [40, 80]})


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_device(args.device)
    machine = machine_info(args.device)
    print(describe_machine(machine), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as work:
        for n_images in args.images:
            data_dir = ensure_images(args.image_root, n_images)
            by_workers = {}
            for workers in args.workers:
                timing = time_extraction(
                    data_dir, Path(work), backbone=args.backbone, layers=args.layers, workers=workers,
                    device=args.device, repeats=args.repeats,
                )  # fmt: skip
                by_workers[workers] = timing["median_s"]
                rows.append({"images": n_images, "workers": workers, "seconds": timing["median_s"],
                             "images_per_s": n_images / timing["median_s"], "timing": timing})  # fmt: skip
                print(f"{n_images} images, {workers} workers: {timing['median_s']:.2f} s", flush=True)
            fastest = min(by_workers.values())
            for row in rows[-len(args.workers) :]:
                row["x_fastest"] = row["seconds"] / fastest
    print(format_table(rows, ["images", "workers", "seconds", "images_per_s", "x_fastest"]))
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "image_root")}
    path = write_results(args.out, {"benchmark": "workers", "machine": machine, "settings": settings, "rows": rows})
    print(f"results written to {path}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
