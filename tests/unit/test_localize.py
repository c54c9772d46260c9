"""The divergence rule on synthetic rows: dtype-aware, local vs carried, NaN origins, accumulation."""
from diffcore.localize import DivergenceRule, localize, summarize
from diffcore.report.model import CARRIED, DIVERGED, DRIFT, OK, LayerRow


def row(i, rel_l2, local=None, dtype="float16", new_nonfinite=0, local_nonfinite=0, overflow=0,
        mismatch_frac=0.0):
    r = LayerRow(index=i, name=f"blocks.{i}", ref_tensor=f"r{i}", test_tensor=f"t{i}", shape=[4],
                 ref_dtype="float32", test_dtype=dtype, max_abs=rel_l2, mean_abs=rel_l2, max_rel=rel_l2,
                 rel_l2=rel_l2, cosine=1.0, snr_db=40.0, mismatch_frac=mismatch_frac, nan_ref=0,
                 nan_test=new_nonfinite, inf_ref=0, inf_test=0, new_nonfinite=new_nonfinite,
                 overflow_risk=overflow, op_type="Add")
    r.local_rel_l2 = local
    r.local_new_nonfinite = None if local is None else local_nonfinite
    return r


def test_float16_noise_in_every_layer_is_not_a_divergence():
    layers = [row(i, 8e-4 * (1 + i) ** 0.5, local=6e-4) for i in range(24)]
    out = [row(99, 4e-3)]
    loc = localize(layers, out)
    assert not loc.failed and loc.first_divergence is None
    assert {r.status for r in layers} <= {OK, DRIFT}
    assert summarize(layers, out, loc).startswith("PASS")


def test_an_anomalous_local_error_is_born_here_and_later_rows_are_carried():
    layers = [row(i, 1e-6, local=1e-7, dtype="float32") for i in range(5)]
    layers += [row(5, 2e-4, local=2e-4, dtype="float32")]        # e.g. an approximated GELU
    layers += [row(i, 0.08, local=1e-7, dtype="float32") for i in range(6, 9)]
    loc = localize(layers, [])
    assert loc.first_divergence is layers[5] and layers[5].status == DIVERGED
    assert "local error" in layers[5].cause
    assert all(r.status == CARRIED and "arrived from upstream" in r.cause for r in layers[6:])
    assert "born in this layer" in summarize(layers, [], loc)


def test_a_new_inf_names_the_overflow():
    layers = [row(0, 1e-3, local=5e-4), row(1, 1e-3, local=5e-4),
              row(2, 1.0, local=1.0, new_nonfinite=3, local_nonfinite=3, overflow=3),
              row(3, 1.0, local=5e-4, new_nonfinite=3)]
    loc = localize(layers, [])
    assert loc.first_divergence is layers[2]
    assert "NaN/Inf from the reference's (finite) inputs" in layers[2].cause
    assert "exceed the float16 range (max 65504): an overflow" in layers[2].cause
    assert layers[3].status == CARRIED


def test_error_that_grows_gradually_is_reported_as_accumulated():
    layers = [row(i, 0.01 * i, local=8e-4) for i in range(1, 9)]
    loc = localize(layers, [])
    first = loc.first_divergence
    assert first is layers[5] and first.status == CARRIED  # 6 % is the first over 5 %
    assert "accumulated over upstream layers" in summarize(layers, [], loc)


def test_without_local_errors_a_jump_over_upstream_is_a_divergence():
    layers = [row(i, 1e-7, dtype="float32") for i in range(4)] + [row(4, 3e-4, dtype="float32")]
    loc = localize(layers, [])
    assert loc.first_divergence is layers[4] and "jumps" in layers[4].cause
    assert "local error not computed" in layers[4].cause


def test_outputs_fail_on_explicit_tolerance_only_when_it_is_given():
    layers = [row(0, 1e-4, local=1e-4)]
    outputs = [row(9, 1e-4, mismatch_frac=0.01)]
    assert not localize(layers, outputs).failed
    loc = localize(layers, outputs, explicit_tolerance=True)
    assert loc.failed and loc.failed_outputs == outputs and outputs[0].status == DIVERGED
    assert summarize(layers, outputs, loc).startswith("FAIL: no layer diverges")


def test_rule_thresholds_are_reported():
    rule = DivergenceRule()
    assert rule.to_dict()["fail_rel_l2"] == 0.05 and rule.noise_floor("float32") < rule.noise_floor("float16")
