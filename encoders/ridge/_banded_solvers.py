"""Banded ridge (one penalty per feature space and target) by a grid search over the simplex of penalty ratios.

Banded ridge minimises ``|Y - sum_k X_k b_k|^2 + sum_k lambda_k |b_k|^2``. Writing ``lambda_k = alpha / w_k`` with
``w`` on the simplex (``w_k >= 0``, ``sum_k w_k = 1``) and ``b_k = sqrt(w_k) c_k`` turns it into plain ridge with
penalty ``alpha`` on the rescaled features ``[sqrt(w_1) X_1, ..., sqrt(w_m) X_m]`` (kernel form: on the kernel
``sum_k w_k K_k``). So each candidate ratio ``w`` costs one decomposition per fold, and every alpha is then the
diagonal rescaling of :mod:`._solvers`; a space with ``w_k = 0`` is left out (``lambda_k`` infinite). The best
(ratio, alpha) pair is chosen per target, and each target is refit on all rows with its pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from types import ModuleType
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..backend import get_backend
from ._solvers import (
    Folds,
    _all_finite,
    _centre_kernel,
    _check_problem,
    _gcv_fit,
    _kernel_fold,
    _kernel_spectrum,
    _kfold_scores,
    _loo_scores,
    _refit,
    _select_alphas,
    _Spectrum,
    _svd_spectrum,
    check_alphas,
    check_folds,
)


@dataclass(frozen=True)
class BandedSolution:
    """Result of a banded ridge search (numpy arrays).

    ratios: (n_ratios, n_spaces) candidate weights; best_ratios: (n_spaces, n_targets) chosen weight of each space;
    best_alphas: (n_targets,); cv_scores: (n_ratios, n_alphas, n_targets) mean validation score; coef: primal
    weights (n_features, n_targets) in the original feature scale, or dual coefficients (n_samples, n_targets) of
    the kernel ``sum_k best_ratios[k] K_k``; intercept: (n_targets,).
    """

    ratios: np.ndarray
    best_ratios: np.ndarray
    best_alphas: np.ndarray
    cv_scores: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    @property
    def best_cv_scores(self) -> np.ndarray:
        """Validation score of each target's chosen (ratio, alpha) pair, shape (n_targets,)."""
        flat = self.cv_scores.reshape(-1, self.cv_scores.shape[-1])
        return np.nanmax(np.where(np.isnan(flat), -np.inf, flat), axis=0)

    @property
    def best_penalties(self) -> np.ndarray:
        """Per-space penalty ``alpha / w_k`` of each target, shape (n_spaces, n_targets); inf where ``w_k = 0``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            penalties = self.best_alphas[None, :] / self.best_ratios
        return np.where(self.best_ratios > 0, penalties, np.inf)


def simplex_grid(n_spaces: int, steps: int) -> np.ndarray:
    """Every point of the simplex whose weights are multiples of ``1 / steps``, shape (C(steps + m - 1, m - 1), m):
    for 2 spaces ``steps + 1`` ratios from (0, 1) to (1, 0), for 3 spaces ``(steps + 1)(steps + 2) / 2``."""
    if n_spaces < 1 or steps < 1:
        raise ValueError(f"simplex_grid needs n_spaces >= 1 and steps >= 1; got {n_spaces} and {steps}")
    # stars and bars: the positions of m - 1 bars among steps + m - 1 slots give the counts between them
    points = []
    for bars in combinations(range(steps + n_spaces - 1), n_spaces - 1):
        edges = (-1, *bars, steps + n_spaces - 1)
        points.append([edges[i + 1] - edges[i] - 1 for i in range(n_spaces)])
    return np.asarray(points, dtype=np.float64) / steps


def check_ratios(ratios: Any, n_spaces: int) -> np.ndarray:
    """Candidate ratios as an (n_ratios, n_spaces) array of rows on the simplex: an int is the resolution of
    :func:`simplex_grid`; an array has its rows (>= 0, not all 0) divided by their sums."""
    if isinstance(ratios, (int, np.integer)) and not isinstance(ratios, bool):
        if ratios < 1:
            raise ValueError(f"ratios={ratios}: an int is the simplex grid resolution and must be >= 1")
        return simplex_grid(n_spaces, int(ratios))
    values = np.asarray(ratios, dtype=np.float64)
    if values.ndim == 1 and n_spaces == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] != n_spaces or values.shape[0] == 0:
        raise ValueError(
            f"ratios must be an int or an array of shape (n_ratios, n_spaces={n_spaces}); got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values.sum(axis=1) <= 0):
        bad = int(np.flatnonzero(~np.isfinite(values).all(1) | (values < 0).any(1) | (values.sum(1) <= 0))[0])
        raise ValueError(f"ratios row {bad} must be finite, >= 0 and not all 0; got {values[bad].tolist()}")
    return values / values.sum(axis=1, keepdims=True)


def _covariance_spectrum(x: Any, xp: ModuleType) -> _Spectrum:
    """Spectrum of centred features from the eigendecomposition of the p x p matrix ``x^T x``, in float64 (the
    product squares the condition number): about 2 n p^2 flops of matrix products and one p x p symmetric
    eigensolver, against about 4 n p^2 + 8 p^3 for the thin SVD, so the cheaper choice when n >= p. Left vectors of
    eigenvalues below the rank cut are set to 0 (those directions carry no signal of x)."""
    dtype, wide = xp.dtype_name(x), xp.asarray(x, "float64")
    eigvals, right = xp.eigh(xp.matmul(wide.T, wide), True)
    eigvals = xp.clip(eigvals, 0.0, None)
    ranked = eigvals > xp.max(eigvals) * x.shape[1] * xp.eps(wide)
    inverse_root = xp.where(ranked, 1.0 / xp.sqrt(xp.where(ranked, eigvals, 1.0)), 0.0)
    left = xp.matmul(wide, right) * inverse_root
    return _Spectrum(xp.asarray(left, dtype), xp.asarray(eigvals, dtype), ranked, xp.asarray(right, dtype))


def _primal_spectrum(x: Any, xp: ModuleType) -> _Spectrum:
    """Spectrum of centred features: from ``x^T x`` when there are at least as many rows as columns, else the SVD."""
    return _covariance_spectrum(x, xp) if x.shape[0] >= x.shape[1] else _svd_spectrum(x, xp)


def _banded_primal_fold(
    x: Any, train: np.ndarray, val: np.ndarray, fit_intercept: bool, xp: ModuleType
) -> tuple[_Spectrum, Any]:
    """As ``_solvers._primal_fold`` (spectrum of the training rows, validation design ``(Xva - m) V diag(s)``),
    with the spectrum from :func:`_primal_spectrum`."""
    x_train, x_val = xp.take(x, train, 0), xp.take(x, val, 0)
    if fit_intercept:
        mean = xp.mean(x_train, axis=0)
        x_train, x_val = x_train - mean, x_val - mean
    spectrum = _primal_spectrum(x_train, xp)
    return spectrum, xp.matmul(x_val, spectrum.right) * xp.sqrt(spectrum.eigvals)


def _ratio_scores(
    spectrum: Callable[[], _Spectrum],
    fold: Callable[[np.ndarray, np.ndarray], tuple[_Spectrum, Any]],
    y: np.ndarray,
    alphas: np.ndarray,
    cv: Folds,
    options: dict,
    scoring: str,
) -> tuple[np.ndarray, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """CV scores (n_alphas, n_targets) of one ratio, and a function giving the basis and the weights of the refit
    on all rows for some targets and their alpha indices (reusing the scoring spectrum where CV had one)."""
    if cv == "gcv":
        full = spectrum()
        scores, _, weights = _gcv_fit(full, y, alphas, alpha_per_target=True, **options)
        return scores, lambda targets, best: (full, weights[:, targets])
    if cv == "loo":
        full = spectrum()
        scores = _loo_scores(full, y, alphas, scoring=scoring, **options)
    else:
        scores = _kfold_scores(fold, y, alphas, cv, scoring=scoring, **options)
        full = None

    def refit(targets: np.ndarray, best: np.ndarray) -> tuple[_Spectrum, np.ndarray]:
        nonlocal full
        full = full or spectrum()
        return full, _refit(full, np.ascontiguousarray(y[:, targets]), alphas, best, **options)

    return scores, refit


def _search(
    problem: Callable[[np.ndarray], tuple[Callable, Callable, Callable]],
    y: np.ndarray,
    alphas: np.ndarray,
    ratios: np.ndarray,
    cv: Folds,
    coef: np.ndarray,
    *,
    scoring: str,
    options: dict,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score every (ratio, alpha) per target; each time a ratio beats a target's best so far, write that target's
    refit coefficients into ``coef`` (``problem(w)`` gives the ratio's full spectrum, fold and coefficient maker).
    Ties go to the earlier ratio, then the smaller alpha index. Returns the best ratio indices, the best alpha
    indices and the scores (n_ratios, n_alphas, n_targets)."""
    if cv == "gcv" and scoring != "neg_mse":
        raise ValueError(f"cv='gcv' estimates the mean squared error and needs scoring='neg_mse'; got {scoring!r}")
    n_targets = y.shape[1]
    all_scores = np.empty((len(ratios), alphas.size, n_targets))
    best_score = np.full(n_targets, -np.inf)
    best_ratio = np.zeros(n_targets, dtype=np.intp)
    best_alpha = np.zeros(n_targets, dtype=np.intp)
    for j, weights in enumerate(tqdm(ratios, desc="banded ridge: ratios", disable=not progress)):
        spectrum, fold, to_coef = problem(weights)
        scores, refit = _ratio_scores(spectrum, fold, y, alphas, cv, options, scoring)
        all_scores[j] = scores
        chosen = _select_alphas(scores, True)
        score = scores[chosen, np.arange(n_targets)]
        better = np.flatnonzero(score > best_score)  # NaN never wins
        if better.size:
            best_score[better], best_ratio[better], best_alpha[better] = score[better], j, chosen[better]
            full, block = refit(better, chosen[better])
            coef[:, better] = to_coef(full, block)
    return best_ratio, best_alpha, all_scores


def _solution(
    ratios: np.ndarray,
    alphas: np.ndarray,
    found: tuple[np.ndarray, np.ndarray, np.ndarray],
    coef: np.ndarray,
    intercept: np.ndarray,
) -> BandedSolution:
    best_ratio, best_alpha, scores = found
    return BandedSolution(ratios, ratios[best_ratio].T.copy(), alphas[best_alpha], scores, coef, intercept)


def _spaces_of_columns(spaces: Sequence[slice], n_features: int) -> np.ndarray:
    """Space index of every column, checking that the slices tile ``range(n_features)`` in order."""
    owner = np.full(n_features, -1)
    for k, block in enumerate(spaces):
        owner[block] = k
    if np.any(owner < 0) or sum(len(range(n_features)[block]) for block in spaces) != n_features:
        raise ValueError(f"spaces {list(spaces)} must tile the {n_features} columns of X once each")
    return owner


def solve_banded_ridge_cv(
    X: Any,
    Y: Any,
    spaces: Sequence[slice],
    alphas: Any,
    ratios: Any = 10,
    cv: Folds = "gcv",
    *,
    fit_intercept: bool = True,
    scoring: str = "neg_mse",
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
    batch_size: int | None = None,
    progress: bool = False,
) -> BandedSolution:
    """Primal banded ridge: per candidate ratio ``w``, plain ridge CV on ``X`` with the columns of space k scaled by
    ``sqrt(w_k)`` (columns of spaces with ``w_k = 0`` dropped), one decomposition per fold (eigendecomposition of
    ``X^T X`` when the fold has at least as many rows as columns, else a thin SVD), all alphas as a diagonal
    rescaling.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    Y : array-like of shape (n_samples, n_targets)
    spaces : sequence of slice
        Consecutive column blocks of X, one per feature space, covering every column once.
    alphas : array-like of shape (n_alphas,)
        Overall penalties ``alpha`` (space k's penalty is ``alpha / w_k``).
    ratios : int or array-like of shape (n_ratios, n_spaces), default=10
        An int is the resolution of the simplex grid (:func:`simplex_grid`); rows of an array are normalised.
    cv, fit_intercept, scoring, backend, dtype, batch_size
        As in :func:`encoders.ridge.solve_ridge_cv_svd`.
    progress : bool, default=False
        Show a progress bar over the ratios.

    Returns
    -------
    BandedSolution
        ``coef`` of shape (n_features, n_targets).
    """
    X, Y = _check_problem(X, Y, scoring, "X")
    owner = _spaces_of_columns(spaces, X.shape[1])
    alphas, cv, xp = check_alphas(alphas), check_folds(cv, X.shape[0]), get_backend(backend)
    ratios = check_ratios(ratios, len(spaces))
    x = xp.asarray(X, dtype)
    x_mean = xp.mean(x, axis=0) if fit_intercept else xp.zeros(x.shape[1], dtype)

    def problem(weights: np.ndarray) -> tuple[Callable, Callable, Callable]:
        active = np.flatnonzero(weights[owner] > 0)
        scale = xp.asarray(np.sqrt(weights[owner[active]]), dtype)
        scaled = xp.take(x, active, 1) * scale
        scaled_mean = xp.take(x_mean, active, 0) * scale

        def to_coef(full: _Spectrum, block: np.ndarray) -> np.ndarray:
            out = np.zeros((X.shape[1], block.shape[1]), dtype=dtype)
            weights_primal = xp.matmul(full.right, xp.asarray(block, dtype))  # weights carry s / (s^2 + a)
            out[active] = xp.to_numpy(weights_primal * scale[:, None])
            return out

        return (
            lambda: _primal_spectrum(scaled - scaled_mean, xp),
            lambda train, val: _banded_primal_fold(scaled, train, val, fit_intercept, xp),
            to_coef,
        )

    coef = np.zeros((X.shape[1], Y.shape[1]), dtype=dtype)
    options = dict(fit_intercept=fit_intercept, xp=xp, dtype=dtype, batch_size=batch_size)
    found = _search(problem, Y, alphas, ratios, cv, coef, scoring=scoring, options=options, progress=progress)
    mean = xp.to_numpy(x_mean)
    intercept = (
        (Y.mean(axis=0, dtype=dtype) - mean @ coef).astype(dtype) if fit_intercept else np.zeros(Y.shape[1], dtype)
    )
    return _solution(ratios, alphas, found, coef, intercept)


def solve_multiple_kernel_ridge_cv(
    Ks: Any,
    Y: Any,
    alphas: Any,
    ratios: Any = 10,
    cv: Folds = "gcv",
    *,
    fit_intercept: bool = True,
    scoring: str = "neg_mse",
    backend: str | ModuleType = "auto",
    dtype: str = "float64",
    batch_size: int | None = None,
    progress: bool = False,
) -> BandedSolution:
    """Kernel (dual) banded ridge: per candidate ratio ``w``, kernel ridge CV on ``sum_k w_k K_k`` (one
    eigendecomposition per fold), all alphas as a diagonal rescaling. With linear kernels ``K_k = X_k X_k^T`` this
    is banded ridge for spaces wider than the number of rows.

    Parameters
    ----------
    Ks : array-like of shape (n_spaces, n_samples, n_samples)
        Symmetric positive semi-definite kernel of each space on the training rows.
    Y, alphas, ratios, cv, fit_intercept, scoring, backend, dtype, batch_size, progress
        As in :func:`solve_banded_ridge_cv`.

    Returns
    -------
    BandedSolution
        ``coef`` holds the dual coefficients (n_samples, n_targets): predictions for new rows are
        ``sum_k best_ratios[k] * (K_k(new, train) @ coef) + intercept``.
    """
    Ks = np.asarray(Ks)
    if Ks.ndim != 3 or Ks.shape[1] != Ks.shape[2]:
        raise ValueError(f"Ks must have shape (n_spaces, n_samples, n_samples); got {Ks.shape}")
    _, Y = _check_problem(Ks.reshape(-1, Ks.shape[2])[: Ks.shape[1]], Y, scoring, "Ks")
    if not _all_finite(Ks):
        raise ValueError(f"Ks contains {Ks.size - np.isfinite(Ks).sum()} NaN or infinite values")
    alphas, cv, xp = check_alphas(alphas), check_folds(cv, Ks.shape[1]), get_backend(backend)
    ratios = check_ratios(ratios, Ks.shape[0])
    kernels = [xp.asarray(kernel, dtype) for kernel in Ks]
    row_means = Ks.mean(axis=1, dtype=dtype)  # (n_spaces, n_samples): column means of each kernel

    def problem(weights: np.ndarray) -> tuple[Callable, Callable, Callable]:
        combined = sum(float(w) * kernel for w, kernel in zip(weights, kernels) if w > 0)

        def spectrum() -> _Spectrum:
            centred = _centre_kernel(combined, None, xp)[0] if fit_intercept else combined
            return _kernel_spectrum(centred, xp, overwrite=fit_intercept)

        return (
            spectrum,
            lambda train, val: _kernel_fold(combined, train, val, fit_intercept, xp),
            lambda full, block: xp.to_numpy(xp.matmul(full.left, xp.asarray(block, dtype))),
        )

    dual = np.zeros((Ks.shape[1], Y.shape[1]), dtype=dtype)
    options = dict(fit_intercept=fit_intercept, xp=xp, dtype=dtype, batch_size=batch_size)
    found = _search(problem, Y, alphas, ratios, cv, dual, scoring=scoring, options=options, progress=progress)
    best_ratios = ratios[found[0]].T
    if fit_intercept:
        intercept = Y.mean(axis=0, dtype=dtype) - np.sum(best_ratios * (row_means @ dual), axis=0)
    else:
        intercept = np.zeros(Y.shape[1], dtype)
    return _solution(ratios, alphas, found, dual, intercept.astype(dtype))
