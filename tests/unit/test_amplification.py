"""gain = max(rel_l2 - local, 0) / e_in, and e_in over several input tensors."""
import math

import numpy as np
import pytest

from diffcore.amplification import gain_of, rel_l2_of, top_amplifiers
from diffcore.report.model import LayerRow


def test_gain_is_the_carried_error_over_the_arriving_error():
    assert gain_of(0.05, 0.002, 1e-4) == pytest.approx(480.0)
    assert gain_of(0.001, 0.002, 1e-4) == 0.0  # all of it made here: nothing carried


@pytest.mark.parametrize("e_in", [None, 0.0, 1e-13, math.nan])
def test_no_gain_where_nothing_measurable_arrived(e_in):
    assert gain_of(0.05, 0.0, e_in) is None


def test_no_gain_without_a_local_error():
    assert gain_of(0.05, None, 1e-3) is None


def test_an_exact_mask_does_not_swamp_the_hidden_states_error():
    hidden = np.ones(8)
    mask = np.full(8, -1e4)
    assert rel_l2_of((hidden, mask), (hidden * 1.01, mask)) == pytest.approx(0.01)


def test_mismatched_structures_have_no_input_error():
    assert rel_l2_of((np.ones(3),), (np.ones(3), np.ones(3))) is None


def _row(name, gain):
    return LayerRow(index=0, name=name, ref_tensor=name, test_tensor=name, shape=[1], ref_dtype="float32",
                    test_dtype="float16", max_abs=0.0, mean_abs=0.0, max_rel=0.0, rel_l2=0.0, cosine=1.0,
                    snr_db=0.0, mismatch_frac=0.0, nan_ref=0, nan_test=0, inf_ref=0, inf_test=0, gain=gain)


def test_top_amplifiers_are_the_largest_gains_above_two():
    rows = [_row("a", 1.0), _row("b", 300.0), _row("c", None), _row("d", 5.0), _row("e", math.inf)]
    assert [r.name for r in top_amplifiers(rows)] == ["b", "d"]
