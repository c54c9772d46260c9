"""A verdict that can be trusted (issue 9, items 1 and 3): coverage is part of it, nothing compared is never
a pass, integer/bool outputs are compared exactly, and the deployed (uninstrumented) run decides.

Every model is built and exported here, on real ONNX Runtime sessions and onnxconverter-common.
"""
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import diffcore  # noqa: E402
from diffcore.capture.torch_runner import TorchRunner  # noqa: E402
from diffcore.report.model import DiffReport  # noqa: E402
from tests.helpers import one_error_line, run_cli  # noqa: E402


def _export(model, inputs: dict, path, dynamo=False, output_names=("y",)) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(inputs.values()), str(path), dynamo=dynamo, input_names=list(inputs),
                          output_names=list(output_names), opset_version=17 if not dynamo else None)
    return str(path)


# ---- integer outputs ---------------------------------------------------------------------------------------
class Classifier(nn.Module):
    """Logits and the predicted class (ArgMax, or ArgMin: the planted bug)."""

    def __init__(self, pick: str = "argmax"):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(8, 5)
        self.pick = pick

    def forward(self, x):
        return getattr(self.head(x), self.pick)(-1)


def _class_inputs():
    return {"x": torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))}


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifiers")
    return {pick: _export(Classifier(pick), _class_inputs(), folder / f"{pick}.onnx") for pick in ("argmax", "argmin")}


def test_integer_outputs_that_differ_fail_with_the_mismatch_count_and_first_index(classifiers):
    inputs = _class_inputs()
    want = Classifier("argmax")(inputs["x"]) != Classifier("argmin")(inputs["x"])
    for ref in (Classifier("argmax"), classifiers["argmax"]):  # torch vs ONNX, ONNX vs ONNX
        report = diffcore.compare(ref, classifiers["argmin"], inputs)
        assert report.verdict == "fail" and report.exit_code == 1 and not report
        (out,) = report.outputs
        assert out.exact and out.ref_dtype == "int64" and out.mismatch_count == int(want.sum())
        first = [int(i) for i in np.argwhere(want.numpy())[0]]
        assert out.first_mismatch_index == first
        assert out.status in ("diverged", "carried")
        assert f"{int(want.sum())} of 12 elements differ" in out.cause and f"first at {first}" in out.cause
        assert report.coverage["outputs"] == {"paired": 1, "total": 1, "test_total": 1}


def test_equal_integer_outputs_are_compared_and_pass(classifiers):
    report = diffcore.compare(Classifier("argmax"), classifiers["argmax"], _class_inputs())
    assert report.passed and report.exit_code == 0, report.summary
    (out,) = report.outputs
    assert out.exact and out.mismatch_count == 0 and out.status == "ok" and out.count == 12
    assert report.coverage["elements"] == {"finite": 12, "total": 12}
    assert "(exact)" in report.to_text()


class TokenFilter(nn.Module):
    """A bool output (which tokens pass) next to a float one: outputs are paired by name first."""

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        torch.manual_seed(2)
        self.proj = nn.Linear(8, 8)
        self.threshold = threshold

    def forward(self, x):
        h = self.proj(x)
        return h, h.sum(-1) > self.threshold


def test_bool_outputs_are_compared_exactly_and_paired_by_name(tmp_path):
    inputs = _class_inputs()
    a = _export(TokenFilter(0.0), inputs, tmp_path / "a.onnx", output_names=("hidden", "keep"))
    b = _export(TokenFilter(0.5), inputs, tmp_path / "b.onnx", output_names=("hidden", "keep"))
    report = diffcore.compare(a, b, inputs)
    rows = {r.name: r for r in report.outputs}
    assert set(rows) == {"hidden", "keep"} and rows["keep"].exact and rows["keep"].ref_dtype == "bool"
    assert rows["keep"].mismatch_count > 0 and report.verdict == "fail"
    assert rows["hidden"].rel_l2 == 0 and not rows["hidden"].exact


# ---- inconclusive ------------------------------------------------------------------------------------------
class MaskedAttention(nn.Module):
    """Attention pooling whose masked positions get -inf: a zero mask makes every output NaN."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.score = nn.Linear(8, 1)
        self.value = nn.Linear(8, 8)

    def forward(self, x, mask):
        scores = self.score(x).squeeze(-1).masked_fill(mask == 0, float("-inf"))
        return (torch.softmax(scores, -1).unsqueeze(-1) * self.value(x)).sum(1)


def _masked_inputs(zero: bool):
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(2, 6, dtype=torch.int64) if zero else torch.ones(2, 6, dtype=torch.int64)
    return {"x": x, "mask": mask}


def test_all_nan_outputs_on_both_sides_are_inconclusive_exit_4(tmp_path, capsys):
    model, inputs = MaskedAttention().eval(), _masked_inputs(zero=True)
    path = _export(model, inputs, tmp_path / "attn.onnx")
    report = diffcore.compare(model, path, inputs)
    assert report.verdict == "inconclusive" and report.exit_code == 4 and not report
    assert report.outputs[0].status == "not comparable" and report.outputs[0].finite_count == 0
    assert report.reason == "model output 'y' has no element finite on both sides (all 16 are NaN/Inf): " \
        "nothing of it was compared"
    assert report.summary.startswith("INCONCLUSIVE: model output 'y'")
    assert report.coverage["elements"] == {"finite": 0, "total": 16}
    npz = tmp_path / "zero.npz"
    np.savez(npz, **{k: v.numpy() for k, v in inputs.items()})
    code, out, _ = run_cli(capsys, "compare", path, path, "--inputs", npz)
    assert code == 4
    assert out.startswith("diffcore INCONCLUSIVE")
    assert "  why:       model output 'y' has no element finite on both sides" in out
    clean = diffcore.compare(model, path, _masked_inputs(zero=False))  # the same model on a real mask
    assert clean.passed and clean.coverage["elements"] == {"finite": 16, "total": 16}, clean.summary


class Head(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(5)
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_a_comparison_that_pairs_no_output_is_inconclusive(tmp_path):
    """A model re-exported with another head (and output name): nothing pairs, nothing is a pass."""
    inputs = {"x": torch.randn(2, 8, generator=torch.Generator().manual_seed(6))}
    ref = _export(Head(4), inputs, tmp_path / "four.onnx", output_names=("logits",))
    test = _export(Head(5), inputs, tmp_path / "five.onnx", output_names=("scores",))
    report = diffcore.compare(ref, test, inputs)
    assert report.verdict == "inconclusive" and report.exit_code == 4 and not report.outputs
    assert report.reason.startswith("no model output was compared: none of the reference's 1 output(s) pairs")
    assert "'logits': model output; does not pair with test output 'scores': shape differs: ref (2, 4) vs test " \
        "(2, 5)" in report.reason
    assert report.coverage["outputs"] == {"paired": 0, "total": 1, "test_total": 1}
    assert "Outputs: none compared" in report.to_text()


# ---- coverage in every view ----------------------------------------------------------------------------------
def test_every_report_states_coverage_and_json_round_trips(classifiers, tmp_path):
    report = diffcore.compare(Classifier("argmax"), classifiers["argmin"], _class_inputs())
    cov = report.coverage
    assert cov["layers"]["paired"] >= 1 and cov["layers"]["total"] >= cov["layers"]["paired"]
    assert cov["per_output"] == [{"name": report.outputs[0].name, "finite": 12, "count": 12, "exact": True}]
    line = (f"compared {cov['layers']['paired']}/{cov['layers']['total']} reference layers, 1/1 model "
            "outputs, 12/12 output elements finite on both sides")
    assert f"coverage: {line}" in " ".join(report.to_text().split()) and f"Coverage: {line}." in report.summary
    assert line in report.to_html()
    again = DiffReport.from_json(report.to_json())
    assert again.coverage == cov and again.verdict == "fail" and again.outputs[0].first_mismatch_index == \
        report.outputs[0].first_mismatch_index
    assert json.loads(report.to_json())["coverage"]["outputs"]["paired"] == 1
    assert again.to_text() == report.to_text()


# ---- the deployed run decides: an fp16 RMSNorm that ORT fuses ------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


class NormNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.inp = nn.Linear(16, 16)
        self.norm = RMSNorm(16)
        self.out = nn.Linear(16, 16)

    def forward(self, x):
        return self.out(self.norm(self.inp(x)))


def test_a_finding_only_an_unfused_rmsnorm_shows_does_not_fail_the_deployed_fp16_model(tmp_path, capsys):
    """ORT fuses the float16 RMSNorm into SimplifiedLayerNormalization (float32 inside); exposing its Pow
    breaks the fusion and the exposed Pow overflows (x^2 > 65504). The deployed model is right."""
    inputs = {"x": torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(8)) * 300}
    path = _export(NormNet().eval(), inputs, tmp_path / "rms.onnx")
    report = diffcore.compare(path, path, inputs, test_dtype="float16")
    assert report.passed and report.exit_code == 0, report.summary
    pow_row = report.row("/norm/Pow_output_0")
    assert pow_row.status == "fusion-dependent" and pow_row.new_nonfinite > 0
    assert "seen with the fusion disabled; the deployed graph fuses it (fragile on a provider without that " \
           "fusion)" in pow_row.cause
    assert report.first_divergence is None and report.outputs[0].rel_l2 < 1e-3
    assert "would fail on a provider or optimization level without that fusion" in report.summary
    npz = tmp_path / "in.npz"
    np.savez(npz, **{k: v.numpy() for k, v in inputs.items()})
    code, out, _ = run_cli(capsys, "compare", path, path, "--test-dtype", "float16", "--inputs", npz)
    assert code == 0 and "Fusion-dependent findings (do not fail the deployed model) (" in out
    assert "  - /norm/Pow_output_0: makes NaN/Inf from the reference's (finite) inputs" in out
    assert "Fusion-dependent findings" in report.to_html() and "dc-s-fusion-dependent" in report.to_html()


def test_fused_away_names_the_values_the_deployed_graph_does_not_compute(tmp_path):
    from diffcore.capture.onnx.runner import OnnxRunner

    inputs = {"x": torch.randn(2, 8, 16)}
    path = _export(NormNet().eval(), inputs, tmp_path / "rms.onnx")
    with OnnxRunner(path, float16=True) as runner:
        fused = runner.fused_away()
    assert {"/norm/Pow_output_0", "/norm/ReduceMean_output_0", "/norm/Sqrt_output_0"} <= fused
    assert "/norm/Mul_output_0" not in fused and "y" not in fused  # the fused node's output survives


def test_a_real_overflow_on_a_value_the_deployed_graph_computes_still_fails(tmp_path):
    """The same inputs through an unfused float16 graph: the Pow is deployed, so its overflow counts."""
    class Square(nn.Module):
        def forward(self, x):
            return x.pow(2) * 0.5

    inputs = {"x": torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(8)) * 300}
    path = _export(Square().eval(), inputs, tmp_path / "sq.onnx")
    report = diffcore.compare(path, path, inputs, test_dtype="float16")
    assert report.verdict == "fail" and report.exit_code == 1
    assert not any(r.status == "fusion-dependent" for r in report.layers)


# ---- torch: outputs with hooks equal outputs without ---------------------------------------------------------
def test_the_torch_hooks_check_is_silent_on_a_normal_model_and_warns_when_the_runs_differ(monkeypatch):
    model, inputs = NormNet().eval(), {"x": torch.randn(2, 8, 16)}
    runner = TorchRunner(model)
    assert runner.check_hooks(inputs) == "" and runner.warnings == []
    report = diffcore.compare(model, NormNet().eval(), inputs)
    assert report.passed and not any("forward hooks" in w for w in report.warnings)

    plain = TorchRunner.outputs
    monkeypatch.setattr(TorchRunner, "outputs", lambda self, feed: {k: v + 1e-3 for k, v in plain(self, feed).items()})
    message = runner.check_hooks(inputs)
    assert message.startswith("forward hooks changed the outputs of NormNet (output(s) [0], max |diff| 0.001")
    report = diffcore.compare(model, NormNet().eval(), inputs)
    assert any(w.startswith("forward hooks changed the outputs of test") for w in report.warnings)


class HookSensitive(nn.Module):
    """A fast path that forward hooks disable (as some fused modules have): hooked, it adds 1e-3."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x) + (1e-3 if self.lin._forward_hooks else 0.0)


def test_torch_outputs_are_judged_on_the_forward_without_hooks():
    model, inputs = HookSensitive().eval(), {"x": torch.randn(2, 8)}
    report = diffcore.compare(model, HookSensitive().eval(), inputs)
    assert report.outputs[0].rel_l2 == 0 and report.passed, report.summary
    assert any(w.startswith("forward hooks changed the outputs of ref (output(s) [0], max |diff| 0.001")
               for w in report.warnings)
