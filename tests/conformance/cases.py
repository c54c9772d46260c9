"""Conformance inputs: every backend must reproduce the oracle on all of them.

Each case is (id, ref, test) on the host; ``ref``/``test`` are NumPy arrays or torch CPU tensors (bfloat16,
and a share of float32, come as torch tensors so both kinds of input are covered).
"""
from __future__ import annotations

import numpy as np

EDGE_SIZES = (0, 1, 15, 16, 17, 127, 128, 129, 1023, 1024, 1025)
LARGE_SIZE = (1 << 20) + 3
DTYPE_PAIRS = (
    ("float32", "float32"), ("float32", "float16"), ("float32", "bfloat16"), ("float64", "float32"),
    ("float16", "float16"), ("bfloat16", "bfloat16"), ("float64", "float64"), ("int32", "float32"),
)
FLAVOURS = ("random", "specials", "zeros", "denormals", "f16_extremes", "strided")


def cast(values: np.ndarray, dtype: str, as_torch: bool = False):
    """``values`` (float64) in ``dtype``; bfloat16 (and ``as_torch``) as a torch CPU tensor."""
    if dtype == "bfloat16" or as_torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)


def base_values(size: int, flavour: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """float64 (ref, test) of one flavour: noise of 1e-3 relative, with the flavour's special values."""
    ref = rng.standard_normal(size) * 4.0
    test = ref + rng.standard_normal(size) * 1e-3 * np.abs(ref)
    if flavour == "zeros":
        ref[: size // 2] = 0.0
        test[size // 4: size // 2] = 0.0
        test[: size // 8] = -0.0
    elif flavour == "denormals":
        ref = ref * 1e-40
        test = test * 1e-40
        ref[::3] = 5e-324
        test[::5] = 2.0 ** -24 * 0.75  # a float16 subnormal
    elif flavour == "f16_extremes":
        ref = np.resize(np.array([65504.0, -65504.0, 65519.0, 65520.0, 7e4, 6.0e-8, 2.9e-8, 1e-9]), size)
        test = ref * (1.0 + 1e-3)
    elif flavour == "specials":
        _inject_specials(ref, test)
    return ref, test


def _inject_specials(ref: np.ndarray, test: np.ndarray) -> None:
    n = ref.size
    plan = [  # (position, ref value, test value)
        (0, np.nan, 1.0), (n // 2, 2.0, np.nan), (n - 1, np.nan, np.nan), (1, np.inf, -np.inf),
        (2, np.inf, np.inf), (3, -np.inf, 5.0), (n // 3, 1.0, np.inf), (n // 5, -np.inf, -np.inf),
        (4, -np.inf, np.nan),
    ]
    for pos, r, t in plan:
        if 0 <= pos < n:
            ref[pos], test[pos] = r, t


def _strided(values: np.ndarray, dtype: str, rng, as_torch: bool, reverse: bool):
    """A non-contiguous view holding ``values``: one column of a two-column array; NumPy views may also
    run backwards (a negative stride; torch has none)."""
    wide = np.empty((values.size, 2))
    wide[:, 0] = values[::-1] if reverse else values
    wide[:, 1] = rng.standard_normal(values.size)
    arr = cast(wide, dtype, as_torch)
    if reverse and isinstance(arr, np.ndarray):
        return arr[::-1, 0]
    return arr[:, 0] if not reverse else cast(np.ascontiguousarray(wide[::-1, 0]), dtype, as_torch)


def make_case(size: int, pair: tuple[str, str], flavour: str, seed: int = 0):
    rng = np.random.default_rng([seed, size, len(flavour)])
    ref, test = base_values(size, flavour, rng)
    as_torch = pair[0] == "float32" and size % 2 == 1
    if flavour == "strided":
        reverse = size % 2 == 0
        return (_strided(ref, pair[0], rng, as_torch, reverse), _strided(test, pair[1], rng, as_torch, reverse))
    return cast(ref, pair[0], as_torch), cast(test, pair[1], as_torch)


def matrix_cases():
    """(id, ref, test) for sizes x dtype pairs x flavours, plus the ~1M and 0-d cases."""
    for size in EDGE_SIZES:
        for pair in DTYPE_PAIRS:
            for flavour in FLAVOURS:
                yield f"{size}-{pair[0]}-{pair[1]}-{flavour}", size, pair, flavour


def large_cases():
    for pair in (("float32", "float32"), ("float32", "float16"), ("float32", "bfloat16")):
        for flavour in ("random", "specials"):
            yield f"{LARGE_SIZE}-{pair[0]}-{pair[1]}-{flavour}", LARGE_SIZE, pair, flavour


def two_d_cases():
    """2-D inputs: transposed views and a 0-d pair (index unravelling)."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((33, 65))
    yield "2d-transposed", a.T.astype(np.float32), (a.T + 1e-3).astype(np.float16)
    yield "0d", np.float32(1.25), np.float32(1.5)
    yield "3d-f64", a.reshape(3, 11, 65), a.reshape(3, 11, 65) * (1 + 1e-6)
