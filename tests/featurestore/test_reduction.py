"""Write-time reductions against torch / numpy / scikit-learn references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from sklearn.random_projection import SparseRandomProjection as SklearnSRP

from featurestore.reduction import make_reducer, sparse_projection_matrix


def test_flatten_is_row_major_reshape() -> None:
    x = torch.randn(3, 4, 5, 6)
    reducer = make_reducer(None, (4, 5, 6), seed=0)
    assert reducer.out_features == 120 and reducer.spec is None
    np.testing.assert_array_equal(reducer(x).numpy(), x.numpy().reshape(3, -1))


def test_avgpool_conv_map_matches_adaptive_avg_pool() -> None:
    x = torch.randn(2, 8, 7, 5)
    reducer = make_reducer("avgpool", (8, 7, 5), seed=0)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
    assert reducer.out_features == 8
    torch.testing.assert_close(reducer(x), expected)


def test_avgpool_token_map_averages_tokens() -> None:
    x = torch.randn(2, 50, 16, dtype=torch.float16)
    reducer = make_reducer("avgpool", (50, 16), seed=0)
    np.testing.assert_allclose(reducer(x).numpy(), x.float().numpy().mean(axis=1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("spec", "shape", "match"),
    [
        ("avgpool", (10,), "needs a \\(C, H, W\\) conv map"),
        ("srp:100", (4, 5), "needs 0 < k < the 20 features"),
        ("srp:0", (4, 5), "needs 0 < k"),
        ("pca:10", (4, 5), "Unknown reduce='pca:10'"),
    ],
)
def test_bad_specs_are_refused(spec: str, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_reducer(spec, shape, seed=0)


def test_batch_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="built for feature shape \\(3, 4\\)"):
        make_reducer(None, (3, 4), seed=0)(torch.zeros(2, 4, 3))


def test_srp_matrix_follows_sklearn_very_sparse_law() -> None:
    n_features, k = 900, 64
    ours = sparse_projection_matrix(n_features, k, seed=3).to_dense().numpy()
    theirs = SklearnSRP(n_components=k, density="auto", random_state=0).fit(np.zeros((2, n_features)))
    theirs_values = np.unique(np.abs(theirs.components_.toarray()[theirs.components_.toarray() != 0]))
    ours_values = np.unique(np.abs(ours[ours != 0]))
    np.testing.assert_allclose(ours_values, theirs_values, rtol=1e-6)  # one magnitude: sqrt(1/d)/sqrt(k)
    density, n_entries = theirs.density_, ours.size
    nonzero = np.count_nonzero(ours)
    assert abs(nonzero - density * n_entries) < 5 * math.sqrt(n_entries * density * (1 - density))
    positive = np.count_nonzero(ours > 0)
    assert abs(positive - nonzero / 2) < 5 * math.sqrt(nonzero / 4)


def test_srp_preserves_distances_like_johnson_lindenstrauss() -> None:
    rng = np.random.default_rng(0)
    shape, k = (3, 16, 16), 512
    x = torch.from_numpy(rng.normal(size=(20, *shape)).astype(np.float32))
    projected = make_reducer(f"srp:{k}", shape, seed=7)(x).numpy()
    ratio = pdist(projected) / pdist(x.numpy().reshape(20, -1))
    assert abs(np.mean(ratio**2) - 1) < 0.05  # unbiased squared norms
    assert np.all(np.abs(ratio - 1) < 0.25)  # eps of a k=512 JL embedding of 20 points


def test_srp_is_a_seeded_linear_map() -> None:
    shape = (4, 6, 6)
    x = torch.randn(5, *shape)
    first, again, other = (make_reducer("srp:32", shape, seed=s) for s in (11, 11, 12))
    np.testing.assert_array_equal(first.matrix().numpy(), again.matrix().numpy())
    assert not torch.equal(first.matrix(), other.matrix())
    assert first.spec == "srp:32" and first.out_features == 32 and first.seed == 11
    torch.testing.assert_close(first(x), x.reshape(5, -1) @ first.matrix(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_srp_same_projection_on_cuda() -> None:
    shape = (8, 9, 9)
    x = torch.randn(4, *shape)
    reducer = make_reducer("srp:40", shape, seed=5)
    on_gpu = reducer(x.cuda().half()).cpu()
    torch.testing.assert_close(on_gpu, reducer(x.half()), rtol=1e-4, atol=1e-4)
