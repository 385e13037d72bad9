"""Extraction benchmark: images/s of our AlexNet extraction against the forward-only limit and the devkit recipe.

Run ``python -m bench.bench_extraction --help``. Three pipelines see the same 425x425 PNGs (crops of real sample photos,
generated once and cached):

- ours: ``featurestore.extract.extract`` of 7 AlexNet layers into a fresh Zarr store (one forward pass per batch);
  afterwards the first stored chunk of every layer is written again through zarr, to time the writes alone
  (wall and CPU per image);
- the limit: the same model's forward pass on tensors already decoded in memory. On a CPU-only machine decoding
  shares the cores, so the limit per image is forward time + decode time / cores; on a GPU, the slower of the two;
- the devkit recipe (Algonauts 2023 tutorial): for each layer, ``create_feature_extractor`` on that layer, one pass
  fitting ``IncrementalPCA(100)`` batch by batch and one pass extracting and transforming, batches of 300 images
  decoded in the main process, autograd left on as in the tutorial.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.results import (
    add_common_arguments,
    check_device,
    format_table,
    parse_with_quick,
    write_results,
)
from bench.timing import describe_machine, machine_info, measure

LAYERS = ("features.2", "features.5", "features.7", "features.9", "features.12", "classifier.2", "classifier.5")
IMAGE_SIZE = 425
DEVKIT_BATCH_SIZE = 300
DEVKIT_COMPONENTS = 100
DEFAULT_IMAGE_ROOT = Path(tempfile.gettempdir()) / "nsd-featurestore-bench" / "images"


@functools.lru_cache(maxsize=1)
def _sample_photos() -> list[np.ndarray]:
    """The colour photographs shipped with scikit-image and scikit-learn (no download)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
    photos = [getattr(skimage.data, name)() for name in names]
    photos += list(load_sample_images().images)
    return [np.ascontiguousarray(photo[..., :3]) for photo in photos]


def _write_image(task: tuple[Path, int]) -> None:
    """Write one 425x425 PNG: a seeded random crop of a sample photo, maybe flipped, colour-jittered."""
    path, seed = task
    rng = np.random.default_rng(seed)
    photos = _sample_photos()
    photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
    top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
    crop = photo[top : top + side, left : left + side].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.clip(crop * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
    image = Image.fromarray(crop).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    tmp = path.with_suffix(".tmp")
    image.save(tmp, format="PNG")
    tmp.rename(path)


def ensure_images(root: Path, n_images: int, *, seed: int = 0) -> Path:
    """Cache ``n_images`` PNGs in the Algonauts 2023 layout under ``root``; return the data folder (reused if complete).

    Names are ``subj01/training_split/training_images/train-0001_nsd-00000.png``: row i has NSD id i - 1.
    """
    data_dir = root / f"n{n_images}"
    image_dir = data_dir / "subj01" / "training_split" / "training_images"
    image_dir.mkdir(parents=True, exist_ok=True)
    paths = [image_dir / f"train-{i + 1:04d}_nsd-{i:05d}.png" for i in range(n_images)]
    missing = [(path, seed * 1_000_003 + i) for i, path in enumerate(paths) if not path.exists()]
    if missing:
        print(f"writing {len(missing)} benchmark images to {image_dir} ...", flush=True)
        with ProcessPoolExecutor(max_workers=os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_image, missing, chunksize=16))
    return data_dir


def image_paths(data_dir: Path) -> list[Path]:
    """The cached PNGs in row order."""
    return sorted((data_dir / "subj01" / "training_split" / "training_images").glob("train-*.png"))


def measure_ours(
    data_dir: Path,
    layers: Sequence[str],
    *,
    backbone: str,
    device: str,
    batch_size: int,
    num_workers: int | None,
    repeats: int,
    work_dir: Path,
) -> dict[str, Any]:
    """Time ``extract`` into a fresh store per repeat, check every row landed, then time a re-run (all cached)."""
    from featurestore.extract import extract
    from featurestore.store import open_store

    n_images = len(image_paths(data_dir))
    store = work_dir / "store.zarr"

    def run() -> None:
        extract(
            backbone,
            data_dir,
            str(store),
            layers=list(layers),
            device=device,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=False,
        )

    timing, _ = measure(run, repeats=repeats, device=device, setup=lambda: shutil.rmtree(store, ignore_errors=True))
    summary = open_store(str(store)).summary()
    counts = dict(zip(summary["layer"], summary["n_ids"]))
    if any(counts.get(layer) != n_images for layer in layers):
        raise RuntimeError(
            f"store {store} holds {counts} rows per layer; expected {n_images} for each of {list(layers)}"
        )
    rerun, _ = measure(run, repeats=1, device=device)
    return {
        "timing": timing.to_dict(),
        "images_per_s": n_images / timing.median,
        "rerun_cached_s": rerun.median,
        "store_writes": measure_writes(store, layers, backbone=backbone, repeats=repeats),
    }


def measure_writes(store: Path, layers: Sequence[str], *, backbone: str, repeats: int) -> dict[str, Any]:
    """Wall and CPU time per image of writing the first stored chunk of every layer again through zarr (the codec
    and the object writes alone, no model): with decoding, what sets the pace once a GPU runs the forward pass."""
    import zarr

    group = zarr.open_group(str(store), mode="r+")[backbone]
    arrays = [group[layer] for layer in layers]
    rows = min(arrays[0].shape[0], (arrays[0].shards or arrays[0].chunks)[0])
    blocks = [array[:rows] for array in arrays]
    cpu = []

    def write() -> None:
        start = time.process_time()  # every thread of the process: zarr encodes a shard's chunks in threads
        for array, block in zip(arrays, blocks, strict=True):
            array[:rows] = block
        cpu.append(time.process_time() - start)

    timing, _ = measure(write, repeats=repeats)
    return {
        "rows": rows,
        "bytes_per_image": sum(block.nbytes for block in blocks) / rows,
        "timing": timing.to_dict(),
        "images_per_s": rows / timing.median,
        "cpu_s_per_image": float(np.median(cpu)) / rows,
    }


def measure_limit(
    paths: Sequence[Path],
    *,
    backbone: str,
    device: str,
    batch_size: int,
    repeats: int,
) -> dict[str, Any]:
    """Forward-only time per image on decoded tensors in memory, decode+transform time per image on one core."""
    from featurestore.backbones import load_backbone
    from featurestore.catalog import get_entry

    entry = get_entry(backbone)
    loaded = load_backbone(entry, device=device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decode, tensors = measure(
            lambda: torch.stack([loaded.transform(Image.open(path).convert("RGB")) for path in paths]), repeats=repeats
        )
    finally:
        torch.set_num_threads(threads)
    batches = [tensors[i : i + batch_size].to(device) for i in range(0, len(tensors), batch_size)]

    # on CUDA our extraction runs float16 layers under autocast; the limit runs the same arithmetic
    half = device == "cuda" and entry.dtype == "float16"

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=half):
            for batch in batches:
                loaded.model(batch)

    forward_timing, _ = measure(forward, repeats=repeats, device=device, warmup=1)
    cores = len(os.sched_getaffinity(0))
    forward_s, decode_s = forward_timing.median / len(paths), decode.median / len(paths)
    per_image = forward_s + decode_s / cores if device == "cpu" else max(forward_s, decode_s / cores)
    return {
        "n_images": len(paths),
        "forward_s_per_image": forward_s,
        "decode_s_per_image_one_core": decode_s,
        "cores": cores,
        "forward_timing": forward_timing.to_dict(),
        "decode_timing": decode.to_dict(),
        "forward_only_images_per_s": 1 / forward_s,
        "images_per_s": 1 / per_image,
        "formula": "1 / (forward + decode / cores)" if device == "cpu" else "1 / max(forward, decode / cores)",
    }


class _DevkitImages(torch.utils.data.Dataset):
    """The devkit's ImageDataset: open, convert to RGB, transform, move to the device, one image at a time."""

    def __init__(self, paths: Sequence[Path], transform: Any, device: str) -> None:
        self.paths, self.transform, self.device = list(paths), transform, device

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(Image.open(self.paths[index]).convert("RGB")).to(self.device)


def devkit_recipe(paths: Sequence[Path], layers: Sequence[str], *, device: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The Algonauts 2023 devkit's feature pipeline, layer by layer: IncrementalPCA fit pass, then transform pass."""
    import torchvision
    from sklearn.decomposition import IncrementalPCA
    from torchvision import transforms
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(seed)
    model = torchvision.models.alexnet(weights=None).to(device).eval()
    transform = transforms.Compose(
        [
            transforms.Resize((224, 224)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    loader = torch.utils.data.DataLoader(_DevkitImages(paths, transform, device), batch_size=DEVKIT_BATCH_SIZE)
    features = {}
    for layer in layers:
        extractor = create_feature_extractor(model, return_nodes=[layer])
        pca = IncrementalPCA(n_components=DEVKIT_COMPONENTS, batch_size=DEVKIT_BATCH_SIZE)
        for batch in loader:
            flat = torch.hstack([torch.flatten(out, start_dim=1) for out in extractor(batch).values()])
            pca.partial_fit(flat.detach().cpu().numpy())
        transformed = []
        for batch in loader:
            flat = torch.hstack([torch.flatten(out, start_dim=1) for out in extractor(batch).values()])
            transformed.append(pca.transform(flat.detach().cpu().numpy()))
        features[layer] = np.vstack(transformed)
    return features


def _check_devkit_batches(n_images: int) -> None:
    last = n_images % DEVKIT_BATCH_SIZE
    if 0 < last < DEVKIT_COMPONENTS:
        raise SystemExit(
            f"--images {n_images} leaves a last devkit batch of {last} images; IncrementalPCA({DEVKIT_COMPONENTS}) "
            f"needs >= {DEVKIT_COMPONENTS} per partial_fit (use a multiple of {DEVKIT_BATCH_SIZE})"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000, help="number of 425x425 PNGs (default: %(default)s)")
    parser.add_argument(
        "--limit-images",
        type=int,
        default=300,
        help="images decoded into memory for the forward-only limit (default: %(default)s)",
    )
    parser.add_argument("--backbone", default="alexnet.untrained", help="catalog entry (default: %(default)s)")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), help="layers (default: the 7 AlexNet layers)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch of our extraction and of the limit (default: %(default)s)"
    )
    parser.add_argument(
        "--num-workers", type=int, default=None, help="decode workers of our extraction (default: extract's own choice)"
    )
    parser.add_argument(
        "--devkit-repeats", type=int, default=None, help="repeats of the slow devkit recipe (default: --repeats)"
    )
    parser.add_argument("--skip-devkit", action="store_true", help="measure ours and the limit only")
    parser.add_argument(
        "--image-root", type=Path, default=DEFAULT_IMAGE_ROOT, help="image cache (default: %(default)s)"
    )
    add_common_arguments(parser, "extraction")
    args = parse_with_quick(parser, argv, "extraction", {"images": 120, "limit_images": 64})
    args.limit_images = min(args.limit_images, args.images)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_device(args.device)
    if not args.skip_devkit:
        _check_devkit_batches(args.images)
    machine = machine_info(args.device)
    data_dir = ensure_images(args.image_root, args.images)
    paths = image_paths(data_dir)
    print(describe_machine(machine), flush=True)

    limit = measure_limit(
        paths[: args.limit_images],
        backbone=args.backbone,
        device=args.device,
        batch_size=args.batch_size,
        repeats=args.repeats,
    )
    print(f"limit: {limit['images_per_s']:.1f} images/s ({limit['formula']})", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-extraction-") as work:
        ours = measure_ours(
            data_dir,
            args.layers,
            backbone=args.backbone,
            device=args.device,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            repeats=args.repeats,
            work_dir=Path(work),
        )
    writes = ours["store_writes"]
    print(
        f"ours: {ours['images_per_s']:.1f} images/s; its chunk writes alone: {writes['images_per_s']:.0f} images/s "
        f"({writes['cpu_s_per_image'] * 1e3:.2f} ms of CPU per image)",
        flush=True,
    )
    rows = [
        {
            "pipeline": "limit (forward-only + decode/cores)",
            "images/s": limit["images_per_s"],
            "s/image": 1 / limit["images_per_s"],
            "ours/this": ours["images_per_s"] / limit["images_per_s"],
            "goal": ">= 0.85",
            "met": ours["images_per_s"] / limit["images_per_s"] >= 0.85,
        },
        {
            "pipeline": f"ours: extract {len(args.layers)} layers to store",
            "images/s": ours["images_per_s"],
            "s/image": 1 / ours["images_per_s"],
            "ours/this": 1.0,
        },
    ]
    devkit = None
    if not args.skip_devkit:
        devkit_timing, _ = measure(
            lambda: devkit_recipe(paths, args.layers, device=args.device),
            repeats=args.devkit_repeats or args.repeats,
            device=args.device,
        )
        devkit = {"timing": devkit_timing.to_dict(), "images_per_s": len(paths) / devkit_timing.median}
        rows.append(
            {
                "pipeline": f"devkit recipe: 2 passes x {len(args.layers)} layers + IncrementalPCA",
                "images/s": devkit["images_per_s"],
                "s/image": 1 / devkit["images_per_s"],
                "ours/this": ours["images_per_s"] / devkit["images_per_s"],
                "goal": ">= 5",
                "met": ours["images_per_s"] / devkit["images_per_s"] >= 5,
            }
        )
    print(format_table(rows, ["pipeline", "images/s", "s/image", "ours/this", "goal", "met"]))
    print("ours/this: our images/s over this pipeline's (medians)")
    results = {
        "benchmark": "extraction",
        "quick": args.quick,
        "machine": machine,
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "n_images": len(paths),
        "limit": limit,
        "ours": ours,
        "devkit": devkit,
        "table": rows,
        "ratios": {
            "ours_over_limit": ours["images_per_s"] / limit["images_per_s"],
            "ours_over_devkit": devkit and ours["images_per_s"] / devkit["images_per_s"],
        },
    }
    print(f"results written to {write_results(args.out, results)}")
    return results


if __name__ == "__main__":
    main()
