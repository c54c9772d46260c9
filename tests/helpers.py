"""Helpers shared by the test tiers: comparing results with the oracle."""
from __future__ import annotations

import math

import numpy as np

from diffcore.stats import layout as L

# Fields that are maxima/minima or come from single elements: equal bit for bit on every backend.
EXACT_F = (L.F_MAX_ABS, L.F_MAX_REL, L.F_MAX_ULP, L.F_R_MIN, L.F_R_MAX, L.F_T_MIN, L.F_T_MAX)


def _close(a: float, b: float, rel: float, abs_: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


def assert_state_matches(got, want, *, rel=1e-9, scale=1.0):
    """Counts, indices, extremes and the histogram exactly; sums to ``rel`` (``scale`` ~ the data's size)."""
    gi, gf, gh = (np.asarray(x) for x in got)
    wi, wf, wh = (np.asarray(x) for x in want)
    diff_i = [L_name(k, "I") for k in range(L.NI) if gi[k] != wi[k]]
    assert not diff_i, f"int fields differ: {diff_i}: got {gi.tolist()} want {wi.tolist()}"
    assert np.array_equal(gh, wh), f"histograms differ at bins {np.flatnonzero(gh != wh).tolist()}"
    for k in range(L.NF):
        if k in EXACT_F:
            assert gf[k] == wf[k] or (np.isnan(gf[k]) and np.isnan(wf[k])), \
                f"{L_name(k, 'F')}: got {gf[k]!r} want {wf[k]!r}"
        else:
            assert _close(float(gf[k]), float(wf[k]), rel, 1e-12 * scale), \
                f"{L_name(k, 'F')}: got {gf[k]!r} want {wf[k]!r}"


def L_name(k: int, kind: str) -> str:
    """Name of field ``k`` of the ``I`` or ``F`` row, for messages."""
    names = {v: n for n, v in vars(L).items() if n.startswith(kind + "_") and isinstance(v, int)}
    return names.get(k, f"{kind}[{k}]")


FLOAT_STATS = ("max_abs", "mean_abs", "rms", "rel_l2", "max_rel", "mean_rel", "cosine", "snr_db",
               "max_ulp", "mean_ulp", "ref_min", "ref_max", "ref_mean", "ref_std", "test_min", "test_max",
               "test_mean", "test_std", "p50_abs", "p90_abs", "p99_abs", "mismatch_frac")


# Stats on a log or bounded scale get an absolute floor: near 0 dB / 0 cosine a relative bound is meaningless.
ABSOLUTE_FLOOR = {"snr_db": 1e-9, "cosine": 1e-12}


def assert_stats_match(got, want, *, rel=1e-9, abs_=1e-12):
    """Finalised DriftStats: every non-float field equal, floats within ``rel``/``abs_``."""
    g, w = got.to_dict(), want.to_dict()
    for key in g:
        if key == "backend":
            continue
        if key in FLOAT_STATS:
            if g[key] is None or w[key] is None:
                assert g[key] is w[key] is None, f"{key}: got {g[key]!r} want {w[key]!r}"
            else:
                floor = max(abs_, ABSOLUTE_FLOOR.get(key, 0.0))
                assert _close(g[key], w[key], rel, floor), f"{key}: got {g[key]!r} want {w[key]!r}"
        else:
            assert g[key] == w[key], f"{key}: got {g[key]!r} want {w[key]!r}"


def run_cli(capsys, *argv):
    """``diffcore`` in process: (exit code, stdout, stderr); never a traceback on stderr."""
    from diffcore.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def one_error_line(err: str) -> str:
    """The single ``diffcore: error: ...`` line a user error prints."""
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("diffcore: error: "), err
    return lines[0]
