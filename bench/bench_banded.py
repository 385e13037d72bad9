"""Banded ridge benchmark: ``encoders.BandedRidgeCV`` against himalaya's ``BandedRidgeCV`` (primal) and
``MultipleKernelRidgeCV`` (kernel form) with the same candidates, in one run: time and held-out median r.

Run ``python -m bench.bench_banded --help``. Data: two feature spaces A (``--widths``, first) and B whose columns
are independent standard normal, and targets in three equal groups driven by A only, by B only and by both
(signal-to-noise drawn per target), so that one penalty per space matters. Every method gets the same candidates:
``--ratios`` weights strictly inside the simplex (himalaya takes their log, so it cannot take a weight of 0), times
``--alphas`` log-spaced penalties, and the same 5 folds; the timed region is fit on the training rows, predict
the test rows and score every target (Pearson r). Speed-ups are against the fastest himalaya backend of the same
form (primal rows against ``BandedRidgeCV``, kernel rows against ``MultipleKernelRidgeCV``), in wall seconds and
in CPU seconds of the process (steadier on a shared machine). ``ours.*.gcv`` is our generalised cross-validation (one
decomposition per ratio instead of one per ratio and fold): a cheaper search, not the same candidates' scores.

``--scaling`` instead times ours alone at sizes toward n = 9,000, spaces of 1,000 and 4,000 features, t = 40,000,
and extrapolates to the full size through a flop count at the rate measured at the largest size (the JSON and the
table say which figure is measured and which extrapolated).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import himalaya.backend
import himalaya.kernel_ridge
import himalaya.ridge
import numpy as np

from bench.results import add_common_arguments, check_device, format_table, parse_with_quick, write_results
from bench.timing import describe_machine, machine_info, matmul_gflops
from encoders.ridge import BandedRidgeCV
from encoders.scoring import pearson_r
from encoders.splits import kfold

NAME = "banded"


def make_data(n_train: int, n_test: int, widths: tuple[int, int], t: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Two independent feature spaces; targets driven by A only, B only, or both (a third each)."""
    rng = np.random.default_rng(seed)
    n, (pa, pb) = n_train + n_test, widths
    X = rng.standard_normal((n, pa + pb)).astype(np.float32)
    W = (rng.standard_normal((pa + pb, t)) / np.sqrt(np.array([pa] * pa + [pb] * pb))[:, None]).astype(np.float32)
    third = t // 3
    W[pa:, :third] = 0
    W[:pa, third : 2 * third] = 0
    signal = X @ W
    noise = rng.standard_normal((n, t)).astype(np.float32) * signal.std(axis=0) * rng.uniform(0.7, 3.0, t)
    Y = (signal + noise.astype(np.float32)).astype(np.float32)
    return {"X_train": X[:n_train], "Y_train": Y[:n_train], "X_test": X[n_train:], "Y_test": Y[n_train:]}


def interior_ratios(count: int) -> np.ndarray:
    """``count`` two-space ratios evenly inside the simplex: (i / (count + 1), 1 - i / (count + 1))."""
    first = np.arange(1, count + 1) / (count + 1)
    return np.stack([first, 1 - first], axis=1)


def ours(
    data: dict, widths: tuple, ratios: np.ndarray, alphas: np.ndarray, cv: Any, solver: str, device: str, dtype: str
):
    backend = "torch_cuda" if device == "cuda" else "torch"
    model = BandedRidgeCV(list(widths), alphas, ratios=ratios, cv=cv, solver=solver, backend=backend, dtype=dtype)
    model.fit(data["X_train"], data["Y_train"])
    return model.predict(data["X_test"]), model.best_penalties_


def himalaya_banded(data: dict, widths: tuple, ratios: np.ndarray, alphas: np.ndarray, cv: Any, backend: str):
    himalaya.backend.set_backend(backend)
    params = dict(n_iter=ratios, alphas=alphas, progress_bar=False)
    groups = np.repeat([0, 1], widths)
    model = himalaya.ridge.BandedRidgeCV(groups=groups, solver_params=params, cv=cv, fit_intercept=True)
    model.fit(data["X_train"], data["Y_train"])
    xp = himalaya.backend.get_backend()
    return xp.to_numpy(model.predict(data["X_test"])), np.exp(-xp.to_numpy(model.deltas_))


def himalaya_kernels(data: dict, widths: tuple, ratios: np.ndarray, alphas: np.ndarray, cv: Any, backend: str):
    himalaya.backend.set_backend(backend)
    bounds = np.cumsum([0, *widths])
    blocks = [slice(bounds[k], bounds[k + 1]) for k in range(len(widths))]
    train, test = data["X_train"], data["X_test"]
    kernels = np.stack([train[:, b] @ train[:, b].T for b in blocks])
    params = dict(n_iter=ratios, alphas=alphas, progress_bar=False)
    model = himalaya.kernel_ridge.MultipleKernelRidgeCV(
        kernels="precomputed", solver_params=params, cv=cv, fit_intercept=True
    )
    model.fit(kernels, data["Y_train"])
    xp = himalaya.backend.get_backend()
    prediction = model.predict(np.stack([test[:, b] @ train[:, b].T for b in blocks]))
    return xp.to_numpy(prediction), np.exp(-xp.to_numpy(model.deltas_))


def timed(method: Callable[[], tuple[np.ndarray, np.ndarray]], Y_test: np.ndarray) -> dict[str, Any]:
    """Wall and CPU seconds (all threads of this process) for fit + predict + score, the held-out median r and the
    chosen penalties. On a shared machine the CPU seconds are the steadier measure: waiting for a core is not
    counted."""
    start, cpu_start = time.perf_counter(), time.process_time()
    prediction, penalties = method()
    r = pearson_r(Y_test.astype(np.float64), np.asarray(prediction, dtype=np.float64))
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "median_r": float(np.nanmedian(r)),
        "penalties": penalties,
    }


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """One run of every method on the same data and candidates."""
    widths = tuple(args.widths)
    data = make_data(args.n_train, args.n_test, widths, args.targets)
    ratios = interior_ratios(args.ratios)
    alphas = np.logspace(-1, 5, args.alphas)
    folds = kfold(args.n_train, 5, seed=0)
    backends = ["numpy", "torch_cuda" if args.device == "cuda" else "torch"]

    def all_methods(data: dict, widths: tuple, folds: Any) -> dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]]:
        methods = {
            f"ours.{solver}.{name}": partial(ours, data, widths, ratios, alphas, cv, solver, args.device, args.dtype)
            for solver, name, cv in (("primal", "kfold", folds), ("primal", "gcv", "gcv"), ("kernel", "kfold", folds))
        }
        for backend in backends:
            methods[f"himalaya.banded.{backend}"] = partial(
                himalaya_banded, data, widths, ratios, alphas, folds, backend
            )
        for backend in backends:
            methods[f"himalaya.kernels.{backend}"] = partial(
                himalaya_kernels, data, widths, ratios, alphas, folds, backend
            )
        return methods

    # one untimed call of each method on a tiny problem first: lazy imports and library start-up are not timed
    for method in all_methods(make_data(60, 10, (5, 10), 6, seed=1), (5, 10), kfold(60, 5, seed=0)).values():
        method()
    methods = all_methods(data, widths, folds)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, method in methods.items():
            runs[name].append(timed(method, data["Y_test"]))
            print(f"  {name}: {runs[name][-1]['seconds']:.2f} s, {runs[name][-1]['cpu_seconds']:.2f} CPU s", flush=True)
    rows = []
    for name, repeats in runs.items():
        rows.append(
            {
                "method": name,
                "seconds": float(np.median([run["seconds"] for run in repeats])),
                "cpu_seconds": float(np.median([run["cpu_seconds"] for run in repeats])),
                "median_r": repeats[0]["median_r"],
            }
        )
    by_name = {row["method"]: row for row in rows}
    fastest = {
        (kind, unit): min(by_name[f"himalaya.{kind}.{b}"][unit] for b in backends)
        for kind in ("banded", "kernels")
        for unit in ("seconds", "cpu_seconds")
    }
    reference_penalties = runs[f"himalaya.banded.{backends[0]}"][0]["penalties"]
    for row in rows:
        kind = "kernels" if "kernel" in row["method"] else "banded"
        row["speedup_wall"] = fastest[kind, "seconds"] / row["seconds"]
        row["speedup_cpu"] = fastest[kind, "cpu_seconds"] / row["cpu_seconds"]
        same = np.isclose(runs[row["method"]][0]["penalties"], reference_penalties, rtol=1e-4).all(axis=0)
        row["same_penalties_as_himalaya_numpy"] = f"{same.mean():.1%}"
    return {"rows": rows, "ratios": ratios.tolist(), "alphas": alphas.tolist(), "folds": 5}


def banded_flops(n: int, p: int, t: int, n_alphas: int, folds: int | None) -> float:
    """Floating-point operations of one ratio of our primal search (None folds: GCV): per decomposition a thin SVD
    (about 4 n p^2 + 8 p^3 for n >= p, Golub & Van Loan), the projection U^T Y (2 n r t); per fold and alpha the
    validation prediction (2 n_val r t); GCV's per-alpha work is O(r t) and the refit 2 p r t."""
    r = min(n, p)
    svd = lambda rows: 4 * rows * p * p + 8 * p**3 if rows >= p else 4 * p * rows * rows + 8 * rows**3  # noqa: E731
    if folds is None:
        return svd(n) + 2 * n * r * t + 2 * n_alphas * r * t + 2 * p * r * t
    n_val = n // folds
    n_train = n - n_val
    per_fold = svd(n_train) + 2 * n_val * p * r + 2 * n_train * r * t + 2 * n_alphas * n_val * r * t
    return folds * per_fold + svd(n) + 2 * n * r * t + 2 * p * r * t


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Ours (GCV and 5-fold) at growing n and t with spaces of ``--widths``, then the full size (n = 9,000, spaces of
    1,000 and 4,000 features, t = 40,000) extrapolated from the largest measured size through the flop count of
    :func:`banded_flops` (the rate achieved there is assumed at the full size; a bigger size usually runs at a
    higher rate, so this leans pessimistic)."""
    widths = tuple(args.widths)
    rows = []
    ratios = interior_ratios(2)
    alphas = np.logspace(-1, 5, args.alphas)
    for n in args.scaling_n:
        for t in args.scaling_t:
            data = make_data(n, 100, widths, t)
            for folds in (None, 5):
                cv = kfold(n, folds, seed=0) if folds else "gcv"
                method = partial(ours, data, widths, ratios, alphas, cv, "primal", args.device, args.dtype)
                per_ratio = timed(method, data["Y_test"])["seconds"] / len(ratios)
                flops = banded_flops(n, sum(widths), t, alphas.size, folds)
                rows.append(
                    {
                        "n": n,
                        "p": sum(widths),
                        "t": t,
                        "cv": "gcv" if folds is None else f"{folds}-fold",
                        "seconds_per_ratio": per_ratio,
                        "gflop_per_s": flops / per_ratio / 1e9,
                        "kind": "measured",
                    }
                )
                print(f"  n={n} t={t} cv={rows[-1]['cv']}: {per_ratio:.2f} s per ratio", flush=True)
    for folds in (None, 5):
        label = "gcv" if folds is None else f"{folds}-fold"
        largest = max((row for row in rows if row["cv"] == label), key=lambda row: row["n"] * row["t"])
        full = banded_flops(9000, 5000, 40000, alphas.size, folds)
        rows.append(
            {
                "n": 9000,
                "p": 5000,
                "t": 40000,
                "cv": label,
                "seconds_per_ratio": full / (largest["gflop_per_s"] * 1e9),
                "gflop_per_s": largest["gflop_per_s"],
                "kind": f"extrapolated ({full / 1e12:.1f} TFLOP per ratio at the rate of n={largest['n']}, "
                f"t={largest['t']})",
            }
        )
    return {"rows": rows, "widths": list(widths), "ratios_timed": len(ratios), "alphas": alphas.size}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_banded",
        description="Time and held-out median r of encoders.BandedRidgeCV against himalaya's BandedRidgeCV and "
        "MultipleKernelRidgeCV with the same candidate ratios, alphas and folds (or, with --scaling, ours alone "
        "toward n=9000, spaces of 1000 and 4000 features, t=40000).",
    )
    add_common_arguments(parser, NAME, repeats=1)
    parser.add_argument("--n-train", type=int, default=1000, help="training rows (default: %(default)s)")
    parser.add_argument("--n-test", type=int, default=300, help="held-out rows (default: %(default)s)")
    parser.add_argument("--widths", type=int, nargs=2, default=(100, 400), help="features of spaces A and B")
    parser.add_argument("--targets", type=int, default=1000, help="targets (vertices) (default: %(default)s)")
    parser.add_argument("--ratios", type=int, default=11, help="candidate ratios inside the simplex")
    parser.add_argument("--alphas", type=int, default=10, help="log-spaced alphas from 0.1 to 1e5")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="our precision (default: %(default)s; himalaya computes in the data's float32)",
    )
    parser.add_argument("--scaling", action="store_true", help="time ours alone toward the full size")
    parser.add_argument("--scaling-n", type=int, nargs="+", default=(1000, 2000), help="rows for --scaling")
    parser.add_argument("--scaling-t", type=int, nargs="+", default=(1000, 4000), help="targets for --scaling")
    quick = dict(n_train=300, n_test=100, widths=(20, 60), targets=120, ratios=3, alphas=4, scaling_n=(300, 600))
    args = parse_with_quick(parser, argv, NAME, quick | {"scaling_t": (100, 400)})
    check_device(args.device)
    info = machine_info(args.device)
    info["matmul_gflops_float32"] = matmul_gflops(args.device)
    print(describe_machine(info))
    if args.scaling:
        payload = scaling(args)
        columns = ["n", "p", "t", "cv", "seconds_per_ratio", "gflop_per_s", "kind"]
        out = args.out.with_name(args.out.stem + "_scaling.json") if args.out.stem.startswith(NAME) else args.out
    else:
        payload = compare(args)
        columns = ["method", "seconds", "cpu_seconds", "median_r", "speedup_wall", "speedup_cpu"]
        columns.append("same_penalties_as_himalaya_numpy")
        out = args.out
    print(format_table(payload["rows"], columns))
    payload |= {"machine": info, "arguments": {k: str(v) for k, v in vars(args).items()}}
    print(f"wrote {write_results(out, payload)}")


if __name__ == "__main__":
    main()
