"""Properties: partial states merge into the whole; drift_many equals drift; arbitrary floats match."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import diffcore
from diffcore.stats import layout as L
from diffcore.stats.formats import FORMATS
from diffcore.stats.oracle import oracle_state
from diffcore.stats.params import StatParams
from diffcore.stats.tolerance import resolve_tolerance
from tests.helpers import assert_state_matches, assert_stats_match

PARAMS = StatParams(resolve_tolerance(None, None, FORMATS["float16"]), FORMATS["float16"])
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def float_arrays(width=32, max_size=300):
    return hnp.arrays(np.float32 if width == 32 else np.float16, st.integers(0, max_size),
                      elements=st.floats(width=width, allow_nan=True, allow_infinity=True))


@st.composite
def pairs_of(draw, width=32, max_size=300):
    ref = draw(float_arrays(width, max_size))
    test = draw(hnp.arrays(ref.dtype, ref.shape, elements=st.floats(width=width)))
    return ref, test


@SETTINGS
@given(pair=pairs_of(), cuts=st.lists(st.floats(0, 1), max_size=4))
def test_merging_the_states_of_slices_gives_the_state_of_the_whole(pair, cuts):
    ref, test = pair
    n = ref.size
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    merged_i, merged_f, merged_h = L.empty_rows(1)
    for lo, hi in zip(bounds, bounds[1:]):
        part_i, part_f, part_h = oracle_state(ref[lo:hi], test[lo:hi], PARAMS, index_offset=lo)
        L.merge_into(merged_i[0], merged_f[0], part_i[0], part_f[0])
        merged_h += part_h
    whole = oracle_state(ref, test, PARAMS)
    scale = float(np.nanmax(np.abs(np.where(np.isinf(ref), 0, ref)), initial=1.0)) ** 2 * max(n, 1)
    assert_state_matches((merged_i[0], merged_f[0], merged_h[0]), (w[0] for w in whole), scale=scale)


@SETTINGS
@given(pair=pairs_of(width=16))
def test_numba_cpu_matches_the_oracle_on_arbitrary_float16(pair):
    ref, test = pair
    assert_stats_match(diffcore.drift(ref, test, backend="numba-cpu"),
                       diffcore.drift(ref, test, backend="numpy"), abs_=1e-9)


@SETTINGS
@given(pair=pairs_of(width=32, max_size=100))
def test_numba_cpu_matches_the_oracle_on_arbitrary_float32(pair):
    ref, test = pair
    got = diffcore.drift(ref, test, backend="numba-cpu")
    want = diffcore.drift(ref, test, backend="numpy")
    # float32 extremes squared reach 1e76: compare sums relative to their own magnitude
    assert_stats_match(got, want, rel=1e-9, abs_=1e-300)


@SETTINGS
@given(pairs=st.lists(pairs_of(max_size=80), min_size=1, max_size=8))
def test_drift_many_equals_drift_pair_by_pair(pairs):
    many = diffcore.drift_many(pairs, backend="numba-cpu")
    for (ref, test), got in zip(pairs, many):
        assert got.to_dict() == diffcore.drift(ref, test, backend="numba-cpu").to_dict()
