"""Exit 2 with one line, never exit 3, for every document a user can hand diffcore in a broken or hostile
form: trace metadata, golden.json, env diff inputs, ONNX name-scope metadata, and (a property test)
arbitrary bytes and JSON given to compare, golden check and env diff."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from diffcore import DiffcoreError  # noqa: E402
from diffcore.capture.trace import META_KEY, Trace  # noqa: E402
from diffcore.cli import main  # noqa: E402
from diffcore.deploy import record_golden  # noqa: E402
from diffcore.deploy.golden_store import seal_of  # noqa: E402

SCOPES = "pkg.torch.onnx.name_scopes"


def _model(path, scope=None) -> str:
    weight = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "W")
    matmul = helper.make_node("MatMul", ["x", "W"], ["h"])
    if scope is not None:
        entry = matmul.metadata_props.add()
        entry.key, entry.value = SCOPES, scope
    graph = helper.make_graph([matmul, helper.make_node("Relu", ["h"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exit_codes")
    model = _model(folder / "m.onnx")
    inputs = folder / "in.npz"
    np.savez(inputs, x=np.ones((2, 4), np.float32))
    trace = folder / "t.npz"
    assert main(["capture", model, "--inputs", str(inputs), "--out", str(trace)]) == 0
    golden = folder / "golden"
    record_golden(model, str(inputs), golden)
    return {"folder": folder, "model": model, "inputs": str(inputs), "trace": trace, "golden": golden}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffcore: error: ") and "Traceback" not in err, err
    return lines[0]


def _edit_trace(src, dst, edit) -> None:
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    text = edit(json.loads(arrays[META_KEY].tobytes().decode()))
    arrays[META_KEY] = np.frombuffer(text.encode() if isinstance(text, str) else json.dumps(text).encode(),
                                     np.uint8)
    np.savez(dst, **arrays)


def _first_float32(meta):
    return next(r for r in meta["records"] if r["dtype"] == "float32")


TRACE_EDITS = {
    "records-not-a-list": (lambda m: {**m, "records": 5}, "does not follow its schema"),
    "order-a-string": (lambda m: {**m, "records": [{**r, "order": "first"} for r in m["records"]]},
                       "does not follow its schema"),
    "shape-of-strings": (lambda m: {**m, "inputs": [{**i, "shape": ["a"]} for i in m["inputs"]]},
                         "does not follow its schema"),
    "deep-json": (lambda m: "[" * 100000 + "]" * 100000, "nested too deeply|schema"),
    "deep-but-parsable": (lambda m: {**m, "description": json.loads("[" * 500 + "]" * 500)},
                          "nested more than 64 levels"),
    "float32-relabelled-bfloat16": (lambda m: [_first_float32(m).update(dtype="bfloat16"), m][1],
                                    "labelled bfloat16 in the metadata but stored as float32"),
}


@pytest.mark.parametrize("case", sorted(TRACE_EDITS))
def test_broken_trace_metadata_is_one_line_exit_2(world, capsys, tmp_path, case):
    edit, pattern = TRACE_EDITS[case]
    bad = tmp_path / "bad.npz"
    _edit_trace(world["trace"], bad, edit)
    with pytest.raises(DiffcoreError, match=pattern):
        Trace.load(bad)
    code, _, err = run(capsys, "compare", bad, world["model"])
    assert code == 2
    assert re.search(f"invalid metadata|{pattern}", one_line(err))


GOLDEN_EDITS = {
    "size-a-string": lambda m: m["files"]["inputs.npz"].update(size="big"),
    "shape-a-dict": lambda m: m["inputs"][0].update(shape={"a": 1}),
    "inputs-a-number": lambda m: m.update(inputs=3),
    "unknown-file": lambda m: m["files"].update({"../../etc/passwd": {"sha256": "0" * 64, "size": 1}}),
    "tolerance-a-string": lambda m: m.update(tolerance={"atol": "x", "rtol": None}),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_EDITS))
def test_a_golden_json_with_a_valid_seal_but_wrong_field_types_is_exit_2(world, capsys, tmp_path, case):
    import shutil

    golden = tmp_path / "g"
    shutil.copytree(world["golden"], golden)
    meta = json.loads((golden / "golden.json").read_text())
    GOLDEN_EDITS[case](meta)
    meta["seal"] = seal_of(meta)
    (golden / "golden.json").write_text(json.dumps(meta))
    code, _, err = run(capsys, "golden", "check", world["model"], golden)
    assert code == 2
    assert "does not follow its schema" in one_line(err)


@pytest.mark.parametrize("nesting", [100000, 500])
def test_env_diff_on_deeply_nested_json_is_exit_2(capsys, tmp_path, nesting):
    deep = tmp_path / "deep.json"
    deep.write_text('{"environment": ' + "[" * nesting + "]" * nesting + "}")
    good = tmp_path / "good.json"
    assert main(["env", "--out", str(good)]) == 0
    capsys.readouterr()
    code, _, err = run(capsys, "env", "diff", deep, good)
    assert code == 2 and "nested" in one_line(err)


@pytest.mark.parametrize("scope", ["5", "{'a': 1}", "[1, 2]", "[" * 5000 + "]" * 5000, "__import__('os')"])
def test_onnx_name_scope_metadata_of_the_wrong_type_is_exit_2(world, capsys, tmp_path, scope):
    model = _model(tmp_path / "scoped.onnx", scope)
    code, _, err = run(capsys, "compare", model, model, "--inputs", world["inputs"])
    assert code == 2 and "malformed pkg.torch.onnx.name_scopes metadata" in one_line(err)


def _json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                        st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300) | _json_values().map(lambda v: json.dumps(v).encode()),
       target=st.sampled_from(["inputs", "golden.json", "env"]))
def test_any_user_file_reaching_the_cli_maps_to_exit_2_with_one_line(world, capsys, tmp_path, payload, target):
    import tempfile

    folder = __import__("pathlib").Path(tempfile.mkdtemp(dir=tmp_path))
    if target == "inputs":
        path = folder / "in.npz"
        path.write_bytes(b"PK\x03\x04" + payload if payload[:1] != b"{" else payload)
        argv = ["compare", world["model"], world["model"], "--inputs", path]
    elif target == "golden.json":
        import shutil

        shutil.copytree(world["golden"], folder / "g")
        (folder / "g" / "golden.json").write_bytes(payload)
        argv = ["golden", "check", world["model"], folder / "g"]
    else:
        path = folder / "a.json"
        path.write_bytes(payload)
        argv = ["env", "diff", path, path]
    code, _, err = run(capsys, *argv)
    assert code in (0, 1, 2), err
    if code == 2:
        one_line(err)


def test_an_npz_member_forged_inside_a_trace_is_refused(world, tmp_path):
    import zipfile

    bad = tmp_path / "t.npz"
    with zipfile.ZipFile(world["trace"]) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("payload", b"\x80\x04K\x01.")
    with pytest.raises(DiffcoreError, match="not a NumPy array"):
        Trace.load(bad)
    assert not os.path.exists(tmp_path / "pwned")
