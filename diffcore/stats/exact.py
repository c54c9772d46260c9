"""Exact comparison of integer and bool tensors (token ids, ArgMax indices, masks).

The drift engine measures float error; an integer or bool output is either equal or wrong, so it is
compared element by element: how many elements differ, which fraction, and where the first one is (an
index into the reference's shape, with both values there). Any difference fails the tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ExactStats", "exact_compare", "is_exact_dtype"]

_FLOATS = ("float16", "bfloat16", "float32", "float64")


def is_exact_dtype(dtype: str | None) -> bool:
    """True for integer and bool dtypes (compared exactly), False for floats and unknown dtypes."""
    return dtype is not None and dtype not in _FLOATS


@dataclass
class ExactStats:
    """Result of ``exact_compare``: the population and where ref and test differ."""

    shape: tuple
    ref_dtype: str
    test_dtype: str
    count: int
    mismatch_count: int
    first_mismatch_index: tuple | None   # unravelled in ``shape``; None when equal
    first_mismatch_values: tuple | None  # (ref value, test value) there
    max_abs: float                       # largest |t - r| over the values as numbers (bool as 0/1)
    mean_abs: float
    rel_l2: float                        # ||t - r|| / ||r|| over the values as numbers (inf if r = 0 != t)

    @property
    def mismatch_frac(self) -> float:
        return self.mismatch_count / self.count if self.count else 0.0


def _host(value) -> tuple[np.ndarray, str]:
    from ..arrays import host_array

    array, name = host_array(value, "compare")
    return np.asarray(array), name


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def exact_compare(ref, test) -> ExactStats:
    """Compare two tensors of equal element count exactly (test viewed in the reference's shape).

    Args:
        ref, test: NumPy arrays, torch tensors (any device), CuPy arrays or OrtValues of an integer or
            bool dtype (a float side is compared by value too).
    """
    r, ref_dtype = _host(ref)
    t, test_dtype = _host(test)
    t = t.reshape(r.shape)
    differ = r != t
    mismatches = int(np.count_nonzero(differ))
    first = values = None
    if mismatches:
        flat = int(np.flatnonzero(differ.reshape(-1))[0])
        first = tuple(int(i) for i in np.unravel_index(flat, r.shape)) if r.ndim else ()
        values = (_plain(r.reshape(-1)[flat]), _plain(t.reshape(-1)[flat]))
    diff = np.abs(t.astype(np.float64) - r.astype(np.float64))
    norm_r = float(np.linalg.norm(r.astype(np.float64)))
    norm_d = float(np.linalg.norm(diff))
    rel = norm_d / norm_r if norm_r else (0.0 if norm_d == 0 else math.inf)
    return ExactStats(shape=tuple(r.shape), ref_dtype=ref_dtype, test_dtype=test_dtype, count=int(r.size),
                      mismatch_count=mismatches, first_mismatch_index=first, first_mismatch_values=values,
                      max_abs=float(diff.max()) if diff.size else 0.0,
                      mean_abs=float(diff.mean()) if diff.size else 0.0, rel_l2=rel)
