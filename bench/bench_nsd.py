"""Raw NSD reading benchmark: sessions/s of reading one session's fsaverage betas (both hemispheres) and z-scoring
them per vertex, against the organisers' own code path and the bytes-read floor, plus `load_nsd_subject` end to end.

Run ``python -m bench.bench_nsd --help``. A raw NSD tree at real size (default: 750 trials x 163,842 vertices per
hemisphere, float32 .mgh, the nsdgeneral + RSC vertex counts of the challenge's subj01) is written once under
``$TMPDIR/nsd-featurestore-bench/`` and read with a warm page cache. Each method runs in a fresh spawned process
(its peak memory is its own) over ``--repeats`` sessions; the table gives the median seconds per session.

Methods, per session and both hemispheres:

- ours.read_zscore: ``nsd.betas.read_session`` (native float32 read, mask, float64) + ``nsd.betas.zscore``;
- organisers: ``nib.load(...).get_fdata()``, ``np.transpose(np.squeeze(...))``, the mask, then scikit-learn's
  ``StandardScaler().fit_transform``, as in ``challenge_data_preparation.py`` (gifale95/algonauts_2023);
- read_floor: the file's bytes read into memory (``np.fromfile``), no decoding: the I/O limit;
- ours.load_nsd_subject: `nsd.subject.load_nsd_subject` over ``--sessions`` sessions (z-score, average repeats,
  noise ceiling), reported per session.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import scipy.io

from bench.isolated import run_isolated
from bench.results import add_common_arguments, format_table, parse_with_quick, write_results
from bench.timing import describe_machine, machine_info

NAME = "nsd"
CACHE = Path(tempfile.gettempdir()) / "nsd-featurestore-bench"
CHALLENGE_SUBJ01_VERTICES = {"lh": 19004, "rh": 20544}  # nsdgeneral + RSC vertices of the challenge's subj01
BETAS = "nsddata_betas/ppdata/subj01/fsaverage/betas_fithrf_GLMdenoise_RR"


def _write_mgh(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (values.shape[0], 1, 1, *values.shape[1:])  # FreeSurfer surface data: vertices x 1 x 1 [x frames]
    nib.save(nib.MGHImage(values.reshape(shape), np.eye(4)), path)


def write_tree(root: Path, n_vertices: int, n_trials: int, n_sessions: int, mask_counts: dict[str, int]) -> Path:
    """A raw NSD tree of one subject with ``n_sessions`` real-size sessions (reused when already complete)."""
    done = root / "complete"
    if done.exists():
        return root
    rng = np.random.default_rng(0)
    n_columns = n_sessions * n_trials // 2  # images shown twice on average
    masterordering = rng.integers(0, n_columns, n_sessions * n_trials)
    subjectim = np.tile(rng.permutation(73000)[:n_columns], (8, 1))
    design = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    design.parent.mkdir(parents=True, exist_ok=True)
    shared = subjectim[0, : min(1000, n_columns // 10)]  # NSD's shared 1000, fewer in a small design
    scipy.io.savemat(
        design, {"masterordering": masterordering[None] + 1, "subjectim": subjectim + 1, "sharedix": shared[None] + 1}
    )
    for hemi, count in mask_counts.items():
        mask = np.zeros(n_vertices, dtype=np.float32)
        mask[rng.choice(n_vertices, count, replace=False)] = 1
        _write_mgh(root / f"nsddata/freesurfer/fsaverage/label/{hemi}.nsdgeneral.mgz", mask)
        _write_mgh(root / BETAS / f"{hemi}.ncsnr.mgh", rng.uniform(0, 1, n_vertices).astype(np.float32))
        for session in range(1, n_sessions + 1):
            betas = rng.standard_normal((n_vertices, n_trials), dtype=np.float32) * 2 + 1
            _write_mgh(root / BETAS / f"{hemi}.betas_session{session:02d}.mgh", betas)
    done.write_text("ok\n")
    return root


def _session_paths(root: Path, session: int) -> dict[str, Path]:
    return {hemi: root / BETAS / f"{hemi}.betas_session{session:02d}.mgh" for hemi in ("lh", "rh")}


def _masks(root: Path) -> dict[str, np.ndarray]:
    return {
        hemi: np.asarray(nib.load(root / f"nsddata/freesurfer/fsaverage/label/{hemi}.nsdgeneral.mgz").dataobj).ravel()
        > 0
        for hemi in ("lh", "rh")
    }


def run_method(method: str, root: str, sessions: list[int]) -> dict[str, Any]:
    """One method over ``sessions`` in this (fresh) process: seconds per session, and a checksum of the output."""
    from sklearn.preprocessing import StandardScaler

    from nsd.betas import read_session, zscore

    root = Path(root)
    masks = _masks(root)
    seconds, checksum = [], 0.0
    if method == "ours.load_nsd_subject":
        from nsd.subject import load_nsd_subject

        start = time.perf_counter()
        data = load_nsd_subject(root, 1, test="shared1000", progress=False)
        total = time.perf_counter() - start
        n = len(sessions)
        return {"seconds": [total / n] * n, "checksum": float(data.fmri["lh"][:, :5].sum())}
    for session in sessions:
        paths = _session_paths(root, session)
        start = time.perf_counter()
        for hemi, path in paths.items():
            if method == "ours.read_zscore":
                out = zscore(read_session(path, masks[hemi]))
            elif method == "organisers":
                betas = np.transpose(np.squeeze(nib.load(path).get_fdata()))
                out = StandardScaler().fit_transform(betas[:, np.where(masks[hemi])[0]])
            elif method == "read_floor":
                out = np.fromfile(path, dtype=np.uint8)[:1].astype(np.float64)
            else:
                raise ValueError(f"unknown method {method!r}")
            checksum += float(out[:5, :5].sum()) if out.ndim == 2 else 0.0
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "checksum": checksum}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vertices", type=int, default=163842, help="vertices per hemisphere (default: fsaverage)")
    parser.add_argument("--trials", type=int, default=750, help="trials per session (default: NSD's 750)")
    parser.add_argument("--sessions", type=int, default=4, help="sessions written and read end to end (default: 4)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per method (default: 1800)")
    add_common_arguments(parser, NAME, repeats=3)
    args = parse_with_quick(parser, argv, NAME, dict(vertices=10242, trials=100, repeats=2))
    scale = args.vertices / 163842
    counts = {hemi: max(1, round(count * scale)) for hemi, count in CHALLENGE_SUBJ01_VERTICES.items()}
    root = CACHE / f"raw_nsd_{args.vertices}_{args.trials}_{args.sessions}"
    write_tree(root, args.vertices, args.trials, args.sessions, counts)
    sessions = list(range(1, min(args.repeats, args.sessions) + 1))
    info = machine_info(args.device)
    rows, runs = [], {}
    methods = ("read_floor", "ours.read_zscore", "organisers", "ours.load_nsd_subject")
    for method in methods:
        chosen = list(range(1, args.sessions + 1)) if method == "ours.load_nsd_subject" else sessions
        outcome = run_isolated(run_method, (method, os.fspath(root), chosen), timeout=args.timeout)
        runs[method] = outcome
        if outcome["status"] != "ok":
            rows.append({"method": method, "status": outcome["status"]})
            continue
        median = float(np.median(outcome["seconds"]))
        rows.append(
            {"method": method, "s_per_session": median, "sessions_per_s": 1 / median, "peak_gb": outcome["peak_rss_gb"]}
        )
    reference = next(
        (row["s_per_session"] for row in rows if row["method"] == "organisers" and "s_per_session" in row), None
    )
    for row in rows:
        if reference and "s_per_session" in row:
            row["x_organisers"] = reference / row["s_per_session"]
    session_gb = 2 * args.vertices * args.trials * 4 / 1e9
    print(describe_machine(info))
    print(
        f"one session: {args.trials} trials x {args.vertices:,} vertices x 2 hemispheres float32 "
        f"({session_gb:.2f} GB); "
        f"mask {counts['lh']:,} + {counts['rh']:,} vertices; warm page cache"
    )
    print(format_table(rows, ["method", "s_per_session", "sessions_per_s", "x_organisers", "peak_gb", "status"]))
    path = write_results(
        args.out,
        {
            "benchmark": NAME,
            "machine": info,
            "sizes": {"vertices": args.vertices, "trials": args.trials, "sessions": args.sessions, "mask": counts},
            "rows": rows,
            "runs": runs,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
