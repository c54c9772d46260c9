"""Compile the shared drift source (``_numba_source``) and the shared merge (``stats.layout``) for a target.

``compile_for`` gives each plain-Python function a private copy of its globals in which the helper names
point at the target's compiled helpers, then hands it to the target's ``jit``. Numba resolves globals when
it compiles, so the CPU and CUDA builds of one source never see each other.
"""
from __future__ import annotations

import types
from types import SimpleNamespace

import numpy as np

from ..stats import layout
from . import _numba_source as source

# (module, function name) in dependency order; each may call those before it.
_FUNCTIONS = [
    (layout, "hist_bin_from_bits"),
    (layout, "_merge_moments"),
    (layout, "merge_into"),
    (source, "load"),
    (source, "unpack_params"),
    (source, "pow2"),
    (source, "ulps_at"),
    (source, "side_moments"),
    (source, "store_state"),
    (source, "first_finite"),
    (source, "side_terms"),
    (source, "range_risk"),
    (source, "pair_terms"),
    (source, "reset_nonfinite"),
    (source, "count_nonfinite"),
    (source, "accumulate_range"),
]


def compile_for(jit, *, f64_as_i64, i64_as_f64, hist_add) -> SimpleNamespace:
    """Return the compiled functions (by name) for one target.

    Args:
        jit: the target's decorator (``numba.njit(...)`` or ``numba.cuda.jit(device=True)``).
        f64_as_i64, i64_as_f64: the target's bit casts between float64 and int64.
        hist_add: the target's ``hist[b] += 1``.
    """
    compiled = {"f64_as_i64": f64_as_i64, "i64_as_f64": i64_as_f64, "hist_add": hist_add}
    namespaces = []
    for module, name in _FUNCTIONS:
        func = getattr(module, name)
        namespace = dict(func.__globals__)
        namespaces.append(namespace)
        rebound = types.FunctionType(func.__code__, namespace, name, func.__defaults__, func.__closure__)
        rebound.__qualname__ = func.__qualname__
        rebound.__module__ = func.__module__
        compiled[name] = jit(rebound)
    for namespace in namespaces:  # now every compiled helper exists: point each copy of globals at them
        namespace.update(compiled)
    return SimpleNamespace(**compiled)


def decode_tables():
    """Exact float64 values of every float16 and bfloat16 bit pattern (two 65536-entry tables)."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    with np.errstate(invalid="ignore"):  # NaN patterns are cast exactly; NumPy merely warns about them
        f16 = bits.view(np.float16).astype(np.float64)
        bf16 = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return f16, bf16


DECODE_NONE, DECODE_F16, DECODE_BF16 = 0, 1, 2
_DECODE = {"f16bits": DECODE_F16, "bf16bits": DECODE_BF16}


def decode_code(storage: str) -> int:
    """How a backend reads an operand's storage: natively, or through the float16/bfloat16 table."""
    return _DECODE.get(storage, DECODE_NONE)
