"""Floating-point operations our encoders must do (encoders.pca + encoders.ridge), step by step, and the devkit's.

Dividing by the machine's measured matmul throughput gives the time a perfectly efficient run of the same
algorithm would take: the limit our measured times are compared with. Dense products count 2 m n k; a symmetric
eigendecomposition with vectors counts 4 n^3 (tridiagonal reduction 4/3 n^3, divide and conquer and
back-transformation about 8/3 n^3), only the top k pairs (LAPACK's subset driver) 4/3 n^3 + 2 n^2 k; a thin SVD of
an m x n matrix (m >= n) counts 4 m n^2 + 8 n^3. O(n t) work (centring, scaling, scoring) is left out: it is
memory-bound, not flop-bound.
"""

from __future__ import annotations

from encoders.pca import sketch_width


def eigh_flops(n: int) -> float:
    """Symmetric eigendecomposition of an n x n matrix, eigenvectors included."""
    return 4.0 * n**3


def eigh_top_flops(n: int, k: int) -> float:
    """The k largest eigenpairs of an n x n symmetric matrix: tridiagonal reduction and k back-transformed vectors."""
    return 4.0 / 3.0 * n**3 + 2.0 * n**2 * k


def svd_flops(m: int, n: int) -> float:
    """Thin SVD of an m x n matrix with singular vectors."""
    m, n = max(m, n), min(m, n)
    return 4.0 * m * n**2 + 8.0 * n**3


def ridge_cv_flops(
    n_rows: int, n_val: int, design_width: int, n_targets: int, n_alphas: int, cv: int | str, kernel: bool
) -> dict[str, float]:
    """Ridge as in ``encoders.ridge._solvers``, then the prediction of ``n_val`` rows. K-fold (``cv`` an int): per
    fold one decomposition, U^T Y once, one product per alpha, then the refit on all rows. ``"gcv"``: one
    decomposition of all rows, U^T Y once, the weights from the same projection (per-alpha work is O(r t)).
    Primal: ``RidgeCV`` forms ``coef_`` (p r t); kernel: ``KernelRidgeCV`` keeps the factors and predicts as
    ``(K_val U) W`` (n_val n r + n_val r t), never forming the dual coefficients.

    ``design_width`` is the number of features (primal, SVD) or ignored (kernel, eigh of the training kernel).
    """
    rank_full = n_rows if kernel else min(n_rows, design_width)
    decompose = (lambda m: eigh_flops(m)) if kernel else (lambda m: svd_flops(m, design_width))
    if kernel:
        coef = {}
        predict = {"predict": 2.0 * n_val * n_rows * rank_full + 2.0 * n_val * rank_full * n_targets}
    else:
        coef = {"coef": 2.0 * design_width * rank_full * n_targets}
        predict = {"predict": 2.0 * n_val * design_width * n_targets}
    if cv == "gcv":
        return {
            "decomposition": decompose(n_rows),
            "projection_UtY": 2.0 * n_rows * rank_full * n_targets,
            **coef,
            **predict,
        }
    if cv == "loo":
        raise ValueError("flops of cv='loo' are not counted; use 'gcv' or a number of folds")
    train, held = n_rows * (cv - 1) // cv, n_rows // cv
    rank = train if kernel else min(train, design_width)
    design = 2.0 * held * (train if kernel else design_width) * rank
    return {
        "cv_decompositions": cv * decompose(train),
        "cv_validation_designs": cv * design,
        "cv_projections_UtY": cv * 2.0 * train * rank * n_targets,
        "cv_alpha_predictions": cv * n_alphas * 2.0 * held * rank * n_targets,
        "refit_decomposition": decompose(n_rows),
        "refit_projection_UtY": 2.0 * n_rows * rank_full * n_targets,
        **{f"refit_{k}": v for k, v in coef.items()},
        **predict,
    }


def pca_flops(
    n_train: int,
    n_val: int,
    n_features: int,
    components: int,
    method: str = "gram",
    n_oversamples: int = 10,
    n_iter: int = 4,
) -> dict[str, float]:
    """``PCA(components, method)`` fitted on ``n_train`` rows, then ``n_val`` rows transformed. "gram": the n x n
    Gram matrix and its top eigenpairs (scores of the training rows come free, the axes take one more pass);
    "randomized": ``n_iter + 2`` passes of two (n x p x width) products; "covariance": the p x p scatter."""
    width = sketch_width(components, n_oversamples, n_train, n_features)
    axes_and_val = {
        "components": 2.0 * components * n_train * n_features,
        "transform_val": 2.0 * n_val * n_features * components,
    }
    if method == "gram":
        return {"gram": 2.0 * n_train**2 * n_features, "eigh_top": eigh_top_flops(n_train, components), **axes_and_val}
    if method == "randomized":
        return {
            "sketch": 2.0 * n_train * n_features * width,
            "power_iterations": (n_iter + 1) * 4.0 * n_train * n_features * width,
            **axes_and_val,
        }
    return {
        "covariance": 2.0 * n_train * n_features**2,
        "eigh": eigh_flops(n_features),
        "transform_train_and_val": 2.0 * (n_train + n_val) * n_features * components,
    }


def ours_flops(
    method: str,
    *,
    n_train: int,
    n_val: int,
    n_features: int,
    n_targets: int,
    n_alphas: int,
    cv: int | str,
    components: int,
    pca_method: str = "gram",
    pca_n_iter: int = 0,
) -> dict[str, float]:
    """Flops of one benchmark run of ``method`` ("ours.pca_ridge" or "ours.kernel_ridge"), by step and "total";
    ``pca_method`` and ``pca_n_iter`` are what ``encoders.pca.PCA`` resolved to (``method_``, ``n_iter_``)."""
    if method == "ours.pca_ridge":
        pca = pca_flops(n_train, n_val, n_features, components, pca_method, n_iter=pca_n_iter)
        steps = {f"pca_{k}": v for k, v in pca.items()}
        ridge = ridge_cv_flops(n_train, n_val, components, n_targets, n_alphas, cv, kernel=False)
    elif method == "ours.kernel_ridge":
        steps = {"gram": 2.0 * n_train**2 * n_features, "cross_gram_val": 2.0 * n_val * n_train * n_features}
        ridge = ridge_cv_flops(n_train, n_val, n_train, n_targets, n_alphas, cv, kernel=True)
    else:
        raise ValueError(f"Unknown method={method!r}; expected 'ours.pca_ridge' or 'ours.kernel_ridge'")
    steps |= {f"ridge_{k}": v for k, v in ridge.items()}
    steps["total"] = sum(steps.values())
    return steps


def devkit_flops(
    *, n_train: int, n_val: int, n_features: int, n_targets: int, components: int = 100, batch_size: int = 300
) -> dict[str, float]:
    """The devkit recipe: IncrementalPCA (one thin SVD of the (components + batch) x p stacked matrix per batch),
    transform of all rows, least squares on the components, predictions."""
    stacked = components + batch_size
    steps = {
        "ipca_partial_fits": -(-n_train // batch_size) * svd_flops(stacked, n_features),
        "ipca_transform": 2.0 * (n_train + n_val) * n_features * components,
        "linear_regression": 2.0 * n_train * components * (components + n_targets),
        "predict": 2.0 * n_val * components * n_targets,
    }
    steps["total"] = sum(steps.values())
    return steps
