"""scikit-learn style ridge estimators with per-target alpha chosen by cross-validation: thin wrappers that
validate, resolve the folds and call a solver from ``_solvers``."""

from __future__ import annotations

import warnings
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .. import scoring
from .._validation import ARRAY_LIKE, BOOLEAN, SPLITS, Integers, Options, check_features, check_params, check_targets
from ..backend import ALL_BACKENDS, get_backend
from ..pca import cross_gram_matrix, gram_matrix
from ..splits import kfold
from ._solvers import (
    CLOSED_FORM_CV,
    KERNEL_RIDGE_SOLVERS,
    RIDGE_SOLVERS,
    SCORINGS,
    Folds,
    _all_finite,
    check_alphas,
    check_folds,
)

DEFAULT_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)

_SHARED_CONSTRAINTS: dict = {
    "alphas": [ARRAY_LIKE],
    "cv": [Options(frozenset(CLOSED_FORM_CV)), Integers(2), SPLITS, None],
    "fit_intercept": [BOOLEAN],
    "alpha_per_target": [BOOLEAN],
    "backend": [Options(frozenset({"auto", *ALL_BACKENDS}))],
    "scoring": [Options(frozenset(SCORINGS))],
    "dtype": [Options(frozenset({"float32", "float64"}))],
    "batch_size": [Integers(1), None],
}


def _resolve_cv(cv: Any, n_samples: int) -> Folds:
    """``"loo"`` (also for None, as in sklearn), ``"gcv"`` or explicit (train, val) pairs from an int (seeded
    shuffled k-fold), a splitter with ``split`` or an iterable of pairs."""
    if cv is None or isinstance(cv, str):
        return check_folds("loo" if cv is None else cv, n_samples)
    if isinstance(cv, Integral):
        if not 2 <= cv <= n_samples:
            raise ValueError(f"cv={cv} folds needs 2 <= cv <= n_samples={n_samples}")
        return kfold(n_samples, int(cv), seed=0)
    if hasattr(cv, "split"):
        return check_folds(list(cv.split(np.zeros((n_samples, 1)))), n_samples)
    return check_folds(list(cv), n_samples)


def _targets_2d(Y: Any) -> np.ndarray:
    """Targets as a 2-D array (a 1-D y becomes one column)."""
    Y = np.asarray(Y)
    return Y[:, None] if Y.ndim == 1 else Y


class _BaseRidgeCV(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Parameter checks, target shapes and scores shared by the primal and kernel estimators.

    ``score`` is scikit-learn's (:class:`~sklearn.base.RegressorMixin`): R^2 averaged uniformly over targets, a
    float; :meth:`pearson_r` gives one Pearson r per target.
    """

    _constraints: dict = {}
    _solvers: dict = {}

    def _check_params(self) -> tuple[Any, np.ndarray]:
        """Validate every parameter; return the solver function and the alphas."""
        check_params(self, self._constraints)
        get_backend(self.backend)  # installed and usable here (torch_cuda needs a GPU)
        return self._solvers[self.solver], check_alphas(self.alphas)

    def _fit_targets(self, Y: Any, x_shape: tuple[int, ...]) -> np.ndarray:
        """Checked targets as a 2-D array; remembers whether they were 1-D, as ``predict`` answers in kind."""
        Y = check_targets(self, Y, x_shape)
        self._targets_1d = Y.ndim == 1
        return _targets_2d(Y)

    def _answer(self, prediction: np.ndarray) -> np.ndarray:
        """Predictions of shape (n_rows,) for a model fitted on 1-D targets, else (n_rows, n_targets)."""
        return prediction[:, 0] if self._targets_1d else prediction

    def _solver_options(self) -> dict:
        """Keyword arguments every solver takes, from the estimator's parameters."""
        return dict(
            fit_intercept=self.fit_intercept,
            scoring=self.scoring,
            alpha_per_target=self.alpha_per_target,
            backend=self.backend,
            dtype=self.dtype,
            batch_size=self.batch_size,
        )

    def _set_solution(self, solution: Any) -> None:
        """Store a solver's result (all but the coefficients) as learned attributes."""
        self.intercept_ = solution.intercept
        self.best_alphas_ = solution.best_alphas
        self.cv_scores_ = solution.cv_scores

    def pearson_r(self, X: Any, Y: Any) -> np.ndarray:
        """Pearson r between ``predict(X)`` and ``Y``, one per target (the encoding accuracy of each vertex).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), as for :meth:`predict`
        Y : array-like of shape (n_samples, n_targets) or (n_samples,)

        Returns
        -------
        ndarray of shape (n_targets,)
            NaN for a target whose values or predictions are constant (a warning counts the constant targets).
        """
        Y = _targets_2d(Y)
        constant = scoring.constant_columns(Y)
        if constant.size:
            warnings.warn(
                f"{constant.size} of {Y.shape[1]} targets are constant in Y (e.g. column {int(constant[0])}): "
                "their Pearson r is undefined and returned as NaN",
                RuntimeWarning,
                stacklevel=2,
            )
        return scoring.pearson_r(Y, _targets_2d(self.predict(X)))


class RidgeCV(_BaseRidgeCV):
    """Ridge regression for many targets, each with its own alpha chosen by k-fold CV or exact leave-one-out.

    One SVD per fold serves all alphas and all targets; see :func:`solve_ridge_cv_svd`.

    Parameters
    ----------
    alphas : array-like of shape (n_alphas,), default=(0.1, 1, ..., 1e6)
        Penalties to try, >= 0 (0 is least squares).
    cv : int, "loo", "gcv", splitter or iterable of (train, val), default=5
        An int k is a shuffled k-fold with seed 0 (:func:`encoders.splits.kfold`); "loo" (or None) is exact
        closed-form leave-one-out, as ``sklearn.linear_model.RidgeCV(cv=None)``; "gcv" is generalised
        cross-validation (Golub, Heath & Wahba 1979): leave-one-out with every leverage set to the mean, from one
        decomposition at O(rank x targets) per alpha, the cheapest choice for many vertices (``scoring="neg_mse"``
        only).
    fit_intercept : bool, default=True
        Fit an unpenalised intercept.
    alpha_per_target : bool, default=True
        Choose alpha per target; else one alpha maximising the mean CV score.
    solver : {"svd", "gram"}, default="svd"
        "svd": thin SVD of X per fold; "gram": eigendecomposition of X X^T per fold (faster when
        n_features >> n_samples).
    backend : {"auto", "numpy", "torch", "torch_cuda"}, default="auto"
    scoring : {"neg_mse", "r"}, default="neg_mse"
        Validation score maximised: negative mean squared error (as sklearn) or Pearson r.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the computation and of the learned arrays.
    batch_size : int or None, default=None
        Targets solved together; None bounds the (n_samples, batch) block of targets to 64 MiB.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features, n_targets)
        A 1-D y counts as one target here (``predict`` then returns 1-D predictions).
    intercept_ : ndarray of shape (n_targets,)
    best_alphas_ : ndarray of shape (n_targets,)
    cv_scores_ : ndarray of shape (n_alphas, n_targets)
        Mean validation score of each alpha (leave-one-out: over all rows).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Column names of a DataFrame X (only then).

    Notes
    -----
    ``score(X, y)`` is scikit-learn's coefficient of determination R^2, averaged uniformly over targets (a float);
    :meth:`pearson_r` gives the Pearson r of every target.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X, W = rng.standard_normal((100, 20)), rng.standard_normal((20, 3))
    >>> model = RidgeCV(alphas=[0.1, 10.0], cv=5, backend="numpy").fit(X, X @ W)
    >>> model.predict(X).shape
    (100, 3)
    """

    _constraints: dict = {**_SHARED_CONSTRAINTS, "solver": [Options(frozenset(RIDGE_SOLVERS))]}
    _solvers = RIDGE_SOLVERS

    def __init__(
        self,
        alphas: Any = DEFAULT_ALPHAS,
        *,
        cv: Any = 5,
        fit_intercept: bool = True,
        alpha_per_target: bool = True,
        solver: str = "svd",
        backend: str = "auto",
        scoring: str = "neg_mse",
        dtype: str = "float64",
        batch_size: int | None = None,
    ) -> None:
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.alpha_per_target = alpha_per_target
        self.solver = solver
        self.backend = backend
        self.scoring = scoring
        self.dtype = dtype
        self.batch_size = batch_size

    def fit(self, X: Any, Y: Any) -> RidgeCV:
        """Choose alphas by cross-validation and fit on all rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        Y : array-like of shape (n_samples, n_targets) or (n_samples,)

        Returns
        -------
        self : RidgeCV
        """
        solver, alphas = self._check_params()
        X = check_features(self, X, reset=True)
        Y = self._fit_targets(Y, X.shape)
        folds = _resolve_cv(self.cv, X.shape[0])
        solution = solver(X, Y, alphas, folds, **self._solver_options())
        self._set_solution(solution)
        self.coef_ = solution.coef
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``X @ coef_ + intercept_``, ndarray of shape (n_samples, n_targets), or (n_samples,)
        when fitted on a 1-D y."""
        check_is_fitted(self)
        X = check_features(self, X, reset=False, finite=True)
        prediction = X @ self.coef_
        prediction += self.intercept_  # in place: no second (n_samples, n_targets) array
        return self._answer(prediction)


class KernelRidgeCV(_BaseRidgeCV):
    """Kernel (dual) ridge with a linear kernel, alpha per target by k-fold CV or exact leave-one-out.

    Needs only the n x n Gram matrix, so a layer with n_features >> n_samples is fitted without PCA: with
    ``kernel="linear"`` the Gram matrix is streamed from X in column blocks (numpy, dask or xarray) and predictions
    stream the cross Gram matrix against the training X; with ``kernel="precomputed"`` fit takes the training kernel
    (n_samples, n_samples) and predict the kernel between new and training rows (n_new, n_samples).

    Parameters
    ----------
    alphas, cv, fit_intercept, alpha_per_target, backend, scoring, dtype, batch_size
        As in :class:`RidgeCV`.
    kernel : {"linear", "precomputed"}, default="linear"
    solver : {"eigh"}, default="eigh"
    block_size : int or None, default=None
        Columns per block when streaming X (``kernel="linear"``).

    Attributes
    ----------
    dual_coef_ : ndarray of shape (n_samples, n_targets)
        ``dual_basis_ @ dual_weights_``, formed on access.
    dual_basis_ : ndarray of shape (n_samples, rank)
        Eigenvectors of the centred training kernel.
    dual_weights_ : ndarray of shape (rank, n_targets)
        Per-target weights on ``dual_basis_`` (the alpha of each target is in them).
    intercept_ : ndarray of shape (n_targets,)
    best_alphas_ : ndarray of shape (n_targets,)
    cv_scores_ : ndarray of shape (n_alphas, n_targets)
    n_samples_fit_ : int
    n_features_in_ : int
        Columns of X: n_features, or n_samples_fit_ for ``kernel="precomputed"``.
    X_fit_ : the training matrix, kept (not copied) for the cross Gram matrix (``kernel="linear"``)
    x_mean_ : ndarray of shape (n_features,), column means of ``X_fit_`` (``kernel="linear"``)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X, W = rng.standard_normal((60, 500)), rng.standard_normal((500, 2))
    >>> KernelRidgeCV(alphas=[1.0, 100.0], cv="loo", backend="numpy").fit(X, X @ W).predict(X[:4]).shape
    (4, 2)
    """

    _constraints: dict = {
        **_SHARED_CONSTRAINTS,
        "solver": [Options(frozenset(KERNEL_RIDGE_SOLVERS))],
        "kernel": [Options(frozenset({"linear", "precomputed"}))],
        "block_size": [Integers(1), None],
    }
    _solvers = KERNEL_RIDGE_SOLVERS

    def __init__(
        self,
        alphas: Any = DEFAULT_ALPHAS,
        *,
        kernel: str = "linear",
        cv: Any = 5,
        fit_intercept: bool = True,
        alpha_per_target: bool = True,
        solver: str = "eigh",
        backend: str = "auto",
        scoring: str = "neg_mse",
        dtype: str = "float64",
        batch_size: int | None = None,
        block_size: int | None = None,
    ) -> None:
        self.alphas = alphas
        self.kernel = kernel
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.alpha_per_target = alpha_per_target
        self.solver = solver
        self.backend = backend
        self.scoring = scoring
        self.dtype = dtype
        self.batch_size = batch_size
        self.block_size = block_size

    def fit(self, X: Any, Y: Any) -> KernelRidgeCV:
        """Choose alphas by cross-validation and fit the dual coefficients on all rows.

        Parameters
        ----------
        X : ndarray, dask array or xarray.DataArray of shape (n_samples, n_features), or the training kernel of
            shape (n_samples, n_samples) when ``kernel="precomputed"``
        Y : array-like of shape (n_samples, n_targets) or (n_samples,)

        Returns
        -------
        self : KernelRidgeCV
        """
        solver, alphas = self._check_params()
        X = check_features(self, X, reset=True, stream=self.kernel == "linear")
        Y = self._fit_targets(Y, X.shape)
        folds = _resolve_cv(self.cv, Y.shape[0])
        if self.kernel == "linear":
            kernel, self.x_mean_ = gram_matrix(X, block_size=self.block_size, backend=self.backend, dtype=self.dtype)
            self.X_fit_ = X
        else:
            kernel = X
        # a Gram matrix computed here is the solver's to overwrite: its eigenvectors take its memory
        solution = solver(kernel, Y, alphas, folds, overwrite_k=self.kernel == "linear", **self._solver_options())
        self._set_solution(solution)
        self.dual_basis_, self.dual_weights_ = solution.basis, solution.weights
        self.n_samples_fit_ = Y.shape[0]
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``K(X, X_fit) @ dual_coef_ + intercept_`` (computed as ``(K dual_basis_)
        dual_weights_``), ndarray of shape (n_rows, n_targets), or (n_rows,) when fitted on a 1-D y.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features), or the kernel between new and training rows of shape
            (n_rows, n_samples_fit_) when ``kernel="precomputed"``
        """
        check_is_fitted(self)
        linear = self.kernel == "linear"
        cross = check_features(self, X, reset=False, stream=linear, finite=not linear)
        if linear:
            cross = cross_gram_matrix(
                cross, self.X_fit_, self.x_mean_, block_size=self.block_size, backend=self.backend, dtype=self.dtype
            )
            if not _all_finite(cross):  # NaN or infinities in X spread into its kernel rows
                raise ValueError("X contains NaN or infinite values")
        prediction = (cross @ self.dual_basis_) @ self.dual_weights_
        prediction += self.intercept_
        return self._answer(prediction)

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: a precomputed kernel is pairwise (its columns are training rows)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.kernel == "precomputed"
        return tags

    @property
    def dual_coef_(self) -> np.ndarray:
        """Dual coefficients ``dual_basis_ @ dual_weights_``, shape (n_samples, n_targets), formed on each access
        (n_samples x rank x n_targets flops; ``predict`` never forms them)."""
        check_is_fitted(self)
        return self.dual_basis_ @ self.dual_weights_
