"""The ``numpy`` backend: the float64 oracle itself, one statistic at a time over whole arrays.

It is the definition every other backend is tested against, and the "NumPy stat by stat" baseline of the
benchmark. It makes float64 temporaries of the input size; use it for truth, not for speed.
"""
from __future__ import annotations

import numpy as np

from ..arrays import STORAGE_BF16, STORAGE_F16, Operand
from ..stats.oracle import oracle_state
from .base import Backend, PairJob


def to_float64(op: Operand) -> np.ndarray:
    """The operand's values as a float64 array (exact for every supported dtype)."""
    data = np.asarray(op.data)
    with np.errstate(invalid="ignore"):  # NaN payloads convert exactly; NumPy merely warns about them
        if op.storage == STORAGE_F16:
            return data.view(np.float16).astype(np.float64)
        if op.storage == STORAGE_BF16:
            return (data.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return data.astype(np.float64)


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"

    def availability(self):
        return True, "always available"

    def reduce(self, jobs: list[PairJob]):
        states = []
        for job in jobs:
            # Sums of squares may overflow (inf) here: that is detected and recovered by drift's rescaled
            # pass (stats/overflow.py), so NumPy's warning would only mislead.
            with np.errstate(over="ignore", invalid="ignore"):
                i_rows, f_rows, h_rows = oracle_state(to_float64(job.ref), to_float64(job.test), job.params)
            states.append((i_rows[0], f_rows[0], h_rows[0]))
        return states
