"""The official score of a submission on the test images, against the organisers' formula written out here."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest
from scipy import stats

from encoders.cli import main
from encoders.errors import ChallengeDataError, SubmissionError
from encoders.evaluate import evaluate_submission
from encoders.submission import write_submission


def official(test_fmri: np.ndarray, prediction: np.ndarray, noise_ceiling: np.ndarray) -> np.ndarray:
    """Per-vertex score as the organisers' 03_test_encoding.py computes it (pearsonr loop, then the rules)."""
    correlation = np.array([stats.pearsonr(test_fmri[:, v], prediction[:, v])[0] for v in range(test_fmri.shape[1])])
    correlation[correlation < 0] = 0
    nc = noise_ceiling.astype(np.float64).copy()
    nc[nc == 0] = 1e-14
    score = correlation**2 / nc * 100
    score[score > 100] = 100
    return score


@pytest.fixture
def submission(algonauts_copy, tmp_path):
    """Predictions for subject 1 (test fMRI plus noise, one vertex with a zero ceiling) written as a folder+zip."""
    rng = np.random.default_rng(5)
    test_split = algonauts_copy / "subj01" / "test_split"
    ceiling_path = test_split / "noise_ceiling" / "lh_noise_ceiling.npy"
    ceiling = np.load(ceiling_path)
    ceiling[0] = 0.0
    np.save(ceiling_path, ceiling)
    predictions = {}
    for hemi in ("lh", "rh"):
        test_fmri = np.load(test_split / "test_fmri" / f"{hemi}_test_fmri.npy")
        noisy = test_fmri * rng.choice([-1.0, 1.0], test_fmri.shape[1]) + rng.standard_normal(test_fmri.shape)
        predictions[hemi] = noisy.astype(np.float32)
    zip_path = write_submission({1: predictions}, tmp_path / "submission", algonauts_copy, subjects=[1])
    return algonauts_copy, zip_path, predictions


def expected_scores(data_dir, predictions):
    test_split = data_dir / "subj01" / "test_split"
    return {
        hemi: official(
            np.load(test_split / "test_fmri" / f"{hemi}_test_fmri.npy").astype(np.float64),
            predictions[hemi].astype(np.float64),
            np.load(test_split / "noise_ceiling" / f"{hemi}_noise_ceiling.npy"),
        )
        for hemi in ("lh", "rh")
    }


@pytest.mark.parametrize("as_folder", [False, True])
def test_scores_equal_the_official_formula(submission, as_folder):
    data_dir, zip_path, predictions = submission
    evaluation = evaluate_submission(zip_path.parent if as_folder else zip_path, data_dir, subjects=[1], n_boot=200)
    expected = expected_scores(data_dir, predictions)
    for hemi_score in evaluation.hemispheres:
        np.testing.assert_allclose(hemi_score.per_vertex, expected[hemi_score.hemisphere], rtol=1e-5, atol=1e-6)
        assert hemi_score.score.estimate == pytest.approx(expected[hemi_score.hemisphere].mean(), rel=1e-5)
        assert hemi_score.score.low <= hemi_score.score.high
    everything = np.concatenate([expected["lh"], expected["rh"]])
    assert evaluation.score.estimate == pytest.approx(everything.mean(), rel=1e-5)  # over all vertices
    assert evaluation.subject_scores[1] == pytest.approx(everything.mean(), rel=1e-5)
    assert (everything == 0).sum() > 10 and everything.max() <= 100


def test_a_perfect_prediction_reaches_the_ceiling_where_r_squared_does(submission, tmp_path):
    data_dir, _, _ = submission
    test_split = data_dir / "subj01" / "test_split"
    perfect = {hemi: np.load(test_split / "test_fmri" / f"{hemi}_test_fmri.npy") for hemi in ("lh", "rh")}
    zip_path = write_submission({1: perfect}, tmp_path / "perfect", data_dir, subjects=[1])
    evaluation = evaluate_submission(zip_path, data_dir, subjects=[1], n_boot=50)
    assert all(h.score.estimate == 100.0 for h in evaluation.hemispheres)  # r = 1 >= sqrt(any ceiling)


def test_cli_prints_and_writes_json(submission, tmp_path, capsys):
    data_dir, zip_path, predictions = submission
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "evaluate",
                str(zip_path),
                "--data",
                str(data_dir),
                "--subjects",
                "1",
                "--json",
                str(out),
                "--n-boot",
                "100",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "subj01 lh:" in printed and "overall (mean over all vertices)" in printed
    scores = json.loads(out.read_text())
    expected = expected_scores(data_dir, predictions)
    assert scores["score"] == pytest.approx(np.concatenate([expected["lh"], expected["rh"]]).mean(), rel=1e-5)
    assert scores["subjects"]["subj01"]["rh"] == pytest.approx(expected["rh"].mean(), rel=1e-5)
    assert set(scores["subjects"]) == {"subj01"} and set(scores["subjects"]["subj01"]) == {"lh", "rh"}
    assert "All vertices" in scores["details"]["subj01"]["lh"]["roi_median_r"]


def test_missing_test_fmri_names_the_folder(algonauts_copy, tmp_path):
    zeros = {h: np.ones((4, n), np.float32) for h, n in zip(("lh", "rh"), (52, 48))}
    zip_path = write_submission({2: zeros}, tmp_path / "s", algonauts_copy, subjects=[2])
    folder = algonauts_copy / "subj02" / "test_split" / "test_fmri"
    with pytest.raises(ChallengeDataError, match=rf"Missing {re.escape(str(folder))}/\{{lh,rh\}}_test_fmri.npy"):
        evaluate_submission(zip_path, algonauts_copy, subjects=[2])


def _replace_member(zip_path, member: str, data: bytes) -> None:
    with zipfile.ZipFile(zip_path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members[member] = data
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((4, 59), np.float32), r"subj01/lh_pred_test.npy: shape \(4, 59\), expected \(4, 60\)"),
        (np.full((4, 60), np.nan, np.float32), r"subj01/lh_pred_test.npy: 240 NaN and 0 inf values"),
        (np.zeros((4, 60), np.float64), r"subj01/lh_pred_test.npy: dtype float64, expected float32"),
    ],
)
def test_bad_submission_files_are_named(submission, array, match):
    data_dir, zip_path, _ = submission
    _replace_member(zip_path, "subj01/lh_pred_test.npy", _npy_bytes(array))
    with pytest.raises(SubmissionError, match=match):
        evaluate_submission(zip_path, data_dir, subjects=[1])
    assert main(["evaluate", str(zip_path), "--data", str(data_dir), "--subjects", "1"]) == 1


def test_garbage_bytes_are_not_called_pickled(submission):
    data_dir, zip_path, _ = submission
    _replace_member(zip_path, "subj01/rh_pred_test.npy", b"this is not an array")
    with pytest.raises(SubmissionError, match=r"subj01/rh_pred_test.npy: not a readable .npy array \(no .npy header"):
        evaluate_submission(zip_path, data_dir, subjects=[1])


def test_missing_submission_is_named(algonauts_dir, tmp_path):
    with pytest.raises(SubmissionError, match=rf"{re.escape(str(tmp_path / 'nope.zip'))}: does not exist"):
        evaluate_submission(tmp_path / "nope.zip", algonauts_dir, subjects=[1])
