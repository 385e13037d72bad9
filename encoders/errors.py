"""The user errors of ``encoders``: one base class, so callers and the CLI catch every user-facing failure at once.

Each subclass keeps the builtin it used to be (``ValueError``, ``LookupError``) so older ``except`` clauses still
work. Messages name the file or key, what was expected and what was found.
"""

from __future__ import annotations

import os
from pathlib import Path


class EncodersError(Exception):
    """Base of every user-facing failure of ``encoders`` (bad data, bad arguments, missing inputs)."""


class InvalidArgumentError(EncodersError, ValueError):
    """An argument, option or setting has a value that cannot be used (message names it and what is allowed)."""


class OutputPathError(EncodersError, ValueError):
    """An output path cannot be written (a file where a folder is needed, or no write permission)."""


class ChallengeDataError(EncodersError, ValueError):
    """The challenge data on disk is missing or inconsistent (message names file, expected and got)."""


class SubmissionError(EncodersError, ValueError):
    """Predictions do not match what the challenge expects (message lists every problem)."""


class MissingFeaturesError(EncodersError, LookupError):
    """The store lacks features for some images a combination needs (message says how to extract them)."""


class ResultsError(EncodersError, ValueError):
    """A results file is missing or unreadable."""


class UnknownNameError(EncodersError, KeyError):
    """A model, ROI or subject asked for is not among those known (message lists them)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def check_output_folder(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a folder that exists (created if needed) and can be written, checked before any long work.

    Raises `OutputPathError` naming ``option`` and the path when it is a file, or cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is a file; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"{option} {path}: cannot create the folder ({error.strerror})") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {path}: the folder is not writable; choose another or fix its permissions")
    return path
