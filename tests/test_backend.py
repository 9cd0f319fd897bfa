import numpy as np
import pytest
import scipy.linalg

from minivae import DeviceUnavailableError, get_backend


def test_cpu_backend_linear_algebra(rng):
    be = get_backend("cpu")
    A = rng.standard_normal((7, 7))
    A = A @ A.T + 7 * np.eye(7)
    B = rng.standard_normal((7, 3))
    L = be.cholesky(A)
    np.testing.assert_allclose(L @ L.T, A, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(A @ be.cho_solve(L, B), B, rtol=1e-10, atol=1e-10)


def test_cholesky_raises_on_indefinite():
    with pytest.raises(np.linalg.LinAlgError):
        get_backend("cpu").cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="not one of"):
        get_backend("tpu")


def test_gpu_without_cupy_or_driver_says_why():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(DeviceUnavailableError, match="CuPy, which is not installed"):
            get_backend("gpu")
        return
    with pytest.raises(DeviceUnavailableError, match="device=\"cpu\""):
        get_backend("gpu")


def test_cuda_sim_backend_runs_with_numpy():
    be = get_backend("cuda-sim")
    assert be.xp is np and be.kernel_impl == "cuda"


def test_same_seed_same_stream():
    be = get_backend("cpu")
    np.testing.assert_array_equal(be.rng(3).standard_normal(5), be.rng(3).standard_normal(5))


@pytest.mark.parametrize("device", ["cpu", "cuda-sim"])
def test_backend_pickles_and_deepcopies_by_device_name(device):
    import copy
    import pickle

    try:
        backend = get_backend(device)
    except DeviceUnavailableError:
        pytest.skip(f"{device} unavailable here")
    assert pickle.loads(pickle.dumps(backend)) is backend
    assert copy.deepcopy(backend) is backend


@pytest.mark.parametrize("trans", [0, 1])
def test_gpu_solves_read_a_row_major_factor_in_place(rng, trans):
    """The GPU path hands cuBLAS L^T (column-major, the same memory) for a row-major L,
    with the other triangle and op: the same system, no copy of L."""
    from minivae.backend import _column_major

    n = 6
    A = rng.normal(size=(n, n))
    L = np.linalg.cholesky(A @ A.T + n * np.eye(n))
    B = rng.normal(size=(n, 3))
    A_cm, lower, op = _column_major(L, True, trans)
    assert A_cm.flags.f_contiguous and np.shares_memory(A_cm, L)
    expected = scipy.linalg.solve_triangular(L, B, lower=True, trans=trans)
    got = scipy.linalg.solve_triangular(A_cm, B, lower=lower, trans=op)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    L_f = np.asfortranarray(L)
    assert _column_major(L_f, True, trans) == (L_f, True, trans)
