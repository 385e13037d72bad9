"""Encoder benchmark: fit + predict + score time and median r of our PCA/ridge against scikit-learn, himalaya, devkit.

Run ``python -m bench.bench_encoders --help``. Features are planted-truth float16 rows written once into a real feature
store (``bench/synthetic.py``); fMRI is a linear map of the same latent factors plus noise, so median r on the
validation rows is meaningful. Every method's timed region is: read the features from the store, fit on the
training rows, predict the validation rows, score every vertex. Each (method, repeat) runs in a fresh process
(spawned, so nothing is shared or warm; libraries are imported before the clock starts) with a time limit; a run
that hits the limit is reported as "> limit".

Methods (one alpha per vertex, the same alpha grid, 5-fold CV for the references; ours chooses alphas by
``--ours-cv``, generalised cross-validation by default):

- ours.pca_ridge: ``encoders.pca.PCA(k)`` (streamed from the store) + ``encoders.ridge.RidgeCV``;
- ours.kernel_ridge: ``encoders.ridge.KernelRidgeCV`` on the full features (dual, Gram matrix, no PCA);
- sklearn.ridge_loo: ``sklearn.linear_model.RidgeCV(alpha_per_target=True)`` on the full features (its only CV
  with alpha per target is efficient leave-one-out);
- himalaya.ridge.<backend>, himalaya.kernel_ridge.<backend>: ``himalaya.ridge.RidgeCV`` /
  ``himalaya.kernel_ridge.KernelRidgeCV`` on the full features, numpy and torch (torch_cuda with --device cuda);
- devkit: the Algonauts 2023 devkit recipe: ``IncrementalPCA(100)`` fitted batch by batch (300 rows), then
  ``LinearRegression``, then ``scipy.stats.pearsonr`` in a loop over vertices.

The references whose cost does not allow the full size on a small machine run at ``--ref-targets`` vertices;
ours is then run at that size too and the ratios are taken at equal sizes (the table says which size each row has).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import himalaya.backend
import himalaya.kernel_ridge
import himalaya.ridge
import himalaya.scoring
import numpy as np
from scipy.stats import pearsonr
from sklearn import linear_model
from sklearn.decomposition import IncrementalPCA

from bench.encoder_flops import devkit_flops, ours_flops
from bench.isolated import run_isolated
from bench.results import (
    add_common_arguments,
    alpha_selection,
    check_device,
    format_table,
    parse_with_quick,
    power_iterations,
    write_results,
)
from bench.synthetic import PlantedTruth, write_feature_store
from bench.timing import describe_machine, machine_info, matmul_gflops, synchronize
from encoders.pca import PCA
from encoders.ridge import KernelRidgeCV, RidgeCV
from encoders.scoring import pearson_r
from featurestore.store import open_features

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "nsd-featurestore-bench" / "encoders"
DEVKIT_COMPONENTS = 100
DEVKIT_BATCH_SIZE = 300


@dataclass(frozen=True)
class Problem:
    """Everything a method run needs, picklable for the child process: rows [0, n_train) train, rows
    [val_start, val_start + n_val) validate (of the store layer and of the fMRI file alike)."""

    store: str
    backbone: str
    layer: str
    fmri_file: str
    n_train: int
    val_start: int
    n_val: int
    n_features: int
    n_targets: int
    alphas: tuple[float, ...]
    cv: int
    ours_cv: int | str
    pca_method: str
    pca_iter: int | str
    components: int
    dtype: str
    device: str


def _torch_backend(device: str) -> str:
    return "torch_cuda" if device == "cuda" else "torch"


def _dense(features: Any) -> np.ndarray:
    """Read a lazy DataArray of stored rows into memory as float32."""
    return np.asarray(features.values, dtype=np.float32)


def _alpha_edges(best_alphas: np.ndarray, alphas: Sequence[float]) -> dict[str, float]:
    """Share of vertices whose chosen alpha is the smallest or the largest of the grid (should be small)."""
    best = np.asarray(best_alphas, dtype=np.float64)
    return {
        "share_alpha_min": float(np.mean(np.isclose(best, min(alphas), rtol=1e-4))),
        "share_alpha_max": float(np.mean(np.isclose(best, max(alphas), rtol=1e-4))),
    }


def ours_pca_ridge(
    problem: Problem, train: Any, val: Any, y_train: np.ndarray, y_val: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Our PCA (streamed from the store) + RidgeCV with one alpha per vertex, our vectorised r."""
    backend = _torch_backend(problem.device)
    pca = PCA(
        n_components=problem.components,
        method=problem.pca_method,
        n_iter=problem.pca_iter,
        backend=backend,
        dtype=problem.dtype,
    )
    z_train = pca.fit_transform(train)
    z_val = pca.transform(val)
    ridge = RidgeCV(alphas=problem.alphas, cv=problem.ours_cv, backend=backend, dtype=problem.dtype)
    ridge.fit(z_train, y_train)
    facts = {**_alpha_edges(ridge.best_alphas_, problem.alphas), "pca_method": pca.method_, "pca_n_iter": pca.n_iter_}
    return pearson_r(y_val, ridge.predict(z_val)), facts


def ours_kernel_ridge(
    problem: Problem, train: Any, val: Any, y_train: np.ndarray, y_val: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Our KernelRidgeCV on the full features (dual: Gram matrix streamed from the store, no PCA)."""
    backend = _torch_backend(problem.device)
    ridge = KernelRidgeCV(alphas=problem.alphas, cv=problem.ours_cv, backend=backend, dtype=problem.dtype)
    ridge.fit(train, y_train)
    return pearson_r(y_val, ridge.predict(val)), _alpha_edges(ridge.best_alphas_, problem.alphas)


def sklearn_ridge_loo(
    problem: Problem, train: Any, val: Any, y_train: np.ndarray, y_val: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """scikit-learn RidgeCV(alpha_per_target=True): efficient leave-one-out, its only CV with alpha per target."""
    model = linear_model.RidgeCV(alphas=np.asarray(problem.alphas), alpha_per_target=True)
    model.fit(_dense(train), y_train)
    return pearsonr(y_val, model.predict(_dense(val)), axis=0).statistic, _alpha_edges(model.alpha_, problem.alphas)


def _himalaya(estimator: str, backend_name: str) -> Callable[..., tuple[np.ndarray, dict[str, Any]]]:
    """A method running himalaya's ``estimator`` ("ridge" or "kernel_ridge") on backend ``backend_name``."""

    def run(
        problem: Problem, train: Any, val: Any, y_train: np.ndarray, y_val: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Any]]:
        name = _torch_backend(problem.device) if backend_name == "torch" else backend_name
        backend = himalaya.backend.set_backend(name, on_error="raise")
        estimator_class = himalaya.ridge.RidgeCV if estimator == "ridge" else himalaya.kernel_ridge.KernelRidgeCV
        model = estimator_class(alphas=np.asarray(problem.alphas), cv=problem.cv, fit_intercept=True)
        model.fit(backend.asarray(_dense(train)), backend.asarray(y_train))
        prediction = model.predict(backend.asarray(_dense(val)))
        correlation = backend.to_numpy(himalaya.scoring.correlation_score(backend.asarray(y_val), prediction))
        return correlation, _alpha_edges(backend.to_numpy(model.best_alphas_), problem.alphas)

    run.__doc__ = f"himalaya {estimator} on the {backend_name} backend."
    return run


def devkit(
    problem: Problem, train: Any, val: Any, y_train: np.ndarray, y_val: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """The Algonauts 2023 devkit: IncrementalPCA(100) in 300-row batches, LinearRegression, pearsonr per vertex."""
    pca = IncrementalPCA(n_components=DEVKIT_COMPONENTS, batch_size=DEVKIT_BATCH_SIZE)
    starts = list(range(0, problem.n_train, DEVKIT_BATCH_SIZE))
    if len(starts) > 1 and problem.n_train - starts[-1] < DEVKIT_COMPONENTS:
        starts.pop()  # partial_fit needs >= n_components rows: the short last batch joins the one before
    for start, stop in zip(starts, starts[1:] + [problem.n_train]):
        pca.partial_fit(_dense(train[start:stop]))
    regression = linear_model.LinearRegression().fit(pca.transform(_dense(train)), y_train)
    prediction = regression.predict(pca.transform(_dense(val)))
    correlation = np.zeros(prediction.shape[1])
    for vertex in range(prediction.shape[1]):
        correlation[vertex] = pearsonr(prediction[:, vertex], y_val[:, vertex])[0]
    return correlation, {}


METHODS: dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]] = {
    "ours.pca_ridge": ours_pca_ridge,
    "ours.kernel_ridge": ours_kernel_ridge,
    "sklearn.ridge_loo": sklearn_ridge_loo,
    "himalaya.ridge.numpy": _himalaya("ridge", "numpy"),
    "himalaya.ridge.torch": _himalaya("ridge", "torch"),
    "himalaya.kernel_ridge.numpy": _himalaya("kernel_ridge", "numpy"),
    "himalaya.kernel_ridge.torch": _himalaya("kernel_ridge", "torch"),
    "devkit": devkit,
}
OURS = ("ours.pca_ridge", "ours.kernel_ridge")
REDUCED = (
    "sklearn.ridge_loo",
    "himalaya.ridge.numpy",
    "himalaya.ridge.torch",
    "himalaya.kernel_ridge.numpy",
    "himalaya.kernel_ridge.torch",
)


def _run_method(method: str, problem: Problem) -> dict[str, Any]:
    """In the child: load fMRI (untimed), then time read + fit + predict + score; return time, median r, facts."""
    fmri = np.load(problem.fmri_file, mmap_mode="r")
    y_train = np.array(fmri[: problem.n_train, : problem.n_targets])
    validation = slice(problem.val_start, problem.val_start + problem.n_val)
    y_val = np.array(fmri[validation, : problem.n_targets])
    features = open_features(problem.store, problem.backbone, problem.layer)
    train, val = features[: problem.n_train], features[validation]
    start = time.perf_counter()
    correlation, facts = METHODS[method](problem, train, val, y_train, y_val)
    synchronize(problem.device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "median_r": float(np.nanmedian(np.asarray(correlation))), **facts}


def time_method(method: str, problem: Problem, *, repeats: int, timeout: float) -> dict[str, Any]:
    """Run ``method`` ``repeats`` times, each in a fresh process; stop at the first run that fails or times out."""
    sizes = {"method": method, "n_targets": problem.n_targets, "n_features": problem.n_features}
    runs: list[dict[str, Any]] = []
    for _ in range(repeats):
        outcome = run_isolated(_run_method, (method, problem), timeout=timeout)
        if outcome["status"] != "ok":
            return {**sizes, **outcome, "seconds": None, "runs": runs}
        runs.append(outcome)
    seconds = [run["seconds"] for run in runs]
    return {
        **runs[-1],
        **sizes,
        "seconds": float(np.median(seconds)),
        "all_s": seconds,
        "peak_rss_gb": max(run["peak_rss_gb"] for run in runs),
    }


def prepare_data(cache: Path, *, n_rows: int, n_features: int, n_targets: int, seed: int) -> tuple[str, str]:
    """Write (once) the synthetic store and fMRI for these sizes; return (store URL, fMRI .npy path)."""
    truth = PlantedTruth(n_rows=n_rows, n_features=n_features, seed=seed)
    folder = cache / f"n{n_rows}-p{n_features}-seed{seed}"
    store = write_feature_store(folder / "store.zarr", truth)
    fmri_file = folder / f"fmri-t{n_targets}.npy"
    if not fmri_file.exists():
        fmri, _ = truth.fmri(n_targets)
        np.save(fmri_file.with_suffix(".tmp.npy"), fmri)
        fmri_file.with_suffix(".tmp.npy").rename(fmri_file)
    return store, str(fmri_file)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=9000, help="training images (default: %(default)s)")
    parser.add_argument("--n-val", type=int, default=1000, help="validation images (default: %(default)s)")
    parser.add_argument("--targets", type=int, default=40000, help="vertices t (default: %(default)s)")
    parser.add_argument(
        "--features",
        type=int,
        nargs="+",
        default=[9216, 43264],
        help="feature counts p, one store each (default: %(default)s)",
    )
    parser.add_argument(
        "--ref-targets",
        type=int,
        default=4000,
        help="vertices for the slow references (scikit-learn, himalaya); 0 = --targets (default: %(default)s)",
    )
    parser.add_argument(
        "--alphas",
        type=float,
        nargs=3,
        default=[0.0, 8.0, 10],
        metavar=("LOG10_MIN", "LOG10_MAX", "N"),
        help="alpha grid np.logspace(min, max, n) (default: %(default)s)",
    )
    parser.add_argument(
        "--cv",
        type=int,
        default=5,
        help="folds for choosing alpha in the himalaya references; scikit-learn uses leave-one-out "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--ours-cv",
        type=alpha_selection,
        default="gcv",
        help="how ours chooses alpha: 'gcv' (generalised cross-validation), 'loo' or a number of "
        "folds (default: %(default)s)",
    )
    parser.add_argument(
        "--pca-method",
        choices=("auto", "gram", "randomized"),
        default="auto",
        help="encoders.pca.PCA method of ours.pca_ridge (default: %(default)s)",
    )
    parser.add_argument(
        "--pca-iter",
        type=power_iterations,
        default="auto",
        help="power iterations of the randomized PCA of ours.pca_ridge: a number or 'auto', "
        "scikit-learn's rule (default: %(default)s)",
    )
    parser.add_argument(
        "--components",
        type=int,
        default=100,
        help="PCA components of ours.pca_ridge (default: %(default)s, as the project's default encoder setting)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="precision of ours (default: %(default)s, the estimators' default)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=list(METHODS),
        metavar="METHOD",
        help=f"methods to run, of {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument(
        "--ref-repeats", type=int, default=None, help="repeats of the references and the devkit (default: --repeats)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds before a run is stopped and reported as a lower bound (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="synthetic data (default: %(default)s)")
    add_common_arguments(parser, "encoders")
    args = parse_with_quick(
        parser,
        argv,
        "encoders",
        {"n_train": 300, "n_val": 100, "targets": 1000, "ref_targets": 300, "features": [512, 2048]},
    )
    args.ref_targets = min(args.ref_targets or args.targets, args.targets)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_device(args.device)
    machine = machine_info(args.device)
    print(describe_machine(machine), flush=True)
    gflops_before = {dtype: matmul_gflops(args.device, dtype=dtype) for dtype in ("float32", "float64")}
    alphas = tuple(float(a) for a in np.logspace(args.alphas[0], args.alphas[1], int(args.alphas[2])))
    rows: list[dict[str, Any]] = []
    for n_features in args.features:
        store, fmri_file = prepare_data(
            args.cache, n_rows=args.n_train + args.n_val, n_features=n_features, n_targets=args.targets, seed=args.seed
        )
        base = Problem(
            store=store,
            backbone="synthetic",
            layer="planted",
            fmri_file=fmri_file,
            n_train=args.n_train,
            val_start=args.n_train,
            n_val=args.n_val,
            n_features=n_features,
            n_targets=args.targets,
            alphas=alphas,
            cv=args.cv,
            ours_cv=args.ours_cv,
            pca_method=args.pca_method,
            pca_iter=args.pca_iter,
            components=args.components,
            dtype=args.dtype,
            device=args.device,
        )
        sizes = sorted({args.targets, args.ref_targets}, reverse=True)
        for method in args.methods:
            for n_targets in sizes:
                wanted = (n_targets == args.targets and method not in REDUCED) or (
                    n_targets == args.ref_targets and (method in REDUCED or method in OURS)
                )
                if not wanted:
                    continue
                print(f"p={n_features} t={n_targets} {method} ...", flush=True)
                repeats = args.repeats if method in OURS else (args.ref_repeats or args.repeats)
                result = time_method(method, replace(base, n_targets=n_targets), repeats=repeats, timeout=args.timeout)
                rows.append(result)
                print(f"  {result['status']}: {result.get('seconds')} s, median r {result.get('median_r')}", flush=True)
    gflops_after = {dtype: matmul_gflops(args.device, dtype=dtype) for dtype in ("float32", "float64")}
    gflops = {dtype: max(gflops_before[dtype], gflops_after[dtype]) for dtype in gflops_before}
    _add_ratios(rows, args, gflops)
    columns = [
        "method",
        "p",
        "t",
        "seconds",
        "median_r",
        "x_pca_ridge",
        "x_kernel_ridge",
        "x_limit",
        "peak_rss_gb",
        "status",
    ]
    print(format_table([{**row, "p": row["n_features"], "t": row["n_targets"]} for row in rows], columns))
    print(
        "x_pca_ridge, x_kernel_ridge: this method's time over ours at equal sizes (> 1: ours is faster); "
        f"x_limit: ours over its flop count at the measured {args.dtype} matmul rate "
        f"({gflops[args.dtype]:.0f} GFLOP/s)"
    )
    goal_table = goals(rows, args)
    print(format_table(goal_table, ["p", "t", "goal", "against", "measured", "delta_median_r", "met"]))
    results = {
        "benchmark": "encoders",
        "quick": args.quick,
        "machine": machine,
        "matmul_gflops": {"before": gflops_before, "after": gflops_after, "used": gflops},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "alphas": alphas,
        "rows": rows,
        "goals": goal_table,
    }
    print(f"results written to {write_results(args.out, results)}")
    return results


def _add_ratios(rows: list[dict[str, Any]], args: argparse.Namespace, gflops: dict[str, float]) -> None:
    """Per row: how many times slower than each of ours at equal sizes (a lower bound for a run that timed out);
    per row of ours: the flop count and the time at the machine's matmul throughput (``x_limit`` = measured / that)."""
    for row in rows:
        elapsed = row["seconds"] or row.get("lower_bound_s")
        for ours in OURS:
            match = _find(rows, ours, row["n_features"], row["n_targets"])
            if match is not None and elapsed and row["method"] not in OURS:
                row[f"x_{ours.removeprefix('ours.')}"] = elapsed / match["seconds"]
        if row["method"] in OURS and row["seconds"]:
            flops = ours_flops(
                row["method"],
                n_train=args.n_train,
                n_val=args.n_val,
                n_features=row["n_features"],
                n_targets=row["n_targets"],
                n_alphas=int(args.alphas[2]),
                cv=args.ours_cv,
                components=args.components,
                pca_method=row.get("pca_method", "gram"),
                pca_n_iter=row.get("pca_n_iter", 0),
            )
            row["flops"] = flops
            row["limit_s"] = flops["total"] / (gflops[args.dtype] * 1e9)
            row["x_limit"] = row["seconds"] / row["limit_s"]


def _find(rows: list[dict[str, Any]], method: str, n_features: int, n_targets: int) -> dict[str, Any] | None:
    """The finished row of ``method`` at these sizes, if any."""
    return next(
        (
            row
            for row in rows
            if row["method"] == method
            and row["n_features"] == n_features
            and row["n_targets"] == n_targets
            and row["seconds"]
        ),
        None,
    )


def goals(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The issue's goals, per feature count: speed-up over the fastest himalaya backend at equal accuracy (ours
    kernel ridge: same features, same model class), over the devkit (ours PCA + ridge: the project's default
    encoder), better median r than the devkit, and within 2x of the matmul limit."""
    table = []
    for p in args.features:
        himalaya = [row for row in rows if row["method"].startswith("himalaya.") and row["n_features"] == p]
        timed = [row for row in himalaya if row["seconds"] or row.get("lower_bound_s")]
        if timed:
            fastest = min(timed, key=lambda row: row["seconds"] or row["lower_bound_s"])
            ours = _find(rows, "ours.kernel_ridge", p, fastest["n_targets"])
            if ours is not None:
                speedup = (fastest["seconds"] or fastest["lower_bound_s"]) / ours["seconds"]
                delta = ours["median_r"] - fastest["median_r"] if fastest.get("median_r") is not None else None
                table.append(
                    {
                        "p": p,
                        "t": fastest["n_targets"],
                        "goal": "ours.kernel_ridge >= 5x fastest himalaya",
                        "against": fastest["method"],
                        "measured": speedup,
                        "delta_median_r": delta,
                        "met": speedup >= 5 and delta is not None and abs(delta) <= 0.01,
                    }
                )
        devkit_row = _find(rows, "devkit", p, args.targets)
        ours = _find(rows, "ours.pca_ridge", p, args.targets)
        if devkit_row is not None and ours is not None:
            delta = ours["median_r"] - devkit_row["median_r"]
            arithmetic = devkit_flops(n_train=args.n_train, n_val=args.n_val, n_features=p, n_targets=args.targets)
            table.append(
                {
                    "p": p,
                    "t": args.targets,
                    "goal": "ours.pca_ridge >= 20x devkit, better median r",
                    "against": f"devkit ({arithmetic['total'] / 1e12:.3g} TFLOP against ours' "
                    f"{ours['flops']['total'] / 1e12:.3g})",
                    "measured": devkit_row["seconds"] / ours["seconds"],
                    "delta_median_r": delta,
                    "met": devkit_row["seconds"] / ours["seconds"] >= 20 and delta > 0,
                }
            )
        for method in OURS:
            ours = _find(rows, method, p, args.targets)
            if ours is not None:
                table.append(
                    {
                        "p": p,
                        "t": args.targets,
                        "goal": f"{method} <= 2x matmul limit",
                        "against": f"{ours['flops']['total'] / 1e12:.3g} TFLOP at matmul GFLOP/s",
                        "measured": ours["x_limit"],
                        "met": ours["x_limit"] <= 2,
                    }
                )
    return table


if __name__ == "__main__":
    main()
