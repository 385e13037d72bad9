"""Streaming PCA against sklearn's PCA, and a memory bound on a lazily generated layer."""

import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.decomposition import PCA as SkPCA
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import encoders.pca._solvers as pca_solvers
from encoders.pca import PCA, PCA_SOLVERS, cross_gram_matrix, gram_matrix, sketch_width
from encoders.pca._streaming import _block_edges

BACKENDS = ["numpy", "torch"] + (["torch_cuda"] if torch.cuda.is_available() else [])


def low_rank_data(n, p, seed=0):
    """Rank-10 signal plus isotropic noise and an offset: a decaying spectrum like network features."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 10)) @ rng.standard_normal((10, p)) * 3 + rng.standard_normal((n, p)) + 2


def as_input(X, kind):
    if kind == "dask":
        return da.from_array(X, chunks=(X.shape[0] // 3, 37))
    if kind == "xarray":
        return xr.DataArray(da.from_array(X, chunks=(-1, 64)), dims=("nsd_id", "feature"))
    return X


class RecordingArray:
    """A numpy array behind a zarr-like interface (``shape``, ``dtype``, one regular ``chunks`` shape) that records
    every ``(rows, columns)`` range read, as ``((start, stop), (start, stop))``."""

    def __init__(self, array, chunks):
        self.array, self.chunks, self.reads = array, chunks, []

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    def __getitem__(self, key):
        rows, cols = key
        self.reads.append(tuple(part.indices(size)[:2] for part, size in zip(key, self.shape, strict=True)))
        return self.array[rows, cols]


def assert_matches_sklearn(pca, scores, X, X_new, rtol=1e-5):
    reference = SkPCA(pca.n_components, svd_solver="full").fit(X)
    ref_scores = reference.transform(X)
    signs = np.sign(np.sum(scores * ref_scores, axis=0))
    np.testing.assert_allclose(pca.explained_variance_, reference.explained_variance_, rtol=rtol)
    np.testing.assert_allclose(pca.explained_variance_ratio_, reference.explained_variance_ratio_, rtol=rtol)
    np.testing.assert_allclose(pca.singular_values_, reference.singular_values_, rtol=rtol)
    np.testing.assert_allclose(pca.mean_, reference.mean_, atol=rtol * np.abs(X).std())
    scale = np.abs(ref_scores).max()
    np.testing.assert_allclose(scores * signs, ref_scores, atol=rtol * scale)
    np.testing.assert_allclose(pca.components_ * signs[:, None], reference.components_, atol=rtol)
    np.testing.assert_allclose(pca.transform(X_new) * signs, reference.transform(X_new), atol=rtol * scale)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("method", "shape"),
    [
        ("gram", (90, 400)),
        ("gram", (150, 60)),
        ("covariance", (150, 60)),
        ("randomized", (90, 400)),
        ("auto", (150, 60)),
    ],
)
def test_matches_sklearn_pca(backend, method, shape):
    X = low_rank_data(*shape)
    X_new = np.random.default_rng(1).standard_normal((13, shape[1]))
    pca = PCA(8, method=method, backend=backend, block_size=50)
    scores = pca.fit_transform(as_input(X, "dask"))
    assert pca.method_ == ("covariance" if method == "auto" else method)
    assert scores.shape == (shape[0], 8) and pca.components_.shape == (8, shape[1])
    assert_matches_sklearn(pca, scores, X, as_input(X_new, "dask"))


@pytest.mark.parametrize(
    ("shape", "k", "method", "iterations"),
    [
        ((600, 2000), 10, "randomized", 7),
        ((600, 2000), 100, "randomized", 4),
        ((600, 2000), 480, "gram", None),
        ((2000, 300), 240, "covariance", None),
        ((300, 400), 5, "gram", None),
    ],
)
def test_auto_follows_sklearn_svd_solver_auto(shape, k, method, iterations):
    """scikit-learn's rule: randomized for few components of a matrix with a side > 500 (7 power iterations below
    a tenth of the smaller side, else 4); exact otherwise. The ``auto`` choice gives what asking for it gives."""
    X = low_rank_data(*shape)
    auto = PCA(k, backend="numpy").fit(X)
    assert auto.method_ == method
    explicit = PCA(k, method=method, backend="numpy", **({"n_iter": iterations} if iterations else {})).fit(X)
    np.testing.assert_array_equal(auto.singular_values_, explicit.singular_values_)
    if iterations:  # another iteration count gives other bits
        other = PCA(k, method=method, backend="numpy", n_iter=iterations - 1).fit(X)
        assert not np.array_equal(auto.singular_values_, other.singular_values_)


@pytest.mark.parametrize("kind", ["numpy", "xarray"])
def test_numpy_and_xarray_inputs(kind):
    X = low_rank_data(70, 300)
    X_new = np.random.default_rng(1).standard_normal((5, 300))
    pca = PCA(6, backend="numpy")
    assert_matches_sklearn(pca, pca.fit_transform(as_input(X, kind)), X, as_input(X_new, kind))


def test_randomized_on_a_slowly_decaying_spectrum_and_float32_are_close():
    X = np.random.default_rng(3).standard_normal((120, 300)) / np.sqrt(np.arange(1, 301))
    X_new = np.random.default_rng(4).standard_normal((10, 300))
    pca = PCA(5, method="randomized", backend="numpy", n_iter=7)
    assert_matches_sklearn(pca, pca.fit_transform(X), X, X_new, rtol=1e-3)
    pca32 = PCA(5, method="gram", backend="torch", dtype="float32")
    assert_matches_sklearn(pca32, pca32.fit_transform(X.astype(np.float32)), X, X_new, rtol=1e-4)


def test_fit_then_transform_of_training_rows_equals_fit_transform():
    X = low_rank_data(60, 200)
    scores = PCA(6, backend="numpy").fit_transform(X)
    np.testing.assert_allclose(PCA(6, backend="numpy").fit(X).transform(X), scores, atol=1e-9)


@pytest.mark.parametrize("method", sorted(PCA_SOLVERS))
def test_solvers_are_what_the_estimator_dispatches_to(method):
    """Each registered solver, called alone, gives the estimator's fit exactly, as a frozen solution."""
    X = low_rank_data(120, 80)
    pca = PCA(4, method=method, backend="numpy", n_iter=3)
    scores = pca.fit_transform(X)
    options = {"n_iter": 3} if method == "randomized" else {}
    solution = PCA_SOLVERS[method](X, 4, backend="numpy", **options)
    np.testing.assert_array_equal(np.sqrt(solution.eigvals), pca.singular_values_)
    np.testing.assert_array_equal(solution.mean, pca.mean_)
    assert solution.n_iter == pca.n_iter_ == (3 if method == "randomized" else 0)
    if solution.scores is not None:
        np.testing.assert_array_equal(solution.scores, scores)
    if solution.components is not None:
        np.testing.assert_array_equal(solution.components, pca.components_)
    with pytest.raises(AttributeError):
        solution.mean = None


@pytest.mark.parametrize("backend", BACKENDS)
def test_gram_and_cross_gram_equal_direct_products(backend):
    X = low_rank_data(40, 230)
    X_new = low_rank_data(7, 230, seed=5)
    gram, mean = gram_matrix(da.from_array(X, chunks=(40, 30)), block_size=70, backend=backend)
    centred = X - X.mean(axis=0)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(gram, centred @ centred.T, rtol=1e-10)
    cross = cross_gram_matrix(X_new, da.from_array(X, chunks=(40, 30)), mean, block_size=70, backend=backend)
    np.testing.assert_allclose(cross, (X_new - mean) @ centred.T, rtol=1e-10)


def test_block_edges_follow_chunks_and_split_wide_ones():
    assert _block_edges([10, 10, 10, 10], 25) == [(0, 20), (20, 40)]
    assert _block_edges([100], 30) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert _block_edges([5, 50, 5], 20) == [(0, 5), (5, 25), (25, 45), (45, 55), (55, 60)]


def test_parameter_and_data_errors():
    X = low_rank_data(20, 30)
    with pytest.raises(ValueError, match=r"n_components=25 must be <= min\(n_samples, n_features\)=20"):
        PCA(25).fit(X)
    with pytest.raises(ValueError, match="method='covariance' forms a p x p matrix"):
        PCA(5, method="covariance").fit(X)
    with pytest.raises(
        ValueError,
        match=r"The 'method' parameter of PCA must be one of \['auto', 'covariance', "
        r"'gram', 'randomized'\]; got 'svd'",
    ):
        PCA(5, method="svd").fit(X)
    with pytest.raises(ValueError, match=r"The 'backend' parameter of PCA must be one of .*; got 'cupy'"):
        PCA(5, backend="cupy").fit(X)
    with pytest.raises(
        ValueError,
        match=r"The 'n_iter' parameter of PCA must be an int >= 0 or one of \['auto'\]; "
        r"got -1",
    ):
        PCA(5, n_iter=-1).fit(X)
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        PCA(5).fit(X[0])
    with pytest.raises(
        ValueError,
        match=r"Found array with 1 sample\(s\) \(shape=\(1, 30\)\) while a minimum of 2 "
        r"is required by PCA",
    ):
        PCA(1).fit(X[:1])
    with pytest.raises(NotFittedError):
        PCA(5).transform(X)
    with pytest.raises(ValueError, match="X has 29 features, but PCA is expecting 30 features as input"):
        PCA(5, backend="numpy").fit(X).transform(X[:, 1:])
    with pytest.raises(ValueError, match="X has 29 features, but PCA is expecting 30 features as input"):
        PCA(5, backend="numpy").fit(as_input(X, "dask")).transform(as_input(X[:, 1:], "dask"))


@pytest.mark.parametrize("method", ["gram", "covariance", "randomized"])
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_nan_and_infinity_are_refused_by_fit_and_transform(method, kind):
    X = low_rank_data(40, 30)
    model = PCA(5, method=method, backend="numpy").fit(as_input(X, kind))
    for bad in (np.nan, np.inf):
        rows = X.copy()
        rows[3, 4] = bad
        with pytest.raises(ValueError, match="X contains NaN or infinite values"):
            PCA(5, method=method, backend="numpy").fit(as_input(rows, kind))
        with pytest.raises(ValueError, match="X contains NaN or infinite values"):
            model.transform(as_input(rows, kind))


def _expected_failed_checks(estimator):
    """Where our PCA differs from scikit-learn's contract on purpose."""
    if estimator.method == "gram":
        return {
            "check_dict_unchanged": "method='gram' computes components_ on first access (one more pass over the "
            "training matrix, which fit avoids) and caches them, so the first transform "
            "adds them to the estimator's __dict__"
        }
    return {}


@parametrize_with_checks(
    [
        PCA(n_components=2, backend="numpy"),
        PCA(n_components=1, method="gram", dtype="float32", backend="torch"),
        PCA(n_components=2, method="randomized", backend="numpy"),
    ],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,
)
def test_scikit_learn_contract(estimator, check):
    check(estimator)


def test_streams_a_lazy_float16_layer_with_bounded_memory():
    """A 256 x 240,000 float16 layer generated lazily (dense float32: 234 MiB) is decomposed while the traced peak
    stays below a quarter of the dense float32 size, and the planted first component is recovered."""
    n, p, chunk = 256, 240_000, 4_000
    planted = np.random.default_rng(1).standard_normal(n).astype(np.float32)

    def make_chunk(block_info=None):
        column = block_info[None]["chunk-location"][1]
        rng = np.random.default_rng([7, column])
        loadings = rng.standard_normal(chunk, dtype=np.float32)
        noise = rng.standard_normal((n, chunk), dtype=np.float32)
        return (2.0 * np.outer(planted, loadings) + noise).astype(np.float16)

    X = da.map_blocks(make_chunk, dtype=np.float16, chunks=((n,), (chunk,) * (p // chunk)))
    dense_float32 = n * p * 4
    tracemalloc.start()
    try:
        with dask.config.set(scheduler="threads", num_workers=2):
            pca = PCA(3, method="gram", backend="numpy", dtype="float32", block_size=2 * chunk)
            scores = pca.fit_transform(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < dense_float32 / 4, f"peak {peak / 2**20:.0f} MiB for a {dense_float32 / 2**20:.0f} MiB layer"
    assert abs(np.corrcoef(scores[:, 0], planted)[0, 1]) > 0.99
    assert pca.explained_variance_ratio_[0] > 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_transform_reads_each_row_once_in_full_width_chunk_aligned_blocks(backend):
    """A layer stored in (16 rows x 64 columns) chunks: transform reads whole-chunk row blocks of at most
    ``block_size`` rows, every row once and every column each time (a column block would decode each chunk once
    per block), and matches sklearn."""
    X = low_rank_data(90, 300)
    X_new = low_rank_data(100, 300, seed=5)
    reference = SkPCA(7, svd_solver="full").fit(X)
    pca = PCA(7, method="gram", backend=backend, block_size=40).fit(X)
    signs = np.sign(np.sum(pca.components_ * reference.components_, axis=1))
    stored = RecordingArray(X_new, chunks=(16, 64))
    scores = pca.transform(stored)
    np.testing.assert_allclose(scores * signs, reference.transform(X_new), atol=1e-10)
    assert stored.reads == [((0, 32), (0, 300)), ((32, 64), (0, 300)), ((64, 100), (0, 300))]
    stored.reads.clear()
    np.testing.assert_allclose(PCA(7, backend=backend).fit(X).transform(stored), scores, atol=1e-10)
    assert stored.reads == [((0, 100), (0, 300))]  # default: one ~64 MiB block holds all rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_randomized_in_memory_and_streamed_agree(backend, monkeypatch):
    """The centred matrix under the in-memory budget is read once; over it each power iteration is one more
    pass. Both give the same fit, close to sklearn on a decaying spectrum."""
    rng = np.random.default_rng(2)
    X = (rng.standard_normal((80, 30)) / np.arange(1, 31)) @ rng.standard_normal((30, 500)) * 3
    X += rng.standard_normal((80, 500)) * 0.1 + 1
    X_new = rng.standard_normal((6, 500))

    def fit(budget):
        monkeypatch.setattr(pca_solvers, "CENTRED_IN_MEMORY_BYTES", budget)
        stored = RecordingArray(X, chunks=(80, 64))
        pca = PCA(6, method="randomized", backend=backend, block_size=128, n_iter=4)
        scores = pca.fit_transform(stored)
        return pca, scores, len(stored.reads)

    in_memory, scores, reads_in_memory = fit(2 * 2**30)
    streamed, streamed_scores, reads_streamed = fit(1024)
    assert reads_in_memory == 4 and reads_streamed == 4 * (4 + 2)  # 4 column blocks of <= 128: one pass vs 6
    for name in ["explained_variance_", "explained_variance_ratio_", "singular_values_", "mean_", "components_"]:
        np.testing.assert_allclose(
            getattr(streamed, name), getattr(in_memory, name), rtol=1e-10, atol=1e-10, err_msg=name
        )
    np.testing.assert_allclose(streamed_scores, scores, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(streamed.transform(X_new), in_memory.transform(X_new), rtol=1e-10, atol=1e-10)
    reference = SkPCA(6, svd_solver="full").fit(X)
    np.testing.assert_allclose(in_memory.explained_variance_, reference.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(np.abs(in_memory.components_), np.abs(reference.components_), atol=1e-5)


def test_randomized_sketch_is_rounded_up_to_whole_tiles():
    """The sketch width is n_components + n_oversamples rounded up to a multiple of 16 (at most min(n, p)): two
    oversampling counts that round to the same width draw the same test matrix and give the same fit."""
    assert sketch_width(100, 10, 9000, 9216) == 112
    assert sketch_width(96, 0, 9000, 9216) == 96
    assert sketch_width(6, 10, 80, 12) == 12
    X = low_rank_data(80, 500)
    fits = [PCA(6, method="randomized", backend="numpy", n_oversamples=m, n_iter=2).fit(X) for m in (3, 10, 11)]
    np.testing.assert_array_equal(fits[0].singular_values_, fits[1].singular_values_)  # both 16 wide
    assert not np.array_equal(fits[1].singular_values_, fits[2].singular_values_)  # 16 against 32
