"""Error amplification per layer: a LayerNorm over a near-constant row multiplies the error it receives.

The gain diffcore reports is checked against one computed here from first principles: the relative L2
error of the LayerNorm's input (the float16 test side's input against the float32 reference's) and of its
output when the same LayerNorm formula runs in float64 on both inputs.
"""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import diffcore  # noqa: E402


class Double(nn.Module):
    def forward(self, x):
        return x * 2.0  # exact in float16: the LayerNorm's input error is the input's rounding


class NearConstantNorm(nn.Module):
    def __init__(self, dim=64):
        super().__init__()
        self.scale = Double()
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, x):
        return self.head(self.ln(self.scale(x)))


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 64)).astype(np.float32)
    x[0, 3] = 1.0 + 1e-3 * rng.standard_normal(64).astype(np.float32)  # LN divides by a std of ~2e-3
    return {"x": x}


def _layer_norm(x, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _rel(ref, test):
    return float(np.linalg.norm(test - ref) / np.linalg.norm(ref))


def _first_principles_gain(x):
    ref_in = x.astype(np.float64) * 2.0
    test_in = x.astype(np.float16).astype(np.float64) * 2.0  # what the float16 side feeds the LayerNorm
    return _rel(_layer_norm(ref_in), _layer_norm(test_in)) / _rel(ref_in, test_in)


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    model = NearConstantNorm().eval()
    return diffcore.compare(model, model, _inputs(), test_dtype="float16")


def test_layernorm_over_a_near_constant_row_is_the_top_amplifier(report):
    rows = {r.name: r for r in report.layers}
    ln = rows["ln"]
    assert ln.input_rel_l2 is not None and ln.gain is not None, ln
    top = max((r for r in report.layers if r.gain is not None), key=lambda r: r.gain)
    assert top.name == "ln"
    expected = _first_principles_gain(_inputs()["x"])
    assert expected > 50  # the model is built to amplify: the check below can fail
    assert ln.gain == pytest.approx(expected, rel=0.10)


def test_a_passthrough_layer_has_gain_about_one(report):
    scale = {r.name: r for r in report.layers}["scale"]
    assert scale.gain == pytest.approx(1.0, abs=0.05)


def test_summary_names_the_amplifier(report):
    assert "Largest error amplifiers: ln (" in report.summary
    if report.first_divergence is not None and report.first_divergence.status == "carried":
        assert "amplified" in report.summary and "by ln" in report.summary, report.summary


def test_the_carried_verdict_names_the_amplifier(report):
    first = report.first_divergence
    assert first is not None and first.status == "carried"
    assert "arrived from upstream and was amplified 3" in report.summary and "x by ln" in report.summary


def test_gain_survives_the_json_round_trip(report):
    again = diffcore.DiffReport.from_json(report.to_json())
    ln = {r.name: r for r in again.layers}["ln"]
    assert ln.gain == pytest.approx({r.name: r for r in report.layers}["ln"].gain)
    assert ln.input_rel_l2 is not None


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_float16_layernorm_is_the_top_amplifier(tmp_path, dynamo):
    from tests.integration import models

    torch.manual_seed(0)
    model = NearConstantNorm().eval()
    path = models.export(model, {"x": torch.from_numpy(_inputs()["x"])}, tmp_path / "ln.onnx", dynamo=dynamo)
    report = diffcore.compare(path, path, _inputs(), test_dtype="float16")
    top = max((r for r in report.layers if r.gain is not None), key=lambda r: r.gain)
    assert top.op_type == "LayerNormalization"
    assert top.gain == pytest.approx(_first_principles_gain(_inputs()["x"]), rel=0.10)
    assert f"was amplified {top.gain:.3g}x by {top.name}" in report.summary


def test_text_and_html_list_the_amplifier(report):
    text, html = report.to_text(), report._repr_html_()
    assert re.search(r"Error amplifiers and range.*\n  - ln: amplifies the error it receives 3\d\dx", text), text
    assert "ln: amplifies the error it receives" in html


def test_a_clean_float16_stack_names_no_amplifier():
    from tests.integration import models

    report = diffcore.compare(models.stack(), models.stack(), models.stack_inputs(), test_dtype="float16")
    gains = [r.gain for r in report.layers if r.gain is not None]
    assert len(gains) > 20 and max(gains) < 2.0  # the attention mask (exact, -1e4) must not shrink e_in
    assert "amplifiers" not in report.summary
