"""The command line: argument handling, the exit-code policy, files it reads and writes, the demo models.

``diffcore.compare`` is replaced by fakes here: these tests pin what the CLI does around it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import diffcore
from diffcore import DiffcoreError
from diffcore.cli import main
from diffcore.report import DiffReport

from .test_report_views import make_report

SPEC = "diffcore.demo:transformer"  # a module spec: the CLI checks no file for it


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("DIFFCORE_DEBUG", raising=False)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, pattern: str, kind: str = "error"):
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {err!r}"
    assert lines[0].startswith(f"diffcore: {kind}: ") and "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture
def fake_compare(monkeypatch):
    """Replace diffcore.compare; ``calls`` records its arguments, ``result`` is what it returns/raises."""
    state = {"calls": [], "result": make_report(n=12, diverge_at=5)}

    def compare(ref, test, inputs=None, **kwargs):
        state["calls"].append({"ref": ref, "test": test, "inputs": inputs, **kwargs})
        if isinstance(state["result"], BaseException):
            raise state["result"]
        return state["result"]
    monkeypatch.setattr(diffcore, "compare", compare)
    return state


@pytest.fixture
def inputs_file(tmp_path):
    path = tmp_path / "inputs.npz"
    np.savez(path, x=np.ones((2, 3), np.float32), mask=np.zeros((3, 3), np.float32))
    return path


# ---- usage errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, pattern", [
    ([], "arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["compare", "a.onnx"], "required: TEST"),
    (["compare", SPEC, SPEC, "--bogus"], "unrecognized arguments: --bogus"),
    (["compare", SPEC, SPEC, "--test-dtype", "int8"], "argument --test-dtype: invalid choice"),
    (["compare", SPEC, SPEC, "--atol", "x", "--rtol", "0"], "argument --atol: not a number"),
    (["compare", SPEC, SPEC, "--atol", "-1", "--rtol", "0"], "must be a finite number >= 0"),
    (["compare", SPEC, SPEC, "--device", "tpu"], "expected cpu, cuda or cuda:N"),
    (["compare", SPEC, SPEC, "--backend", "fortran"], "argument --backend: invalid choice"),
    (["capture", SPEC], "required: --out"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, pattern):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert_one_error_line(err, pattern)


@pytest.mark.parametrize("given, missing", [("--atol", "--rtol"), ("--rtol", "--atol")])
def test_atol_and_rtol_come_together(capsys, fake_compare, given, missing):
    code, _, err = run(capsys, "compare", SPEC, SPEC, given, "0.1")
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, f"{given} was given without {missing}")


def test_help_and_version_exit_0(capsys):
    code, out, _ = run(capsys, "compare", "--help")
    assert code == 0 and "--test-dtype" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"diffcore {diffcore.__version__}"


# ---- files the CLI checks before any model runs -------------------------------------------------------
@pytest.mark.parametrize("spec", ["missing.onnx", "missing_trace.npz", "missing.py:make"])
def test_missing_model_file_names_its_path(capsys, tmp_path, fake_compare, spec):
    path = tmp_path / spec
    code, _, err = run(capsys, "compare", SPEC, path)
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, "TEST model file not found: " + str(path).split(":make")[0])


@pytest.mark.parametrize("content, pattern", [
    (None, "inputs file not found"),
    (b"garbage, not a zip", "not an .npz archive"),
    (b"PK\x03\x04truncated", "cannot read inputs file"),
    ("npy", r"single array \(\.npy\)"),
    ("object", r"dtype object \(Python objects\)"),
    ("empty", "holds no arrays"),
])
def test_bad_inputs_file_exits_2(capsys, tmp_path, fake_compare, content, pattern):
    path = tmp_path / "in.npz"
    if content == "npy":
        with open(path, "wb") as handle:
            np.save(handle, np.ones(3))
    elif content == "object":
        np.savez(path, x=np.array([{"a": 1}], dtype=object))
    elif content == "empty":
        np.savez(path)
    elif content is not None:
        path.write_bytes(content)
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--inputs", path)
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, pattern)


@pytest.mark.parametrize("flag", ["--json", "--html"])
def test_existing_report_target_is_refused_without_force(capsys, tmp_path, fake_compare, flag):
    target = tmp_path / "report.out"
    target.write_text("keep me")
    code, _, err = run(capsys, "compare", SPEC, SPEC, flag, target)
    assert code == 2 and not fake_compare["calls"] and target.read_text() == "keep me"
    assert_one_error_line(err, f"{flag} file .*report.out already exists; pass --force")


def test_force_replaces_the_report_atomically(capsys, tmp_path, fake_compare):
    json_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    json_path.write_text("old")
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", json_path, "--html", html_path, "--force")
    assert code == 1
    assert DiffReport.from_json(json_path.read_text()).verdict == "fail"
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(os.listdir(tmp_path)) == ["r.html", "r.json"]  # no temporary file left behind
    assert f"wrote {json_path}" in err


def test_capture_refuses_an_existing_trace_before_running(capsys, tmp_path, inputs_file):
    out = tmp_path / "trace.npz"
    out.write_bytes(b"old")
    code, _, err = run(capsys, "capture", SPEC, "--inputs", inputs_file, "--out", out)
    assert code == 2 and out.read_bytes() == b"old"
    assert_one_error_line(err, "trace file .*trace.npz already exists")


# ---- what compare() gets and how its outcome maps to exit codes ----------------------------------------
def test_arguments_map_to_compare(capsys, fake_compare, inputs_file):
    run(capsys, "compare", "a.pkg:make", "b.pkg:make", "--inputs", inputs_file, "--test-dtype", "bfloat16",
        "--ref-dtype", "float32", "--atol", "1e-3", "--rtol", "0.01", "--device", "cuda:1",
        "--providers", "CUDAExecutionProvider", "CPUExecutionProvider", "--backend", "numpy")
    (call,) = fake_compare["calls"]
    assert (call["ref"], call["test"]) == ("a.pkg:make", "b.pkg:make")
    assert sorted(call["inputs"]) == ["mask", "x"] and call["inputs"]["x"].shape == (2, 3)
    assert (call["atol"], call["rtol"]) == (1e-3, 0.01)
    assert (call["test_dtype"], call["ref_dtype"], call["device"]) == ("bfloat16", "float32", "cuda:1")
    assert call["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert call["backend"] == "numpy" and call["progress"] is False  # stderr is not a terminal here


def test_defaults_passed_to_compare(capsys, fake_compare):
    run(capsys, "compare", SPEC, SPEC)
    (call,) = fake_compare["calls"]
    assert call["inputs"] is None and call["atol"] is None and call["rtol"] is None
    assert (call["device"], call["backend"], call["providers"]) == ("cpu", "auto", None)


@pytest.mark.parametrize("verdict, code", [("fail", 1), ("pass", 0)])
def test_exit_code_follows_the_verdict(capsys, fake_compare, verdict, code):
    fake_compare["result"] = make_report(n=12, diverge_at=5 if verdict == "fail" else None, verdict=verdict)
    got, out, err = run(capsys, "compare", SPEC, SPEC, "--max-rows", "0")
    assert got == code and err == ""
    assert out.startswith(f"diffcore {verdict.upper()}") and "elided" not in out


def test_diffcore_error_from_compare_exits_2(capsys, fake_compare):
    fake_compare["result"] = DiffcoreError("input 'x' has shape (1,)\nexpected (2, 3)")
    code, out, err = run(capsys, "compare", SPEC, SPEC)
    assert code == 2 and out == ""
    assert_one_error_line(err, r"input 'x' has shape \(1,\) expected \(2, 3\)$")


def test_internal_error_exits_3_without_traceback(capsys, fake_compare):
    fake_compare["result"] = RuntimeError("boom")
    code, _, err = run(capsys, "compare", SPEC, SPEC)
    assert code == 3
    assert_one_error_line(err, r"RuntimeError: boom \(set DIFFCORE_DEBUG=1 for the traceback\)",
                          kind="internal error")


def test_debug_shows_the_traceback(capsys, monkeypatch, fake_compare):
    monkeypatch.setenv("DIFFCORE_DEBUG", "1")
    fake_compare["result"] = RuntimeError("boom")
    code, _, err = run(capsys, "compare", SPEC, SPEC)
    assert code == 3 and "Traceback" in err and err.rstrip().endswith("internal error: RuntimeError: boom")


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "diffcore", "compare", "nowhere.onnx", SPEC],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stderr == "diffcore: error: REF model file not found: nowhere.onnx\n"


def test_help_imports_no_framework():
    code = ("import sys; from diffcore.cli import main; main(['compare', '--help']); "
            "print(','.join(m for m in ('torch', 'onnx', 'tabulate', 'matplotlib', 'numba') if m in sys.modules),"
            " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.stderr.strip() == ""


# ---- the demo ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", ["transformer", "cnn"])
def test_demo_models_run_their_example_inputs_deterministically(factory):
    torch = pytest.importorskip("torch")
    from diffcore import demo

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, second = getattr(demo, factory)(), getattr(demo, factory)()
    assert torch.equal(torch.rand(3), expected)  # building a demo model leaves the global RNG alone
    assert not first.training
    inputs = first.example_inputs()
    with torch.no_grad():
        out, again = first(**inputs), second(**second.example_inputs())
    assert torch.isfinite(out).all() and torch.equal(out, again)


def test_demo_transformer_layout_and_cnn_batchnorm_stats():
    pytest.importorskip("torch")
    from diffcore import demo

    names = {name for name, _ in demo.transformer().named_modules()}
    assert {"embed", "blocks.0.ln", "blocks.0.attn", "blocks.0.ln2", "blocks.0.mlp", "blocks.3.mlp.2",
            "ln_f", "head"} <= names
    inputs = demo.transformer().example_inputs()
    assert inputs["x"].shape == (2, 16, 64) and inputs["mask"].shape == (16, 16)
    bn = demo.cnn().bn
    assert bn.running_mean.abs().sum() > 0 and not (bn.running_var == 1).all()


def test_demo_writes_its_files_runs_both_comparisons_and_never_overwrites(capsys, tmp_path, fake_compare):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from diffcore.cli.demo_command import DEMO_SPEC

    fake_compare["result"] = make_report(n=12, diverge_at=None, verdict="pass")  # passing: the float16 story's suggestion is not asked for
    out_dir = tmp_path / "demo"
    code, out, _ = run(capsys, "demo", "--out", out_dir, "--backend", "numpy")
    assert code == 0
    assert sorted(os.listdir(out_dir)) == ["inputs.npz", "tiny_transformer.onnx"]
    first, second = fake_compare["calls"]
    assert first["test_dtype"] == "float16" and second["test"] == str(out_dir / "tiny_transformer.onnx")
    assert all(c["ref"] == DEMO_SPEC and c["backend"] == "numpy" for c in (first, second))
    assert sorted(first["inputs"]) == ["mask", "x"]
    assert f"diffcore compare {DEMO_SPEC} {out_dir / 'tiny_transformer.onnx'} --inputs" in out
    assert "--test-dtype float16" in out and "1. torch float32" in out and "2. torch float32" in out
    code, _, err = run(capsys, "demo", "--out", out_dir)
    assert code == 2 and "never replaces files" in err


def test_demo_inputs_file_is_what_compare_reads(capsys, tmp_path, fake_compare):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    run(capsys, "demo", "--out", tmp_path)
    with np.load(tmp_path / "inputs.npz", allow_pickle=False) as saved:
        assert np.array_equal(saved["x"], fake_compare["calls"][0]["inputs"]["x"])
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tmp_path / "tiny_transformer.onnx"))
    assert [i.name for i in model.graph.input][:2] == ["x", "mask"]
    assert isinstance(fake_compare["calls"][1]["test"], str)  # a plain path, as in the printed command


def test_entry_point_exits_with_mains_code(monkeypatch, capsys):
    from diffcore.cli import entry_point

    monkeypatch.setattr(sys, "argv", ["diffcore", "compare", "nowhere.onnx", SPEC])
    with pytest.raises(SystemExit) as exc:
        entry_point()
    assert exc.value.code == 2 and "nowhere.onnx" in capsys.readouterr().err
