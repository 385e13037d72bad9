"""Ridge regression for many targets with per-target alpha by cross-validation: solvers and estimators."""

from ._banded import BANDED_SOLVERS, BandedRidgeCV, resolve_spaces
from ._banded_solvers import BandedSolution, simplex_grid, solve_banded_ridge_cv, solve_multiple_kernel_ridge_cv
from ._estimators import DEFAULT_ALPHAS, KernelRidgeCV, RidgeCV
from ._solvers import (
    CLOSED_FORM_CV,
    KERNEL_RIDGE_SOLVERS,
    RIDGE_SOLVERS,
    RidgeSolution,
    solve_kernel_ridge_cv_eigh,
    solve_ridge_cv_gram,
    solve_ridge_cv_svd,
)

__all__ = [
    "BANDED_SOLVERS",
    "BandedRidgeCV",
    "BandedSolution",
    "CLOSED_FORM_CV",
    "DEFAULT_ALPHAS",
    "KERNEL_RIDGE_SOLVERS",
    "KernelRidgeCV",
    "RIDGE_SOLVERS",
    "RidgeCV",
    "RidgeSolution",
    "resolve_spaces",
    "simplex_grid",
    "solve_banded_ridge_cv",
    "solve_kernel_ridge_cv_eigh",
    "solve_multiple_kernel_ridge_cv",
    "solve_ridge_cv_gram",
    "solve_ridge_cv_svd",
]
