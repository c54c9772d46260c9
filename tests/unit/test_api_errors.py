"""Bad input gets a DiffcoreError with a clear message, never a wrong number."""
import numpy as np
import pytest

import diffcore
from diffcore import DiffcoreError, backends

X = np.ones((2, 3), np.float32)


def test_shape_mismatch_names_both_shapes_and_refuses_to_broadcast():
    with pytest.raises(DiffcoreError, match=r"ref has shape \(2, 3\), test has shape \(3,\).*does not broadcast"):
        diffcore.drift(X, np.ones(3, np.float32))


@pytest.mark.parametrize("bad, pattern", [
    (np.ones((2, 3), bool), "bool tensor"),
    (np.ones((2, 3), np.complex64), "complex dtype complex64"),
    (np.array([[object()] * 3] * 2), "unsupported dtype object"),
    (np.array([["a"] * 3] * 2), "unsupported dtype"),
])
def test_unsupported_dtypes_are_refused(bad, pattern):
    with pytest.raises(DiffcoreError, match=pattern):
        diffcore.drift(X, bad)


@pytest.mark.parametrize("bad", [[1.0, 2.0], 3.0, "x", None])
def test_non_arrays_are_refused(bad):
    with pytest.raises(DiffcoreError, match="must be an array"):
        diffcore.drift(bad, X)


def test_integers_are_promoted():
    s = diffcore.drift(np.arange(6).reshape(2, 3), np.arange(6).reshape(2, 3).astype(np.float32) + 0.5)
    assert s.max_abs == 0.5 and s.ref_dtype == "int64"


def test_tolerances_come_together_or_not_at_all():
    with pytest.raises(DiffcoreError, match="atol was given without rtol"):
        diffcore.drift(X, X, atol=1e-3)
    with pytest.raises(DiffcoreError, match="rtol was given without atol"):
        diffcore.drift(X, X, rtol=1e-3)


@pytest.mark.parametrize("atol", [-1.0, float("nan"), "big"])
def test_malformed_tolerances_are_refused(atol):
    with pytest.raises(DiffcoreError, match="atol must be"):
        diffcore.drift(X, X, atol=atol, rtol=0.0)


@pytest.mark.parametrize("dtype, expected", [("float16", (1e-5, 1e-3)), ("float32", (1e-5, 1.3e-6)),
                                             ("float64", (1e-7, 1e-7))])
def test_default_tolerances_follow_the_test_dtype(dtype, expected):
    s = diffcore.drift(X.astype(np.float64), X.astype(dtype))
    assert (s.tolerance.atol, s.tolerance.rtol) == expected
    assert s.tolerance.source == f"default:{dtype}"


def test_test_dtype_override_changes_the_measuring_format():
    s = diffcore.drift(X, X, test_dtype="float16")
    assert s.test_dtype == "float16" and s.tolerance.rtol == 1e-3
    with pytest.raises(DiffcoreError, match="unknown float format 'float8'"):
        diffcore.drift(X, X, test_dtype="float8")


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(DiffcoreError, match="unknown backend 'fast'.*'numba-cpu'"):
        diffcore.drift(X, X, backend="fast")


def test_gpu_backend_refuses_host_data_or_says_why_it_is_unavailable():
    for name in ("cupy", "numba-cuda"):
        with pytest.raises(DiffcoreError, match="not available|runs on the GPU but the tensors live on cpu"):
            diffcore.drift(X, X, backend=name)


def test_availability_never_raises_and_gives_reasons():
    table = backends.availability()
    assert set(table) == {"numpy", "numba-cpu", "numba-cuda", "cupy"}
    assert all(isinstance(ok, bool) and isinstance(reason, str) and reason for ok, reason in table.values())
    assert backends.is_available("numpy") and not backends.is_available("no-such-backend")


def test_torch_device_mismatch_and_unsupported_devices_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(DiffcoreError, match="lives on meta"):
        diffcore.drift(torch.ones(3, device="meta"), torch.ones(3, device="meta"))


def test_drift_many_accepts_a_mapping_and_names_the_bad_pair():
    out = diffcore.drift_many({"a": (X, X), "b": (X, X + 1)})
    assert list(out) == ["a", "b"] and out["b"].max_abs == 1.0
    with pytest.raises(DiffcoreError, match="shape mismatch for b"):
        diffcore.drift_many({"a": (X, X), "b": (X, X[0])})
    with pytest.raises(DiffcoreError, match="must be a \\(ref, test\\) tuple"):
        diffcore.drift_many([X])


def test_torch_inputs_with_grad_bfloat16_and_views_are_read_in_place():
    torch = pytest.importorskip("torch")
    ref = torch.randn(4, 5, requires_grad=True)
    test = ref.detach().to(torch.bfloat16).t().contiguous().t()  # a non-contiguous bfloat16 view
    s = diffcore.drift(ref, test)
    want = diffcore.drift(ref.detach().numpy(), test.float().numpy(), test_dtype="bfloat16", backend="numpy")
    assert s.max_abs == want.max_abs and s.test_dtype == "bfloat16"
