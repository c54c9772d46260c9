"""diffcore: find where a converted model stops matching its original.

The public API is small and explicit. ``import diffcore`` loads NumPy only; frameworks are imported by the
functions that use them.
"""
from .drift import drift, drift_many
from .errors import DiffcoreError, InternalError, MissingDependencyError
from .stats import DEFAULT_TOLERANCES, DriftStats

__version__ = "0.1.0"

__all__ = [
    "drift",
    "drift_many",
    "DriftStats",
    "DEFAULT_TOLERANCES",
    "DiffcoreError",
    "InternalError",
    "MissingDependencyError",
    "__version__",
]
