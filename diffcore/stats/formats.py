"""Floating-point formats a test tensor can have, and the derived quantities diffcore reports in them.

ULP distance, range headroom and default tolerances are all "in the test dtype": the format the converted
model computes in. Integers are promoted to float64 and measured in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import DiffcoreError, format_choices

__all__ = ["FloatFormat", "FORMATS", "format_named"]


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-754-style binary format: ``precision_bits`` counts the implicit bit (float32: 24).

    ``min_exponent`` is the exponent of the smallest normal number and ``max_exponent`` that of the largest
    finite one (float16: -14 and 15).
    """

    name: str
    precision_bits: int
    min_exponent: int
    max_exponent: int

    @property
    def max_finite(self) -> float:
        return math.ldexp(2.0 - math.ldexp(1.0, 1 - self.precision_bits), self.max_exponent)

    @property
    def smallest_normal(self) -> float:
        return math.ldexp(1.0, self.min_exponent)

    @property
    def smallest_subnormal(self) -> float:
        return math.ldexp(1.0, self.min_exponent - self.precision_bits + 1)

    @property
    def machine_epsilon(self) -> float:
        return math.ldexp(1.0, 1 - self.precision_bits)

    @property
    def overflow_threshold(self) -> float:
        """Smallest magnitude that rounds to infinity when cast to this format (round to nearest even).

        It is the largest finite value plus half an ULP: at the tie the even neighbour is the infinity.
        A value at or above it "overflows". For float64 nothing finite does, so it is +inf.
        """
        if self.name == "float64":
            return math.inf
        return self.max_finite + math.ldexp(1.0, self.max_exponent - self.precision_bits)

    @property
    def underflow_threshold(self) -> float:
        """Largest magnitude that rounds to zero when cast (half the smallest subnormal; the tie goes to 0).

        A nonzero value at or below it "underflows". For float64 nothing nonzero does, so it is 0.0.
        """
        if self.name == "float64":
            return 0.0
        return math.ldexp(1.0, self.min_exponent - self.precision_bits)

    def ulp_spacing(self, x: float) -> float:
        """The ULP of this format at |x|: ``2**(e - p + 1)`` with ``e = floor(log2|x|)`` clamped to the
        format's exponent range (so 0 and subnormals get the subnormal spacing, and values beyond the
        largest finite one the spacing at the top)."""
        x = abs(x)
        exponent = math.frexp(x)[1] - 1 if x > 0 else self.min_exponent
        exponent = min(max(exponent, self.min_exponent), self.max_exponent)
        return math.ldexp(1.0, exponent - self.precision_bits + 1)


FORMATS = {
    "float16": FloatFormat("float16", 11, -14, 15),
    "bfloat16": FloatFormat("bfloat16", 8, -126, 127),
    "float32": FloatFormat("float32", 24, -126, 127),
    "float64": FloatFormat("float64", 53, -1022, 1023),
}


def format_named(name: str) -> FloatFormat:
    """Return the format called ``name`` (``float16``, ``bfloat16``, ``float32``, ``float64``)."""
    try:
        return FORMATS[name]
    except KeyError:
        raise DiffcoreError(f"unknown float format {name!r}; valid: {format_choices(FORMATS)}") from None
