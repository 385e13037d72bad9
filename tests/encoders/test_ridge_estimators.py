"""RidgeCV / KernelRidgeCV estimators: agreement with himalaya and sklearn, lazy inputs, sklearn conventions."""

import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from himalaya.backend import get_backend as himalaya_get_backend
from himalaya.backend import set_backend as himalaya_set_backend
from himalaya.kernel_ridge import KernelRidgeCV as HimalayaKernelRidgeCV
from himalaya.ridge import RidgeCV as HimalayaRidgeCV
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from encoders.pca import cross_gram_matrix, gram_matrix
from encoders.ridge import KernelRidgeCV, RidgeCV
from encoders.scoring import pearson_r
from encoders.splits import kfold

BACKENDS = ["numpy", "torch"] + (["torch_cuda"] if torch.cuda.is_available() else [])
ALPHAS = np.logspace(-1, 4, 11)


@pytest.fixture(autouse=True)
def himalaya_numpy_backend():
    """himalaya keeps a global backend: use numpy for the references and restore it afterwards."""
    previous = himalaya_get_backend().name
    himalaya_set_backend("numpy")
    yield
    himalaya_set_backend(previous)


def make_problem(n, p, t, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) + 0.5
    W = rng.standard_normal((p, t)) * rng.uniform(0, 0.5, t)
    return X, X @ W + 3 * rng.standard_normal((n, t)) + 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["svd", "gram"])
def test_ridgecv_equals_himalaya_ridgecv(backend, solver):
    X, Y = make_problem(180, 40, 25)
    folds = kfold(180, 5, seed=2)
    ours = RidgeCV(ALPHAS, cv=folds, solver=solver, backend=backend).fit(X, Y)
    theirs = HimalayaRidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=True).fit(X, Y)
    np.testing.assert_allclose(ours.best_alphas_, theirs.best_alphas_, rtol=1e-10)
    np.testing.assert_allclose(ours.cv_scores_.max(axis=0), theirs.cv_scores_, rtol=1e-6)
    X_new = np.random.default_rng(1).standard_normal((15, 40))
    np.testing.assert_allclose(ours.predict(X_new), theirs.predict(X_new), rtol=1e-4, atol=1e-8)
    assert ours.coef_.shape == (40, 25) and ours.intercept_.shape == (25,) and ours.cv_scores_.shape == (11, 25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_ridgecv_equals_himalaya_and_primal_ridge(backend):
    X, Y = make_problem(90, 300, 20, seed=1)
    folds = kfold(90, 4, seed=0)
    ours = KernelRidgeCV(ALPHAS, cv=folds, backend=backend, block_size=64).fit(X, Y)
    theirs = HimalayaKernelRidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=True).fit(X, Y)
    X_new = np.random.default_rng(2).standard_normal((12, 300))
    np.testing.assert_allclose(ours.best_alphas_, theirs.best_alphas_, rtol=1e-10)
    np.testing.assert_allclose(ours.predict(X_new), theirs.predict(X_new), rtol=1e-4, atol=1e-8)
    primal = RidgeCV(ALPHAS, cv=folds, backend=backend).fit(X, Y)
    np.testing.assert_array_equal(ours.best_alphas_, primal.best_alphas_)
    np.testing.assert_allclose(ours.predict(X_new), primal.predict(X_new), rtol=1e-6, atol=1e-8)


def test_kernel_ridgecv_streams_dask_and_xarray_and_matches_precomputed():
    X, Y = make_problem(70, 260, 8, seed=3)
    X_new = np.random.default_rng(4).standard_normal((9, 260))
    lazy = da.from_array(X, chunks=(70, 50))
    labelled = xr.DataArray(lazy, dims=("nsd_id", "feature"))
    from_dask = KernelRidgeCV(ALPHAS, cv="loo", backend="numpy", block_size=100).fit(lazy, Y)
    from_xarray = KernelRidgeCV(ALPHAS, cv="loo", backend="torch").fit(labelled, Y)
    gram, mean = gram_matrix(X, backend="numpy")
    precomputed = KernelRidgeCV(ALPHAS, kernel="precomputed", cv="loo", backend="numpy").fit(gram, Y)
    cross = cross_gram_matrix(X_new, X, mean, backend="numpy")
    expected = precomputed.predict(cross)
    assert precomputed.dual_coef_.shape == (70, 8)
    np.testing.assert_allclose(cross @ precomputed.dual_coef_ + precomputed.intercept_, expected, rtol=1e-8)
    np.testing.assert_allclose(from_dask.predict(da.from_array(X_new, chunks=(9, 50))), expected, rtol=1e-8)
    np.testing.assert_allclose(
        from_xarray.predict(xr.DataArray(X_new, dims=("nsd_id", "feature"))), expected, rtol=1e-8
    )
    reference = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    np.testing.assert_array_equal(from_dask.best_alphas_, reference.alpha_)
    np.testing.assert_allclose(expected, reference.predict(X_new), rtol=1e-4, atol=1e-8)


def test_gcv_primal_and_streamed_kernel_estimators_agree():
    X, Y = make_problem(70, 260, 8, seed=3)
    X_new = np.random.default_rng(4).standard_normal((9, 260))
    kernel = KernelRidgeCV(ALPHAS, cv="gcv", backend="torch", block_size=100).fit(da.from_array(X, chunks=(70, 50)), Y)
    primal = RidgeCV(ALPHAS, cv="gcv", backend="numpy").fit(X, Y)
    np.testing.assert_array_equal(kernel.best_alphas_, primal.best_alphas_)
    np.testing.assert_allclose(kernel.cv_scores_, primal.cv_scores_, rtol=1e-8)
    np.testing.assert_allclose(kernel.predict(X_new), primal.predict(X_new), rtol=1e-6, atol=1e-8)


def test_precomputed_raw_kernel_gives_the_same_model():
    """The intercept absorbs the kernel convention: raw X X^T and the centred Gram give the same predictions."""
    X, Y = make_problem(60, 30, 5, seed=5)
    X_new = np.random.default_rng(6).standard_normal((7, 30)) + 0.5
    raw = KernelRidgeCV(ALPHAS, kernel="precomputed", cv=3, backend="numpy").fit(X @ X.T, Y)
    linear = KernelRidgeCV(ALPHAS, cv=3, backend="numpy").fit(X, Y)
    np.testing.assert_array_equal(raw.best_alphas_, linear.best_alphas_)
    np.testing.assert_allclose(raw.predict(X_new @ X.T), linear.predict(X_new), rtol=1e-8)


def test_cv_forms_agree_and_scores():
    X, Y = make_problem(100, 10, 6, seed=7)
    by_int = RidgeCV(ALPHAS, cv=4, backend="numpy").fit(X, Y)
    by_folds = RidgeCV(ALPHAS, cv=kfold(100, 4, seed=0), backend="numpy").fit(X, Y)
    by_splitter = RidgeCV(ALPHAS, cv=KFold(4, shuffle=True, random_state=0), backend="numpy").fit(X, Y)
    for other in (by_folds, by_splitter):
        np.testing.assert_array_equal(by_int.cv_scores_, other.cv_scores_)
    by_none = RidgeCV(ALPHAS, cv=None, backend="numpy").fit(X, Y)
    reference = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    np.testing.assert_array_equal(by_none.best_alphas_, reference.alpha_)
    X_new, Y_new = make_problem(40, 10, 6, seed=8)
    score = by_int.score(X_new, Y_new)
    assert isinstance(score, float)
    assert score == pytest.approx(r2_score(Y_new, by_int.predict(X_new)), rel=1e-12)
    per_target = [r2_score(Y_new[:, i], by_int.predict(X_new)[:, i]) for i in range(6)]
    assert score == pytest.approx(np.mean(per_target), rel=1e-12)  # uniform average, not variance-weighted
    np.testing.assert_allclose(by_int.pearson_r(X_new, Y_new), pearson_r(Y_new, by_int.predict(X_new)), rtol=1e-12)
    one = RidgeCV(ALPHAS, backend="numpy").fit(X, Y[:, 0])
    assert one.coef_.shape == (10, 1) and one.predict(X).shape == (100,)
    column = RidgeCV(ALPHAS, backend="numpy").fit(X, Y[:, :1])
    assert column.predict(X).shape == (100, 1)
    np.testing.assert_array_equal(one.predict(X), column.predict(X)[:, 0])
    assert one.score(X_new, Y_new[:, 0]) == pytest.approx(r2_score(Y_new[:, 0], one.predict(X_new)), rel=1e-12)
    np.testing.assert_allclose(
        one.pearson_r(X_new, Y_new[:, 0]), pearson_r(Y_new[:, :1], one.predict(X_new)[:, None]), rtol=1e-12
    )
    assert one.pearson_r(X_new, Y_new[:, 0]).shape == (1,)


def test_sklearn_conventions():
    model = RidgeCV(alphas=[-1.0], cv="nope", solver="qr")  # __init__ only stores
    assert clone(model).get_params()["solver"] == "qr"
    with pytest.raises(NotFittedError):
        RidgeCV().predict(np.zeros((2, 3)))
    with pytest.raises(NotFittedError):
        KernelRidgeCV().predict(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (RidgeCV(solver="qr"), r"The 'solver' parameter of RidgeCV must be one of \['gram', 'svd'\]; got 'qr'"),
        (KernelRidgeCV(solver="svd"), r"The 'solver' parameter of KernelRidgeCV must be one of \['eigh'\]; got 'svd'"),
        (RidgeCV(alphas=[1.0, -2.0]), r"alphas must be finite and >= 0; got \[1.0, -2.0\]"),
        (RidgeCV(alphas="big"), r"The 'alphas' parameter of RidgeCV must be a sequence or ndarray; got 'big'"),
        (RidgeCV(scoring="r2"), r"The 'scoring' parameter of RidgeCV must be one of \['neg_mse', 'r'\]; got 'r2'"),
        (
            RidgeCV(backend="cupy"),
            r"The 'backend' parameter of RidgeCV must be one of \['auto', 'numpy', 'torch', "
            r"'torch_cuda'\]; got 'cupy'",
        ),
        (
            RidgeCV(cv="nope"),
            r"The 'cv' parameter of RidgeCV must be one of \['gcv', 'loo'\], an int >= 2, a splitter "
            r"with split\(\) or an iterable of \(train, val\) index pairs or None; got 'nope'",
        ),
        (RidgeCV(cv=1), r"The 'cv' parameter of RidgeCV must be .*; got 1"),
        (RidgeCV(cv=50), r"cv=50 folds needs 2 <= cv <= n_samples=20"),
        (RidgeCV(fit_intercept="yes"), r"The 'fit_intercept' parameter of RidgeCV must be a bool; got 'yes'"),
        (
            KernelRidgeCV(kernel="rbf"),
            r"The 'kernel' parameter of KernelRidgeCV must be one of \['linear', "
            r"'precomputed'\]; got 'rbf'",
        ),
        (RidgeCV(batch_size=0), r"The 'batch_size' parameter of RidgeCV must be an int >= 1 or None; got 0"),
        (
            KernelRidgeCV(block_size=2.5),
            r"The 'block_size' parameter of KernelRidgeCV must be an int >= 1 or None; "
            r"got 2.5",
        ),
    ],
)
def test_parameter_errors_name_the_parameter_and_value(estimator, message):
    X, Y = make_problem(20, 4, 2)
    with pytest.raises(ValueError, match=message):
        estimator.fit(X, Y)


def test_data_errors_name_shapes():
    X, Y = make_problem(20, 4, 2)
    with pytest.raises(ValueError, match=r"X has 20 rows \(shape \(20, 4\)\) but Y has 18 \(shape \(18, 2\)\)"):
        RidgeCV().fit(X, Y[:18])
    with pytest.raises(ValueError, match=r"X has 20 rows \(shape \(20, 4\)\) but Y has 18"):
        KernelRidgeCV().fit(X, Y[:18])
    with pytest.raises(ValueError, match=r"X has 3 features, but RidgeCV is expecting 4 features as input"):
        RidgeCV(backend="numpy").fit(X, Y).predict(X[:5, :3])
    with pytest.raises(ValueError, match=r"X has 19 features, but KernelRidgeCV is expecting 20 features as input"):
        KernelRidgeCV(kernel="precomputed", backend="numpy").fit(X @ X.T, Y).predict(np.zeros((5, 19)))


def test_lazy_input_is_checked_without_being_read():
    """A dask X is checked by shape and dtype at fit and predict; its values only as the kernel streams them."""
    X, Y = make_problem(30, 12, 2, seed=9)
    lazy = da.from_array(X, chunks=(30, 5))
    model = KernelRidgeCV(ALPHAS, cv=3, backend="numpy").fit(lazy, Y)
    assert model.X_fit_ is lazy and model.n_features_in_ == 12
    with pytest.raises(ValueError, match=r"X has 11 features, but KernelRidgeCV is expecting 12 features as input"):
        model.predict(lazy[:, 1:])
    with pytest.raises(ValueError, match=r"Expected a 2D array, got shape \(30,\)"):
        model.predict(lazy[:, 0])
    with pytest.raises(ValueError, match=r"Complex data not supported; KernelRidgeCV got X of dtype complex128"):
        KernelRidgeCV(ALPHAS, cv=3).fit(lazy + 1j, Y)
    with pytest.raises(ValueError, match=r"Found array with 0 feature\(s\) \(shape=\(30, 0\)\)"):
        KernelRidgeCV(ALPHAS, cv=3).fit(lazy[:, :0], Y)
    for bad in (np.nan, np.inf):
        rows = X[:4].copy()
        rows[2, 7] = bad
        with pytest.raises(ValueError, match="X contains NaN or infinite values"):
            model.predict(da.from_array(rows, chunks=(4, 5)))


@parametrize_with_checks(
    [
        RidgeCV(backend="numpy"),
        RidgeCV(solver="gram", cv="gcv", dtype="float32", backend="torch"),
        KernelRidgeCV(backend="torch"),
        KernelRidgeCV(kernel="precomputed", cv="loo", backend="numpy"),
    ]
)
def test_scikit_learn_contract(estimator, check):
    """Every scikit-learn estimator check passes: no expected failures."""
    check(estimator)


def test_pearson_r_warns_about_constant_targets():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 5)), rng.standard_normal((40, 3))
    Y[:, 1] = 2.0
    model = RidgeCV(alphas=[1.0], cv="gcv").fit(X, Y)
    with pytest.warns(RuntimeWarning, match=r"1 of 3 targets are constant in Y \(e.g. column 1\)"):
        r = model.pearson_r(X, Y)
    assert np.isnan(r[1]) and np.isfinite(r[[0, 2]]).all()
