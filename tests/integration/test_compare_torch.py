"""Layer-by-layer comparison, torch vs torch: clean casts pass, planted bugs are localized.

Modes: a module vs the same module in float16 / bfloat16 / under autocast; a recorded trace vs a live run.
"""
import pytest

torch = pytest.importorskip("torch")

import diffcore  # noqa: E402
from diffcore.capture.torch_runner import TorchRunner  # noqa: E402
from diffcore.capture.trace import Trace, record  # noqa: E402
from tests.integration import models  # noqa: E402


@pytest.fixture(scope="module")
def stack():
    return models.stack()


@pytest.fixture(scope="module")
def inputs():
    return models.stack_inputs()


@pytest.mark.parametrize("options", [{"test_dtype": "float16"}, {"test_dtype": "bfloat16"},
                                     {"test_autocast": "bfloat16"}], ids=lambda o: str(o))
def test_clean_low_precision_casts_pass(stack, inputs, options):
    report = diffcore.compare(stack, stack, inputs, **options)
    assert report.passed, report.summary
    assert report.first_divergence is None
    assert len(report.layers) > 20 and all(r.local_rel_l2 is not None for r in report.layers)
    assert report.outputs and report.outputs[0].rel_l2 < 0.05


def test_float16_overflow_is_localized_to_the_block_that_overflows(stack, inputs):
    ref = models.with_fp16_overflow(stack, block=2)
    report = diffcore.compare(ref, ref, inputs, test_dtype="float16")
    assert not report.passed and report.exit_code == 1
    first = report.first_divergence
    assert first.name == "blocks.2.mlp.0", report.summary
    assert first.status == "diverged" and first.new_nonfinite > 0 and first.overflow_risk > 0
    assert "overflow" in first.cause and "float16" in first.cause
    earlier = [r for r in report.layers if r.index < first.index]
    assert earlier and all(r.status in ("ok", "drift") for r in earlier)


def test_an_approximated_gelu_is_born_where_it_was_planted(stack, inputs):
    report = diffcore.compare(stack, models.with_tanh_gelu(stack, block=2), inputs)
    assert not report.passed
    assert report.first_divergence.name == "blocks.2.mlp.1", report.summary
    assert report.first_divergence.status == "diverged"
    later = [r for r in report.layers if r.index > report.first_divergence.index and r.name.startswith("blocks.3")]
    assert later and all(r.status != "diverged" or r.name.startswith("blocks.2") for r in later)


def test_swapped_conv_channels_are_localized():
    ref = models.cnn()
    report = diffcore.compare(ref, models.with_swapped_channels(ref), models.cnn_inputs())
    assert report.first_divergence.name == "conv2" and report.first_divergence.status == "diverged"
    assert report.first_divergence.rel_l2 > 0.05
    downstream = report.row("bn2")
    assert downstream.status == "carried" and "arrived from upstream" in downstream.cause


def test_an_identical_model_matches_exactly(stack, inputs):
    report = diffcore.compare(stack, stack, inputs)
    assert report.passed and max(r.max_abs for r in report.layers) == 0.0


def test_recorded_trace_vs_live_run(tmp_path, stack, inputs):
    trace = record(TorchRunner(stack), inputs)
    path = trace.save(tmp_path / "ref.npz")
    report = diffcore.compare(path, stack, None, test_dtype="float16")  # inputs come from the trace
    assert report.passed and report.ref["kind"] == "trace"
    assert any("recorded trace" in w for w in report.warnings)  # no local errors from a trace
    broken = diffcore.compare(Trace.load(path), models.with_tanh_gelu(stack), None)
    assert broken.first_divergence.name == "blocks.2.mlp.1"


def test_report_json_round_trip_keeps_every_row(stack, inputs):
    report = diffcore.compare(stack, models.with_tanh_gelu(stack), inputs)
    again = diffcore.DiffReport.from_json(report.to_json())
    assert again.to_dict() == report.to_dict()
    data = report.to_dict()
    assert data["verdict"] == "fail" and data["first_divergence"]["name"] == "blocks.2.mlp.1"
    row = data["layers"][0]
    for key in ("name", "ref_tensor", "test_tensor", "shape", "max_abs", "mean_abs", "max_rel", "rel_l2",
                "cosine", "snr_db", "mismatch_frac", "nan_ref", "nan_test", "inf_ref", "inf_test",
                "local_max_abs", "status"):
        assert key in row
