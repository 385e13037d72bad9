"""The user-error family of the package and the one way a command line reports it.

Every failure that the user can fix (a bad argument, catalog, image, store path or recipe) is a
``FeatureStoreError``; each also keeps the builtin base it had before (``CatalogError`` is still a ``ValueError``),
so existing ``except ValueError`` code keeps working. Anything else escaping a command is a bug and keeps its
traceback. This module imports nothing heavy, so a command line can catch these errors without loading torch.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

from nsd.layout import LayoutError

__all__ = [
    "DEBUG_ENV",
    "OS_USER_ERRORS",
    "USER_ERRORS",
    "FeatureStoreError",
    "InvalidParameterError",
    "MissingEntryError",
    "check_type",
    "run_command",
]

DEBUG_ENV = "NSD_FEATURESTORE_DEBUG"


class FeatureStoreError(Exception):
    """Base of every user-facing failure of the package: the message says what is wrong and what to do."""


class MissingEntryError(FeatureStoreError, KeyError):
    """A named thing (backbone group, layer) is not where it was looked up; the message lists what exists."""

    def __str__(self) -> str:
        # KeyError repr-quotes its message; this one is a sentence for people
        return str(self.args[0]) if self.args else ""


class InvalidParameterError(FeatureStoreError, ValueError, TypeError):
    """A parameter has the wrong type or value; the message names the parameter, what it expects and what it got.

    Both a ValueError and a TypeError, as in scikit-learn, so either ``except`` clause catches it.
    """


def check_type(name: str, value: object, expected: type | tuple[type, ...], what: str) -> None:
    """Raise InvalidParameterError unless ``value`` is an instance of ``expected`` (``what`` describes it in words)."""
    if not isinstance(value, expected):
        raise InvalidParameterError(f"{name} must be {what}; got {type(value).__name__} {value!r}")


# OSErrors that mean "this path is not what you said": the user fixes them, so they print one line too
OS_USER_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
# a name that breaks the data layout (nsd.layout.LayoutError, e.g. a bad image file name) is the user's to fix too
USER_ERRORS: tuple[type[BaseException], ...] = (FeatureStoreError, LayoutError, *OS_USER_ERRORS)


def run_command(
    prog: str,
    user_errors: tuple[type[BaseException], ...],
    command: Callable[[], object],
    *,
    debug: bool = False,
    interrupted: str = "interrupted",
) -> int:
    """Run ``command()`` as a command line's body and return its exit status.

    The command's own status when it returns an int (else 0); 1 after printing ``<prog>: error: <message>`` (one
    line) to stderr for an instance of ``user_errors``; 130 after printing ``<prog>: <interrupted>`` for Ctrl-C. Any
    other exception propagates with its traceback: it is a bug. Warnings print as one line ``<prog>: warning: ...``.
    With ``debug`` (or the environment variable ``NSD_FEATURESTORE_DEBUG=1``) user errors and Ctrl-C propagate too,
    traceback included, and warnings keep Python's format (file and line).
    """
    debug = debug or os.environ.get(DEBUG_ENV) == "1"
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = lambda message, category, *_, **__: print(
                    f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr
                )
            status = command()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except user_errors as error:
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0
