"""Scaling benchmark: time of our encoder against training images n (1k..9k) and vertices t (5k..40k).

Run ``python -m bench.bench_scaling --help``. Same data and timed region as ``bench/bench_encoders.py``
(planted-truth float16 features in a real store, fMRI from the same latent factors; read + fit + predict + score,
each run in a fresh process): n varies with t fixed at its largest value, then t varies with n fixed at its largest
value; the validation rows are the same for every n. Writes a table, a JSON file and a PNG plot with the flop-count
limit (``bench/encoder_flops.py`` over the measured matmul throughput) drawn beside the measured times."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_encoders import DEFAULT_CACHE, OURS, Problem, prepare_data, time_method
from bench.encoder_flops import ours_flops
from bench.results import (
    add_common_arguments,
    alpha_selection,
    check_device,
    format_table,
    parse_with_quick,
    power_iterations,
    write_results,
)
from bench.timing import describe_machine, machine_info, matmul_gflops


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--n-train",
        type=int,
        nargs="+",
        default=[1000, 3000, 5000, 7000, 9000],
        help="training images, swept at the largest --targets (default: %(default)s)",
    )
    parser.add_argument(
        "--targets",
        type=int,
        nargs="+",
        default=[5000, 10000, 20000, 40000],
        help="vertices, swept at the largest --n-train (default: %(default)s)",
    )
    parser.add_argument("--n-val", type=int, default=1000, help="validation images (default: %(default)s)")
    parser.add_argument("--features", type=int, default=9216, help="features p (default: %(default)s)")
    parser.add_argument("--method", choices=OURS, default="ours.pca_ridge", help="encoder (default: %(default)s)")
    parser.add_argument("--components", type=int, default=100, help="PCA components (default: %(default)s)")
    parser.add_argument("--alphas", type=int, default=10, help="alphas, np.logspace(0, 8, n) (default: %(default)s)")
    parser.add_argument(
        "--cv",
        type=alpha_selection,
        default="gcv",
        help="how alpha is chosen: 'gcv', 'loo' or a number of folds (default: %(default)s)",
    )
    parser.add_argument(
        "--pca-method",
        choices=("auto", "gram", "randomized"),
        default="auto",
        help="encoders.pca.PCA method (default: %(default)s)",
    )
    parser.add_argument(
        "--pca-iter",
        type=power_iterations,
        default="auto",
        help="power iterations of the randomized PCA: a number or 'auto', scikit-learn's rule (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help="precision of ours (default: %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="synthetic data (default: %(default)s)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG plot (default: the --out path with .png)")
    add_common_arguments(parser, "scaling")
    args = parse_with_quick(
        parser, argv, "scaling", {"n_train": [200, 400], "targets": [300, 600], "n_val": 100, "features": 512}
    )
    args.plot = args.plot or args.out.with_suffix(".png")
    return args


def plot(rows: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Two panels, time against n and against t, measured (dots) and the flop-count limit (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for axis, sweep, key, label in (
        (axes[0], "n", "n_train", "training images n"),
        (axes[1], "t", "n_targets", "vertices t"),
    ):
        points = sorted((row for row in rows if row["sweep"] == sweep and row["seconds"]), key=lambda r: r[key])
        fixed = points[0]["n_targets" if sweep == "n" else "n_train"] if points else None
        x = [row[key] for row in points]
        axis.plot(x, [row["seconds"] for row in points], "o-", label="measured (median)")
        axis.plot(x, [row["limit_s"] for row in points], "--", color="grey", label="flop-count limit")
        axis.set_xlabel(label)
        axis.set_ylabel("seconds (read + fit + predict + score)")
        axis.set_title(f"{'t' if sweep == 'n' else 'n'} = {fixed}")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_device(args.device)
    machine = machine_info(args.device)
    print(describe_machine(machine), flush=True)
    gflops = max(matmul_gflops(args.device, dtype=args.dtype), 1e-9)
    n_max, t_max = max(args.n_train), max(args.targets)
    store, fmri_file = prepare_data(
        args.cache, n_rows=n_max + args.n_val, n_features=args.features, n_targets=t_max, seed=args.seed
    )
    alphas = tuple(float(a) for a in np.logspace(0, 8, args.alphas))
    base = Problem(
        store=store,
        backbone="synthetic",
        layer="planted",
        fmri_file=fmri_file,
        n_train=n_max,
        val_start=n_max,
        n_val=args.n_val,
        n_features=args.features,
        n_targets=t_max,
        alphas=alphas,
        cv=5,
        ours_cv=args.cv,
        pca_method=args.pca_method,
        pca_iter=args.pca_iter,
        components=args.components,
        dtype=args.dtype,
        device=args.device,
    )
    grid = [("n", n, t_max) for n in sorted(args.n_train)] + [("t", n_max, t) for t in sorted(args.targets)]
    rows, measured = [], {}
    for sweep, n_train, n_targets in grid:
        if (n_train, n_targets) not in measured:
            print(f"n={n_train} t={n_targets} ...", flush=True)
            problem = replace(base, n_train=n_train, n_targets=n_targets)
            measured[n_train, n_targets] = time_method(args.method, problem, repeats=args.repeats, timeout=args.timeout)
        result = measured[n_train, n_targets]
        flops = ours_flops(
            args.method,
            n_train=n_train,
            n_val=args.n_val,
            n_features=args.features,
            n_targets=n_targets,
            n_alphas=args.alphas,
            cv=args.cv,
            components=args.components,
            pca_method=result.get("pca_method", "gram"),
            pca_n_iter=result.get("pca_n_iter", 0),
        )
        rows.append(
            {
                "sweep": sweep,
                "n_train": n_train,
                "n_targets": n_targets,
                "seconds": result["seconds"],
                "all_s": result.get("all_s"),
                "median_r": result.get("median_r"),
                "peak_rss_gb": result.get("peak_rss_gb"),
                "status": result["status"],
                "gflop": flops["total"] / 1e9,
                "limit_s": flops["total"] / (gflops * 1e9),
                "x_limit": result["seconds"] / (flops["total"] / (gflops * 1e9)) if result["seconds"] else None,
            }
        )
    print(
        format_table(
            rows,
            ["sweep", "n_train", "n_targets", "seconds", "limit_s", "x_limit", "median_r", "peak_rss_gb", "status"],
        )
    )
    selection = f"{args.cv}-fold" if isinstance(args.cv, int) else args.cv.upper()
    title = (
        f"{args.method}, p={args.features}, k={args.components}, {args.alphas} alphas, {selection}, "
        f"{args.dtype}; {machine['cpu_model']}, {machine['cores']} cores, {machine['gpu'] or 'no GPU'}"
        f"{' (quick)' if args.quick else ''}"
    )
    results = {
        "benchmark": "scaling",
        "quick": args.quick,
        "machine": machine,
        "matmul_gflops": gflops,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "plot": str(plot(rows, args.plot, title=title)),
    }
    print(f"results written to {write_results(args.out, results)}; plot {args.plot}")
    return results


if __name__ == "__main__":
    main()
