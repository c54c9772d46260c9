"""A .pt side in every command that takes a model (compare, capture, golden, validate), and the .pt files a
user hands by mistake (a state_dict, a corrupt file): one line, exit 2."""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from tests.helpers import one_error_line, run_cli  # noqa: E402


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 2)).eval()
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    torch.jit.save(torch.jit.trace(model, (torch.from_numpy(x),)), str(tmp_path / "model.pt"))
    torch.onnx.export(model, (torch.from_numpy(x),), str(tmp_path / "model.onnx"), input_names=["input"],
                      dynamo=False)
    np.savez(tmp_path / "inputs.npz", input=x)
    torch.save(model.state_dict(), str(tmp_path / "weights.pt"))
    (tmp_path / "corrupt.pt").write_bytes(b"not a model")
    return tmp_path


def test_compare_pairs_a_pt_file_with_its_onnx_export_layer_by_layer(files, capsys):
    code, out, _ = run_cli(capsys, "compare", files / "model.pt", files / "model.onnx", "--inputs",
                           files / "inputs.npz", "-q")
    assert code == 0, out
    assert re.search(r"PASS: 3 layers compared", out), out


def test_capture_records_a_pt_files_layers_and_the_trace_compares(files, capsys):
    code, out, err = run_cli(capsys, "capture", files / "model.pt", "--inputs", files / "inputs.npz", "--out",
                             files / "t.npz")
    assert code == 0, err
    assert re.search(r"recorded 4 tensors", out + err)
    code, out, _ = run_cli(capsys, "compare", files / "t.npz", files / "model.onnx", "-q")
    assert code == 0 and "3 layers compared" in out, out


def test_golden_records_and_checks_a_pt_file(files, capsys):
    code, _, err = run_cli(capsys, "golden", "record", files / "model.pt", "--inputs", files / "inputs.npz",
                           "--out", files / "golden")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "golden", "check", files / "model.pt", files / "golden", "-q")
    assert code == 0 and "GOLDEN PASS" in out, out


def test_validate_takes_a_pt_file_as_the_reference(files, capsys):
    code, out, _ = run_cli(capsys, "validate", files / "model.onnx", "--reference", files / "model.pt",
                           "--inputs", files / "inputs.npz")
    assert re.search(r"matches original\s+PASS .*TorchScript", out), out
    assert code == 1  # the export has fixed axes: a real failure of another check


@pytest.mark.parametrize("name, message", [
    ("weights.pt", r"weights\.pt is not a TorchScript file .*state_dict holds weights only"),
    ("corrupt.pt", r"corrupt\.pt is not a TorchScript file: .*truncated or corrupt"),
])
def test_a_pt_file_that_is_not_torchscript_exits_2_with_one_line(files, capsys, name, message):
    code, _, err = run_cli(capsys, "compare", files / "model.pt", files / name, "--inputs", files / "inputs.npz")
    assert code == 2
    assert re.search(message, one_error_line(err))
