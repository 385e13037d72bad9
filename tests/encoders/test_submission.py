"""Submission zips: a valid one round-trips and checks clean; each bad input is named and writes nothing."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from encoders.submission import SubmissionError, check_submission, expected_shapes, write_submission


@pytest.fixture
def predictions(algonauts_spec):
    """Finite float32 predictions of the right shape for both subjects of the tiny folder."""
    rng = np.random.default_rng(1)
    return {
        subject: {
            hemi: rng.standard_normal((algonauts_spec.n_test, n)).astype(np.float32)
            for hemi, n in zip(("lh", "rh"), counts)
        }
        for subject, counts in algonauts_spec.n_vertices.items()
    }


def test_expected_shapes_from_data(algonauts_dir, algonauts_spec):
    n_test = algonauts_spec.n_test
    assert expected_shapes(algonauts_dir) == {
        subject: {"lh": (n_test, lh), "rh": (n_test, rh)} for subject, (lh, rh) in algonauts_spec.n_vertices.items()
    }


def test_valid_submission_round_trips(algonauts_dir, predictions, tmp_path):
    zip_path = write_submission(predictions, tmp_path / "out", algonauts_dir)
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == [f"subj{s:02d}/{h}_pred_test.npy" for s in (1, 2) for h in ("lh", "rh")]
        archive.extractall(tmp_path / "unzipped")
    for subject, hemis in predictions.items():
        for hemi, array in hemis.items():
            loaded = np.load(tmp_path / "unzipped" / f"subj{subject:02d}" / f"{hemi}_pred_test.npy")
            assert loaded.dtype == np.float32
            np.testing.assert_array_equal(loaded, array)
            written = tmp_path / "out" / f"subj{subject:02d}" / f"{hemi}_pred_test.npy"
            np.testing.assert_array_equal(np.load(written), array)
    assert check_submission(zip_path, algonauts_dir) == []


def test_subset_of_subjects(algonauts_dir, predictions, tmp_path):
    zip_path = write_submission({"subj02": predictions[2]}, tmp_path / "out", algonauts_dir, subjects=[2])
    assert check_submission(zip_path, algonauts_dir, subjects=[2]) == []
    assert check_submission(zip_path, algonauts_dir) == [
        "subj01/lh_pred_test.npy: missing from the submission",
        "subj01/rh_pred_test.npy: missing from the submission",
    ]


def _corrupt(predictions, algonauts_spec, case):
    """Apply one named defect to subject 2's right hemisphere (or drop subject 2); return the expected message."""
    n_test, n_rh = algonauts_spec.n_test, algonauts_spec.n_vertices[2][1]
    array = predictions[2]["rh"]
    if case == "nan":
        array[0, 0] = np.nan
        return "subj02 rh: 1 NaN and 0 inf values"
    if case == "inf":
        array[1, 2] = -np.inf
        return "subj02 rh: 0 NaN and 1 inf values"
    if case == "float64":
        predictions[2]["rh"] = array.astype(np.float64)
        return "subj02 rh: dtype float64, expected float32"
    if case == "shape":
        predictions[2]["rh"] = array[:, :-1]
        return f"subj02 rh: shape ({n_test}, {n_rh - 1}), expected ({n_test}, {n_rh})"
    if case == "missing subject":
        del predictions[2]
        return "subj02: missing"
    del predictions[2]["rh"]
    return f"subj02 rh: missing; expected an array of shape ({n_test}, {n_rh})"


@pytest.mark.parametrize("case", ["nan", "inf", "float64", "shape", "missing subject", "missing hemisphere"])
def test_invalid_predictions_write_nothing(algonauts_dir, algonauts_spec, predictions, tmp_path, case):
    message = _corrupt(predictions, algonauts_spec, case)
    out_dir = tmp_path / "out"
    with pytest.raises(SubmissionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_submission(predictions, out_dir, algonauts_dir)
    assert not out_dir.exists()


def test_unknown_subject_refused(algonauts_dir, predictions, tmp_path):
    predictions[9] = predictions[1]
    with pytest.raises(SubmissionError, match=r"subj09: predictions given but expected only subjects \[1, 2\]"):
        write_submission(predictions, tmp_path / "out", algonauts_dir)
    assert not (tmp_path / "out").exists()


def _zip(path, members):
    """A zip with ``members`` {arcname: array or bytes}."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            if isinstance(content, np.ndarray):
                with archive.open(name, "w") as handle:
                    np.save(handle, content)
            else:
                archive.writestr(name, content)
    return path


def _members(predictions, prefix=""):
    return {f"{prefix}subj{s:02d}/{h}_pred_test.npy": a for s, hemis in predictions.items() for h, a in hemis.items()}


def test_check_flags_extra_parent_folder(algonauts_dir, predictions, tmp_path):
    zip_path = _zip(tmp_path / "nested.zip", _members(predictions, prefix="my_submission/"))
    assert check_submission(zip_path, algonauts_dir) == [
        "extra parent folder 'my_submission/' in the archive; subject folders must be at the top level"
    ]


@pytest.mark.parametrize("case", ["nan", "inf", "float64", "shape", "missing subject", "missing hemisphere"])
def test_check_names_each_array_problem(algonauts_dir, algonauts_spec, predictions, tmp_path, case):
    message = _corrupt(predictions, algonauts_spec, case)
    problems = check_submission(_zip(tmp_path / "bad.zip", _members(predictions)), algonauts_dir)
    if case.startswith("missing"):
        hemis = ["lh", "rh"] if case == "missing subject" else ["rh"]
        assert problems == [f"subj02/{h}_pred_test.npy: missing from the submission" for h in hemis]
    else:
        assert len(problems) == 1
        assert problems[0].startswith(message.replace("subj02 rh", "subj02/rh_pred_test.npy"))


def test_check_flags_unexpected_files_and_bad_npy(algonauts_dir, predictions, tmp_path):
    members = _members(predictions)
    members["subj01/lh_pred_test.npy"] = b"not an array"
    members["notes.txt"] = b"hello"
    members["subj01/extra.npy"] = predictions[1]["lh"]
    members["subj07/lh_pred_test.npy"] = predictions[1]["lh"]
    problems = check_submission(_zip(tmp_path / "messy.zip", members), algonauts_dir)
    assert sorted(problems) == sorted(
        [
            "notes.txt: unexpected file; expected only subjXX/{lh,rh}_pred_test.npy",
            "subj01/extra.npy: unexpected file; expected only subjXX/{lh,rh}_pred_test.npy",
            "subj07/lh_pred_test.npy: unexpected subject; expected subjects [1, 2]",
            next(p for p in problems if p.startswith("subj01/lh_pred_test.npy: not a readable .npy array")),
        ]
    )


def test_check_refuses_non_zip(algonauts_dir, tmp_path):
    path = tmp_path / "submission.zip"
    path.write_text("plain text")
    expected = "expected a submission zip or a folder holding subjXX/{lh,rh}_pred_test.npy"
    assert check_submission(path, algonauts_dir) == [f"{path}: not a zip archive; {expected}"]
    missing = tmp_path / "nope.zip"
    assert check_submission(missing, algonauts_dir) == [f"{missing}: does not exist; {expected}"]


def test_check_accepts_the_written_folder(algonauts_dir, tmp_path):
    """The folder write_submission fills (subject folders beside the zip) checks like the zip itself."""
    rng = np.random.default_rng(0)
    predictions = {
        s: {h: rng.standard_normal((4, n)).astype(np.float32) for h, n in zip(("lh", "rh"), counts)}
        for s, counts in {1: (60, 56), 2: (52, 48)}.items()
    }
    archive = write_submission(predictions, tmp_path / "out", algonauts_dir)
    assert check_submission(archive.parent, algonauts_dir) == []
    (archive.parent / "subj01" / "rh_pred_test.npy").unlink()
    assert check_submission(archive.parent, algonauts_dir) == ["subj01/rh_pred_test.npy: missing from the submission"]
