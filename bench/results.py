"""Benchmark results: the shared command-line flags, a plain-text table, and the JSON file written to ``--out``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_common_arguments(parser: argparse.ArgumentParser, name: str, *, repeats: int = 3) -> None:
    """Add ``--quick``, ``--repeats``, ``--device`` and ``--out`` (default ``bench/results/<name>.json``)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (flags given explicitly still win): a smoke run that checks the script "
        "end to end; writes bench/results/<name>_quick.json unless --out is given",
    )
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats per method; tables show the median")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where torch computations run")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="JSON file of results (default: %(default)s)"
    )


def parse_with_quick(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, name: str, quick: dict[str, Any]
) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, ``quick`` (and ``--out`` ``bench/results/<name>_quick.json``) become the
    defaults, so flags given explicitly still win."""
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick, out=RESULTS_DIR / f"{name}_quick.json")
        args = parser.parse_args(argv)
    return args


def alpha_selection(text: str) -> int | str:
    """Argument type of ``--cv`` / ``--ours-cv``: 'gcv', 'loo' or a number of folds."""
    from encoders.ridge import CLOSED_FORM_CV

    return text if text in CLOSED_FORM_CV else int(text)


def power_iterations(text: str) -> int | str:
    """Argument type of ``--pca-iter``: 'auto' or a number of power iterations (>= 0)."""
    if text == "auto":
        return text
    value = int(text)
    if value < 0:
        raise ValueError(f"power iterations must be >= 0; got {value}")
    return value


def check_device(device: str) -> None:
    """Refuse ``--device cuda`` on a machine without CUDA, naming what torch sees."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was requested but torch.cuda.is_available() is False on this machine")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned text table of ``columns`` from ``rows``; floats get 4 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(value.ljust(width) for value, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def write_results(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, creating the folder; return the path. Every ``*_gb`` figure is in GB
    (10^9 bytes), which the file says; files without ``memory_unit`` hold GiB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**payload, "memory_unit": "GB (1e9 bytes)"}, indent=2, default=str) + "\n")
    return path
