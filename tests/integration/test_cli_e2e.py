"""The CLI end to end on real models: exit 0 within tolerance, 1 diverged, 2 bad input with one line."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from tests.helpers import one_error_line, run_cli  # noqa: E402
from tests.integration import models  # noqa: E402

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(4, 4)
            self.second = nn.Linear(5, 4)   # expects 5 features: forward fails here

        def forward(self, x):
            return self.second(self.first(x))

    def broken():
        return Broken()

    def stack():
        from tests.integration.models import stack as build
        return build()
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    stack, inputs = models.stack(), models.stack_inputs()
    paths = {"onnx": models.export(stack, inputs, folder / "stack.onnx", dynamo=False),
             "inputs": str(folder / "inputs.npz"), "factory": folder / "factories.py", "folder": folder}
    np.savez(paths["inputs"], **{k: v.numpy() for k, v in inputs.items()})
    paths["factory"].write_text(FACTORY)
    fixed = models.stack()
    paths["fixed"] = models.export(fixed, inputs, folder / "fixed.onnx", dynamo=False)  # no dynamic axes
    return paths


def test_a_clean_comparison_exits_0_and_writes_json_and_html(files, capsys, tmp_path):
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    code, out, _ = run_cli(capsys, "compare", f"{files['factory']}:stack", files["onnx"], "--inputs", files["inputs"],
                        "--json", out_json, "--html", out_html)
    assert code == 0 and "PASS" in out
    data = json.loads(out_json.read_text())
    assert data["verdict"] == "pass" and data["first_divergence"] is None and data["outputs"]
    assert "<table" in out_html.read_text()
    # re-running the command replaces diffcore's own earlier report, with a note (issue 17)
    code, _, err = run_cli(capsys, "compare", files["onnx"], files["onnx"], "--inputs", files["inputs"], "--json", out_json)
    assert code == 0 and f"replaced the previous report {out_json}" in err
    # a file diffcore did not write is still never replaced without --force (issue 10)
    out_json.write_text('{"mine": 1}')
    code, _, err = run_cli(capsys, "compare", files["onnx"], files["onnx"], "--inputs", files["inputs"], "--json", out_json)
    assert code == 2 and "already exists" in one_error_line(err)


def test_a_float16_overflow_exits_1_and_names_the_layer(files, capsys, tmp_path):
    factory = tmp_path / "overflow.py"
    factory.write_text("from tests.integration import models\n\ndef model():\n"
                       "    return models.with_fp16_overflow(models.stack(), block=2)\n")
    out_json = tmp_path / "r.json"
    code, out, _ = run_cli(capsys, "compare", f"{factory}:model", f"{factory}:model", "--test-dtype", "float16",
                        "--inputs", files["inputs"], "--json", out_json)
    assert code == 1 and "FAIL" in out
    first = json.loads(out_json.read_text())["first_divergence"]
    assert first["name"] == "blocks.2.mlp.0" and first["status"] == "diverged"


def test_a_tiny_memory_budget_gives_the_same_report_in_many_chunks(files, capsys, tmp_path):
    reports = {}
    for budget in (None, "1"):
        out_json = tmp_path / f"r{budget}.json"
        code, _, _ = run_cli(capsys, "compare", files["onnx"], files["onnx"], "--test-dtype", "float16",
                             "--inputs", files["inputs"], "--json", out_json,
                             *(["--memory-budget-mb", budget] if budget else []))
        assert code == 0
        reports[budget] = json.loads(out_json.read_text())
    whole, chunked = reports[None], reports["1"]
    assert [r["name"] for r in chunked["layers"]] == [r["name"] for r in whole["layers"]]
    # Each value is its own segment here, passed on rounded to its float16 type, where ORT's CPU provider
    # keeps some float16 values in float32 between the ops it runs in float32: noise-level differences.
    # A layer near the 0.1 % line may read "ok" in one and "drift" in the other; none diverges.
    assert chunked["first_divergence"] is None and whole["first_divergence"] is None
    for a, b in zip(whole["layers"], chunked["layers"]):
        assert b["rel_l2"] < 2 * a["rel_l2"] + 1e-6 and a["rel_l2"] < 2 * b["rel_l2"] + 1e-6, a["name"]
        assert (a["local_max_abs"] is None) == (b["local_max_abs"] is None), a["name"]


def test_capture_then_compare_a_recorded_trace(files, capsys, tmp_path):
    trace = tmp_path / "ref.npz"
    code, _, _ = run_cli(capsys, "capture", f"{files['factory']}:stack", "--inputs", files["inputs"], "--out", trace)
    assert code == 0 and trace.exists()
    code, out, _ = run_cli(capsys, "compare", trace, files["onnx"])
    assert code == 0, out


@pytest.mark.parametrize("argv, message", [
    (["compare", "missing.onnx", "{onnx}"], r"REF model file not found: missing\.onnx"),
    (["compare", "{corrupt}", "{onnx}", "--inputs", "{inputs}"], r"could not be parsed as ONNX"),
    (["compare", "{factory}:nope", "{onnx}", "--inputs", "{inputs}"], r"nope.*broken|broken.*nope"),
    (["compare", "no_such_package_xyz.mod:f", "{onnx}"], r"no_such_package_xyz"),
    (["compare", "{onnx}", "{onnx}", "--inputs", "{wrong_names}"], r"expected.*'x'.*'mask'|'x', 'mask'"),
    (["compare", "{fixed}", "{fixed}", "--inputs", "{long}"], r"'x'.*expects shape \(2, 8, 32\).*given shape \(2, 12, 32\)"),
    (["compare", "{onnx}", "{onnx}", "--inputs", "{int_inputs}"], r"'x'.*float32.*int64|int64.*float32"),
    (["compare", "{factory}:broken", "{factory}:broken", "--inputs", "{small}"], r"'second' \(Linear\)"),
    (["compare", "{onnx}", "{onnx}", "--atol", "1e-3"], r"--atol.*--rtol|together"),
    (["compare", "{onnx}", "{onnx}", "--memory-budget-mb", "0"], r"--memory-budget-mb.*must be >= 1"),
])
def test_bad_inputs_exit_2_with_one_line_naming_the_cause(files, capsys, tmp_path, argv, message):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    extra = {"corrupt": corrupt, "wrong_names": tmp_path / "wrong.npz", "long": tmp_path / "long.npz",
             "int_inputs": tmp_path / "int.npz", "small": tmp_path / "small.npz"}
    inputs = models.stack_inputs()
    np.savez(extra["wrong_names"], y=inputs["x"].numpy(), mask=inputs["mask"].numpy())
    long_x = np.zeros((2, 12, 32), np.float32)
    np.savez(extra["long"], x=long_x, mask=np.zeros((12, 12), np.float32))
    np.savez(extra["int_inputs"], x=np.zeros((2, 8, 32), np.int64), mask=inputs["mask"].numpy())
    np.savez(extra["small"], x=np.ones((2, 4), np.float32))
    names = {**{k: v for k, v in files.items() if k != "folder"}, **extra}
    code, _, err = run_cli(capsys, *[a.format(**names) for a in argv])
    assert code == 2
    import re

    assert re.search(message, one_error_line(err)), err


def test_the_installed_entry_point_prints_no_traceback(files):
    result = subprocess.run([sys.executable, "-m", "diffcore", "compare", "nope.onnx", files["onnx"]],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("diffcore: error: ")
