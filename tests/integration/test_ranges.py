"""Range diagnosis in the user's words: the row that overflows says by how much, on the torch side as on
the ONNX side; parameters that overflow or flush to zero in the test dtype are listed per layer."""
import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import diffcore  # noqa: E402
from diffcore import ranges  # noqa: E402
from diffcore.report.model import LayerRow  # noqa: E402
from tests.integration import models  # noqa: E402

PEAK = 1.5e5  # 2.29x past float16's 65504


class Overflowing(nn.Module):
    """up multiplies by 1500 (a weight float16 and the ONNX converter keep as is): 100 becomes 1.5e5."""

    def __init__(self, dim=8):
        super().__init__()
        self.up = nn.Linear(dim, dim, bias=False)
        self.down = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.up.weight.copy_(torch.eye(dim) * 1500.0)
            self.down.weight.copy_(torch.eye(dim) / 1500.0)

    def forward(self, x):
        return self.down(self.up(x))


def _inputs():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8)).astype(np.float32)
    x[0, 0] = 100.0
    return {"x": x}


def _check_overflow_row(report):
    up = next(r for r in report.layers if r.name == "up" or "up" in r.name and r.op_type in ("Gemm", "MatMul"))
    assert up.ref_absmax == pytest.approx(PEAK, rel=1e-3)
    assert up.headroom_bits == pytest.approx(math.log2(65504 / PEAK), abs=1e-3)
    assert up.status in ("diverged", "carried")
    assert re.search(r"this layer's values reach 1\.5e\+05, 2\.29x past float16's maximum \(65504\)", up.cause), \
        up.cause
    assert "overflow" in up.cause
    return up


def test_torch_cast_row_says_how_far_past_float16_it_goes():
    torch.manual_seed(0)
    model = Overflowing().eval()
    report = diffcore.compare(model, model, _inputs(), test_dtype="float16")
    assert not report.passed
    up = _check_overflow_row(report)
    assert up.gain is None  # its errors cover the finite elements only: not an amplification
    assert "amplifiers" not in report.summary


def test_onnx_float16_row_says_how_far_past_float16_it_goes(tmp_path):
    model = Overflowing().eval()
    path = models.export(model, {"x": torch.from_numpy(_inputs()["x"])}, tmp_path / "over.onnx", dynamo=False)
    report = diffcore.compare(path, path, _inputs(), test_dtype="float16")
    assert not report.passed
    _check_overflow_row(report)


def _row(dtype, absmax, overflow=0, underflow=0):
    return LayerRow(index=0, name="blocks.0.mlp", ref_tensor="a", test_tensor="a", shape=[4], ref_dtype="float32",
                    test_dtype=dtype, max_abs=0.0, mean_abs=0.0, max_rel=0.0, rel_l2=0.0, cosine=1.0,
                    snr_db=0.0, mismatch_frac=0.0, nan_ref=0, nan_test=0, inf_ref=0, inf_test=0,
                    overflow_risk=overflow, underflow_risk=underflow, ref_absmax=absmax)


def test_bfloat16_wording_names_its_maximum():
    row = _row("bfloat16", 3.4e38, overflow=1)
    assert ranges.overflow_words(row) == \
        "this layer's values reach 3.4e+38, 1x past bfloat16's maximum (3.38953e+38)"
    assert ranges.headroom_bits(1e30, "bfloat16") == pytest.approx(math.log2(3.3895313892515355e38 / 1e30))
    assert ranges.overflow_words(_row("bfloat16", 1e30)) == ""


def test_values_flushed_to_zero_are_counted_in_words():
    words = ranges.underflow_words(_row("bfloat16", 1.0, underflow=3))
    assert re.fullmatch(r"3 nonzero reference values flush to zero in bfloat16 \(at most 4\.59e-41, half its "
                        r"smallest subnormal\)", words), words
    assert ranges.underflow_words(_row("float32", 1.0, underflow=3)) == ""


class ExtremeWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.big = nn.Linear(4, 4)
        self.tiny = nn.Linear(4, 4)
        self.plain = nn.Linear(4, 4)
        with torch.no_grad():
            self.big.weight[0, 0] = 1e6
            self.tiny.weight[1, 1] = 1e-9

    def forward(self, x):
        return self.plain(self.tiny(self.big(x)))


def test_parameters_out_of_float16_range_are_listed_per_layer():
    model = ExtremeWeights().eval()
    x = np.random.default_rng(0).uniform(-1e-3, 1e-3, (2, 4)).astype(np.float32)
    report = diffcore.compare(model, model, {"x": x}, test_dtype="float16")
    weights = [f for f in report.findings if f["kind"] == "weight-range"]
    assert [(f["module"], f["tensor"]) for f in weights] == [("big", "big.weight"), ("tiny", "tiny.weight")]
    assert re.search(r"1 values overflow \(largest 1e\+06, float16 max 65504\)", weights[0]["message"])
    assert re.search(r"1 values flush to zero \(smallest 1e-09\)", weights[1]["message"])
    rows = {r.name: r for r in report.layers}
    assert any("big.weight" in n for n in rows["big"].notes)
    assert any("tiny.weight" in n for n in rows["tiny"].notes)
    assert not any("weight" in n for n in rows["plain"].notes)


def test_bfloat16_keeps_weights_float16_would_lose():
    model = ExtremeWeights().eval()
    assert ranges.torch_weight_findings(model, "bfloat16") == []
    assert len(ranges.torch_weight_findings(model, "float16")) == 2


def test_text_view_lists_the_overflowing_row():
    model = Overflowing().eval()
    text = diffcore.compare(model, model, _inputs(), test_dtype="float16").to_text()
    assert re.search(r"\n  - up: this layer's values reach 1\.5e\+05, 2\.29x past float16's maximum", text), text


def test_autocast_lists_no_weights_it_keeps_in_float32():
    model = ExtremeWeights().eval()
    x = np.random.default_rng(0).uniform(-1e-3, 1e-3, (2, 4)).astype(np.float32)
    report = diffcore.compare(model, model, {"x": x}, test_autocast="float16")
    assert not [f for f in report.findings if f["kind"] == "weight-range"]
