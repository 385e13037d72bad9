"""Ridge and kernel ridge for every target and every alpha from one decomposition per fold.

Per fold: one thin SVD of the centred training features (or one eigendecomposition of the centred training kernel,
K = U diag(lam) U^T); the training targets are projected once, U^T Y; every alpha is then a diagonal rescaling,
``prediction = my + M diag(1 / (lam + alpha)) U^T Y`` with M the validation rows' cross-kernel times U. Alphas are
picked per target by k-fold CV, by exact leave-one-out (hat-matrix diagonal in closed form) or by generalised
cross-validation (GCV: one decomposition, O(r t) per alpha), then every target is refit on all rows with its alpha,
targets grouped by alpha. Targets are processed in batches to bound memory.

One module for the primal and the kernel solvers (about 480 lines): they share the fold loop, the alpha selection
and the refit, and differ only in the decomposition, so splitting them would spread one algorithm over files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import Any, Literal

import numpy as np

from ..backend import get_backend
from ..scoring import pearson_r

SCORINGS = ("neg_mse", "r")
_BATCH_BYTES = 2**26
CLOSED_FORM_CV = ("loo", "gcv")  # alpha selection without folds: exact leave-one-out, generalised CV
Folds = Literal["loo", "gcv"] | Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RidgeSolution:
    """Result of a cross-validated ridge solver (numpy arrays), the coefficients in factored form.

    basis: (n_features, rank) primal or (n_samples, rank) dual; weights: (rank, n_targets); intercept:
    (n_targets,); best_alphas: (n_targets,); cv_scores: (n_alphas, n_targets), mean validation score.
    Predicting m new rows as ``(new @ basis) @ weights`` costs m rank (width + t) instead of forming ``coef``
    (width x rank x t, the largest product of a kernel fit with many targets).
    """

    basis: np.ndarray
    weights: np.ndarray
    intercept: np.ndarray
    best_alphas: np.ndarray
    cv_scores: np.ndarray

    @cached_property
    def coef(self) -> np.ndarray:
        """``basis @ weights``: (n_features, n_targets) primal weights or (n_samples, n_targets) dual coefficients."""
        return self.basis @ self.weights


@dataclass(frozen=True)
class _Spectrum:
    """Centred training kernel ``left @ diag(eigvals) @ left.T`` (eigvals >= 0); ``ranked`` marks the eigenvalues
    above the rank cut (the only ones alpha = 0 inverts); ``right`` holds the primal right singular vectors (None
    for a kernel)."""

    left: Any
    eigvals: Any
    ranked: Any
    right: Any | None

    def inverse(self, alpha: float, xp: ModuleType) -> Any:
        """``1 / (eigvals + alpha)``; for alpha = 0 the pseudo-inverse (0 below the rank cut)."""
        if alpha > 0:
            return 1.0 / (self.eigvals + alpha)
        return xp.where(self.ranked, 1.0 / xp.where(self.ranked, self.eigvals, 1.0), 0.0)


def check_alphas(alphas: Any) -> np.ndarray:
    """Alphas as a 1-D float array; each must be finite and >= 0 (0 is ordinary least squares)."""
    values = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"alphas must be a non-empty 1-D sequence; got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"alphas must be finite and >= 0; got {values.tolist()}")
    return values


def check_folds(cv: Any, n_samples: int) -> Folds:
    """``"loo"``, ``"gcv"`` or a list of (train, val) integer index arrays checked against ``n_samples`` rows."""
    if isinstance(cv, str):
        if cv not in CLOSED_FORM_CV:
            raise ValueError(f"Unknown cv={cv!r}; expected 'loo', 'gcv', an int or (train, val) index pairs")
        return cv
    folds = []
    for i, pair in enumerate(cv):
        train, val = (np.asarray(part) for part in pair)
        for label, idx, least in (("train", train, 2), ("validation", val, 1)):
            if idx.ndim != 1 or idx.size < least or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(
                    f"fold {i}: {label} indices must be a 1-D integer array of at least {least} "
                    f"rows; got shape {idx.shape}, dtype {idx.dtype}"
                )
            if idx.min() < 0 or idx.max() >= n_samples:
                raise ValueError(
                    f"fold {i}: {label} indices must lie in [0, {n_samples}); got [{idx.min()}, {idx.max()}]"
                )
        folds.append((train, val))
    if not folds:
        raise ValueError("cv gave no folds")
    return folds


def _target_batches(n_targets: int, n_rows: int, batch_size: int | None, itemsize: int) -> Iterator[slice]:
    """Consecutive target slices; by default 64 MiB of an (n_rows, batch) block each, whatever the dtype (each
    batch holds a few blocks of that size: the targets, their projection and the weights)."""
    batch_size = batch_size or max(1, _BATCH_BYTES // max(n_rows * itemsize, 1))
    for start in range(0, n_targets, batch_size):
        yield slice(start, min(start + batch_size, n_targets))


def _centred_batches(
    y: np.ndarray, rows: Any, fit_intercept: bool, xp: ModuleType, dtype: str, batch_size: int | None
) -> Iterator[tuple[slice, Any, Any]]:
    """``(cols, block, offset)`` over target batches of ``y[rows]``: the block on the backend, centred if
    ``fit_intercept`` (offset = column means, else zeros). Every block is copied and centred in one scratch buffer,
    which the caller may overwrite until the next batch: a fresh block of tens of MB per batch would be
    page-faulted in anew each time, which costs more than the arithmetic on it."""
    n_rows = len(range(y.shape[0])[rows]) if isinstance(rows, slice) else len(rows)
    scratch = None
    for cols in _target_batches(y.shape[1], n_rows, batch_size, np.dtype(dtype).itemsize):
        width = cols.stop - cols.start
        if scratch is None:
            scratch = xp.zeros((n_rows, width), dtype)
        block = xp.copyto(scratch[:, :width], y[rows, cols])
        offset = xp.mean(block, axis=0) if fit_intercept else xp.zeros(width, dtype)
        yield cols, xp.subtract(block, offset, out=block), offset


def _svd_spectrum(x: Any, xp: ModuleType) -> _Spectrum:
    """Thin SVD of centred features; rank cut at ``max(n, p) * eps * s_max`` (as numpy's matrix_rank)."""
    left, singular, right_t = xp.svd(x)
    ranked = singular > xp.max(singular) * max(x.shape) * xp.eps(x)
    return _Spectrum(left, singular**2, ranked, right_t.T)


def _kernel_spectrum(kernel: Any, xp: ModuleType, overwrite: bool = False) -> _Spectrum:
    """Eigendecomposition of a centred kernel (round-off negatives set to 0); rank cut at ``n * eps * lam_max``.
    ``overwrite`` lets the eigenvectors take the kernel's memory."""
    eigvals, eigvecs = xp.eigh(kernel, overwrite)
    eigvals = xp.clip(eigvals, 0.0, None)
    ranked = eigvals > xp.max(eigvals) * kernel.shape[0] * xp.eps(kernel)
    return _Spectrum(eigvecs, eigvals, ranked, None)


def _centre_kernel(
    train_kernel: Any, cross_kernel: Any | None, xp: ModuleType, in_place: bool = False
) -> tuple[Any, Any | None]:
    """Kernels of the features centred on the training mean: ``(Xtr - m)(Xtr - m)^T`` and ``(Xva - m)(Xtr - m)^T``
    (the first written over ``train_kernel`` if ``in_place``)."""
    col = xp.mean(train_kernel, axis=0)
    grand = xp.mean(col)
    if in_place:
        centred = train_kernel
        centred -= col[:, None]
        centred -= col[None, :]
        centred += grand
    else:
        centred = train_kernel - col[:, None] - col[None, :] + grand
    if cross_kernel is None:
        return centred, None
    return centred, cross_kernel - xp.mean(cross_kernel, axis=1)[:, None] - col[None, :] + grand


def _primal_fold(
    x: Any, train: np.ndarray, val: np.ndarray, fit_intercept: bool, xp: ModuleType
) -> tuple[_Spectrum, Any]:
    """Spectrum of the training rows and the validation design ``(Xva - m) V diag(s)``."""
    x_train, x_val = xp.take(x, train, 0), xp.take(x, val, 0)
    if fit_intercept:
        mean = xp.mean(x_train, axis=0)
        x_train, x_val = x_train - mean, x_val - mean
    spectrum = _svd_spectrum(x_train, xp)
    return spectrum, xp.matmul(x_val, spectrum.right) * xp.sqrt(spectrum.eigvals)


def _kernel_fold(
    kernel: Any, train: np.ndarray, val: np.ndarray, fit_intercept: bool, xp: ModuleType
) -> tuple[_Spectrum, Any]:
    """Spectrum of the training kernel and the validation design ``K_val,train U`` (both centred if asked)."""
    rows_train = xp.take(kernel, train, 0)
    k_train, k_val = xp.take(rows_train, train, 1), xp.take(xp.take(kernel, val, 0), train, 1)
    if fit_intercept:
        k_train, k_val = _centre_kernel(k_train, k_val, xp)
    spectrum = _kernel_spectrum(k_train, xp)
    return spectrum, xp.matmul(k_val, spectrum.left)


def _score(y_true: Any, y_pred: Any, scoring: str, xp: ModuleType) -> np.ndarray:
    """Per-target validation score: negative mean squared error or Pearson r."""
    if scoring == "neg_mse":
        residual = y_true - y_pred
        return xp.to_numpy(-xp.mean(residual * residual, axis=0))
    return xp.to_numpy(pearson_r(y_true, y_pred, backend=xp))


def _kfold_scores(
    fold: Callable[[np.ndarray, np.ndarray], tuple[_Spectrum, Any]],
    y: np.ndarray,
    alphas: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    fit_intercept: bool,
    scoring: str,
    xp: ModuleType,
    dtype: str,
    batch_size: int | None,
) -> np.ndarray:
    """Mean over folds of the validation score, shape (n_alphas, n_targets)."""
    scores = np.zeros((alphas.size, y.shape[1]))
    for train, val in folds:
        spectrum, design = fold(train, val)
        for cols, y_train, offset in _centred_batches(y, train, fit_intercept, xp, dtype, batch_size):
            y_val = xp.asarray(y[val, cols], dtype)
            projected = xp.matmul(spectrum.left.T, y_train)
            for i, alpha in enumerate(alphas):
                prediction = offset + xp.matmul(design, projected * spectrum.inverse(alpha, xp)[:, None])
                scores[i, cols] += _score(y_val, prediction, scoring, xp)
    return scores / len(folds)


def _loo_scores(
    spectrum: _Spectrum,
    y: np.ndarray,
    alphas: np.ndarray,
    *,
    fit_intercept: bool,
    scoring: str,
    xp: ModuleType,
    dtype: str,
    batch_size: int | None,
) -> np.ndarray:
    """Exact leave-one-out score per (alpha, target): residual / (1 - hat diagonal), the intercept adding 1/n to
    the hat diagonal; NaN where a row has leverage 1 (e.g. alpha=0 with n <= p)."""
    n = y.shape[0]
    squared_left = spectrum.left * spectrum.left
    scores = np.empty((alphas.size, y.shape[1]))
    for cols, y_centred, offset in _centred_batches(y, slice(None), fit_intercept, xp, dtype, batch_size):
        projected = xp.matmul(spectrum.left.T, y_centred)
        for i, alpha in enumerate(alphas):
            shrink = spectrum.eigvals * spectrum.inverse(alpha, xp)
            residual = y_centred - xp.matmul(spectrum.left, projected * shrink[:, None])
            slack = 1.0 - xp.matmul(squared_left, shrink) - (1.0 / n if fit_intercept else 0.0)
            valid = slack > 0
            loo_error = residual / xp.where(valid, slack, 1.0)[:, None]
            loo_error = xp.where(valid[:, None], loo_error, float("nan"))
            y_true = y_centred + offset
            scores[i, cols] = _score(y_true, y_true - loo_error, scoring, xp)
    return scores


def _select_alphas(scores: np.ndarray, alpha_per_target: bool) -> np.ndarray:
    """Index of the best alpha per target (NaN scores never win; ties go to the first alpha, as in sklearn)."""
    filled = np.where(np.isnan(scores), -np.inf, scores)
    if alpha_per_target:
        return np.argmax(filled, axis=0)
    counts = np.sum(~np.isnan(scores), axis=1)
    shared = np.where(counts > 0, np.nansum(scores, axis=1) / np.maximum(counts, 1), -np.inf)
    return np.full(scores.shape[1], np.argmax(shared))


def _weights_block(
    spectrum: _Spectrum, projected: Any, alphas: np.ndarray, best: np.ndarray, xp: ModuleType, dtype: str, scratch: Any
) -> np.ndarray:
    """Weights of one target batch from its projection ``Z = U^T Y`` (overwritten), each target with alpha
    ``alphas[best]``:
    ``diag(s / (s^2 + a)) Z`` on the primal basis V, ``diag(1 / (lam + a)) Z`` on the dual basis U.
    ``scratch`` (a free block at least the shape of ``Z``) holds each target's scale column."""
    scales = xp.asarray(np.stack([xp.to_numpy(spectrum.inverse(alpha, xp)) for alpha in alphas], axis=1), dtype)
    if spectrum.right is not None:
        scales = scales * xp.sqrt(spectrum.eigvals)[:, None]
    per_target = xp.take(scales, best, 1, out=scratch[: projected.shape[0]])
    return xp.to_numpy(xp.multiply(projected, per_target, out=projected))


def _basis(spectrum: _Spectrum, xp: ModuleType) -> np.ndarray:
    """The basis the weights multiply: right singular vectors (primal) or kernel eigenvectors (dual)."""
    return xp.to_numpy(spectrum.left if spectrum.right is None else spectrum.right)


def _refit(
    spectrum: _Spectrum,
    y: np.ndarray,
    alphas: np.ndarray,
    best: np.ndarray,
    *,
    fit_intercept: bool,
    xp: ModuleType,
    dtype: str,
    batch_size: int | None,
) -> np.ndarray:
    """Weights on all rows, each target with its alpha (see :func:`_weights_block`)."""
    weights = np.empty((spectrum.eigvals.shape[0], y.shape[1]), dtype=dtype)
    for cols, y_centred, _ in _centred_batches(y, slice(None), fit_intercept, xp, dtype, batch_size):
        projected = xp.matmul(spectrum.left.T, y_centred)
        weights[:, cols] = _weights_block(spectrum, projected, alphas, best[cols], xp, dtype, scratch=y_centred)
    return weights


def _gcv_fit(
    spectrum: _Spectrum,
    y: np.ndarray,
    alphas: np.ndarray,
    *,
    fit_intercept: bool,
    alpha_per_target: bool,
    xp: ModuleType,
    dtype: str,
    batch_size: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generalised cross-validation (Golub, Heath & Wahba 1979): the score of alpha is ``-n RSS / (n - df)^2``,
    the leave-one-out error with every leverage replaced by the mean leverage ``df / n``. From ``Z = U^T Y``:
    ``RSS = sum_j (1 - lam_j g_j)^2 Z_j^2 + (|Y|^2 - |Z|^2)`` and ``df = sum_j lam_j g_j (+ 1 for the intercept)``
    with ``g_j = 1 / (lam_j + alpha)``, so each alpha costs O(r t) instead of the O(n r t) of exact LOO, and with
    an alpha per target the same ``Z`` also gives the weights (one ``U^T Y`` product in all). NaN where
    ``df >= n`` (e.g. alpha = 0 with n <= p)."""
    n = y.shape[0]
    shrinks = [spectrum.eigvals * spectrum.inverse(alpha, xp) for alpha in alphas]
    slack = np.array([n - float(xp.to_numpy(xp.sum(shrink))) - (1.0 if fit_intercept else 0.0) for shrink in shrinks])
    scores = np.empty((alphas.size, y.shape[1]))
    weights = np.empty((spectrum.eigvals.shape[0], y.shape[1]), dtype=dtype) if alpha_per_target else None
    for cols, y_centred, _ in _centred_batches(y, slice(None), fit_intercept, xp, dtype, batch_size):
        projected = xp.matmul(spectrum.left.T, y_centred)
        # from here the scratch block y_centred is free: it holds Y^2, then Z^2, then the weights' scales
        y_total = xp.sum(xp.multiply(y_centred, y_centred, out=y_centred), axis=0)
        squared = xp.multiply(projected, projected, out=y_centred[: projected.shape[0]])
        outside = np.clip(xp.to_numpy(y_total - xp.sum(squared, axis=0)), 0.0, None)
        for i, shrink in enumerate(shrinks):
            keep = 1.0 - shrink
            rss = xp.to_numpy(xp.matmul(keep * keep, squared)) + outside
            scores[i, cols] = -n * rss / slack[i] ** 2 if slack[i] > 0 else np.nan
        if alpha_per_target:
            best = _select_alphas(scores[:, cols], True)
            weights[:, cols] = _weights_block(spectrum, projected, alphas, best, xp, dtype, scratch=y_centred)
    best = _select_alphas(scores, alpha_per_target)
    if not alpha_per_target:
        weights = _refit(
            spectrum, y, alphas, best, fit_intercept=fit_intercept, xp=xp, dtype=dtype, batch_size=batch_size
        )
    return scores, best, weights


def _all_finite(array: np.ndarray) -> bool:
    """Whether every value is finite. As in scikit-learn, one sum first (O(1) memory: NaN and infinities
    propagate into it); the element-wise test runs only when the sum is not finite, which an overflow can also
    cause."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array)):
            return True
    return bool(np.isfinite(array).all())


def _check_problem(x: Any, y: Any, scoring: str, x_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (2-D) and ``y`` (2-D) as numpy arrays with matching rows and finite values; a known scoring."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"{x_name} and Y must be 2-D; got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x_name} has {x.shape[0]} rows (shape {x.shape}) but Y has {y.shape[0]} (shape {y.shape})")
    for name, array in ((x_name, x), ("Y", y)):
        if not _all_finite(array):
            raise ValueError(f"{name} contains {np.size(array) - np.isfinite(array).sum()} NaN or infinite values")
    if scoring not in SCORINGS:
        raise ValueError(f"Unknown scoring={scoring!r}; expected one of {list(SCORINGS)}")
    return x, y


def _intercept(
    y: np.ndarray, row_mean: np.ndarray, basis: np.ndarray, weights: np.ndarray, fit_intercept: bool, dtype: str
) -> np.ndarray:
    """``mean(Y) - mean_row @ coef``, with ``coef = basis @ weights`` never formed; zeros without intercept. The
    mean is taken in ``dtype``, as the solvers centre Y (a float16 mean would be rounded to float16)."""
    if not fit_intercept:
        return np.zeros(y.shape[1], dtype=dtype)
    return (y.mean(axis=0, dtype=dtype) - (row_mean @ basis) @ weights).astype(dtype)


def _cross_validate(
    fold: Callable,
    full_spectrum: Callable[[], _Spectrum],
    y: np.ndarray,
    alphas: np.ndarray,
    cv: Folds,
    *,
    fit_intercept: bool,
    scoring: str,
    alpha_per_target: bool,
    xp: ModuleType,
    dtype: str,
    batch_size: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CV scores, chosen alpha indices, and the basis and weights of the refit on all rows (shared by the primal
    and kernel solvers)."""
    options = dict(fit_intercept=fit_intercept, xp=xp, dtype=dtype, batch_size=batch_size)
    if cv == "gcv":
        if scoring != "neg_mse":
            raise ValueError(
                f"cv='gcv' estimates the mean squared error and needs scoring='neg_mse'; got scoring={scoring!r}"
            )
        spectrum = full_spectrum()
        scores, best, weights = _gcv_fit(spectrum, y, alphas, alpha_per_target=alpha_per_target, **options)
        return scores, best, _basis(spectrum, xp), weights
    if cv == "loo":
        spectrum = full_spectrum()
        scores = _loo_scores(spectrum, y, alphas, scoring=scoring, **options)
    else:
        scores = _kfold_scores(fold, y, alphas, cv, scoring=scoring, **options)
        spectrum = full_spectrum()
    best = _select_alphas(scores, alpha_per_target)
    return scores, best, _basis(spectrum, xp), _refit(spectrum, y, alphas, best, **options)


def solve_ridge_cv_svd(
    X: Any,
    Y: Any,
    alphas: Any,
    cv: Folds = "loo",
    *,
    fit_intercept: bool = True,
    scoring: str = "neg_mse",
    alpha_per_target: bool = True,
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
    batch_size: int | None = None,
) -> RidgeSolution:
    """Primal ridge with alpha chosen by CV, from one thin SVD of the centred features per fold.

    Costs, with r = min(n_train, p): per fold an SVD (n_train p r), the validation design (n_val p r), the
    projection U^T Y (n_train r t) and per alpha one (n_val r t) product; refit: one SVD plus (n + p) r t.
    Leave-one-out needs only the full-data SVD and (2 n r t) per alpha; GCV the full-data SVD, one n r t
    projection and O(r t) per alpha.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    Y : array-like of shape (n_samples, n_targets)
    alphas : array-like of shape (n_alphas,)
        Penalties >= 0; 0 gives least squares (minimum-norm through the SVD rank cut).
    cv : "loo", "gcv" or sequence of (train_idx, val_idx)
        Exact leave-one-out, generalised cross-validation (needs ``scoring="neg_mse"``) or explicit folds.
    fit_intercept : bool, default=True
        Centre on the training rows of each fold; the intercept is not penalised.
    scoring : {"neg_mse", "r"}, default="neg_mse"
        Validation score maximised per target: negative mean squared error or Pearson r.
    alpha_per_target : bool, default=True
        One alpha per target, else one alpha maximising the mean score over targets.
    backend : str or module, default="auto"
    dtype : {"float64", "float32"}, default="float64"
    batch_size : int or None, default=None
        Targets per batch; None bounds the (n_samples, batch) block of targets to 64 MiB.

    Returns
    -------
    RidgeSolution
        ``coef`` of shape (n_features, n_targets).
    """
    X, Y = _check_problem(X, Y, scoring, "X")
    alphas, cv, xp = check_alphas(alphas), check_folds(cv, X.shape[0]), get_backend(backend)
    x = xp.asarray(X, dtype)
    x_mean = xp.mean(x, axis=0) if fit_intercept else xp.zeros(x.shape[1], dtype)

    def fold(train: np.ndarray, val: np.ndarray) -> tuple[_Spectrum, Any]:
        return _primal_fold(x, train, val, fit_intercept, xp)

    scores, best, basis, weights = _cross_validate(
        fold,
        lambda: _svd_spectrum(x - x_mean, xp),
        Y,
        alphas,
        cv,
        fit_intercept=fit_intercept,
        scoring=scoring,
        alpha_per_target=alpha_per_target,
        xp=xp,
        dtype=dtype,
        batch_size=batch_size,
    )
    return RidgeSolution(
        basis, weights, _intercept(Y, xp.to_numpy(x_mean), basis, weights, fit_intercept, dtype), alphas[best], scores
    )


def solve_kernel_ridge_cv_eigh(
    K: Any,
    Y: Any,
    alphas: Any,
    cv: Folds = "loo",
    *,
    fit_intercept: bool = True,
    scoring: str = "neg_mse",
    alpha_per_target: bool = True,
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
    batch_size: int | None = None,
    overwrite_k: bool = False,
) -> RidgeSolution:
    """Kernel (dual) ridge with alpha chosen by CV, from one eigendecomposition of the centred training kernel per
    fold.

    Predictions for new rows are ``K_new @ coef + intercept`` with ``K_new`` the kernel between the new rows and
    the training rows in the same convention as ``K`` (the dual coefficients sum to zero over rows, so a constant
    shift of the feature space cancels). Costs: per fold an eigh (n_train^3), the validation design
    (n_val n_train^2), U^T Y (n_train^2 t) and per alpha (n_val n_train t); refit one eigh plus 2 n^2 t.

    Parameters
    ----------
    K : array-like of shape (n_samples, n_samples)
        Symmetric positive semi-definite kernel of the training rows (e.g. the Gram matrix X X^T).
    Y, alphas, cv, fit_intercept, scoring, alpha_per_target, backend, dtype, batch_size
        As in :func:`solve_ridge_cv_svd`.
    overwrite_k : bool, default=False
        Centre and eigendecompose ``K`` in its own memory (as scipy's ``overwrite_a``): ``K`` is destroyed, and a
        caller that computed it for this call saves two n x n arrays (the centred copy and the eigenvectors).

    Returns
    -------
    RidgeSolution
        ``coef`` (``basis @ weights``) holds the dual coefficients, shape (n_samples, n_targets).
    """
    K, Y = _check_problem(K, Y, scoring, "K")
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square (n_samples, n_samples); got shape {K.shape}")
    alphas, cv, xp = check_alphas(alphas), check_folds(cv, K.shape[0]), get_backend(backend)
    kernel = xp.asarray(K, dtype)
    row_mean = K.mean(axis=0, dtype=dtype)  # before K may be overwritten

    def fold(train: np.ndarray, val: np.ndarray) -> tuple[_Spectrum, Any]:
        return _kernel_fold(kernel, train, val, fit_intercept, xp)

    def full_spectrum() -> _Spectrum:  # after the folds, which read the kernel
        centred = _centre_kernel(kernel, None, xp, in_place=overwrite_k)[0] if fit_intercept else kernel
        return _kernel_spectrum(centred, xp, overwrite=overwrite_k or centred is not kernel)  # a copy is ours too

    scores, best, basis, weights = _cross_validate(
        fold,
        full_spectrum,
        Y,
        alphas,
        cv,
        fit_intercept=fit_intercept,
        scoring=scoring,
        alpha_per_target=alpha_per_target,
        xp=xp,
        dtype=dtype,
        batch_size=batch_size,
    )
    return RidgeSolution(
        basis, weights, _intercept(Y, row_mean, basis, weights, fit_intercept, dtype), alphas[best], scores
    )


def solve_ridge_cv_gram(
    X: Any,
    Y: Any,
    alphas: Any,
    cv: Folds = "loo",
    *,
    fit_intercept: bool = True,
    scoring: str = "neg_mse",
    alpha_per_target: bool = True,
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
    batch_size: int | None = None,
) -> RidgeSolution:
    """Primal ridge through the n x n Gram matrix (cheaper than the SVD when n_features >> n_samples): the kernel
    solver on ``(X - m)(X - m)^T``, then ``coef = (X - m)^T dual``. Parameters as in :func:`solve_ridge_cv_svd`."""
    X, Y = _check_problem(X, Y, scoring, "X")
    xp = get_backend(backend)
    x = xp.asarray(X, dtype)
    x_mean = xp.mean(x, axis=0) if fit_intercept else xp.zeros(x.shape[1], dtype)
    x = x - x_mean
    kernel = xp.to_numpy(xp.matmul(x, x.T))
    solution = solve_kernel_ridge_cv_eigh(
        kernel,
        Y,
        alphas,
        cv,
        fit_intercept=fit_intercept,
        scoring=scoring,
        alpha_per_target=alpha_per_target,
        backend=xp,
        dtype=dtype,
        batch_size=batch_size,
        overwrite_k=True,
    )
    basis = xp.to_numpy(xp.matmul(x.T, xp.asarray(solution.basis, dtype)))
    intercept = _intercept(Y, xp.to_numpy(x_mean), basis, solution.weights, fit_intercept, dtype)
    return RidgeSolution(basis, solution.weights, intercept, solution.best_alphas, solution.cv_scores)


RIDGE_SOLVERS: dict[str, Callable[..., RidgeSolution]] = {
    "svd": solve_ridge_cv_svd,
    "gram": solve_ridge_cv_gram,
}
KERNEL_RIDGE_SOLVERS: dict[str, Callable[..., RidgeSolution]] = {
    "eigh": solve_kernel_ridge_cv_eigh,
}
