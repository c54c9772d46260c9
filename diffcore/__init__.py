"""diffcore: find where a converted model stops matching its original.

The public API is small and explicit. ``import diffcore`` loads NumPy only; frameworks are imported by the
functions that use them.
"""
from ._version import __version__
from .comparison import compare
from .drift import drift, drift_many
from .precision import Fp32Suggestion, suggest_fp32
from .report.model import DiffReport, LayerRow
from .errors import DiffcoreError, InternalError, MissingDependencyError
from .stats import DEFAULT_TOLERANCES, DriftStats

__all__ = [
    "compare",
    "suggest_fp32",
    "Fp32Suggestion",
    "DiffReport",
    "LayerRow",
    "drift",
    "drift_many",
    "DriftStats",
    "DEFAULT_TOLERANCES",
    "DiffcoreError",
    "InternalError",
    "MissingDependencyError",
    "__version__",
]
