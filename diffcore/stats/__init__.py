"""The definition of every drift statistic (result.py), its accumulator (layout.py) and the oracle."""
from .formats import FORMATS, FloatFormat
from .result import DriftStats, Histogram
from .tolerance import DEFAULT_TOLERANCES, Tolerance

__all__ = ["DriftStats", "Histogram", "FloatFormat", "FORMATS", "Tolerance", "DEFAULT_TOLERANCES"]
