"""Memory benchmark: peak resident memory of our PCA and ridge on a 73,000 x 46,656 float16 store layer (goal < 6 GB).

Run ``python -m bench.bench_memory --help``. The benchmark writes planted-truth float16 features for ``--rows`` images
(NSD ids 0..rows-1) into a real feature store once (6.8 GB at full size; ``--rows`` shrinks it), and fMRI for the
first ``--fit-rows + --val-rows`` images. Each method then runs in a fresh spawned process whose peak resident set
size (VmHWM) is reported, together with its size after imports and after loading its inputs (the fMRI), and with
``--device cuda`` the peak GPU memory torch allocated. Methods:

- pca: ``PCA(k)`` fitted on the first ``--fit-rows`` rows of the layer (a subject's training images), then the
  ``--val-rows`` validation rows transformed;
- pca_ridge: the same, then ``RidgeCV`` (one alpha per vertex, chosen by ``--cv``) on the scores for ``--targets``
  vertices and the validation rows predicted;
- kernel_ridge: ``KernelRidgeCV`` on the full features of the fitted rows (Gram matrix streamed from the store);
- pca_transform_all: ``PCA(k)`` fitted as in pca, then every row of the layer transformed (one pass over the whole
  73,000-row layer).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.isolated import GB, run_isolated
from bench.results import (
    add_common_arguments,
    alpha_selection,
    check_device,
    format_table,
    parse_with_quick,
    write_results,
)
from bench.synthetic import PlantedTruth, write_feature_store
from bench.timing import describe_machine, machine_info

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "nsd-featurestore-bench" / "memory"
METHODS = ("pca", "pca_ridge", "kernel_ridge", "pca_transform_all")


@dataclass(frozen=True)
class Job:
    """What one child process runs (picklable)."""

    method: str
    store: str
    fmri_file: str
    fit_rows: int
    val_rows: int
    components: int
    alphas: tuple[float, ...]
    cv: int | str
    backend: str
    dtype: str


def _rss_gb() -> float:
    return psutil.Process().memory_info().rss / GB


def _run(job: Job) -> dict[str, Any]:
    """In the child: open the layer lazily, load the fMRI, run the method; report time and RSS milestones."""
    from encoders.pca import PCA
    from encoders.ridge import KernelRidgeCV, RidgeCV
    from featurestore.store import open_features

    after_imports = _rss_gb()
    layer = open_features(job.store, "synthetic", "planted")
    train, val = layer[: job.fit_rows], layer[job.fit_rows : job.fit_rows + job.val_rows]
    y_train = None
    if job.method in ("pca_ridge", "kernel_ridge"):
        y_train = np.load(job.fmri_file)[: job.fit_rows]
    with_inputs = _rss_gb()
    start = time.perf_counter()
    if job.method == "kernel_ridge":
        model = KernelRidgeCV(alphas=job.alphas, cv=job.cv, backend=job.backend, dtype=job.dtype).fit(train, y_train)
        output_shape = model.predict(val).shape
    else:
        pca = PCA(n_components=job.components, backend=job.backend, dtype=job.dtype)
        scores = pca.fit_transform(train)
        if job.method == "pca_transform_all":
            output_shape = pca.transform(layer).shape
        else:
            val_scores = pca.transform(val)
            output_shape = val_scores.shape
            if job.method == "pca_ridge":
                ridge = RidgeCV(alphas=job.alphas, cv=job.cv, backend=job.backend, dtype=job.dtype).fit(scores, y_train)
                output_shape = ridge.predict(val_scores).shape
    facts = {
        "seconds": time.perf_counter() - start,
        "rss_after_imports_gb": after_imports,
        "rss_with_inputs_gb": with_inputs,
        "layer_shape": list(layer.shape),
        "output_shape": list(output_shape),
    }
    if job.backend == "torch_cuda":
        import torch

        facts["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / GB
    return facts


def prepare_data(cache: Path, *, rows: int, features: int, fmri_rows: int, targets: int, seed: int) -> tuple[str, str]:
    """Write (once) the store layer and the fMRI of its first ``fmri_rows`` rows; return (store URL, .npy path)."""
    truth = PlantedTruth(n_rows=rows, n_features=features, seed=seed)
    folder = cache / f"n{rows}-p{features}-seed{seed}"
    store = write_feature_store(folder / "store.zarr", truth)
    fmri_file = folder / f"fmri-rows{fmri_rows}-t{targets}.npy"
    if not fmri_file.exists():
        fmri, _ = truth.fmri(targets, n_rows=fmri_rows)
        np.save(fmri_file.with_suffix(".tmp.npy"), fmri)
        fmri_file.with_suffix(".tmp.npy").rename(fmri_file)
    return store, str(fmri_file)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=73000, help="rows of the store layer (default: %(default)s)")
    parser.add_argument(
        "--features", type=int, default=46656, help="features per row (default: %(default)s, AlexNet features.2)"
    )
    parser.add_argument(
        "--fit-rows", type=int, default=9000, help="rows the encoders are fitted on (default: %(default)s)"
    )
    parser.add_argument("--val-rows", type=int, default=1000, help="rows predicted (default: %(default)s)")
    parser.add_argument("--targets", type=int, default=40000, help="vertices (default: %(default)s)")
    parser.add_argument("--components", type=int, default=100, help="PCA components (default: %(default)s)")
    parser.add_argument("--alphas", type=int, default=10, help="alphas, np.logspace(0, 8, n) (default: %(default)s)")
    parser.add_argument(
        "--cv",
        type=alpha_selection,
        default="gcv",
        help="how alpha is chosen: 'gcv', 'loo' or a number of folds (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="precision the estimators compute in (default: %(default)s, theirs)",
    )
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run (default: all)"
    )
    parser.add_argument("--limit-gb", type=float, default=6.0, help="goal for the peak RSS (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per method run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="synthetic data (default: %(default)s)")
    add_common_arguments(parser, "memory", repeats=1)
    args = parse_with_quick(
        parser, argv, "memory", {"rows": 3000, "features": 4096, "fit_rows": 1000, "val_rows": 200, "targets": 2000}
    )
    if args.fit_rows + args.val_rows > args.rows:
        parser.error(f"--fit-rows + --val-rows = {args.fit_rows + args.val_rows} exceeds --rows {args.rows}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_device(args.device)
    machine = machine_info(args.device)
    print(describe_machine(machine), flush=True)
    store, fmri_file = prepare_data(
        args.cache,
        rows=args.rows,
        features=args.features,
        fmri_rows=args.fit_rows + args.val_rows,
        targets=args.targets,
        seed=args.seed,
    )
    backend = "torch_cuda" if args.device == "cuda" else "torch"
    alphas = tuple(float(a) for a in np.logspace(0, 8, args.alphas))
    rows = []
    for method in args.methods:
        job = Job(
            method,
            store,
            fmri_file,
            args.fit_rows,
            args.val_rows,
            args.components,
            alphas,
            args.cv,
            backend,
            args.dtype,
        )
        runs = []
        for _ in range(args.repeats):
            print(f"{method} ...", flush=True)
            runs.append(run_isolated(_run, (job,), timeout=args.timeout))
            if runs[-1]["status"] != "ok":
                break
        done = [run for run in runs if run["status"] == "ok"]
        peak = max((run["peak_rss_gb"] for run in done), default=None)
        sampled = max(run["sampled_peak_rss_gb"] for run in runs)
        if peak is not None:
            met = peak < args.limit_gb
        else:  # stopped early: only a sampled lower bound, which can show a miss but never a pass
            met = False if sampled >= args.limit_gb else None
        rows.append(
            {
                **runs[-1],
                "method": method,
                "peak_rss_gb": peak,
                "sampled_peak_rss_gb": sampled,
                "runs": runs,
                "seconds": float(np.median([run["seconds"] for run in done])) if done else None,
                "goal": f"< {args.limit_gb:g} GB",
                "met": met,
            }
        )
    print(
        format_table(
            rows,
            [
                "method",
                "peak_rss_gb",
                "sampled_peak_rss_gb",
                "rss_after_imports_gb",
                "rss_with_inputs_gb",
                "seconds",
                "goal",
                "met",
                "status",
            ],
        )
    )
    print(
        "peak_rss_gb: the child's VmHWM; sampled_peak_rss_gb: largest RSS seen once a second from outside (a lower "
        "bound, the only figure for a run stopped by --timeout)"
    )
    results = {
        "benchmark": "memory",
        "quick": args.quick,
        "machine": machine,
        "store": store,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "layer_gb_float16": args.rows * args.features * 2 / 1e9,
        "rows": rows,
    }
    print(f"results written to {write_results(args.out, results)}")
    return results


if __name__ == "__main__":
    main()
