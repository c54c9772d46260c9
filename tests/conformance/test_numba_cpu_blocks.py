"""numba-cpu's blocked loop (``accumulate_blocks``) against the shared per-element loop (``accumulate_range``,
the one GPU threads run): the same state, bit for bit, across block edges, NaN/Inf, signed zeros and ties."""
import numpy as np
import pytest

from diffcore.arrays import as_operand
from diffcore.backends import _numba_build
from diffcore.stats import layout as L
from diffcore.stats.params import StatParams
from diffcore.stats.tolerance import resolve_tolerance
from tests.conformance import cases

k = pytest.importorskip("diffcore.backends._numba_cpu_kernels")

SIZES = (0, 1, k.BLOCK - 1, k.BLOCK, k.BLOCK + 1, 3 * k.BLOCK + 17)
FLAVOURS = ("random", "specials", "zeros", "denormals", "f16_extremes", "strided")
PAIRS = (("float32", "float16"), ("bfloat16", "float64"))


def _states(ref, test):
    """(I, F, H) of the whole pair from accumulate_range, then from accumulate_blocks."""
    ref_op, test_op = as_operand(ref, "ref"), as_operand(test, "test")
    fmt = test_op.format
    params = StatParams(resolve_tolerance(None, None, fmt), fmt).vector()
    table_f16, table_bf16 = _numba_build.decode_tables()
    args = []
    for op in (ref_op, test_op):
        code = _numba_build.decode_code(op.storage)
        args.append((np.asarray(op.data), table_f16 if code == _numba_build.DECODE_F16 else table_bf16, code != 0))
    (r, table_r, dec_r), (t, table_t, dec_t) = args
    states = []
    for run in (lambda i, f, h: k.accumulate_range(r, t, table_r, table_t, dec_r, dec_t, 0, r.size, 1, 0,
                                                   params, i, f, h),
                lambda i, f, h: k.accumulate_blocks(r, t, table_r, table_t, dec_r, dec_t, 0, r.size, 0, params,
                                                    i, f, h)):
        i_rows, f_rows, h_rows = L.empty_rows(1)
        run(i_rows[0], f_rows[0], h_rows[0])
        states.append((i_rows[0], f_rows[0], h_rows[0]))
    return states


def _assert_bitwise(want, got):
    for a, b, name in zip(want, got, "IFH"):
        assert np.array_equal(a.view(np.int64), b.view(np.int64)), \
            f"{name} row differs at {np.flatnonzero(a.view(np.int64) != b.view(np.int64)).tolist()}"


@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("size", SIZES)
def test_blocks_equal_the_element_loop_bit_for_bit(size, pair, flavour):
    _assert_bitwise(*_states(*cases.make_case(size, pair, flavour)))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_signed_zero_extremes_and_ties_across_blocks(dtype):
    """min/max ties between +0.0 and -0.0 keep the first one met, and equal maxima of |d| the first index,
    whichever block they fall in."""
    rng = np.random.default_rng(3)
    n = 5 * k.BLOCK + 3
    positive = np.abs(rng.standard_normal(n))
    positive[rng.random(n) < 0.3] = 0.0
    signed = positive.copy()
    signed[rng.random(n) < 0.5] *= -1.0  # zeros become -0.0 at random
    late_zero = positive + 1.0
    late_zero[[2 * k.BLOCK + 5, 4 * k.BLOCK]] = [-0.0, 0.0]
    ties = rng.standard_normal(n)
    for ref, test in [(signed, positive), (-positive, -signed), (late_zero, late_zero[::-1].copy()),
                      (ties, ties + np.where(np.arange(n) % 97 == 0, 0.5, 0.0))]:
        _assert_bitwise(*_states(ref.astype(dtype), test.astype(dtype)))
