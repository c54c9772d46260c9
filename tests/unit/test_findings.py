"""diffcore/findings.py on hand-built tensors: a clamp is any value that differs from plain float16 rounding,
slight changes are summarized, and the localizer's rule only fires past a limit."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

from diffcore import findings  # noqa: E402
from diffcore.report.model import LayerRow  # noqa: E402


def _tensor(name, values, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _graph(*tensors, constant=None):
    nodes = [] if constant is None else [helper.make_node("Constant", [], [constant.name], value=constant)]
    return helper.make_graph(nodes, "g", [], [], initializer=list(tensors))


def test_a_value_the_converter_moved_is_a_clamp_and_plain_rounding_is_not():
    before = findings.float_constants(_graph(_tensor("w", [0.1, 200000.0, -1e9, np.inf, np.nan, 1.0])))
    after = findings.float_constants(_graph(_tensor("w", [0.1, 1e4, -1e4, np.inf, np.nan, 1.0], np.float16)))
    (clamp,) = findings.clamps(before, after)
    assert clamp["tensor"] == "w" and clamp["count"] == 2 and clamp["size"] == 6
    assert clamp["before"] == [-1e9, 200000.0] and clamp["after"] == [-1e4, 1e4]
    assert findings.clamp_words(clamp) == "(2 of 6 values, e.g. -1e+09 -> -10000, 200000 -> 10000)"


def test_constant_nodes_are_compared_by_their_output_name():
    before = findings.float_constants(_graph(constant=_tensor("c", 200000.0)))
    after = findings.float_constants(_graph(constant=_tensor("c", 1e4, np.float16)))
    (clamp,) = findings.clamps(before, after)
    assert clamp["tensor"] == "c" and findings.clamp_words(clamp) == "(200000 -> 10000)"


def test_changes_below_float16_precision_of_the_tensor_are_one_summary():
    before = findings.float_constants(_graph(_tensor("w", [0.5, 1e-9]), _tensor("v", [2.0, -3e-8])))
    after = findings.float_constants(_graph(_tensor("w", [0.5, 1e-7], np.float16),
                                            _tensor("v", [2.0, -1e-7], np.float16)))
    (summary,) = findings.clamps(before, after)
    assert summary["tensor"] is None and summary["count"] == 2 and summary["tensors"] == ["w", "v"]


def test_same_name_float32_on_both_sides_or_other_shapes_are_not_compared():
    same = findings.float_constants(_graph(_tensor("w", [200000.0])))
    other = findings.float_constants(_graph(_tensor("w", [1e4, 1e4], np.float16)))
    assert findings.clamps(same, same) == [] and findings.clamps(same, other) == []


def _row(notes, local=None):
    return LayerRow(index=0, name="div", ref_tensor="d", test_tensor="d", shape=[2], ref_dtype="float32",
                    test_dtype="float16", max_abs=1.0, mean_abs=1.0, max_rel=1.0, rel_l2=19.0, cosine=1.0,
                    snr_db=0.0, mismatch_frac=1.0, nan_ref=0, nan_test=0, inf_ref=0, inf_test=0,
                    local_rel_l2=local, notes=list(notes))


def test_the_clamp_is_the_cause_only_when_a_limit_fired():
    clamp = "the float16 converter clamped constant 'c' (200000 -> 10000), read by Div"
    row = _row([clamp])
    assert findings.blame_converter(row, "", "relative L2 error 1.9e+03 % exceeds 5 %") == \
        (f"{clamp}: relative L2 error 1.9e+03 % exceeds 5 %", "")
    assert findings.blame_converter(row, "", "") == ("", "")
    assert findings.blame_converter(_row(["another note"]), "", "x") == ("", "x")


def test_attach_notes_the_rows_a_reading_node_produces():
    rows = [_row([]), _row([])]
    rows[1].test_tensor = "other"
    findings.attach(rows, [{"kind": "clamped-constant", "values": ["d"], "message": "m"}])
    assert rows[0].notes == ["m"] and rows[1].notes == []
