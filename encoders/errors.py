"""The user errors of ``encoders``: one base class, so callers and the CLI catch every user-facing failure at once.

Each subclass keeps the builtin it used to be (``ValueError``, ``LookupError``) so older ``except`` clauses still
work. Messages name the file or key, what was expected and what was found.
"""

from __future__ import annotations


class EncodersError(Exception):
    """Base of every user-facing failure of ``encoders`` (bad data, bad arguments, missing inputs)."""


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
