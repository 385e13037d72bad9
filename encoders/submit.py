"""A submission from a grid's results: refit a model on all training images, predict the test images, write the
files and check them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

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

    Raises `SubmissionError` listing the problems if the written zip does not pass `check_submission`.
    """
    check_output_folder(out_dir, "out_dir")
    spaces, setting = model_recipe(results, model or best_model(results))
    data_dir = data_dir or results.attrs["data_dir"]
    predictions = predict_test(store or results.attrs["store"], data_dir, spaces, setting=setting, subjects=subjects)
    return write_checked_submission(predictions, out_dir, data_dir, subjects)
