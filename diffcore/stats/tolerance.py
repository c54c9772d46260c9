"""Tolerances: the mismatch rule, its per-dtype defaults, and the relative-error floor.

An element mismatches when ``|t - r| > atol + rtol * |r|`` (the rule of ``torch.testing`` and
``numpy.isclose`` with the reference on the right). ``atol`` and ``rtol`` are given together or not at all;
when neither is given, the defaults of the test dtype apply (the same table as ``torch.testing``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import DiffcoreError
from .formats import FloatFormat

__all__ = ["Tolerance", "DEFAULT_TOLERANCES", "resolve_tolerance"]

# test dtype -> (atol, rtol); the values of torch.testing.assert_close, so users meet familiar numbers.
DEFAULT_TOLERANCES = {
    "float16": (1e-5, 1e-3),
    "bfloat16": (1e-5, 1.6e-2),
    "float32": (1e-5, 1.3e-6),
    "float64": (1e-7, 1e-7),
}

# Where atol is 0 the relative-error floor falls back to 2**-126 (float32's smallest normal), which keeps
# |d| / floor finite for any |d| below ~4e270.
_REL_FLOOR_FALLBACK = math.ldexp(1.0, -126)


@dataclass(frozen=True)
class Tolerance:
    """``atol``/``rtol`` of the mismatch rule and whether they were defaults for the test dtype."""

    atol: float
    rtol: float
    source: str  # "default:<dtype>" or "user"

    @property
    def rel_floor(self) -> float:
        """Denominator floor of the relative error: ``|d| / max(|r|, rel_floor)``.

        Below ``atol`` the mismatch rule is absolute, so relative error is measured against ``atol`` there;
        this keeps max_rel/mean_rel finite where the reference is zero.
        """
        return self.atol if self.atol > 0 else _REL_FLOOR_FALLBACK

    def to_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "source": self.source}


def _check_value(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DiffcoreError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise DiffcoreError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def resolve_tolerance(atol, rtol, test_format: FloatFormat) -> Tolerance:
    """Return the tolerance to use: both user values, or the defaults of ``test_format``.

    Raises:
        DiffcoreError: only one of atol/rtol was given, or a value is negative, NaN or not a number.
    """
    if (atol is None) != (rtol is None):
        given = "atol" if atol is not None else "rtol"
        raise DiffcoreError(
            f"{given} was given without {'rtol' if given == 'atol' else 'atol'}: "
            "give both tolerances or neither (then the test dtype's defaults apply)"
        )
    if atol is None:
        default_atol, default_rtol = DEFAULT_TOLERANCES[test_format.name]
        return Tolerance(default_atol, default_rtol, f"default:{test_format.name}")
    return Tolerance(_check_value("atol", atol), _check_value("rtol", rtol), "user")
