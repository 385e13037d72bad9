"""Preprocessing benchmark: the device transform (``featurestore.preprocess``) against the backbone's PIL transform,
per image, in one run; and what the cheaper decode does for the 7-layer AlexNet extraction against its limit.

Run ``python -m bench.bench_preprocess --help``. The images are the 425x425 PNGs of ``bench_extraction`` (crops of
real sample photos, generated once and cached).

- transform per image, images already decoded: PIL (the backbone's ``transform`` on a PIL image, one image at a
  time, as a decode worker does) against the device transform on uint8 batches of ``--batch-size`` on ``--device``
  (the CPU: with 1 torch thread and with all cores);
- decode per image on one core: PNG -> PIL transform -> float tensor (the PIL path's worker) against PNG -> uint8
  tensor (the device path's worker);
- extraction of the 7 AlexNet layers with ``preprocess_on="pil"`` and ``"device"``, each against the limit of its
  own path: CPU 1 / (forward + transform on the device + worker decode / cores), CUDA the slower of the device's
  work and the workers' (``bench_extraction``'s definition, with the device path's split of the work).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bench.bench_extraction import DEFAULT_IMAGE_ROOT, LAYERS, ensure_images, image_paths, measure_limit
from bench.results import add_common_arguments, check_device, format_table, parse_with_quick, write_results
from bench.timing import describe_machine, machine_info, measure, synchronize

BACKBONES = ("alexnet.untrained", "ViT-B-32.untrained", "vit_small_patch14_dinov2.untrained")


def with_threads(threads: int, fn: Any) -> Any:
    """Call `fn` with torch limited to `threads` threads (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def measure_transforms(paths: Sequence[Path], backbone: str, *, device: str, batch_size: int, repeats: int) -> dict:
    """Seconds per image of the PIL transform and of the device transform (1 thread and all cores on the CPU), on
    images decoded beforehand; and of the two decoding workers' jobs on one core."""
    from featurestore.backbones import load_backbone
    from featurestore.catalog import get_entry
    from featurestore.preprocess import decode_uint8

    loaded = load_backbone(get_entry(backbone), device, preprocess_on="device")
    transform = loaded.device_transform
    if transform is None:
        raise RuntimeError(f"{backbone}: no device transform ({loaded.pil_reason})")
    photos = [Image.open(path).convert("RGB") for path in paths]
    pixels = [decode_uint8(photo) for photo in photos]
    batches = [torch.stack(pixels[i : i + batch_size]).to(device) for i in range(0, len(pixels), batch_size)]
    n = len(paths)

    def device_run() -> None:
        for batch in batches:
            transform(batch)

    pil, _ = with_threads(1, lambda: measure(lambda: [loaded.transform(p) for p in photos], repeats=repeats))
    row = {"backbone": backbone, "pil_ms": 1e3 * pil.median / n}
    if device == "cpu":
        one, _ = with_threads(1, lambda: measure(device_run, repeats=repeats, warmup=1))
        row["device_1_thread_ms"] = 1e3 * one.median / n
    every, _ = measure(device_run, repeats=repeats, warmup=1, device=device)
    row["device_ms"] = 1e3 * every.median / n
    row["pil_over_device"] = row["pil_ms"] / row["device_ms"]
    decode_pil, _ = with_threads(
        1, lambda: measure(lambda: [loaded.transform(Image.open(p).convert("RGB")) for p in paths], repeats=repeats)
    )
    decode_uint8_only, _ = with_threads(
        1, lambda: measure(lambda: [decode_uint8(Image.open(p).convert("RGB")) for p in paths], repeats=repeats)
    )
    row["worker_pil_ms"] = 1e3 * decode_pil.median / n
    row["worker_uint8_ms"] = 1e3 * decode_uint8_only.median / n
    return row


def measure_extractions(data_dir: Path, work: Path, *, device: str, batch_size: int, repeats: int) -> list[dict]:
    """images/s of extracting the 7 AlexNet layers on each preprocessing path, a fresh store per run; the paths
    alternate within each repeat, so a change in the machine's load reaches both alike."""
    from featurestore.extract import extract

    n_images = len(image_paths(data_dir))
    seconds: dict[str, list[float]] = {"pil": [], "device": []}
    for _ in range(repeats):
        for path, times in seconds.items():
            store = work / f"{path}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            started = time.perf_counter()
            extract(
                "alexnet.untrained", data_dir, str(store), layers=list(LAYERS), device=device, batch_size=batch_size,
                preprocess_on=path, progress=False,
            )  # fmt: skip
            synchronize(device)
            times.append(time.perf_counter() - started)
    return [
        {
            "path": path,
            "images_per_s": n_images / statistics.median(times),
            "timing": {"median_s": statistics.median(times), "all_s": times},
        }
        for path, times in seconds.items()
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--transform-images", type=int, default=128, help="images per transform measurement (default: %(default)s)"
    )
    parser.add_argument("--images", type=int, default=1000, help="images of the extractions (default: %(default)s)")
    parser.add_argument(
        "--backbones", nargs="+", default=list(BACKBONES), help="catalog entries (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (default: %(default)s)")
    parser.add_argument("--skip-extraction", action="store_true", help="measure the transforms only")
    parser.add_argument(
        "--image-root", type=Path, default=DEFAULT_IMAGE_ROOT, help="image cache (default: %(default)s)"
    )
    add_common_arguments(parser, "preprocess", repeats=3)
    return parse_with_quick(parser, argv, "preprocess", {"transform_images": 32, "images": 96})


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_device(args.device)
    machine = machine_info(args.device)
    print(describe_machine(machine), flush=True)
    data_dir = ensure_images(args.image_root, max(args.images, args.transform_images))
    paths = image_paths(data_dir)[: args.transform_images]
    rows = []
    for backbone in args.backbones:
        rows.append(
            measure_transforms(paths, backbone, device=args.device, batch_size=args.batch_size, repeats=args.repeats)
        )
        print(format_table(rows[-1:], list(rows[-1])), flush=True)
    columns = ["backbone", "pil_ms", *(["device_1_thread_ms"] if args.device == "cpu" else []), "device_ms"]
    print(format_table(rows, [*columns, "pil_over_device", "worker_pil_ms", "worker_uint8_ms"]))
    result: dict[str, Any] = {"benchmark": "preprocess", "machine": machine, "transforms": rows}
    if not args.skip_extraction:
        extraction_dir = ensure_images(args.image_root, args.images)
        limit = measure_limit(
            image_paths(extraction_dir)[: args.transform_images], backbone="alexnet.untrained", device=args.device,
            batch_size=args.batch_size, repeats=args.repeats,
        )  # fmt: skip
        alexnet = next(row for row in rows if row["backbone"] == "alexnet.untrained")
        cores = len(os.sched_getaffinity(0))
        forward = limit["forward_s_per_image"]
        on_device = alexnet["device_ms"] / 1e3
        worker = {"pil": alexnet["worker_pil_ms"] / 1e3, "device": alexnet["worker_uint8_ms"] / 1e3}
        with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as work:
            runs = measure_extractions(
                extraction_dir, Path(work), device=args.device, batch_size=args.batch_size, repeats=args.repeats
            )
        for run in runs:
            main_work = forward + (on_device if run["path"] == "device" else 0.0)
            work_s = worker[run["path"]] / cores
            per_image = main_work + work_s if args.device == "cpu" else max(main_work, work_s)
            run.update(limit_images_per_s=1 / per_image, ours_over_limit=run["images_per_s"] * per_image)
            pil_limit = forward + worker["pil"] / cores if args.device == "cpu" else max(forward, worker["pil"] / cores)
            run["ours_over_pil_limit"] = run["images_per_s"] * pil_limit
            print(f"{run['path']}: {run['images_per_s']:.1f} images/s, {run['ours_over_limit']:.2f} of its limit")
        print(
            format_table(runs, ["path", "images_per_s", "limit_images_per_s", "ours_over_limit", "ours_over_pil_limit"])
        )
        result.update(limit=limit, extraction=runs, cores=cores)
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "image_root")}
    path = write_results(args.out, {**result, "settings": settings})
    print(f"results written to {path}")
    return result


if __name__ == "__main__":
    main()
