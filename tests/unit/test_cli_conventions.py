"""CLI conventions shared by every subcommand (issue 17, item 3): '-' is stdout, --quiet, one meaning of
--json/--out, re-running a command replaces diffcore's own earlier report, --help with examples and exit
codes; plus ``report diff`` and the checks --model-explorer makes before any model runs."""
from __future__ import annotations

import json
import re

import pytest

from diffcore.cli.main import build_parser

import diffcore

from .test_cli import SPEC, assert_one_error_line, run
from .test_report_views import make_report


@pytest.fixture(name="fake_compare")
def _fake_compare(monkeypatch):
    """diffcore.compare replaced (as in test_cli.py): ``calls`` records the arguments, ``result`` is returned."""
    state = {"calls": [], "result": make_report(n=12, diverge_at=5)}

    def compare(ref, test, inputs=None, **kwargs):
        state["calls"].append({"ref": ref, "test": test, "inputs": inputs, **kwargs})
        return state["result"]
    monkeypatch.setattr(diffcore, "compare", compare)
    return state


def test_json_dash_writes_the_report_to_stdout_and_the_text_to_stderr(capsys, fake_compare, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "compare", SPEC, SPEC, "--json", "-")
    assert code == 1
    assert json.loads(out)["verdict"] == "fail"
    assert "first divergence" in err
    assert not (tmp_path / "-").exists()


def test_html_dash_writes_the_page_to_stdout(capsys, fake_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, out, err = run(capsys, "compare", SPEC, SPEC, "--html", "-", "--quiet")
    assert out.lstrip().lower().startswith("<!doctype html")
    assert err.strip().startswith("diffcore: FAIL")


def test_two_outputs_on_stdout_are_refused(capsys, fake_compare):
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", "-", "--html", "-")
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, r"--json and --html both write to standard output")


def test_quiet_prints_only_the_verdict_line(capsys, fake_compare):
    code, out, _ = run(capsys, "compare", SPEC, SPEC, "-q")
    assert code == 1
    assert out.splitlines() == [out.strip()] and re.match(r"diffcore: FAIL: first divergence at ", out)
    assert fake_compare["calls"][0]["progress"] is False


def test_rerunning_compare_replaces_its_own_report_with_a_note(capsys, fake_compare, tmp_path):
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    assert run(capsys, "compare", SPEC, SPEC, "--json", report, "--html", page)[0] == 1
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", report, "--html", page)
    assert code == 1
    assert f"replaced the previous report {report}" in err
    assert f"replaced the previous HTML report {page}" in err
    assert json.loads(report.read_text())["verdict"] == "fail"


@pytest.mark.parametrize("content", ['{"schema_version": "someone-else/1"}', "my notes\n",
                                     "<!DOCTYPE html><p>my page</p>"])
def test_a_file_diffcore_did_not_write_still_needs_force(capsys, fake_compare, tmp_path, content):
    for flag, name in (("--json", "r.json"), ("--html", "r.html")):
        target = tmp_path / name
        target.write_text(content)
        code, _, err = run(capsys, "compare", SPEC, SPEC, flag, target)
        assert code == 2 and target.read_text() == content
        assert_one_error_line(err, r"already exists; pass --force")
    assert not fake_compare["calls"]


def test_an_html_report_is_not_replaced_by_a_json_report(capsys, fake_compare, tmp_path):
    page = tmp_path / "r.html"
    assert run(capsys, "compare", SPEC, SPEC, "--html", page)[0] == 1
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", page)
    assert code == 2
    assert_one_error_line(err, r"already exists")


def _subcommands():
    parser = build_parser()
    found = []

    def walk(p, prefix):
        for action in p._actions:
            if getattr(action, "choices", None) and hasattr(action, "_name_parser_map"):
                for name, child in action._name_parser_map.items():
                    found.append(prefix + [name])
                    walk(child, prefix + [name])
    walk(parser, [])
    return found


@pytest.mark.parametrize("argv", _subcommands(), ids=" ".join)
def test_every_subcommand_help_has_an_example_the_exit_codes_and_quiet(capsys, argv):
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    assert "examples:\n  diffcore " in out
    assert re.search(r"exit codes: 0 pass, 1 diverged .*2 usage or input error, 3 internal error.*4 "
                     r"inconclusive", " ".join(out.split()))
    assert "--quiet" in out


def test_every_subcommand_is_listed():
    names = {" ".join(a) for a in _subcommands()}
    assert {"compare", "capture", "demo", "env", "env diff", "golden record", "golden check", "validate",
            "report diff"} <= names


def test_env_json_without_a_value_prints_and_with_a_path_writes(capsys, tmp_path):
    code, out, _ = run(capsys, "env", "--json")
    assert code == 0 and json.loads(out)["python"]
    target = tmp_path / "env.json"
    code, out, err = run(capsys, "env", "--json", target)
    assert code == 0 and "python" in json.loads(target.read_text())
    assert f"wrote {target}" in err and "kind" in out  # the table still goes to stdout


def test_env_diff_json_to_a_file(capsys, tmp_path):
    a = tmp_path / "a.json"
    assert run(capsys, "env", "--json", a)[0] == 0
    out_file = tmp_path / "d.json"
    code, _, _ = run(capsys, "env", "diff", a, a, "--json", out_file)
    assert code == 0 and isinstance(json.loads(out_file.read_text()), dict)


# ---- report diff -------------------------------------------------------------------------------------
def _write(path, report):
    path.write_text(report.to_json())
    return path


def test_report_diff_exit_1_when_a_layer_regressed(capsys, tmp_path):
    before = _write(tmp_path / "before.json", make_report(n=12, diverge_at=None, verdict="pass"))
    after = _write(tmp_path / "after.json", make_report(n=12, diverge_at=5))
    code, out, _ = run(capsys, "report", "diff", before, after)
    assert code == 1 and out.startswith("REGRESSED: verdict pass -> fail")
    code, out, _ = run(capsys, "report", "diff", after, before, "--json", "-")
    data = json.loads(out)
    assert code == 0 and data["schema_version"] == "diffcore.report-diff/1" and not data["regressed"]


@pytest.mark.parametrize("content, pattern", [
    ("{", r"not valid JSON"),
    ('{"schema_version": "diffcore.report/1", "verdict": "maybe"}', r"does not follow its schema \(report\)"),
    ('{"schema_version": "diffcore.validate/1"}', r"not a diffcore report|schema"),
])
def test_report_diff_exit_2_for_a_file_that_is_not_a_report(capsys, tmp_path, content, pattern):
    good = _write(tmp_path / "good.json", make_report(n=12, diverge_at=5))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, out, err = run(capsys, "report", "diff", good, bad)
    assert code == 2 and out == ""
    assert_one_error_line(err, pattern)


# ---- --model-explorer checks -------------------------------------------------------------------------
def test_model_explorer_needs_an_onnx_side(capsys, fake_compare, tmp_path):
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--model-explorer", tmp_path / "n.json")
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, r"--model-explorer needs an ONNX model on one side")


# ---- published schemas -------------------------------------------------------------------------------
def test_the_suite_validates_every_document_written(capsys, fake_compare, tmp_path):
    """conftest sets DIFFCORE_VALIDATE_WRITES: a report the CLI writes is checked, a broken one refused."""
    import os

    from diffcore import files, schemas

    assert os.environ.get("DIFFCORE_VALIDATE_WRITES") == "1"
    before = schemas.VALIDATED_WRITES.get("report", 0)
    assert run(capsys, "compare", SPEC, SPEC, "--json", tmp_path / "r.json")[0] == 1
    assert schemas.VALIDATED_WRITES["report"] == before + 1
    broken = dict(make_report(n=3, diverge_at=1).to_dict(), verdict="maybe")
    with pytest.raises(files.SchemaViolation, match=r"at \['verdict'\]"):
        files.write_json(tmp_path / "bad.json", broken)
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("name", ["report", "report-diff", "validate", "golden-check", "golden", "trace", "env-diff",
                                  "environment", "artifacts"])
def test_every_schema_ships_in_the_package_and_is_valid(name):
    import jsonschema

    from diffcore.schemas import schema_path

    schema = json.loads(schema_path(name).read_text(encoding="utf-8"))
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_a_report_read_back_is_validated_with_a_clean_error():
    from diffcore import DiffcoreError
    from diffcore.report import DiffReport

    text = make_report(n=4, diverge_at=2).to_json()
    assert DiffReport.from_json(text).verdict == "fail"
    with pytest.raises(DiffcoreError, match=r"does not follow its schema \(report\): at \['layers'\]\[0\]"):
        DiffReport.from_json(text.replace('"status": "ok"', '"status": "fine"', 1))
    with pytest.raises(DiffcoreError, match=r"another diffcore version"):
        DiffReport.from_json(text.replace("diffcore.report/1", "diffcore.report/9"))


# ---- capture -----------------------------------------------------------------------------------------
def test_capture_without_inputs_uses_the_factorys_example_inputs(capsys, tmp_path):
    import numpy as np

    target = tmp_path / "trace.npz"
    code, out, _ = run(capsys, "capture", SPEC, "--out", target, "--quiet")
    assert code == 0 and re.fullmatch(rf"diffcore: recorded \d+ tensors of {re.escape(SPEC)} to .*\n", out)
    with np.load(target) as archive:
        assert len(archive.files) > 2


def test_capture_refuses_stdout_for_a_binary_trace(capsys):
    code, _, err = run(capsys, "capture", SPEC, "--out", "-")
    assert code == 2
    assert_one_error_line(err, r"a trace is a binary \.npz archive")


# ---- contradictory flags -----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, pattern", [
    (["env", "--out", "x.json", "diff", "a.json", "b.json"], r"--out .* does not apply to 'env diff'"),
    (["env", "--json", "-", "--out", "-"], r"--json and --out both write to standard output"),
    (["validate", "m.onnx", "--inputs", "i.npz", "--golden", "g"], r"--inputs and --golden both give"),
])
def test_contradictory_flags_are_refused(capsys, tmp_path, monkeypatch, argv, pattern):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"")
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert_one_error_line(err, pattern)
    assert not (tmp_path / "x.json").exists()


def test_demo_quiet_prints_only_the_verdicts(capsys, tmp_path, fake_compare):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    code, out, _ = run(capsys, "demo", "--out", tmp_path / "demo", "--quiet")
    assert code == 0 and out.count(": FAIL") == 2
    assert "=== " not in out and "Demo files in" not in out and "first divergence at" not in out


def test_a_diffcore_document_of_another_kind_is_not_replaced_without_force(capsys, fake_compare, tmp_path):
    env_file = tmp_path / "env.json"
    assert run(capsys, "env", "--json", env_file)[0] == 0
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", env_file)
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, r"already exists; pass --force")
    code, _, err = run(capsys, "env", "--out", env_file, "--quiet")
    assert code == 0 and f"replaced the previous environment manifest {env_file}" in err


@pytest.mark.parametrize("argv", _subcommands(), ids=" ".join)
def test_every_help_example_parses(capsys, argv):
    import shlex

    parser = build_parser()
    _, out, _ = run(capsys, *argv, "--help")
    examples = out.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples
    for line in examples:
        words = shlex.split(line.split(" | ")[0])
        assert words[0] == "diffcore"
        parser.parse_args(words[1:])  # raises UsageError for an example that does not parse


def test_model_explorer_files_are_checked_before_the_run(capsys, fake_compare, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    (tmp_path / "n.local.json").write_text("mine")
    code, _, err = run(capsys, "compare", SPEC, model, "--model-explorer", tmp_path / "n.json")
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, r"n\.local\.json already exists; pass --force")


def test_trace_metadata_is_validated_when_written(capsys, tmp_path):
    from diffcore import schemas

    before = schemas.VALIDATED_WRITES.get("trace", 0)
    assert run(capsys, "capture", SPEC, "--out", tmp_path / "t.npz", "-q")[0] == 0
    assert schemas.VALIDATED_WRITES["trace"] == before + 1


def test_wide_and_by_choose_the_table_columns_and_view(capsys, monkeypatch):
    monkeypatch.setattr(diffcore, "compare", lambda *a, **k: make_report(n=12, diverge_at=5))
    code, out, _ = run(capsys, "compare", SPEC, SPEC, "--wide", "--by", "node")
    assert code == 1 and "max |d|" in out and "cosine" in out
    code, out, _ = run(capsys, "compare", SPEC, SPEC)
    assert code == 1 and "max |d|" not in out
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--by", "layer")
    assert code == 2 and "--by" in err
