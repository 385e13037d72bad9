"""Submissions from grid results: refit, predict the test images, write, check; outputs checked before the refit."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.errors import OutputPathError, SubmissionError
from encoders.grid import load_results
from encoders.submission import check_submission
from encoders.submit import write_checked_submission, write_test_submission


def test_refit_of_a_named_model_writes_a_checked_zip(tiny_demo, tmp_path):
    outputs, _ = tiny_demo
    results = load_results(outputs.results)
    archive = write_test_submission(results, tmp_path / "sub", model="ViT-B-32.untrained:embedding")
    assert check_submission(archive, outputs.data) == []
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["algonauts_2023_submission.zip", "subj01", "subj02"]


def test_a_file_as_output_folder_is_refused_before_any_work(tiny_demo, tmp_path, monkeypatch):
    outputs, _ = tiny_demo
    taken = tmp_path / "taken"
    taken.write_text("keep")
    monkeypatch.setattr("encoders.submit.predict_test", lambda *a, **k: pytest.fail("refit started"))
    with pytest.raises(OutputPathError, match=f"out_dir {taken} is a file"):
        write_test_submission(load_results(outputs.results), taken)
    assert taken.read_text() == "keep"


def test_predictions_of_the_wrong_shape_are_not_written(tiny_demo, tmp_path):
    outputs, _ = tiny_demo
    bad = {s: {"lh": np.zeros((4, 3), np.float32), "rh": np.zeros((4, 3), np.float32)} for s in (1, 2)}
    with pytest.raises(SubmissionError, match=r"subj01 lh: shape \(4, 3\), expected \(4, 200\)"):
        write_checked_submission(bad, tmp_path / "sub", outputs.data)
    assert not (tmp_path / "sub").exists()
