"""BandedRidgeCV: an exhaustive numpy.linalg.solve loop, RidgeCV with one space, himalaya's banded / multiple-kernel
ridge on the same candidates, scikit-learn conventions and bad input."""

import dask.array as da
import numpy as np
import pytest
import torch
from himalaya.backend import get_backend as himalaya_get_backend
from himalaya.backend import set_backend as himalaya_set_backend
from himalaya.kernel_ridge import MultipleKernelRidgeCV as HimalayaMultipleKernelRidgeCV
from himalaya.ridge import BandedRidgeCV as HimalayaBandedRidgeCV
from sklearn.base import clone

from encoders.errors import InvalidArgumentError
from encoders.ridge import BandedRidgeCV, RidgeCV, simplex_grid
from encoders.splits import kfold

BACKENDS = ["numpy", "torch"] + (["torch_cuda"] if torch.cuda.is_available() else [])
ALPHAS = np.array([0.1, 1.0, 10.0, 100.0, 1000.0])
WIDTHS = (6, 9)


@pytest.fixture(autouse=True)
def himalaya_numpy_backend():
    """himalaya keeps a global backend: use numpy for the references and restore it afterwards."""
    previous = himalaya_get_backend().name
    himalaya_set_backend("numpy")
    yield
    himalaya_set_backend(previous)


def make_problem(n=48, widths=WIDTHS, t=8, seed=0):
    """Targets driven by the first space, the second, or both, with different signal strengths."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sum(widths))) + 0.3
    edge = widths[0]
    W = rng.standard_normal((sum(widths), t))
    W[edge:, : t // 3] = 0  # first third: space 0 only
    W[:edge, t // 3 : 2 * t // 3] = 0  # second third: space 1 only
    W *= rng.uniform(0.05, 0.6, t)
    return X, X @ W + rng.standard_normal((n, t)) + 1.5


def penalty_matrix(weights, alpha, widths=WIDTHS):
    """Per-column penalties alpha / w_k (inf: the space is dropped)."""
    return np.concatenate([np.full(p, alpha / w if w > 0 else np.inf) for w, p in zip(weights, widths)])


def solve(X, Y, penalties):
    """Banded ridge with intercept by numpy.linalg.solve on the kept columns; returns (coef, intercept)."""
    keep = np.isfinite(penalties)
    mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    centred = X[:, keep] - mean[keep]
    coef = np.zeros((X.shape[1], Y.shape[1]))
    coef[keep] = np.linalg.solve(centred.T @ centred + np.diag(penalties[keep]), centred.T @ (Y - y_mean))
    return coef, y_mean - mean @ coef


def exhaustive_scores(X, Y, ratios, cv):
    """Negative MSE of every (ratio, alpha, target) by refitting with numpy.linalg.solve: k-fold, leave-one-out
    row by row, or GCV from the explicit hat matrix."""
    n = X.shape[0]
    scores = np.empty((len(ratios), ALPHAS.size, Y.shape[1]))
    for j, weights in enumerate(ratios):
        for i, alpha in enumerate(ALPHAS):
            penalties = penalty_matrix(weights, alpha)
            if cv == "gcv":
                keep = np.isfinite(penalties)
                centred = X[:, keep] - X[:, keep].mean(axis=0)
                hat = centred @ np.linalg.solve(centred.T @ centred + np.diag(penalties[keep]), centred.T)
                coef, intercept = solve(X, Y, penalties)
                rss = np.sum((Y - X @ coef - intercept) ** 2, axis=0)
                scores[j, i] = -n * rss / (n - np.trace(hat) - 1) ** 2
                continue
            folds = [(np.delete(np.arange(n), r), np.array([r])) for r in range(n)] if cv == "loo" else cv
            errors = []
            for train, val in folds:
                coef, intercept = solve(X[train], Y[train], penalties)
                errors.append(np.mean((Y[val] - X[val] @ coef - intercept) ** 2, axis=0))
            scores[j, i] = -np.mean(errors, axis=0)
    return scores


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["primal", "kernel"])
@pytest.mark.parametrize("cv", ["kfold", "loo", "gcv"])
def test_penalties_and_predictions_equal_an_exhaustive_loop(backend, solver, cv):
    X, Y = make_problem()
    folds = kfold(len(X), 4, seed=1) if cv == "kfold" else cv
    ratios = simplex_grid(2, 4)
    model = BandedRidgeCV(WIDTHS, ALPHAS, ratios=4, cv=folds, solver=solver, backend=backend).fit(X, Y)
    expected = exhaustive_scores(X, Y, ratios, folds)
    flat = expected.reshape(-1, Y.shape[1])
    best = np.argmax(flat, axis=0)  # ratio-major, as the estimator breaks ties
    np.testing.assert_allclose(model.cv_scores_, expected, rtol=1e-7)
    np.testing.assert_array_equal(model.best_ratios_, ratios[best // ALPHAS.size].T)
    np.testing.assert_array_equal(model.best_alphas_, ALPHAS[best % ALPHAS.size])
    np.testing.assert_allclose(model.best_cv_scores_, flat.max(axis=0), rtol=1e-7)
    X_new = np.random.default_rng(5).standard_normal((7, X.shape[1]))
    expected_prediction = np.empty((7, Y.shape[1]))
    for target in range(Y.shape[1]):
        penalties = penalty_matrix(model.best_ratios_[:, target], model.best_alphas_[target])
        coef, intercept = solve(X, Y[:, [target]], penalties)
        expected_prediction[:, target] = (X_new @ coef + intercept)[:, 0]
    np.testing.assert_allclose(model.predict(X_new), expected_prediction, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(X_new @ model.coef_ + model.intercept_, expected_prediction, rtol=1e-6, atol=1e-9)
    split = model.predict_split(X_new)
    assert split.shape == (2, 7, Y.shape[1])
    np.testing.assert_allclose(split.sum(axis=0) + model.intercept_, expected_prediction, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(split[0], X_new[:, :6] @ model.coef_[:6], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cv", [5, "loo", "gcv"])
@pytest.mark.parametrize("solver", ["primal", "kernel"])
def test_one_space_equals_ridgecv(cv, solver):
    X, Y = make_problem(seed=2)
    ours = BandedRidgeCV([X.shape[1]], ALPHAS, cv=cv, solver=solver, backend="numpy").fit(X, Y)
    ridge = RidgeCV(ALPHAS, cv=cv, backend="numpy").fit(X, Y)
    np.testing.assert_array_equal(ours.best_alphas_, ridge.best_alphas_)
    np.testing.assert_array_equal(ours.ratios_, [[1.0]])
    np.testing.assert_allclose(ours.cv_scores_[0], ridge.cv_scores_, rtol=1e-8)
    np.testing.assert_allclose(ours.predict(X), ridge.predict(X), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.best_penalties_, ridge.best_alphas_[None, :])


def test_agrees_with_himalaya_banded_and_multiple_kernel_ridge_on_the_same_candidates():
    """himalaya's random search given our candidate ratios as ``n_iter`` (strictly positive: it takes their log)
    and the same folds: the chosen per-space penalties are identical and the predictions agree to 1e-6."""
    X, Y = make_problem(n=60, t=10, seed=3)
    folds = kfold(60, 5, seed=0)
    ratios = np.array([[0.05, 0.95], [0.2, 0.8], [0.5, 0.5], [0.8, 0.2], [0.95, 0.05]])
    X_new = np.random.default_rng(6).standard_normal((9, X.shape[1]))
    params = dict(n_iter=ratios, alphas=ALPHAS, progress_bar=False)
    theirs = HimalayaBandedRidgeCV(
        groups=np.repeat([0, 1], WIDTHS), solver_params=params, cv=folds, fit_intercept=True
    ).fit(X, Y)
    for solver in ("primal", "kernel"):
        ours = BandedRidgeCV(WIDTHS, ALPHAS, ratios=ratios, cv=folds, solver=solver, backend="numpy").fit(X, Y)
        np.testing.assert_allclose(ours.best_penalties_, np.exp(-np.asarray(theirs.deltas_)), rtol=1e-8)
        np.testing.assert_allclose(ours.predict(X_new), theirs.predict(X_new), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(ours.best_cv_scores_, np.max(np.asarray(theirs.cv_scores_), axis=0), rtol=1e-6)
    kernels = np.stack([X[:, :6] @ X[:, :6].T, X[:, 6:] @ X[:, 6:].T])
    new_kernels = np.stack([X_new[:, :6] @ X[:, :6].T, X_new[:, 6:] @ X[:, 6:].T])
    mkr = HimalayaMultipleKernelRidgeCV(kernels="precomputed", solver_params=params, cv=folds, fit_intercept=True).fit(
        kernels, Y
    )
    ours = BandedRidgeCV(WIDTHS, ALPHAS, ratios=ratios, cv=folds, solver="kernel", backend="numpy").fit(X, Y)
    np.testing.assert_allclose(ours.best_penalties_, np.exp(-np.asarray(mkr.deltas_)), rtol=1e-8)
    np.testing.assert_allclose(ours.predict(X_new), mkr.predict(new_kernels), rtol=1e-6, atol=1e-8)


def test_kernel_solver_streams_dask_and_matches_primal():
    X, Y = make_problem(n=30, widths=(40, 25), t=5, seed=4)
    lazy = da.from_array(X, chunks=(30, 16))
    kernel = BandedRidgeCV((40, 25), ALPHAS, ratios=3, cv="loo", backend="numpy", block_size=16).fit(lazy, Y)
    primal = BandedRidgeCV((40, 25), ALPHAS, ratios=3, cv="loo", solver="primal", backend="numpy").fit(X, Y)
    assert kernel.solver_ == "kernel" and primal.solver_ == "primal"  # auto: 65 columns > 30 rows
    np.testing.assert_array_equal(kernel.best_penalties_, primal.best_penalties_)
    np.testing.assert_allclose(kernel.predict(lazy[:6]), primal.predict(X[:6]), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(kernel.coef_, primal.coef_, rtol=1e-6, atol=1e-9)


def test_three_spaces_grid_and_sklearn_conventions():
    X, Y = make_problem(widths=(4, 5, 6), seed=5)
    model = BandedRidgeCV({"a": 4, "b": 5, "c": 6}, ALPHAS, ratios=3, cv="gcv", backend="numpy")
    assert clone(model).get_params()["spaces"] == {"a": 4, "b": 5, "c": 6}
    model.fit(X, Y[:, 0])
    assert model.ratios_.shape == (10, 3) and model.space_names_ == ("a", "b", "c")
    np.testing.assert_allclose(model.ratios_.sum(axis=1), 1.0)
    assert model.predict(X).shape == (len(X),) and model.predict_split(X).shape == (3, len(X))
    assert isinstance(model.score(X, Y[:, 0]), float) and model.pearson_r(X, Y[:, 0]).shape == (1,)
    assert model.best_penalties_.shape == (3, 1) and model.cv_scores_.shape == (10, ALPHAS.size, 1)


@pytest.mark.parametrize(
    ("spaces", "match"),
    [
        ([6, 6], r"spaces \{'space0': 6, 'space1': 6\} sum to 12 columns but X has 15"),
        ([], "spaces is empty"),
        ([6, 0, 9], "space 'space1' has width 0"),
        ([("v1", 6), ("v1", 9)], "space 'v1' is given twice"),
    ],
)
def test_bad_spaces_are_clear_errors(spaces, match):
    X, Y = make_problem()
    with pytest.raises(InvalidArgumentError, match=match):
        BandedRidgeCV(spaces, backend="numpy").fit(X, Y)


def test_one_space_given_twice_as_identical_columns_is_refused():
    X, Y = make_problem(widths=(6, 9))
    doubled = np.hstack([X[:, :6], X[:, :6]])
    with pytest.raises(InvalidArgumentError, match=r"'space0' \(X\[:, 0:6\]\) and 'space1' \(X\[:, 6:12\]\) hold id"):
        BandedRidgeCV([6, 6], backend="numpy").fit(doubled, Y)


@pytest.mark.parametrize(
    ("ratios", "match"),
    [
        (np.ones((3, 3)), r"shape \(n_ratios, n_spaces=2\); got shape \(3, 3\)"),
        ([[0.5, -0.5]], r"ratios row 0 must be finite, >= 0 and not all 0; got \[0.5, -0.5\]"),
        (0, "The 'ratios' parameter of BandedRidgeCV must be"),
    ],
)
def test_bad_ratios_are_clear_errors(ratios, match):
    X, Y = make_problem()
    with pytest.raises(ValueError, match=match):
        BandedRidgeCV(WIDTHS, ratios=ratios, backend="numpy").fit(X, Y)
