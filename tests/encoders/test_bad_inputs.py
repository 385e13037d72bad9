"""Red-team cases: bad inputs through the ``encoders`` command in a subprocess, as a user would meet them.

Each case asserts the exit status, exactly one line on stderr that names the path or key at fault, no traceback,
and that nothing already written was changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "encoders.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def fit(store: Path, data: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """``encoders fit`` from ``store`` and ``data`` into ``out`` (quiet), with extra ``options``."""
    return run("fit", "--store", str(store), "--data", str(data), "--out", str(out), "--quiet", *options)


# one small model, so that the fits that do run take seconds
SMALL_MODEL = ("--models", "alexnet.untrained:features.5", "--pca", "5", "--n-boot", "10")


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The single error line on stderr (one-line warnings aside), checked to contain every needle; no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if ": warning: " not in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def demo_copy(tiny_demo, tmp_path):
    """The tiny demo's data and results, copied so a test may damage them; the store is shared read-only."""
    outputs, _ = tiny_demo
    data = Path(shutil.copytree(outputs.data, tmp_path / "data"))
    results = tmp_path / "results.nc"
    shutil.copy(outputs.results, results)
    return outputs, data, results


def test_fit_out_is_a_file(demo_copy, tmp_path):
    outputs, data, _ = demo_copy
    out = tmp_path / "taken"
    out.write_text("keep me")
    result = fit(outputs.store, data, out)
    one_line_error(result, f"--out {out} is a file")
    assert out.read_text() == "keep me"


def test_submit_out_is_a_file_is_refused_before_the_refit(demo_copy, tmp_path):
    _, _, results = demo_copy
    out = tmp_path / "taken"
    out.write_text("keep me")
    result = run("submit", "--results", str(results), "--out", str(out))
    one_line_error(result, f"--out {out} is a file")
    assert out.read_text() == "keep me"


def test_truncated_results_file(demo_copy):
    _, _, results = demo_copy
    results.write_bytes(results.read_bytes()[:300])
    before = digest(results)
    result = run("leaderboard", str(results))
    one_line_error(result, f"Cannot read results file {results}", "rerun `encoders fit`")
    assert digest(results) == before


def test_missing_results_file(tmp_path):
    one_line_error(run("leaderboard", str(tmp_path / "none.nc")), f"No results file {tmp_path / 'none.nc'}")


def test_unknown_model_in_compare_lists_the_models(demo_copy):
    _, _, results = demo_copy
    line = one_line_error(
        run("compare", str(results), "alexnet.untrained:features.5", "resnet:nope"),
        "model 'resnet:nope' is not in the results",
    )
    assert "alexnet.untrained:classifier.5" in line


def test_unknown_subject(demo_copy, tmp_path):
    outputs, data, _ = demo_copy
    result = fit(outputs.store, data, tmp_path / "fit", "--subjects", "7")
    one_line_error(result, "No folder", "subj07", "[1, 2]")


def test_missing_data_folder(demo_copy, tmp_path):
    outputs, _, _ = demo_copy
    result = fit(outputs.store, tmp_path / "nowhere", tmp_path / "fit")
    one_line_error(result, f"{tmp_path / 'nowhere'} does not exist")


def test_missing_store(demo_copy, tmp_path):
    _, data, _ = demo_copy
    result = fit(tmp_path / "none.zarr", data, tmp_path / "fit")
    one_line_error(result, str(tmp_path / "none.zarr"))


def test_roi_mask_of_the_wrong_length(demo_copy, tmp_path):
    outputs, data, _ = demo_copy
    path = data / "subj01" / "roi_masks" / "lh.floc-faces_challenge_space.npy"
    np.save(path, np.load(path)[:-3])
    result = fit(outputs.store, data, tmp_path / "fit", *SMALL_MODEL)
    one_line_error(result, str(path), "expected (200,)")


def test_nan_fmri_after_results_exist_is_refused_not_reused(demo_copy, tmp_path):
    outputs, data, _ = demo_copy
    assert fit(outputs.store, data, tmp_path / "fit", *SMALL_MODEL).returncode == 0
    path = data / "subj02" / "training_split" / "training_fmri" / "rh_training_fmri.npy"
    fmri = np.load(path)
    fmri[1, 2] = np.nan
    np.save(path, fmri)
    results = tmp_path / "fit" / "results.nc"
    before = digest(results)
    one_line_error(fit(outputs.store, data, tmp_path / "fit", *SMALL_MODEL), str(path), "1 NaN")
    assert digest(results) == before


def test_percent_noise_ceiling_is_refused(demo_copy, tmp_path):
    outputs, data, _ = demo_copy
    path = data / "subj01" / "test_split" / "noise_ceiling" / "lh_noise_ceiling.npy"
    np.save(path, np.load(path) * 100)
    one_line_error(run("evaluate", str(outputs.submission), "--data", str(data)), str(path), "expected a fraction")


def test_evaluate_without_test_fmri(demo_copy):
    outputs, data, _ = demo_copy
    shutil.rmtree(data / "subj02" / "test_split" / "test_fmri")
    one_line_error(
        run("evaluate", str(outputs.submission), "--data", str(data)), str(data / "subj02" / "test_split" / "test_fmri")
    )


def test_check_submission_on_garbage_npy_bytes(demo_copy, tmp_path):
    outputs, data, _ = demo_copy
    folder = Path(shutil.copytree(outputs.submission.parent, tmp_path / "submission"))
    (folder / "subj01" / "lh_pred_test.npy").write_bytes(b"definitely not numpy")
    result = run("check-submission", str(folder), "--data", str(data))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "subj01/lh_pred_test.npy: not a readable .npy array (no .npy header" in result.stderr
    assert "pickled" not in result.stderr


def test_debug_keeps_the_traceback(tmp_path):
    result = run("leaderboard", str(tmp_path / "none.nc"), env={"NSD_FEATURESTORE_DEBUG": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr and "ResultsError" in result.stderr
