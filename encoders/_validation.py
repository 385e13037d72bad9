"""Checks shared by the scikit-learn style estimators: declarative parameter constraints (scikit-learn's
``_parameter_constraints`` idea, on public APIs only) and input checks that leave lazy arrays (dask, zarr, xarray)
unread.

A constraint is an object with ``is_satisfied_by(value)`` and a ``str`` saying what it allows; ``None`` in a
constraint list allows None. :func:`check_params` runs at the top of ``fit``; its error names the parameter, the
class, the allowed values and the value received.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.utils.validation import validate_data


@dataclass(frozen=True)
class Options:
    """One of a fixed set of strings."""

    values: frozenset[str]

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def __str__(self) -> str:
        return f"one of {sorted(self.values)}"


@dataclass(frozen=True)
class Integers:
    """An int (not a bool) of at least ``low``."""

    low: int

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_)) and value >= self.low

    def __str__(self) -> str:
        return f"an int >= {self.low}"


@dataclass(frozen=True)
class Satisfies:
    """Any value passing ``test``, described by ``description``."""

    test: Callable[[Any], bool]
    description: str

    def is_satisfied_by(self, value: Any) -> bool:
        return self.test(value)

    def __str__(self) -> str:
        return self.description


BOOLEAN = Satisfies(lambda value: isinstance(value, (bool, np.bool_)), "a bool")
ARRAY_LIKE = Satisfies(
    lambda value: isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str), "a sequence or ndarray"
)
SPLITS = Satisfies(
    lambda value: not isinstance(value, str) and (hasattr(value, "split") or isinstance(value, Iterable)),
    "a splitter with split() or an iterable of (train, val) index pairs",
)


def check_params(estimator: Any, constraints: Mapping[str, Sequence[Any]]) -> None:
    """Raise ``ValueError`` for the first parameter of ``estimator`` that satisfies none of its constraints."""
    for name, allowed in constraints.items():
        value = getattr(estimator, name)
        if any(value is None if rule is None else rule.is_satisfied_by(value) for rule in allowed):
            continue
        described = [str(rule) for rule in allowed]
        expected = ", ".join(described[:-1]) + " or " + described[-1] if len(described) > 1 else described[0]
        raise ValueError(f"The {name!r} parameter of {type(estimator).__name__} must be {expected}; got {value!r}")


def _is_lazy(data: Any) -> bool:
    """Whether ``data`` is an array read block by block (dask, zarr, h5py, ...) rather than held in memory."""
    return not isinstance(data, np.ndarray) and all(hasattr(data, name) for name in ("shape", "dtype", "__getitem__"))


def _check_lazy(estimator: Any, data: Any, min_samples: int) -> None:
    """Shape and dtype of an unread array, with scikit-learn's messages (its values are checked as they are read)."""
    name = type(estimator).__name__
    shape = tuple(data.shape)
    if len(shape) != 2:
        raise ValueError(
            f"Expected a 2D array, got shape {shape} instead; reshape your data to (n_samples, n_features)"
        )
    kind = np.dtype(data.dtype).kind
    if kind == "c":
        raise ValueError(f"Complex data not supported; {name} got X of dtype {data.dtype}")
    if kind not in "biuf":
        raise ValueError(f"{name} needs real numeric X; got dtype {data.dtype}")
    if shape[0] < min_samples:
        raise ValueError(
            f"Found array with {shape[0]} sample(s) (shape={shape}) while a minimum of {min_samples} "
            f"is required by {name}."
        )
    if shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 is required by {name}.")


def check_features(
    estimator: Any, X: Any, *, reset: bool, stream: bool = False, min_samples: int = 1, finite: bool = False
) -> Any:
    """``X`` checked as an (n_samples, n_features) matrix; on ``reset`` (in ``fit``) its width is recorded as
    ``n_features_in_`` (and column names as ``feature_names_in_``), otherwise it must match them.

    In-memory input goes through :func:`sklearn.utils.validation.validate_data` (lists and frames become arrays,
    object dtype is cast to float, complex and sparse input are refused; NaN and infinities only if ``finite``, as
    the solvers check them in the same pass that reads the data). With ``stream``, an unread array (dask, zarr,
    h5py or an xarray.DataArray of one) is returned unread: only its shape and dtype are checked here.
    """
    if sparse.issparse(X):
        raise TypeError(f"{type(estimator).__name__} does not accept sparse input; convert X with X.toarray()")
    if not (stream and _is_lazy(X.data if hasattr(X, "dims") else X)):
        return validate_data(
            estimator, X, reset=reset, dtype="numeric", ensure_all_finite=finite, ensure_min_samples=min_samples
        )
    _check_lazy(estimator, X.data if hasattr(X, "dims") else X, min_samples)
    n_features = X.shape[1]
    if reset:
        estimator.n_features_in_ = n_features
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    return X


def check_targets(estimator: Any, Y: Any, x_shape: tuple[int, ...]) -> np.ndarray:
    """Targets as a 1-D or 2-D real array with as many rows as X (of shape ``x_shape``); object dtype is cast to
    float, complex and sparse targets are refused. Their values are checked by the solvers, in the pass that reads
    them."""
    if Y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None")
    if sparse.issparse(Y):
        raise TypeError("Y must be dense; convert a sparse Y with Y.toarray()")
    Y = np.asarray(Y)
    if Y.dtype.kind == "O":
        Y = Y.astype(np.float64)
    if Y.dtype.kind not in "biuf":
        raise ValueError(f"Y must be real numeric; got dtype {Y.dtype}")
    if Y.ndim not in (1, 2):
        raise ValueError(f"Y must have shape (n_samples,) or (n_samples, n_targets); got {Y.shape}")
    if Y.shape[0] != x_shape[0]:
        raise ValueError(f"X has {x_shape[0]} rows (shape {tuple(x_shape)}) but Y has {Y.shape[0]} (shape {Y.shape})")
    return Y
