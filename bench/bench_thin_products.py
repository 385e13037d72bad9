"""Thin-product benchmark: matmul rate of a randomized-PCA power iteration against the width of its sketch.

Run ``python -m bench.bench_thin_products --help``. One power iteration of ``encoders.pca.PCA(method="randomized")`` on
the centred n x p matrix X held in memory is two products with an n x w basis Q: ``M = Q^T X`` (w x p) and
``X M^T`` (n x w), each 2 n p w flops. The script times both, with torch on ``--device``, for each width in
``--widths``, next to the 4096 x 4096 matmul rate of the same run. It is the measurement behind the PCA's
``SKETCH_MULTIPLE``: the sketch is rounded up to a width at which these thin products run near the full rate.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.results import (
    add_common_arguments,
    check_device,
    format_table,
    parse_with_quick,
    write_results,
)
from bench.timing import describe_machine, machine_info, matmul_gflops, measure


def time_widths(
    n: int, p: int, widths: Sequence[int], *, dtype: str, device: str, repeats: int
) -> list[dict[str, Any]]:
    """Median time and GFLOP/s of ``Q^T X`` and ``X M^T`` for each sketch width ``w``."""
    generator = torch.Generator().manual_seed(0)
    torch_dtype = getattr(torch, dtype)
    x = torch.randn(n, p, generator=generator, dtype=torch_dtype).to(device)
    rows = []
    for width in widths:
        basis_t = torch.randn(width, n, generator=generator, dtype=torch_dtype).to(device)
        left, m = measure(lambda basis_t=basis_t: basis_t @ x, repeats=repeats, device=device, warmup=1)
        right, _ = measure(lambda m=m: x @ m.T, repeats=repeats, device=device, warmup=1)
        flops = 2.0 * n * p * width
        rows.append(
            {
                "width": width,
                "QtX_ms": left.median * 1e3,
                "QtX_gflops": flops / left.median / 1e9,
                "XMt_ms": right.median * 1e3,
                "XMt_gflops": flops / right.median / 1e9,
                "iteration_ms": (left.median + right.median) * 1e3,
                "QtX_all_s": left.seconds,
                "XMt_all_s": right.seconds,
            }
        )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=9000, help="rows of X (default: %(default)s)")
    parser.add_argument("--p", type=int, default=9216, help="columns of X (default: %(default)s)")
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[96, 100, 104, 110, 112, 120, 128],
        help="sketch widths w (default: %(default)s; 110 is 100 components + 10 oversamples)",
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="precision (default: %(default)s)"
    )
    add_common_arguments(parser, "thin_products", repeats=7)
    return parse_with_quick(parser, argv, "thin_products", {"n": 1000, "p": 1024, "widths": [110, 112], "repeats": 3})


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    check_device(args.device)
    machine = machine_info(args.device)
    print(describe_machine(machine), flush=True)
    rate = matmul_gflops(args.device, dtype=args.dtype)
    rows = time_widths(args.n, args.p, args.widths, dtype=args.dtype, device=args.device, repeats=args.repeats)
    print(format_table(rows, ["width", "QtX_ms", "QtX_gflops", "XMt_ms", "XMt_gflops", "iteration_ms"]))
    print(f"{args.n} x {args.p} {args.dtype}; 4096 x 4096 matmul: {rate:.0f} GFLOP/s")
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    results = {
        "benchmark": "thin_products",
        "quick": args.quick,
        "machine": machine,
        "settings": settings,
        "matmul_gflops": rate,
        "rows": rows,
    }
    print(f"results written to {write_results(args.out, results)}")
    return results


if __name__ == "__main__":
    main()
