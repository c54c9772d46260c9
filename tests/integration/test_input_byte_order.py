"""A big-endian input reaches ONNX Runtime, torch and a golden set by value, not byte-swapped."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import diffcore  # noqa: E402
from diffcore.cli import main  # noqa: E402
from diffcore.deploy import load_golden, record_golden  # noqa: E402
from tests.integration.test_cli_exit_codes import _model  # noqa: E402


def test_a_big_endian_input_gives_onnx_runtime_the_values_not_the_bytes(tmp_path):
    model = _model(tmp_path / "m.onnx")
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    big = tmp_path / "big.npz"
    np.savez(big, x=x.astype(">f4"))
    golden = record_golden(model, str(big), tmp_path / "g")
    want = np.maximum(x @ np.eye(4, 3, dtype=np.float32), 0)
    np.testing.assert_array_equal(load_golden(tmp_path / "g").outputs["y"], want)
    assert golden.inputs["x"].dtype.isnative
    report = diffcore.compare(model, model, {"x": x.astype(">f4")})
    assert report.passed
    assert main(["compare", model, model, "--inputs", str(big)]) == 0


class _EyeRelu(torch.nn.Module):
    """relu(x @ eye(4, 3)): the torch twin of ``_model``'s ONNX graph."""

    def forward(self, x):
        return torch.relu(x @ torch.eye(4, 3))


def test_a_big_endian_input_reaches_torch_and_onnx_alike(tmp_path):
    model = _model(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32) * 1e3
    report = diffcore.compare(_EyeRelu(), model, {"x": x.astype(">f4")})
    assert report.passed, report.to_text()
