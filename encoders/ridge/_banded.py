"""scikit-learn style banded ridge: one penalty per feature space and target, chosen by cross-validation on a grid of
penalty ratios; a thin wrapper that validates, names the spaces and calls a solver from ``_banded_solvers``."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._validation import ARRAY_LIKE, BOOLEAN, Integers, Options, Satisfies, check_features, check_params
from ..errors import InvalidArgumentError
from ..pca import cross_gram_matrix, gram_matrix
from ._banded_solvers import solve_banded_ridge_cv, solve_multiple_kernel_ridge_cv
from ._estimators import _SHARED_CONSTRAINTS, DEFAULT_ALPHAS, _BaseRidgeCV, _resolve_cv, check_alphas

BANDED_SOLVERS = ("auto", "primal", "kernel")


def resolve_spaces(spaces: Any) -> tuple[tuple[str, ...], tuple[slice, ...]]:
    """Names and column slices of the feature spaces: ``spaces`` is a sequence of widths (named ``space0``, ...),
    a mapping name -> width or a sequence of (name, width) pairs; widths are consecutive column blocks of X.

    Raises ``InvalidArgumentError`` for no space, a width < 1, or a name given twice.
    """
    if isinstance(spaces, Mapping):
        pairs = list(spaces.items())
    else:
        items = list(spaces)
        named = all(isinstance(item, tuple) and len(item) == 2 for item in items)
        pairs = items if named and items else [(f"space{k}", width) for k, width in enumerate(items)]
    if not pairs:
        raise InvalidArgumentError("spaces is empty; give the width of each feature space, e.g. spaces=[100, 400]")
    names, edges, seen = [], [0], set()
    for name, width in pairs:
        name = str(name)
        if name in seen:
            raise InvalidArgumentError(f"space {name!r} is given twice in spaces={spaces!r}; each space once")
        if not isinstance(width, Integral) or isinstance(width, bool) or width < 1:
            raise InvalidArgumentError(f"space {name!r} has width {width!r}; each space needs an int >= 1 of columns")
        seen.add(name)
        names.append(name)
        edges.append(edges[-1] + int(width))
    return tuple(names), tuple(slice(start, stop) for start, stop in zip(edges[:-1], edges[1:]))


def _check_distinct(X: np.ndarray, names: tuple[str, ...], slices: tuple[slice, ...]) -> None:
    """Refuse two spaces holding identical columns: the same space given twice makes its split meaningless."""
    for i in range(len(slices)):
        for j in range(i + 1, len(slices)):
            a, b = X[:, slices[i]], X[:, slices[j]]
            if a.shape == b.shape and np.array_equal(a, b):
                raise InvalidArgumentError(
                    f"spaces {names[i]!r} (X[:, {slices[i].start}:{slices[i].stop}]) and {names[j]!r} "
                    f"(X[:, {slices[j].start}:{slices[j].stop}]) hold identical columns: one space given twice"
                )


class BandedRidgeCV(_BaseRidgeCV):
    """Banded ridge for many targets: one penalty per feature space and target, chosen by cross-validation.

    Minimises ``|y - sum_k X_k b_k|^2 + sum_k lambda_k |b_k|^2`` per target, with ``lambda_k = alpha / w_k``.
    What is searched, exactly: every (ratio, alpha) pair of the candidate ratios ``w`` (points of the simplex,
    ``w_k >= 0``, ``sum w_k = 1``) times ``alphas``; the pair with the best CV score is kept per target (ties: the
    earlier ratio, then the earlier alpha). A ratio with ``w_k = 0`` drops space k (``lambda_k`` infinite), so the
    grid also holds every single-space and leave-one-space-out model. No random sampling and no gradient steps: the
    grid is exhaustive, and each ratio costs one decomposition per fold (of X with space k's columns scaled by
    ``sqrt(w_k)``, or of the kernel ``sum_k w_k X_k X_k^T``), every alpha then being a diagonal rescaling.

    Parameters
    ----------
    spaces : sequence of int, mapping str -> int, or sequence of (str, int)
        Widths of the consecutive column blocks of X that form the feature spaces, in order (optionally named).
    alphas : array-like of shape (n_alphas,), default=(0.1, 1, ..., 1e6)
        Overall penalties to try, >= 0.
    ratios : int or array-like of shape (n_ratios, n_spaces), default=10
        An int s is the simplex grid of step 1/s: s + 1 ratios for 2 spaces, (s + 1)(s + 2)/2 for 3 (grows as
        s^(m-1) / (m-1)!, so for many spaces pass an array, e.g. Dirichlet draws). An array's rows are used as
        given, each divided by its sum.
    cv : int, "loo", "gcv", splitter or iterable of (train, val), default=5
        As in :class:`RidgeCV`.
    fit_intercept : bool, default=True
    solver : {"auto", "primal", "kernel"}, default="auto"
        "primal": thin SVD of the rescaled X per ratio and fold; "kernel": eigendecomposition of the weighted sum of
        per-space Gram matrices (n x n, streamed from X, which may be a dask or xarray array), the faster choice
        when n_features > n_samples; "auto" picks "kernel" then.
    backend : {"auto", "numpy", "torch", "torch_cuda"}, default="auto"
    scoring : {"neg_mse", "r"}, default="neg_mse"
    dtype : {"float64", "float32"}, default="float64"
    batch_size : int or None, default=None
        Targets solved together, as in :class:`RidgeCV`.
    block_size : int or None, default=None
        Columns per block when streaming X for the kernel solver.
    progress : bool, default=False
        Show a progress bar over the ratios.

    Attributes
    ----------
    space_names_ : tuple of str
    space_slices_ : tuple of slice
        Columns of X of each space.
    ratios_ : ndarray of shape (n_ratios, n_spaces)
        The candidate ratios searched.
    best_ratios_ : ndarray of shape (n_spaces, n_targets)
    best_alphas_ : ndarray of shape (n_targets,)
    best_penalties_ : ndarray of shape (n_spaces, n_targets)
        ``best_alphas_ / best_ratios_``, the penalty of each space and target (inf for a dropped space).
    cv_scores_ : ndarray of shape (n_ratios, n_alphas, n_targets)
    best_cv_scores_ : ndarray of shape (n_targets,)
        CV score of each target's chosen pair.
    coef_ : ndarray of shape (n_features, n_targets)
        Primal weights in the scale of X (formed on access by the kernel solver).
    dual_coef_ : ndarray of shape (n_samples, n_targets)
        Kernel solver only: coefficients of the kernel ``sum_k best_ratios_[k] K_k`` (centred Gram matrices).
    intercept_ : ndarray of shape (n_targets,)
    solver_ : str
        "primal" or "kernel", the solver used.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((80, 30))
    >>> Y = X[:, :10] @ rng.standard_normal((10, 4))
    >>> model = BandedRidgeCV({"a": 10, "b": 20}, alphas=[0.1, 10.0], ratios=4, backend="numpy").fit(X, Y)
    >>> model.best_penalties_.shape, model.predict_split(X).shape
    ((2, 4), (2, 80, 4))
    """

    _constraints: dict = {
        **{key: value for key, value in _SHARED_CONSTRAINTS.items() if key != "alpha_per_target"},
        "spaces": [Satisfies(lambda value: not isinstance(value, str), "a sequence or mapping of widths")],
        "ratios": [Integers(1), ARRAY_LIKE],
        "solver": [Options(frozenset(BANDED_SOLVERS))],
        "block_size": [Integers(1), None],
        "progress": [BOOLEAN],
    }

    def __init__(
        self,
        spaces: Any = (),
        alphas: Any = DEFAULT_ALPHAS,
        *,
        ratios: Any = 10,
        cv: Any = 5,
        fit_intercept: bool = True,
        solver: str = "auto",
        backend: str = "auto",
        scoring: str = "neg_mse",
        dtype: str = "float64",
        batch_size: int | None = None,
        block_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.spaces = spaces
        self.alphas = alphas
        self.ratios = ratios
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.backend = backend
        self.scoring = scoring
        self.dtype = dtype
        self.batch_size = batch_size
        self.block_size = block_size
        self.progress = progress

    def fit(self, X: Any, Y: Any) -> BandedRidgeCV:
        """Choose one penalty per space and target by cross-validation and fit on all rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The spaces' columns side by side, in the order of ``spaces`` (dask / xarray too with the kernel solver).
        Y : array-like of shape (n_samples, n_targets) or (n_samples,)

        Returns
        -------
        self : BandedRidgeCV
        """
        check_params(self, self._constraints)
        alphas = check_alphas(self.alphas)
        names, slices = resolve_spaces(self.spaces)
        width = slices[-1].stop
        if len(np.shape(X)) == 2 and np.shape(X)[1] != width:
            widths = {name: block.stop - block.start for name, block in zip(names, slices)}
            raise InvalidArgumentError(f"spaces {widths} sum to {width} columns but X has {np.shape(X)[1]}")
        solver = self.solver
        if solver == "auto":
            solver = "kernel" if len(np.shape(X)) == 2 and np.shape(X)[1] > np.shape(X)[0] else "primal"
        X = check_features(self, X, reset=True, stream=solver == "kernel")
        if isinstance(X, np.ndarray):
            _check_distinct(X, names, slices)
        Y = self._fit_targets(Y, X.shape)
        folds = _resolve_cv(self.cv, X.shape[0])
        options = dict(
            fit_intercept=self.fit_intercept,
            scoring=self.scoring,
            backend=self.backend,
            dtype=self.dtype,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        self.solver_, self.space_names_, self.space_slices_ = solver, names, slices
        if solver == "primal":
            solution = solve_banded_ridge_cv(X, Y, slices, alphas, self.ratios, folds, **options)
            self._coef = solution.coef
        else:
            grams = [
                gram_matrix(X[:, block], block_size=self.block_size, backend=self.backend, dtype=self.dtype)
                for block in slices
            ]
            self.x_means_ = tuple(mean for _, mean in grams)
            kernels = np.stack([kernel for kernel, _ in grams])
            del grams
            solution = solve_multiple_kernel_ridge_cv(kernels, Y, alphas, self.ratios, folds, **options)
            self.dual_coef_, self.X_fit_ = solution.coef, X
            # m_k @ coef_k per space, from (X_k - m_k) m_k (one streamed pass): so that X @ coef_ + intercept_ and
            # the split contributions X_k @ coef_k read as in the primal form
            self._split_offsets = np.stack(
                [
                    -(self._cross(np.zeros((1, block.stop - block.start)), k) @ solution.coef)[0]
                    * solution.best_ratios[k]
                    for k, block in enumerate(slices)
                ]
            )
        self.ratios_, self.best_ratios_, self.best_alphas_ = solution.ratios, solution.best_ratios, solution.best_alphas
        self.best_penalties_, self.cv_scores_ = solution.best_penalties, solution.cv_scores
        self.best_cv_scores_, self.intercept_ = solution.best_cv_scores, solution.intercept
        if solver == "kernel":
            self.intercept_ = self.intercept_ - self._split_offsets.sum(axis=0)
        return self

    @property
    def coef_(self) -> np.ndarray:
        """Primal weights (n_features, n_targets); the kernel solver forms them on access as
        ``best_ratios_[k] * (X_k - mean_k)^T dual_coef_`` per space (n_features x n_samples x n_targets flops)."""
        check_is_fitted(self, "best_alphas_")
        if self.solver_ == "primal":
            return self._coef
        blocks = []
        for k, block in enumerate(self.space_slices_):
            centred = np.asarray(self.X_fit_[:, block], dtype=self.dtype) - self.x_means_[k]
            blocks.append((centred.T @ self.dual_coef_) * self.best_ratios_[k])
        return np.concatenate(blocks, axis=0)

    def _cross(self, rows: Any, k: int) -> np.ndarray:
        """Cross Gram matrix of space k, ``(rows - m_k)(X_k - m_k)^T`` against the training rows, streamed."""
        return cross_gram_matrix(
            rows,
            self.X_fit_[:, self.space_slices_[k]],
            self.x_means_[k],
            block_size=self.block_size,
            backend=self.backend,
            dtype=self.dtype,
        )

    def predict_split(self, X: Any) -> np.ndarray:
        """Each space's contribution to the prediction, ndarray of shape (n_spaces, n_rows, n_targets) (or
        (n_spaces, n_rows) when fitted on a 1-D y); summed over spaces plus ``intercept_`` it is :meth:`predict`."""
        check_is_fitted(self, "best_alphas_")
        kernel = self.solver_ == "kernel"
        X = check_features(self, X, reset=False, stream=kernel, finite=not kernel)
        parts = []
        for k, block in enumerate(self.space_slices_):
            if kernel:
                cross = self._cross(X[:, block], k)
                if not np.all(np.isfinite(cross)):
                    raise ValueError("X contains NaN or infinite values")
                parts.append((cross @ self.dual_coef_) * self.best_ratios_[k] + self._split_offsets[k])
            else:
                parts.append(np.asarray(X[:, block]) @ self._coef[block])
        split = np.stack(parts)
        return split[..., 0] if self._targets_1d else split

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, ndarray of shape (n_rows, n_targets), or (n_rows,) when fitted on a 1-D y."""
        check_is_fitted(self, "best_alphas_")
        if self.solver_ == "primal":
            X = check_features(self, X, reset=False, finite=True)
            prediction = X @ self._coef
            prediction += self.intercept_
            return self._answer(prediction)
        split = self.predict_split(X)
        return split.sum(axis=0) + (self.intercept_[0] if self._targets_1d else self.intercept_)
