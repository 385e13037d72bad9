"""A submission from a grid's results: refit a model on all training images, predict the test images, write the
files and check them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from encoders.ensemble import is_ensemble, predict_ensemble_test
from encoders.errors import SubmissionError, check_output_folder
from encoders.grid import model_recipe, predict_test
from encoders.leaderboard import best_model
from encoders.submission import check_submission, write_submission

__all__ = ["SUBMISSION_ZIP", "write_checked_submission", "write_test_submission"]

SUBMISSION_ZIP = "algonauts_2023_submission.zip"


def write_checked_submission(
    predictions: dict[int, dict[str, np.ndarray]],
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    subjects: Sequence[int | str] | None = None,
) -> Path:
    """`write_submission`, then `check_submission` on the zip; `SubmissionError` listing problems if any."""
    archive = write_submission(predictions, out_dir, data_dir, subjects, zip_name=SUBMISSION_ZIP)
    problems = check_submission(archive, data_dir, subjects)
    if problems:
        raise SubmissionError(f"submission {archive} failed its check:\n  " + "\n  ".join(problems))
    return archive


def write_test_submission(
    results: xr.Dataset,
    out_dir: str | os.PathLike,
    *,
    model: str | None = None,
    store: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    subjects: Sequence[int | str] | None = None,
) -> Path:
    """Refit a model of the results (default: the best) on all training images and write a checked submission zip.

    An ensemble's members are each refitted on all training images and their test predictions combined with the
    weights the ensemble chose inside the training rows (`encoders.ensemble.predict_ensemble_test`).
    Raises `SubmissionError` listing the problems if the written zip does not pass `check_submission`.
    """
    check_output_folder(out_dir, "out_dir")
    model = model or best_model(results)
    data_dir = data_dir or results.attrs["data_dir"]
    if is_ensemble(results, model):
        predictions = predict_ensemble_test(results, model, store=store, data_dir=data_dir, subjects=subjects)
    else:
        spaces, setting = model_recipe(results, model)
        store = store or results.attrs["store"]
        predictions = predict_test(store, data_dir, spaces, setting=setting, subjects=subjects)
    return write_checked_submission(predictions, out_dir, data_dir, subjects)
