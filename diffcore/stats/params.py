"""Per-pair parameters handed to every backend as one float64 vector (so kernels take one argument)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import FloatFormat
from .tolerance import Tolerance

P_ATOL = 0
P_RTOL = 1
P_REL_FLOOR = 2
P_PRECISION = 3      # precision bits of the test format (float32: 24)
P_EMIN = 4           # exponent of its smallest normal
P_EMAX = 5           # exponent of its largest finite value
P_OVERFLOW = 6       # |r| >= this rounds to Inf in the test format
P_UNDERFLOW = 7      # 0 < |r| <= this rounds to 0 in the test format
NP = 8


@dataclass(frozen=True)
class StatParams:
    """What a backend needs besides the data: the tolerance and the test format."""

    tolerance: Tolerance
    test_format: FloatFormat

    def vector(self) -> np.ndarray:
        fmt = self.test_format
        v = np.empty(NP, dtype=np.float64)
        v[P_ATOL] = self.tolerance.atol
        v[P_RTOL] = self.tolerance.rtol
        v[P_REL_FLOOR] = self.tolerance.rel_floor
        v[P_PRECISION] = fmt.precision_bits
        v[P_EMIN] = fmt.min_exponent
        v[P_EMAX] = fmt.max_exponent
        v[P_OVERFLOW] = fmt.overflow_threshold
        v[P_UNDERFLOW] = fmt.underflow_threshold
        return v
