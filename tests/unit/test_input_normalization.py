"""One input-normalization path: native byte order, numeric dtypes only, .npz members checked from their
headers (size limits, .npy only) before anything is allocated, never a pickle."""
from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

import diffcore
from diffcore import DiffcoreError
from diffcore.files import read_npz
from diffcore.inputs import normalize_inputs, resolve_inputs

from .test_cli import SPEC, assert_one_error_line, fake_compare, run  # noqa: F401


def _zip(path, members: dict) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _forged_header(shape, dtype="<f4", payload=b"\0" * 16) -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + payload


def test_a_big_endian_input_is_read_in_native_byte_order(tmp_path):
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "in.npz"
    np.savez(path, x=x.astype(">f4"), ids=np.arange(3).astype(">i8"))
    data, _ = resolve_inputs(str(path), None, None)
    assert data["x"].dtype == np.dtype("float32") and data["x"].dtype.isnative
    np.testing.assert_array_equal(data["x"], x)
    assert data["ids"].dtype.isnative and data["ids"].tolist() == [0, 1, 2]
    mapped = normalize_inputs({"x": x.astype(">f2")})
    assert mapped["x"].dtype.isnative and np.array_equal(mapped["x"], x.astype(np.float16))


@pytest.mark.parametrize("array, words", [
    (np.array(["a", "bc"]), "text"), (np.array([b"a"]), "bytes"),
    (np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), "structured"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), "dates"),
])
def test_string_bytes_record_and_date_arrays_are_refused(tmp_path, array, words):
    path = tmp_path / "in.npz"
    np.savez(path, x=array)
    with pytest.raises(DiffcoreError, match=words):
        read_npz(path)


def test_a_member_that_is_not_npy_is_refused_and_never_unpickled(tmp_path):
    path = tmp_path / "in.npz"
    marker = tmp_path / "pwned"
    payload = pickle.dumps(eval)  # noqa: S301  (would be code if it were ever unpickled)
    _zip(path, {"x.npy": _npy_bytes(np.ones(2)), "evil": payload, "evil.pkl": payload})
    with pytest.raises(DiffcoreError, match=r"member 'evil(\.pkl)?' is not a NumPy array \(\.npy\)"):
        read_npz(path)
    _zip(path, {"x.npy": b"\x80\x04" + payload})  # named .npy, but a pickle inside
    with pytest.raises(DiffcoreError, match="not a valid .npy array"):
        read_npz(path)
    assert not marker.exists()


def test_an_npy_header_claiming_2_to_the_40_elements_is_refused_without_allocating(tmp_path):
    path = tmp_path / "in.npz"
    _zip(path, {"x.npy": _forged_header((1 << 20, 1 << 20))})
    with pytest.raises(DiffcoreError, match=r"claims shape \(1048576, 1048576\) .* damaged or forged"):
        read_npz(path)


def test_a_zip_bomb_is_refused_from_its_headers_under_the_documented_limit(tmp_path, monkeypatch):
    import tracemalloc

    path = tmp_path / "bomb.npz"
    _zip(path, {f"x{i}.npy": _npy_bytes(np.zeros(1 << 21, np.float32)) for i in range(4)})  # 32 MiB inside
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("DIFFCORE_MAX_INPUT_BYTES", "16M")
    tracemalloc.start()
    with pytest.raises(DiffcoreError, match="more than 16777216 bytes .* DIFFCORE_MAX_INPUT_BYTES"):
        read_npz(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated before refusing"
    monkeypatch.setenv("DIFFCORE_MAX_INPUT_BYTES", "64M")
    assert len(read_npz(path)) == 4
    monkeypatch.setenv("DIFFCORE_MAX_INPUT_BYTES", "lots")
    with pytest.raises(DiffcoreError, match="DIFFCORE_MAX_INPUT_BYTES='lots' is not a positive number"):
        read_npz(path)


def test_the_default_limit_is_4_gib():
    from diffcore.files import max_input_bytes

    assert max_input_bytes() == 4 << 30


@pytest.mark.parametrize("kind", ["strings", "not-npy", "huge-header"])
def test_bad_input_archives_are_one_line_exit_2_on_the_cli(capsys, tmp_path, fake_compare, kind):
    path = tmp_path / "in.npz"
    if kind == "strings":
        np.savez(path, x=np.array(["a"]))
    elif kind == "not-npy":
        _zip(path, {"x": pickle.dumps([1, 2])})
    else:
        _zip(path, {"x.npy": _forged_header((1 << 40,))})
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--inputs", path)
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, "inputs file")


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
@pytest.mark.parametrize("order", [">f2", ">f4", ">f8"])
def test_drift_of_a_big_endian_array_equals_the_native_result(backend, order):
    a = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    got = diffcore.drift(a, a.astype(order), backend=backend)
    want = diffcore.drift(a, a.astype(order.replace(">", "<")), backend=backend)
    assert got.max_abs == want.max_abs and got.mismatch_count == want.mismatch_count
    both = diffcore.drift(a.astype(">f4"), a.astype(order), backend=backend)
    assert both.max_abs == want.max_abs
