"""The real Silero VAD: its shipped silero_vad.jit (a scripted, stateful model whose layers all run inside an
``if`` on the sample rate) read layer by layer, and compared with its shipped ONNX exports."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import diffcore  # noqa: E402
from diffcore.spec import _torchscript_runner  # noqa: E402


@pytest.fixture(scope="module")
def silero_data():
    silero_vad = pytest.importorskip("silero_vad")
    return os.path.join(os.path.dirname(silero_vad.__file__), "data")


def _chunk():
    return np.random.default_rng(3).standard_normal((1, 512)).astype(np.float32) * 0.1


class Vad16k(torch.nn.Module):
    """silero_vad.jit's 16 kHz model under the ONNX files' signature (input, state, sr): the jit keeps its
    state inside and takes (x, sr), so the two cannot be fed the same named inputs as shipped."""

    def __init__(self, jit):
        super().__init__()
        self.model = jit._model

    def forward(self, input, state, sr):
        return self.model(input, state)


@pytest.fixture(scope="module")
def vad16k(silero_data, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vad") / "vad16k.pt")
    torch.jit.save(torch.jit.script(Vad16k(torch.jit.load(os.path.join(silero_data, "silero_vad.jit")))), path)
    return path


def test_silero_jit_layers_inside_its_sample_rate_branch_are_captured(silero_data):
    runner = _torchscript_runner(os.path.join(silero_data, "silero_vad.jit"), None, None, "cpu", "ref")
    probes = runner.probes({"x": _chunk(), "sr": np.array(16000)})
    keys = [p.key for p in probes]
    assert runner.warnings == []
    assert len(keys) == 29, keys
    assert keys[0] == "_model.encoder.0.reparam_conv" and "_model.decoder.rnn.0" in keys
    assert not any(k.startswith("_model_8k") for k in keys)  # the 8 kHz branch did not run


def test_silero_jit_pairs_its_layers_with_its_16k_onnx_export(silero_data, vad16k):
    feeds = {"input": _chunk(), "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    report = diffcore.compare(vad16k, os.path.join(silero_data, "silero_vad_16k_op15.onnx"), feeds)
    assert report.coverage["layers"] == {"paired": 21, "total": 28}, report.coverage
    assert report.coverage["outputs"]["paired"] == 2
    assert max(r.rel_l2 for r in report.layers + report.outputs) < 1e-5, report.summary


def test_silero_jit_against_the_if_wrapped_onnx_pairs_its_outputs_only(silero_data, vad16k):
    feeds = {"input": _chunk(), "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    report = diffcore.compare(vad16k, os.path.join(silero_data, "silero_vad.onnx"), feeds)
    assert report.coverage["layers"]["paired"] == 0  # silero_vad.onnx computes everything inside an ONNX If
    assert report.coverage["outputs"]["paired"] == 2
    assert report.verdict == "pass" and max(o.rel_l2 for o in report.outputs) < 1e-5, report.summary
