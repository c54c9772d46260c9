"""Deployment validation end to end: golden sets across machines, artifacts and tokenizers, export checks,
and the ``validate`` checklist, from Python and from the CLI.

Everything is built here: a tiny token model (exported twice: with dynamic axes and with a fixed sequence
length) and a small WordPiece tokenizer written to tokenizer.json + vocab.txt with the tokenizers library.
"""
from __future__ import annotations

import json
import re
import shutil
import textwrap
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
tokenizers = pytest.importorskip("tokenizers")

from diffcore import DiffcoreError, deploy  # noqa: E402
from diffcore.capture.torch_runner import load_factory  # noqa: E402
from tests.helpers import one_error_line, run_cli  # noqa: E402
from diffcore.deploy.golden import GoldenIntegrityError  # noqa: E402

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class TokenNet(nn.Module):
        """Embedding -> MLP -> LayerNorm -> masked mean pool: token ids in, states and a pooled vector out."""

        def __init__(self, vocab=32, d=16):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
            self.norm = nn.LayerNorm(d)

        def forward(self, input_ids, attention_mask):
            e = self.embed(input_ids)
            h = self.norm(e + self.mlp(e))
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return h, (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def token_net():
        torch.manual_seed(0)
        return TokenNet().eval()
''')
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "the", "model", "runs", "on", "a", "gpu", "cpu",
         "##s", "is", "ready", "to", "ship"]
TEXTS = ["hello world", "the model runs on a gpu", "the model is ready to ship"]
AXES = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
        "hidden": {0: "batch", 1: "seq"}, "pooled": {0: "batch"}}
H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_total_mib": 81559,
        "clocks": {"sm": {"current_mhz": 1980, "max_mhz": 1980}, "memory": None}}


def make_tokenizer(folder):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(folder / "tokenizer.json"))
    return tok


def export(model, inputs, path, dynamic: bool, output_names=("hidden", "pooled"), input_names=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(v) for v in inputs.values()), str(path), dynamo=False,
                          input_names=input_names or list(inputs), output_names=list(output_names),
                          dynamic_axes=AXES if dynamic else None)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The model, its two exports, the tokenizer files, the inputs, and a golden recorded from the ONNX."""
    folder = tmp_path_factory.mktemp("deploy")
    (folder / "net.py").write_text(NET)
    tok = make_tokenizer(folder)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(TEXTS)
    inputs = {"input_ids": np.array([e.ids for e in enc], np.int64),
              "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
    np.savez(folder / "inputs.npz", **inputs)
    (folder / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    model, _ = load_factory(f"{folder / 'net.py'}:token_net")
    w = {"folder": folder, "inputs": inputs, "factory": f"{folder / 'net.py'}:token_net",
         "onnx": export(model, inputs, folder / "net.onnx", dynamic=True),
         "fixed": export(model, inputs, folder / "fixed.onnx", dynamic=False),
         "artifacts": [str(folder / "tokenizer.json"), str(folder / "vocab.txt")]}
    deploy.write_artifact_manifest(folder / "net.artifacts.json", w["artifacts"])  # beside net.onnx
    w["golden"] = str(folder / "golden")
    deploy.record_golden(w["onnx"], inputs, w["golden"], traces=True, texts=TEXTS)
    return w


def statuses(result) -> dict:
    return {row.check: row.status for row in result.rows}


# ---- golden sets ---------------------------------------------------------------------------------------

def test_a_golden_records_inputs_outputs_trace_manifest_and_hashes(world):
    golden = deploy.load_golden(world["golden"])
    meta = golden.meta
    assert meta["schema"] == "diffcore.golden/1" and set(meta["files"]) == {"inputs.npz", "outputs.npz",
                                                                            "trace.npz"}
    assert [e["name"] for e in meta["outputs"]] == ["hidden", "pooled"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in meta["inputs"] + meta["outputs"])
    assert meta["environment"]["schema"] == "diffcore.env/1" and "torch" in meta["environment"]
    assert [a["name"] for a in meta["artifacts"]] == ["tokenizer.json", "vocab.txt"]  # from net.artifacts.json
    assert meta["texts"] == TEXTS
    assert meta["tokens"]["tokenizer.json"]["tokens"][0] == ["[CLS]", "hello", "world", "[SEP]"]
    assert meta["model"]["sha256"] and meta["model"]["file"] == "net.onnx"
    np.testing.assert_array_equal(golden.inputs["input_ids"], world["inputs"]["input_ids"])


def test_check_passes_on_the_same_machine_per_output_and_per_layer(world):
    result = deploy.check_golden(world["onnx"], world["golden"])
    assert result and result.exit_code == 0
    assert [o.name for o in result.outputs] == ["hidden", "pooled"] and all(o.passed for o in result.outputs)
    assert result.layers is not None and result.layers.passed and len(result.layers.layers) > 5
    assert not result.environment  # same machine, same manifest
    assert "GOLDEN PASS" in result.to_text()


def test_the_original_torch_model_passes_against_the_golden_recorded_from_its_export(world):
    result = deploy.check_golden(world["factory"], world["golden"], layers=False)
    assert result, result.to_text()
    assert any("compared by position" in n for n in result.notes)  # torch outputs are output.0/output.1


def test_a_golden_recorded_elsewhere_shows_the_environment_differences_beside_the_drift(world, tmp_path,
                                                                                        capsys):
    golden = deploy.load_golden(world["golden"])  # "another machine": edit the recorded manifest, re-seal
    recorded = json.loads(json.dumps(golden.environment))
    recorded["gpu"] = {"available": True, "driver": "550.54.15", "cuda_driver": 12040, "devices": [H100]}
    recorded["torch"]["version"] = "2.4.0+cu121"
    recorded["torch"]["cuda_build"] = "12.1"
    golden.environment = recorded
    golden.save(tmp_path / "h100", force=False)

    result = deploy.check_golden(world["onnx"], tmp_path / "h100")
    assert result  # the numbers still match: the differences are reported, not failed
    keys = [r.key for r in result.environment.rows]
    assert keys[:3] == ["gpu.available", "gpu.devices[0].compute_capability", "gpu.devices[0].name"]
    assert keys.index("torch.cuda_build") < keys.index("torch.version")
    assert result.environment.rows[0].numerics
    code, out, _ = run_cli(capsys, "golden", "check", world["onnx"], tmp_path / "h100")
    assert code == 0
    drift_at, env_at = out.index("Outputs (2):"), out.index("Environment differences (recorded -> here)")
    assert drift_at < env_at and "NVIDIA H100 80GB HBM3" in out and "2.4.0+cu121" in out
    assert re.search(r"recorded .* on NVIDIA H100 80GB HBM3 \(cc 9.0\)", out)
    code, out, _ = run_cli(capsys, "env", "diff", tmp_path / "h100" / "golden.json",
                       world["folder"] / "golden" / "golden.json")  # golden.json embeds the manifest
    assert code == 1 and out.index("gpu.devices[0].name") < out.index("torch.version")


def test_drift_beyond_tolerance_fails_naming_the_output_and_layer(world, tmp_path):
    model, _ = load_factory(world["factory"])
    with torch.no_grad():
        model.mlp[2].weight.mul_(1.05)  # a 5 % change in one layer
    broken = export(model, world["inputs"], tmp_path / "broken.onnx", dynamic=True)
    result = deploy.check_golden(broken, world["golden"])
    assert not result and result.exit_code == 1
    assert not result.outputs[0].passed and re.search(r"'hidden': \d+ of 384 values outside atol",
                                                      result.outputs[0].problem)
    assert result.layers.first_divergence is not None and "mlp" in result.layers.first_divergence.name
    assert any("model file differs" in n for n in result.notes)


def test_an_existing_golden_is_not_overwritten_without_force(world, capsys):
    before = (world["folder"] / "golden" / "golden.json").read_bytes()
    code, _, err = run_cli(capsys, "golden", "record", world["onnx"], "--inputs", world["folder"] / "inputs.npz",
                       "--out", world["golden"])
    assert code == 2 and "already exists" in one_error_line(err) and "--force" in err
    assert (world["folder"] / "golden" / "golden.json").read_bytes() == before


def test_cli_record_with_force_replaces_and_drops_the_stale_trace(world, tmp_path, capsys):
    target = tmp_path / "g"
    shutil.copytree(world["golden"], target)
    code, out, _ = run_cli(capsys, "golden", "record", world["onnx"], "--inputs", world["folder"] / "inputs.npz",
                       "--out", target, "--texts", world["folder"] / "texts.txt", "--force")
    assert code == 0 and "2 output(s)" in out and "3 text(s)" in out
    assert not (target / "trace.npz").exists()
    assert deploy.check_golden(world["onnx"], target).layers is None


@pytest.mark.parametrize("damage, message", [
    ("truncate", r"outputs\.npz fails its sha256 check .* it was truncated"),
    ("flip", r"outputs\.npz fails its sha256 check .* it was edited"),
    ("manifest", r"golden\.json fails its seal"),
    ("cut_manifest", r"golden\.json is not valid JSON \(truncated or edited\?\)"),
    ("remove_trace", r"trace\.npz is missing"),
])
def test_a_damaged_golden_is_detected_by_its_hash_and_not_read(world, tmp_path, capsys, monkeypatch, damage,
                                                              message):
    target = tmp_path / "g"
    shutil.copytree(world["golden"], target)
    outputs, manifest = target / "outputs.npz", target / "golden.json"
    if damage == "truncate":
        outputs.write_bytes(outputs.read_bytes()[:-64])
    elif damage == "flip":
        data = bytearray(outputs.read_bytes())
        data[len(data) // 2] ^= 0xFF
        outputs.write_bytes(bytes(data))
    elif damage == "manifest":
        manifest.write_text(manifest.read_text().replace('"hello world"', '"hello there"'))
    elif damage == "cut_manifest":
        manifest.write_text(manifest.read_text()[:200])
    else:
        (target / "trace.npz").unlink()
    import numpy

    loads = []
    monkeypatch.setattr(numpy, "load", lambda *a, **k: loads.append(a) or pytest.fail("a damaged file was read"))
    with pytest.raises(GoldenIntegrityError, match=message):
        deploy.load_golden(target)
    code, _, err = run_cli(capsys, "golden", "check", world["onnx"], target)
    line = one_error_line(err)
    assert code == 2 and re.search(message, line) and "re-record" in line
    monkeypatch.undo()
    result = deploy.validate(world["onnx"], golden=target)
    row = result.row("golden set")
    assert row.status == "fail" and re.search(message, row.detail) and result.exit_code == 1


# ---- artifacts and tokenizers ----------------------------------------------------------------------------

def test_a_changed_vocabulary_fails_the_artifact_and_tokenizer_checks_for_that_reason(world, tmp_path, capsys):
    for name in ("tokenizer.json", "vocab.txt"):
        shutil.copy(world["folder"] / name, tmp_path / name)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("\nworld\n", "\nearth\n"))  # one token changed
    result = deploy.validate(world["onnx"], golden=world["golden"],
                             artifacts=[tmp_path / "tokenizer.json", vocab])
    artifacts, tokens = result.row("artifacts"), result.row("tokenizer")
    assert artifacts.status == "fail" and "vocab.txt (vocabulary) is not the version the model was validated " \
                                          "with" in artifacts.detail
    assert "tokenizer.json" not in artifacts.detail  # the unchanged file is not blamed
    assert tokens.status == "fail"
    assert re.search(r"tokenizer.json \+ vocab.txt: 1 of 3 text\(s\) tokenize differently; text 1 'hello "
                     r"world' at token 2: recorded 5 \('world'\), now 1 \('\[UNK\]'\)", tokens.detail)
    assert "re-record the golden" in tokens.fix and "ship the files" in artifacts.fix
    assert result.row("golden set").status == "pass"  # the model itself is fine
    code, out, _ = run_cli(capsys, "validate", world["onnx"], "--golden", world["golden"], "--artifacts",
                       tmp_path / "tokenizer.json", vocab)
    assert code == 1 and re.search(r"artifacts\s+FAIL", out) and re.search(r"tokenizer\s+FAIL", out)


def test_a_missing_or_undeclared_artifact_fails_and_says_what_to_ship(world, tmp_path):
    shutil.copy(world["folder"] / "tokenizer.json", tmp_path / "tokenizer.json")
    result = deploy.validate(world["onnx"], golden=world["golden"], artifacts=[tmp_path / "tokenizer.json"])
    row = result.row("artifacts")
    assert row.status == "fail" and "vocab.txt (vocabulary) was recorded with the golden but is not declared" \
                                    in row.detail and "ship vocab.txt" in row.fix
    gone = deploy.check_artifacts([deploy.Artifact("norm.json", str(tmp_path / "norm.json"), "normalization")])
    assert gone.status == "fail" and "norm.json (normalization) is missing" in gone.detail


def test_artifacts_declared_beside_the_model_are_found_and_match(world):
    result = deploy.validate(world["onnx"], golden=world["golden"])
    assert result.row("artifacts").status == "pass" and result.row("tokenizer").status == "pass"
    assert "tokenizer.json + vocab.txt" in result.row("tokenizer").detail


def test_without_the_tokenizers_library_the_tokenizer_check_is_skipped_with_the_reason(world, monkeypatch):
    from diffcore import MissingDependencyError
    from diffcore.deploy import artifacts

    def missing():
        raise MissingDependencyError("tokenizers is needed but could not be imported; pip install "
                                     "'diffcore[tokenizers]'")

    monkeypatch.setattr(artifacts, "_tokenizers", missing)
    golden = deploy.load_golden(world["golden"])
    row = deploy.check_tokens(deploy.declared_artifacts(world["onnx"]), golden.texts, golden.tokens)
    assert row.status == "skip" and "tokenizers is needed" in row.detail and "pip install" in row.fix


# ---- export checks ----------------------------------------------------------------------------------------

def test_a_fixed_sequence_length_is_flagged_naming_the_input(world, capsys):
    code, out, _ = run_cli(capsys, "validate", world["fixed"], "--inputs", world["folder"] / "inputs.npz",
                       "--json")
    data = json.loads(out)
    row = next(r for r in data["checks"] if r["check"] == "export: dynamic axes")
    assert code == 1 and data["verdict"] == "fail" and row["status"] == "fail"
    assert "input_ids axis 1 (sequence) is fixed to 8" in row["detail"]
    assert "attention_mask axis 1 (sequence) is fixed to 8" in row["detail"]
    assert "running with batch 4, sequence 9 fails" in row["detail"] and "dynamic_axes=" in row["fix"]
    assert data["environment"]["schema"] == "diffcore.env/1"


def test_a_sequence_length_fixed_alone_is_named_alone(world, tmp_path):
    model, _ = load_factory(world["factory"])
    path = tmp_path / "seq.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(v) for v in world["inputs"].values()), str(path),
                          dynamo=False, input_names=["input_ids", "attention_mask"],
                          output_names=["hidden", "pooled"],
                          dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}})
    row = deploy.check_dynamic_axes(path, world["inputs"])
    assert row.status == "fail" and row.data["fixed"] == [["input_ids", 1, "sequence", 8],
                                                         ["attention_mask", 1, "sequence", 8]]


def test_the_signature_must_match_the_original(world, tmp_path):
    model, _ = load_factory(world["factory"])
    renamed = export(model, world["inputs"], tmp_path / "renamed.onnx", dynamic=False,
                     input_names=["ids", "attention_mask"], output_names=("hidden", "pooled"))
    rows = {r.check: r for r in deploy.check_export(renamed, sample={"ids": world["inputs"]["input_ids"],
                                                                     "attention_mask":
                                                                         world["inputs"]["attention_mask"]},
                                                     golden=deploy.load_golden(world["golden"]))}
    sig = rows["export: signature"]
    assert sig.status == "fail" and "input(s) 'input_ids' missing" in sig.detail and "'ids'" in sig.detail


def test_an_opset_above_the_target_fails_with_the_reexport_hint(world):
    row = deploy.check_opset(world["onnx"], target_opset=13)
    assert row.status == "fail" and "supports opset 13 at most" in row.detail and "opset_version=13" in row.fix
    assert deploy.check_opset(world["onnx"]).status == "pass"


# ---- the checklist ----------------------------------------------------------------------------------------

def test_validate_passes_a_good_export_from_python_and_the_cli(world, capsys):
    result = deploy.validate(world["onnx"], reference=world["factory"], golden=world["golden"])
    assert result and statuses(result) == {
        "matches original": "pass", "artifacts": "pass", "tokenizer": "pass", "target hardware": "pass",
        "golden set": "pass", "export: opset": "pass", "export: dynamic axes": "pass", "export: signature": "pass"}
    assert "match the original there" in result.row("export: dynamic axes").detail
    code, out, _ = run_cli(capsys, "validate", world["onnx"], "--reference", world["factory"], "--golden",
                       world["golden"])
    assert code == 0 and "VALIDATE PASS: 8 passed, 0 failed, 0 skipped" in out
    assert re.search(r"check\s+status\s+detail", out)


def _has_cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(_has_cuda_provider(), reason="this machine has the CUDA provider: the target is here")
def test_a_provider_that_is_not_here_is_skipped_with_the_reason_never_passed(world, capsys, tmp_path):
    result = deploy.validate(world["onnx"], golden=world["golden"], providers=["CUDAExecutionProvider"])
    target = result.row("target hardware")
    assert target.status == "skip" and "'CUDAExecutionProvider' not available here" in target.detail
    assert result.row("golden set").status == "skip"  # cannot run where the target is not
    out_file = tmp_path / "v.json"
    code, out, _ = run_cli(capsys, "validate", world["onnx"], "--golden", world["golden"], "--providers",
                           "CUDAExecutionProvider", "--out", out_file)
    assert code == 0 and re.search(r"target hardware\s+SKIP\s+.*not available here", out)
    assert re.search(r"VALIDATE PASS \(\d checks skipped: matches original, target hardware, golden set", out)
    saved = json.loads(out_file.read_text())
    assert saved["counts"]["skip"] >= 1 and saved["environment"]["schema"] == "diffcore.env/1"
    assert "target hardware" in saved["skipped"]
    out_file.write_text("my notes")  # not a document diffcore wrote: never replaced without --force
    code, _, err = run_cli(capsys, "validate", world["onnx"], "--out", out_file)
    assert code == 2 and "already exists" in one_error_line(err)


def _gpu_names() -> list:
    from diffcore import env

    return [g.get("name", "") for g in (env.collect().get("gpu") or {}).get("devices") or []]


@pytest.mark.skipif(any("H200" in n for n in _gpu_names()), reason="an H200 is here")
def test_a_target_gpu_that_is_absent_fails_the_target_check(world, capsys):
    found = ", ".join(_gpu_names()) or "none"
    code, out, _ = run_cli(capsys, "validate", world["onnx"], "--golden", world["golden"], "--target-gpu", "H200")
    assert code == 1
    assert re.search(rf"target hardware\s+FAIL\s+no GPU named H200 here: found {re.escape(found)}", out)
    assert "VALIDATE FAIL" in out


def test_validate_alone_names_every_check_it_skipped_and_strict_fails_on_them(world, capfd):
    from diffcore.cli import main

    code = main(["validate", world["fixed"]])
    out, err = capfd.readouterr()
    assert code == 1  # the fixed export fails its dynamic-axes check
    # ONNX Runtime's own (coloured) error log of the provoked failures stays off stderr
    assert "onnxruntime" not in err and "\x1b[" not in err, err
    code = main(["validate", world["onnx"]])
    out, err = capfd.readouterr()
    assert code == 0 and "onnxruntime" not in err
    line = out.strip().splitlines()[-1]
    assert re.fullmatch(r"VALIDATE PASS \((\d) checks skipped: matches original, .*golden set.*\): \d passed, 0 "
                        r"failed, \1 skipped", line), line
    assert re.search(r"Not checked \(\d\):\n(  - .*\n)*  - golden set: skipped — record one .* pass --golden DIR",
                     out)
    code = main(["validate", world["onnx"], "--strict", "--quiet"])
    out, _ = capfd.readouterr()
    assert code == 1 and re.fullmatch(r"VALIDATE FAIL \(strict: \d checks skipped: [^)]*\): .*\n", out)


def test_golden_check_fails_when_the_tokenizer_maps_two_tokens_the_other_way(world, tmp_path, capsys):
    data = json.loads((world["folder"] / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["hello"], vocab["world"] = vocab["world"], vocab["hello"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    shutil.copy(world["folder"] / "vocab.txt", tmp_path / "vocab.txt")
    code, out, _ = run_cli(capsys, "golden", "check", world["onnx"], world["golden"], "--no-layers")
    assert code == 0 and re.search(r"artifacts\s+PASS", out) and re.search(r"tokenizer\s+PASS", out)
    code, out, _ = run_cli(capsys, "golden", "check", world["onnx"], world["golden"], "--no-layers",
                           "--artifacts", tmp_path / "tokenizer.json", tmp_path / "vocab.txt")
    assert code == 1 and re.search(r"artifacts\s+FAIL", out) and re.search(r"tokenizer\s+FAIL", out)
    assert "GOLDEN FAIL" in out and "tokenizer FAIL" in out
    code, out, _ = run_cli(capsys, "golden", "check", world["onnx"], world["golden"], "--no-layers", "--json", "-",
                           "--artifacts", tmp_path / "tokenizer.json", tmp_path / "vocab.txt")
    checks = {c["check"]: c["status"] for c in json.loads(out)["checks"]}
    assert code == 1 and checks == {"artifacts": "fail", "tokenizer": "fail"}


def test_validate_usage_errors_are_one_line(world, capsys, tmp_path):
    code, _, err = run_cli(capsys, "validate", tmp_path / "nope.onnx")
    assert code == 2 and "MODEL model file not found" in one_error_line(err)
    code, _, err = run_cli(capsys, "validate", world["onnx"], "--atol", "1e-3")
    assert code == 2 and "--atol was given without --rtol" in one_error_line(err)
    code, _, err = run_cli(capsys, "validate", world["onnx"], "--dynamic-axes", "input_ids")
    assert code == 2 and "INPUT:AXIS" in one_error_line(err)
    with pytest.raises(DiffcoreError, match="golden directory not found"):
        deploy.validate(world["onnx"], golden=tmp_path / "missing")


def test_env_prints_the_manifest_as_json(capsys):
    code, out, _ = run_cli(capsys, "env", "--json")
    data = json.loads(out)
    assert code == 0 and data["schema"] == "diffcore.env/1" and "torch" in data and "gpu" in data
    assert {"version", "cuda_build", "cudnn", "tf32_matmul", "matmul_precision"} <= set(data["torch"])
    assert "providers" in data["onnxruntime"]


def test_a_nan_output_fails_and_the_json_stays_strict(world, tmp_path, capsys):
    model, _ = load_factory(world["factory"])
    with torch.no_grad():
        model.norm.weight[3] = float("nan")
    nan_model = export(model, world["inputs"], tmp_path / "nan.onnx", dynamic=True)
    result = deploy.check_golden(nan_model, world["golden"], layers=False)
    assert not result and re.search(r"'hidden': 24 NaN and 0 Inf value\(s\) where the golden has none",
                                    result.outputs[0].problem)
    assert json.loads(result.to_json())["outputs"][0]["stats"]["nan_test"] == 24
    out_file = tmp_path / "v.json"
    code, _, _ = run_cli(capsys, "validate", nan_model, "--golden", world["golden"], "--out", out_file)
    checks = {c["check"]: c for c in json.loads(out_file.read_text())["checks"]}
    assert code == 1 and checks["target hardware"]["status"] == "fail" and "NaN/Inf" in \
        checks["target hardware"]["detail"] and checks["golden set"]["status"] == "fail"


def test_validate_json_dash_prints_the_checklist_and_moves_the_table_to_stderr(world, capsys):
    code, out, err = run_cli(capsys, "validate", world["onnx"], "--golden", world["golden"], "--json", "-")
    data = json.loads(out)
    assert code == 0 and data["schema_version"] == "diffcore.validate/1" and data["skipped"] == [
        "matches original"] and data["verdict_line"].startswith("VALIDATE PASS (1 check skipped: matches original)")
    assert re.search(r"check\s+status\s+detail", err) and "VALIDATE PASS" in err
