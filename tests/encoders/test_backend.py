"""The backends are interchangeable: same names, same results (numpy is the reference)."""

import types

import numpy as np
import pytest
import torch

from encoders.backend import ALL_BACKENDS, get_backend

BACKENDS = ["numpy", "torch"] + (["torch_cuda"] if torch.cuda.is_available() else [])
rng = np.random.default_rng(0)
A = rng.standard_normal((30, 12))
SYM = A.T @ A


def public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and callable(value) and getattr(value, "__module__", "") == module.__name__
    }


def test_get_backend_names_and_errors():
    assert get_backend("numpy").name == "numpy"
    assert get_backend("torch").name == "torch"
    assert get_backend("auto").name == ("torch_cuda" if torch.cuda.is_available() else "torch")
    assert get_backend(get_backend("numpy")) is get_backend("numpy")
    with pytest.raises(ValueError, match=r"Unknown backend='cupy'; expected one of \['numpy', 'torch', 'torch_cuda'"):
        get_backend("cupy")
    with pytest.raises(ValueError, match="is not a backend"):
        get_backend(np)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_torch_cuda_without_cuda_says_so():
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        get_backend("torch_cuda")


def test_backends_define_the_same_functions():
    reference = {name for name in public_names(get_backend("numpy"))}
    assert reference >= {"asarray", "to_numpy", "eigh", "svd", "qr", "matmul", "zeros", "take", "where"}
    for name in BACKENDS[1:]:
        module = get_backend(name)
        defined = {n for n in reference if callable(getattr(module, n, None))}
        assert defined == reference, f"{name} lacks {reference - defined}"
    assert set(BACKENDS) <= set(ALL_BACKENDS)


@pytest.mark.parametrize("name", BACKENDS)
def test_asarray_dtype_roundtrip(name):
    xp = get_backend(name)
    half = A.astype(np.float16)
    assert xp.dtype_name(xp.asarray(half)) == "float16"
    as64 = xp.asarray(half, "float64")
    assert xp.dtype_name(as64) == "float64"
    np.testing.assert_array_equal(xp.to_numpy(as64), half.astype(np.float64))
    read_only = A.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(xp.to_numpy(xp.asarray(read_only)), A)
    assert xp.eps(as64) == np.finfo(np.float64).eps
    assert xp.to_numpy(xp.zeros((2, 3), "float32")).dtype == np.float32


@pytest.mark.parametrize("name", BACKENDS)
def test_linear_algebra_agrees_with_numpy(name):
    xp = get_backend(name)
    eigvals, eigvecs = (xp.to_numpy(v) for v in xp.eigh(xp.asarray(SYM)))
    np.testing.assert_allclose(eigvals, np.linalg.eigvalsh(SYM), rtol=1e-10)
    np.testing.assert_allclose(eigvecs @ np.diag(eigvals) @ eigvecs.T, SYM, atol=1e-10)
    u, s, vt = (xp.to_numpy(v) for v in xp.svd(xp.asarray(A)))
    assert u.shape == (30, 12) and vt.shape == (12, 12)
    np.testing.assert_allclose(s, np.linalg.svd(A, compute_uv=False), rtol=1e-10)
    np.testing.assert_allclose(u * s @ vt, A, atol=1e-10)
    q = xp.to_numpy(xp.qr(xp.asarray(A)))
    np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-12)
    np.testing.assert_allclose(q @ (q.T @ A), A, atol=1e-10)
    np.testing.assert_allclose(xp.to_numpy(xp.matmul(xp.asarray(A), xp.asarray(SYM))), A @ SYM, rtol=1e-12)


@pytest.mark.parametrize("name", BACKENDS)
def test_elementwise_and_reductions_agree_with_numpy(name):
    xp = get_backend(name)
    x = xp.asarray(A)
    for axis in (None, 0, 1):
        for fn in ("sum", "mean", "max", "min"):
            np.testing.assert_allclose(xp.to_numpy(getattr(xp, fn)(x, axis=axis)), getattr(np, fn)(A, axis=axis))
    np.testing.assert_array_equal(xp.to_numpy(xp.argmax(x, axis=1)), np.argmax(A, axis=1))
    np.testing.assert_allclose(xp.to_numpy(xp.sqrt(xp.abs(x))), np.sqrt(np.abs(A)))
    np.testing.assert_array_equal(xp.to_numpy(xp.clip(x, -0.5, None)), np.clip(A, -0.5, None))
    np.testing.assert_array_equal(xp.to_numpy(xp.where(x > 0, x, float("nan"))), np.where(A > 0, A, np.nan))
    np.testing.assert_array_equal(xp.to_numpy(xp.isnan(xp.asarray([1.0, np.nan]))), [False, True])
    idx = np.array([4, 0, 4, 29])
    np.testing.assert_array_equal(xp.to_numpy(xp.take(x, idx, 0)), A[idx])
    np.testing.assert_array_equal(xp.to_numpy(xp.take(x, idx[:3] % 12, 1)), A[:, idx[:3] % 12])
    np.testing.assert_array_equal(xp.to_numpy(xp.flip(x, 1)), A[:, ::-1])
    assert xp.dtype_name(x) == "float64"


@pytest.mark.parametrize("name", BACKENDS)
def test_subtract_multiply_and_ascontiguous(name):
    xp = get_backend(name)
    x, row = xp.asarray(A), xp.asarray(A[0])
    np.testing.assert_array_equal(xp.to_numpy(xp.subtract(x, row)), A - A[0])
    scratch = xp.zeros((30, 20), "float64")
    window = scratch[:, :12]
    written = xp.subtract(x, row, out=window)  # into a column window of a wider buffer, as the solvers do
    np.testing.assert_array_equal(xp.to_numpy(scratch[:, :12]), A - A[0])
    np.testing.assert_array_equal(xp.to_numpy(scratch[:, 12:]), 0.0)
    xp.multiply(written, written, out=written)  # squared in place
    np.testing.assert_array_equal(xp.to_numpy(scratch[:, :12]), (A - A[0]) ** 2)
    np.testing.assert_array_equal(xp.to_numpy(x), A)  # the inputs are untouched
    transposed = xp.ascontiguous(x.T)
    np.testing.assert_array_equal(xp.to_numpy(transposed), A.T)
    assert xp.to_numpy(transposed).flags.c_contiguous


@pytest.mark.parametrize("name", BACKENDS)
def test_copyto_and_take_write_into_a_window_of_a_wider_buffer(name):
    xp = get_backend(name)
    scratch = xp.zeros((30, 20), "float64")
    strided = A.astype(np.float32)[:, ::2]  # a float32 column view, as a batch of targets is
    written = xp.copyto(scratch[:, :6], strided)
    np.testing.assert_array_equal(xp.to_numpy(scratch[:, :6]), strided.astype(np.float64))
    np.testing.assert_array_equal(xp.to_numpy(scratch[:, 6:]), 0.0)
    assert xp.dtype_name(written) == "float64"
    indices = np.array([3, 0, 11, 3, 7])
    taken = xp.take(xp.asarray(A), indices, 1, out=scratch[:, :5])
    np.testing.assert_array_equal(xp.to_numpy(scratch[:, :5]), np.take(A, indices, axis=1))
    np.testing.assert_array_equal(xp.to_numpy(taken), np.take(A, indices, axis=1))
    np.testing.assert_array_equal(xp.to_numpy(scratch[:, 6:]), 0.0)
    with pytest.raises(IndexError):
        xp.take(xp.asarray(A), np.array([12]), 1, out=scratch[:, :1])


@pytest.mark.parametrize("name", BACKENDS)
def test_eigh_overwrite_agrees_and_reuses_the_input_memory(name):
    xp = get_backend(name)
    full_values, full_vectors = np.linalg.eigh(SYM)
    scratch = xp.asarray(SYM.copy())
    values, vectors = xp.eigh(scratch, True)
    np.testing.assert_allclose(xp.to_numpy(values), full_values, rtol=1e-10)
    alignment = np.abs(np.sum(xp.to_numpy(vectors) * full_vectors, axis=0))  # eigenvectors up to sign
    np.testing.assert_allclose(alignment, 1.0, rtol=1e-8)
    if name != "torch_cuda":
        assert np.shares_memory(xp.to_numpy(vectors), xp.to_numpy(scratch))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("k", [1, 5, 12])
def test_eigh_top_is_the_top_of_numpys_full_eigh(name, k):
    xp = get_backend(name)
    values, vectors = (xp.to_numpy(x) for x in xp.eigh_top(xp.asarray(SYM, "float64"), k))
    full_values, full_vectors = np.linalg.eigh(SYM)
    np.testing.assert_allclose(values, full_values[-k:], rtol=1e-10)
    alignment = np.abs(np.sum(vectors * full_vectors[:, -k:], axis=0))  # eigenvectors up to sign
    np.testing.assert_allclose(alignment, 1.0, rtol=1e-8)
