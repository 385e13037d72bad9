"""The grid's task runner: a failing task is reported only after the tasks still running have finished."""

import time
import warnings

import dask
import pytest

from encoders.grid.schedule import compute


def _fails() -> None:
    raise ValueError("bad ROI mask")


def _warns_later() -> dict:
    time.sleep(0.5)
    warnings.warn("too few validation images", UserWarning, stacklevel=1)
    return {}


def test_a_failure_waits_for_the_running_tasks_and_their_warnings() -> None:
    # the CLI prints warnings as one line only while the command runs: a warning from a task still running after
    # the error was reported would print in Python's multi-line format (the once-flaky test_bad_inputs case)
    tasks = [dask.delayed(_warns_later)(), dask.delayed(_fails)()]
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ValueError, match="bad ROI mask"):
        warnings.simplefilter("always")
        compute(tasks, None, 2, progress=False, done=0, total=2)
    assert [str(warning.message) for warning in caught] == ["too few validation images"]
