"""The search's next step, on hand-made report rows: earliest bad layer first, its overflowing followers
with it, consumers of a float32 node that still overflows, and torch's widening to an in-range ancestor."""
from diffcore.precision.candidates import next_step
from diffcore.report.model import DiffReport, LayerRow


def _row(name, *, overflow=0, nonfinite=0, rel=1e-4, status="ok"):
    return LayerRow(index=0, name=name, ref_tensor=name, test_tensor=name, shape=[1], ref_dtype="float32",
                    test_dtype="float16", max_abs=0.0, mean_abs=0.0, max_rel=0.0, rel_l2=rel, cosine=1.0,
                    snr_db=0.0, mismatch_frac=0.0, nan_ref=0, nan_test=0, inf_ref=0, inf_test=nonfinite,
                    overflow_risk=overflow, new_nonfinite=nonfinite, status=status, module=name)


def _report(rows):
    return DiffReport(verdict="fail", tolerance={}, layers=rows[:-1], outputs=rows[-1:])


class _Onnx:
    def __init__(self):
        self.graph = {"mm": ["relu"], "relu": ["down"], "down": ["out"], "out": []}

    def unit_of(self, row):
        return row.name if row.name in self.graph else None

    def consumers(self, unit):
        return self.graph[unit]


class _Torch:
    def unit_of(self, row):
        return row.module

    def island(self, unit, report):
        from diffcore.precision.torch_mixed import TorchTarget

        return TorchTarget.island(self, unit, report)


def test_the_earliest_bad_row_goes_first_with_the_overflowing_rows_right_after_it():
    rows = [_row("a"), _row("mm", overflow=3, nonfinite=3), _row("relu", overflow=2, nonfinite=2),
            _row("down", nonfinite=5), _row("out", nonfinite=5, status="carried")]
    target = _Onnx()
    target.graph = dict(target.graph, a=["mm"])
    assert next_step(_report(rows), target, set()) == ["mm", "relu"]


def test_a_float32_node_whose_output_still_overflows_brings_in_its_consumers():
    rows = [_row("mm", overflow=3, nonfinite=3), _row("relu", overflow=2, nonfinite=2), _row("down"),
            _row("out", nonfinite=5, status="carried")]
    assert next_step(_report(rows), _Onnx(), {"mm", "relu"}) == ["down"]


def test_a_torch_overflow_widens_to_the_smallest_ancestor_back_in_range():
    rows = [_row("b.1.mix.up", overflow=4, nonfinite=4), _row("b.1.mix.act", overflow=4, nonfinite=4),
            _row("b.1.mix.down", nonfinite=8), _row("b.1.mix"), _row("b.1"), _row("out", nonfinite=1)]
    assert next_step(_report(rows), _Torch(), set()) == ["b.1.mix"]


def test_without_a_bad_row_the_largest_local_error_goes_next():
    rows = [_row("mm"), _row("relu"), _row("down"), _row("out", rel=0.2, status="carried")]
    rows[0].local_rel_l2, rows[1].local_rel_l2, rows[2].local_rel_l2 = 1e-3, 5e-2, 2e-3
    rows[3].module = None
    target = _Onnx()
    target.unit_of = lambda r: r.module if r.module in target.graph else None
    assert next_step(_report(rows), target, set()) == ["relu"]
