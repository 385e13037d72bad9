"""Ridge solvers against sklearn (RidgeCV leave-one-out, GridSearchCV k-fold, LinearRegression) and a planted
linear truth; every solver on every backend."""

import functools
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.model_selection import GridSearchCV

from encoders.ridge import RIDGE_SOLVERS, solve_kernel_ridge_cv_eigh
from encoders.scoring import pearson_r
from encoders.splits import kfold

BACKENDS = ["numpy", "torch"] + (["torch_cuda"] if torch.cuda.is_available() else [])
SOLVERS = ["svd", "gram", "kernel"]
ALPHAS = np.logspace(-2, 4, 9)


def make_problem(n, p, t, seed=0, noise=3.0):
    """Targets with different signal-to-noise ratios (so different alphas win) and an offset."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) + rng.uniform(-1, 1, p)
    W = rng.standard_normal((p, t)) * rng.uniform(0, 0.5, t)
    Y = X @ W + noise * rng.standard_normal((n, t)) + rng.uniform(-5, 5, t)
    return X, Y


def solve(solver, X, Y, alphas, cv, **options):
    """(solution, function predicting new rows) for a primal solver or the kernel solver on X X^T."""
    if solver == "kernel":
        solution = solve_kernel_ridge_cv_eigh(X @ X.T, Y, alphas, cv, **options)
        return solution, lambda X_new: (X_new @ X.T) @ solution.coef + solution.intercept
    solution = RIDGE_SOLVERS[solver](X, Y, alphas, cv, **options)
    return solution, lambda X_new: X_new @ solution.coef + solution.intercept


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("n", "p"), [(200, 50), (80, 300)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_leave_one_out_equals_sklearn_ridgecv(backend, solver, n, p, fit_intercept):
    X, Y = make_problem(n, p, 20)
    reference = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=fit_intercept).fit(X, Y)
    solution, predict = solve(solver, X, Y, ALPHAS, "loo", fit_intercept=fit_intercept, backend=backend)
    assert len(np.unique(solution.best_alphas)) > 2, "the problem should make different targets pick different alphas"
    np.testing.assert_array_equal(solution.best_alphas, reference.alpha_)
    np.testing.assert_allclose(solution.cv_scores.max(axis=0), reference.best_score_, rtol=1e-6)
    X_new = np.random.default_rng(9).standard_normal((25, p))
    np.testing.assert_allclose(predict(X_new), reference.predict(X_new), rtol=1e-4, atol=1e-8)
    if solver != "kernel":
        np.testing.assert_allclose(solution.coef, reference.coef_.T, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_shared_alpha_equals_sklearn(backend, solver):
    X, Y = make_problem(150, 40, 30, seed=2)
    reference = SkRidgeCV(alphas=ALPHAS, alpha_per_target=False).fit(X, Y)
    solution, predict = solve(solver, X, Y, ALPHAS, "loo", alpha_per_target=False, backend=backend)
    assert np.all(solution.best_alphas == reference.alpha_)
    np.testing.assert_allclose(predict(X), reference.predict(X), rtol=1e-4, atol=1e-8)


def gcv_reference(X, Y, alphas, fit_intercept):
    """Generalised CV straight from its definition, ``n |(I - H) y|^2 / tr(I - H)^2``, with the explicit hat
    matrix ``H = Xc (Xc^T Xc + a I)^-1 Xc^T (+ 1 1^T / n)``; returns the score ``-GCV`` of shape (n_alphas, t)."""
    n = X.shape[0]
    Xc = X - X.mean(axis=0) if fit_intercept else X
    scores = []
    for alpha in alphas:
        hat = Xc @ np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T)
        hat = hat + np.full((n, n), 1.0 / n) if fit_intercept else hat
        residual = Y - hat @ Y
        scores.append(-n * np.sum(residual**2, axis=0) / np.trace(np.eye(n) - hat) ** 2)
    return np.array(scores)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("n", "p"), [(200, 50), (80, 300)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_gcv_equals_its_definition_and_refits_like_sklearn_ridge(backend, solver, n, p, fit_intercept):
    X, Y = make_problem(n, p, 20, seed=3)
    reference = gcv_reference(X, Y, ALPHAS, fit_intercept)
    solution, predict = solve(solver, X, Y, ALPHAS, "gcv", fit_intercept=fit_intercept, backend=backend)
    np.testing.assert_allclose(solution.cv_scores, reference, rtol=1e-6)
    np.testing.assert_array_equal(solution.best_alphas, ALPHAS[np.argmax(reference, axis=0)])
    assert len(np.unique(solution.best_alphas)) > 2, "the problem should make different targets pick different alphas"
    X_new = np.random.default_rng(9).standard_normal((25, p))
    for alpha in np.unique(solution.best_alphas):
        members = solution.best_alphas == alpha
        ridge = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X, Y[:, members])
        np.testing.assert_allclose(
            predict(X_new)[:, members], ridge.predict(X_new).reshape(25, -1), rtol=1e-4, atol=1e-8
        )


@pytest.mark.parametrize("solver", SOLVERS)
def test_gcv_shared_alpha_maximises_the_mean_score(solver):
    X, Y = make_problem(150, 40, 30, seed=2)
    solution, predict = solve(solver, X, Y, ALPHAS, "gcv", alpha_per_target=False, backend="numpy")
    best = ALPHAS[np.argmax(gcv_reference(X, Y, ALPHAS, True).mean(axis=1))]
    assert np.all(solution.best_alphas == best)
    np.testing.assert_allclose(predict(X), Ridge(alpha=best).fit(X, Y).predict(X), rtol=1e-4, atol=1e-8)


@functools.cache
def grid_search_reference(n, p):
    """sklearn's k-fold search, one target at a time: (X, Y, folds, X_new, mean fold scores, alphas, predictions)."""
    X, Y = make_problem(n, p, 5, seed=3)
    folds = kfold(n, 5, seed=1)
    X_new = np.random.default_rng(9).standard_normal((10, p))
    searches = [
        GridSearchCV(Ridge(), {"alpha": ALPHAS}, cv=folds, scoring="neg_mean_squared_error").fit(X, y) for y in Y.T
    ]
    scores = np.stack([search.cv_results_["mean_test_score"] for search in searches], axis=1)
    best = np.array([search.best_params_["alpha"] for search in searches])
    predictions = np.stack([search.predict(X_new) for search in searches], axis=1)
    return X, Y, folds, X_new, scores, best, predictions


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("n", "p"), [(200, 30), (100, 150)])
def test_kfold_equals_sklearn_grid_search_per_target(backend, solver, n, p):
    X, Y, folds, X_new, scores, best, predictions = grid_search_reference(n, p)
    solution, predict = solve(solver, X, Y, ALPHAS, folds, backend=backend)
    np.testing.assert_allclose(solution.cv_scores, scores, rtol=1e-6)
    np.testing.assert_array_equal(solution.best_alphas, best)
    np.testing.assert_allclose(predict(X_new), predictions, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("solver", SOLVERS)
def test_pearson_scoring_equals_fold_by_fold_sklearn_ridge(solver):
    X, Y = make_problem(100, 20, 6, seed=4)
    folds = kfold(100, 4, seed=0)
    solution, _ = solve(solver, X, Y, ALPHAS, folds, scoring="r", backend="numpy")
    expected = np.zeros((ALPHAS.size, Y.shape[1]))
    for i, alpha in enumerate(ALPHAS):
        for train, val in folds:
            prediction = Ridge(alpha=alpha).fit(X[train], Y[train]).predict(X[val])
            expected[i] += pearson_r(Y[val], prediction) / len(folds)
    np.testing.assert_allclose(solution.cv_scores, expected, rtol=1e-8)
    np.testing.assert_array_equal(solution.best_alphas, ALPHAS[np.argmax(expected, axis=0)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("n", "p"), [(120, 30), (40, 90)])
def test_alpha_zero_is_least_squares(backend, solver, n, p):
    X, Y = make_problem(n, p, 5, seed=5)
    reference = LinearRegression().fit(X, Y)
    solution, predict = solve(solver, X, Y, [0.0], kfold(n, 3), backend=backend)
    X_new = np.random.default_rng(9).standard_normal((10, p))
    np.testing.assert_allclose(predict(X_new), reference.predict(X_new), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cv", ["loo", "gcv"])
def test_closed_form_cv_never_chooses_alpha_zero_with_full_leverage(cv):
    """n <= p: alpha = 0 interpolates (leverage 1 for LOO, no residual degrees of freedom for GCV), scored NaN."""
    X, Y = make_problem(30, 60, 4, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solution, _ = solve("svd", X, Y, [0.0, 1.0, 10.0], cv, backend="numpy")
    assert np.all(np.isnan(solution.cv_scores[0]))
    assert np.all(solution.best_alphas > 0)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("cv", ["loo", "gcv", "kfold"])
def test_target_batches_and_backends_give_the_same_answer(solver, cv):
    X, Y = make_problem(90, 25, 23, seed=7)
    folds = kfold(90, 3) if cv == "kfold" else cv
    whole, predict_whole = solve(solver, X, Y, ALPHAS, folds, backend="numpy")
    batched, predict_batched = solve(solver, X, Y, ALPHAS, folds, backend="torch", batch_size=4)
    np.testing.assert_array_equal(whole.best_alphas, batched.best_alphas)
    np.testing.assert_allclose(whole.cv_scores, batched.cv_scores, rtol=1e-9)
    np.testing.assert_allclose(predict_whole(X), predict_batched(X), rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cv", ["loo", "gcv", "kfold"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_inputs_are_left_untouched(backend, cv, fit_intercept):
    """Target batches are centred and squared in a scratch buffer, never in the caller's arrays (which the
    backends may share memory with)."""
    X, Y = make_problem(40, 6, 9, seed=3)
    X_before, Y_before = X.copy(), Y.copy()
    folds = kfold(40, 4) if cv == "kfold" else cv
    RIDGE_SOLVERS["svd"](X, Y, ALPHAS, folds, fit_intercept=fit_intercept, backend=backend, batch_size=4)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(Y, Y_before)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cv", ["loo", "gcv", "kfold"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_kernel_overwritten_in_place_gives_the_same_fit(backend, cv, fit_intercept):
    """overwrite_k lets the eigenvectors take K's memory; the fit is the one computed on a kept K, and K is only
    touched when asked."""
    X, Y = make_problem(60, 80, 7, seed=4)
    folds = kfold(60, 3) if cv == "kfold" else cv
    kernel = X @ X.T
    kept = kernel.copy()
    reference = solve_kernel_ridge_cv_eigh(kernel, Y, ALPHAS, folds, fit_intercept=fit_intercept, backend=backend)
    np.testing.assert_array_equal(kernel, kept)
    scratch = kernel.copy()
    overwritten = solve_kernel_ridge_cv_eigh(
        scratch, Y, ALPHAS, folds, fit_intercept=fit_intercept, backend=backend, overwrite_k=True
    )
    np.testing.assert_array_equal(overwritten.best_alphas, reference.best_alphas)
    np.testing.assert_allclose(overwritten.cv_scores, reference.cv_scores, rtol=1e-8)
    np.testing.assert_allclose(
        kept @ overwritten.coef + overwritten.intercept,
        kept @ reference.coef + reference.intercept,
        rtol=1e-8,
        atol=1e-8,
    )
    if backend != "torch_cuda":
        assert np.shares_memory(overwritten.basis, scratch)  # the eigenvectors live where K was


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_float16_targets_are_fitted_in_the_requested_dtype(backend, solver):
    """Huge float16 targets: the finite check sums first and falls back to the element-wise test when the float16
    sum overflows; the intercept's mean is taken in float64 as asked (a float16 mean is off by up to 8 here), so the
    fit is scikit-learn's Ridge on the same values."""
    X, _ = make_problem(20, 5, 3)
    large = np.random.default_rng(0).uniform(20000, 30000, size=(20, 2)).astype(np.float16)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.sum(large))  # float16 sums overflow at 65,504
    solution, predict = solve(solver, X, large, [1.0], "loo", backend=backend, dtype="float64")
    reference = Ridge(alpha=1.0).fit(X, large.astype(np.float64))
    np.testing.assert_allclose(solution.intercept, reference.intercept_, rtol=1e-9)
    X_new = np.random.default_rng(1).standard_normal((6, 5))
    np.testing.assert_allclose(predict(X_new), reference.predict(X_new), rtol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
def test_planted_truth_reaches_the_noise_ceiling(solver):
    """Y = X W + noise with var(signal) = var(noise) = 1 per target: held-out r approaches the ceiling sqrt(1/2),
    less the estimation loss of p weights from n rows (prediction variance grows by p / (n - p - 1))."""
    rng = np.random.default_rng(8)
    n_train, n_test, p, t = 500, 2000, 5, 100
    W = rng.standard_normal((p, t))
    W /= np.linalg.norm(W, axis=0)  # var(x @ w) = 1 for standard normal x
    X = rng.standard_normal((n_train + n_test, p))
    Y = X @ W + rng.standard_normal((n_train + n_test, t))
    _, predict = solve(solver, X[:n_train], Y[:n_train], ALPHAS, kfold(n_train, 5), backend="numpy", scoring="r")
    r = pearson_r(Y[n_train:], predict(X[n_train:]))
    ceiling = np.sqrt(1 / (1 + 1))
    expected = ceiling / np.sqrt(1 + p / (n_train - p - 1))
    standard_error = (1 - ceiling**2) / np.sqrt(n_test)
    assert np.all(np.abs(r - expected) < 5 * standard_error)
    assert abs(r.mean() - expected) < 0.005


def test_input_errors_are_explicit():
    X, Y = make_problem(20, 5, 3)
    svd = RIDGE_SOLVERS["svd"]
    with pytest.raises(ValueError, match=r"alphas must be finite and >= 0; got \[1.0, -1.0\]"):
        svd(X, Y, [1.0, -1.0])
    with pytest.raises(ValueError, match="non-empty"):
        svd(X, Y, [])
    with pytest.raises(ValueError, match=r"X has 20 rows \(shape \(20, 5\)\) but Y has 19 \(shape \(19, 3\)\)"):
        svd(X, Y[1:], [1.0])
    with pytest.raises(ValueError, match="Unknown scoring='r2'"):
        svd(X, Y, [1.0], scoring="r2")
    with pytest.raises(ValueError, match=r"fold 0: validation indices must lie in \[0, 20\)"):
        svd(X, Y, [1.0], [(np.arange(10), np.arange(15, 25))])
    with pytest.raises(ValueError, match="Unknown cv='kfold'"):
        svd(X, Y, [1.0], "kfold")
    with pytest.raises(ValueError, match="cv='gcv' estimates the mean squared error and needs scoring='neg_mse'"):
        svd(X, Y, [1.0], "gcv", scoring="r")
    bad = Y.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="Y contains 1 NaN or infinite"):
        svd(X, bad, [1.0])
    with pytest.raises(ValueError, match="K must be square"):
        solve_kernel_ridge_cv_eigh(X, Y, [1.0])
