"""TorchScript modules take no hooks: a model holding one (Silero VAD's ``_model`` wrapped by the user) is
still compared: its eager modules layer by layer, the scripted part at what leaves it, with a warning."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import diffcore  # noqa: E402


class Head(torch.nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.relu(self.body(x)))


def _models():
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8))
    eager, scripted = Head(body).eval(), Head(torch.jit.script(body)).eval()
    scripted.out.load_state_dict(eager.out.state_dict())
    return eager, scripted


def test_a_scripted_submodule_is_compared_at_what_leaves_it():
    eager, scripted = _models()
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    report = diffcore.compare(eager, scripted, {"x": x})
    assert report.verdict == "pass", report.summary
    assert [r.name for r in report.layers] == ["out"]
    assert any(u.key == "body" for u in report.unmatched)  # the scripted side has no 'body' probe
    assert any("'body'" in w and "TorchScript" in w for w in report.warnings)


def test_a_traced_root_object_is_compared_layer_by_layer():
    eager, _ = _models()
    traced = torch.jit.trace(eager, torch.zeros(3, 4))
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    report = diffcore.compare(eager, traced, {"x": x})
    assert report.outputs and report.outputs[0].rel_l2 < 1e-6
    assert report.coverage["layers"]["paired"] == report.coverage["layers"]["total"] > 0, report.coverage
    assert not any("TorchScript" in w for w in report.warnings)
