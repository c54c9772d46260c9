"""The verdict rules on synthetic rows: exact comparison, not-comparable rows, inconclusive verdicts,
fusion-dependent findings (the integration tests run them on real models)."""
import numpy as np

from diffcore.coverage import coverage_line, decide
from diffcore.localize import localize, set_aside_fused, summarize
from diffcore.report.model import CARRIED, DIVERGED, FUSED, NOT_COMPARABLE, OK, DiffReport, LayerRow
from diffcore.stats.exact import exact_compare, is_exact_dtype


def row(i, rel_l2=1e-6, *, count=16, finite=16, new_nonfinite=0, local=None, local_nonfinite=None,
        nan_both=0):
    r = LayerRow(index=i, name=f"v{i}", ref_tensor=f"v{i}", test_tensor=f"v{i}", shape=[count], ref_dtype="float32",
                 test_dtype="float16", max_abs=rel_l2, mean_abs=rel_l2, max_rel=rel_l2, rel_l2=rel_l2, cosine=1.0,
                 snr_db=60.0, mismatch_frac=0.0, nan_ref=nan_both, nan_test=nan_both + new_nonfinite, inf_ref=0,
                 inf_test=0, new_nonfinite=new_nonfinite, count=count, finite_count=finite)
    r.local_rel_l2, r.local_new_nonfinite = local, local_nonfinite
    return r


def test_exact_compare_counts_mismatches_and_unravels_the_first():
    ref = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    test = np.array([[1, 2, 3], [4, 0, 7]], dtype=np.int32)
    stats = exact_compare(ref, test)
    assert (stats.mismatch_count, stats.first_mismatch_index, stats.first_mismatch_values) == (2, (1, 1), (5, 0))
    assert stats.mismatch_frac == 2 / 6 and stats.max_abs == 5.0
    same = exact_compare(np.array([True, False]), np.array([True, False]))
    assert same.mismatch_count == 0 and same.first_mismatch_index is None
    assert is_exact_dtype("bool") and is_exact_dtype("int64") and not is_exact_dtype("bfloat16")


def test_an_exact_output_with_a_mismatch_fails_and_says_where():
    stats = exact_compare(np.array([[3, 1], [2, 2]]), np.array([[3, 1], [0, 2]]))
    out = LayerRow.from_exact(stats, index=9, name="ids", ref_tensor="ids", test_tensor="ids")
    loc = localize([row(0)], [out])
    assert loc.failed and out.status == DIVERGED
    assert out.cause == "1 of 4 elements differ (25 %, compared exactly as int64); first at [1, 0]: ref 2 vs test 0"


def test_a_row_with_nothing_finite_on_both_sides_is_not_comparable_never_ok():
    nan_layer, nan_out = row(0, 0.0, finite=0, nan_both=16), row(1, 0.0, finite=0, nan_both=16)
    loc = localize([nan_layer], [nan_out])
    assert nan_layer.status == NOT_COMPARABLE and nan_out.status == NOT_COMPARABLE and not loc.failed
    coverage = {"outputs": {"total": 1}}
    assert decide(loc.failed, [nan_out], coverage) == (
        "inconclusive", "model output 'v1' has no element finite on both sides (all 16 are NaN/Inf): nothing of "
        "it was compared")
    new_nan = row(2, 0.0, finite=0, new_nonfinite=16)  # the test made them: a finding, not "nothing compared"
    assert localize([], [new_nan]).failed


def test_no_compared_output_is_inconclusive_and_a_failure_wins_over_it():
    assert decide(False, [], {"outputs": {"total": 2}})[0] == "inconclusive"
    assert decide(True, [], {"outputs": {"total": 2}}) == ("fail", "")
    assert decide(False, [row(0)], {"outputs": {"total": 1}}) == ("pass", "")
    report = DiffReport(verdict="inconclusive", tolerance={}, layers=[], outputs=[], reason="why")
    assert report.exit_code == 4 and not report and report.inconclusive


def test_an_overflow_on_a_fused_away_value_is_set_aside_and_its_carried_rows_with_it():
    layers = [row(0), row(1, 1e-4, new_nonfinite=3, local=1e-4, local_nonfinite=3),
              row(2, 0.9, local=1e-5), row(3, 1e-4)]
    loc = localize(layers, [row(9, 1e-4)])
    assert loc.first_divergence is layers[1]
    loc = set_aside_fused(layers, loc, lambda r: r.test_tensor == "v1")
    assert loc.first_divergence is None and not loc.failed
    assert [r.status for r in layers] == [OK, FUSED, FUSED, OK]
    assert layers[2].cause.endswith("carried from v1, which was seen with the fusion disabled")
    assert "would fail on a provider or optimization level without that fusion" in summarize(layers, [], loc)


def test_a_value_error_on_a_fused_away_value_stays_a_divergence():
    layers = [row(i, local=1e-6) for i in range(4)] + [row(4, 2.2, local=2.2), row(5, 0.01, local=1e-6)]
    loc = set_aside_fused(layers, localize(layers, [row(9, 1e-4)]), lambda r: True)
    assert loc.first_divergence is layers[4] and layers[4].status == DIVERGED


def test_set_aside_never_applies_when_the_deployed_outputs_fail():
    layers = [row(0), row(1, 1e-4, new_nonfinite=3, local=1e-4, local_nonfinite=3)]
    loc = set_aside_fused(layers, localize(layers, [row(9, 0.5)]), lambda r: True)
    assert loc.failed and layers[1].status in (DIVERGED, CARRIED)


def test_the_coverage_line():
    coverage = {"layers": {"paired": 3, "total": 5}, "outputs": {"paired": 1, "total": 2, "test_total": 2},
                "elements": {"finite": 10, "total": 12}}
    assert coverage_line(coverage) == ("compared 3/5 reference layers, 1/2 model outputs, 10/12 output elements "
                                       "finite on both sides")
