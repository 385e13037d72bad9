"""PCA of an (n_samples, n_features) matrix read in column blocks from numpy, dask or xarray, for n_features up to
millions: the estimator, its solvers and the streamed Gram matrices.

Laid out as ``encoders.ridge``: ``_streaming`` reads blocks and accumulates the products (:func:`gram_matrix`,
:func:`cross_gram_matrix`, also used by the kernel ridge), ``_solvers`` holds the pure ``solve_pca_*`` functions
returning a frozen :class:`PCASolution` and their registry :data:`PCA_SOLVERS`, ``_estimator`` the thin
scikit-learn :class:`PCA` that dispatches through it.
"""

from ._estimator import PCA
from ._solvers import (
    PCA_SOLVERS,
    SKETCH_MULTIPLE,
    PCASolution,
    sketch_width,
    solve_pca_covariance,
    solve_pca_gram,
    solve_pca_randomized,
)
from ._streaming import cross_gram_matrix, gram_matrix

__all__ = [
    "PCA",
    "PCASolution",
    "PCA_SOLVERS",
    "SKETCH_MULTIPLE",
    "cross_gram_matrix",
    "gram_matrix",
    "sketch_width",
    "solve_pca_covariance",
    "solve_pca_gram",
    "solve_pca_randomized",
]
