"""Matching tensors across the two sides of a comparison."""
from .matcher import MatchResult, Pair, match_probes, reconcile_shapes

__all__ = ["MatchResult", "Pair", "match_probes", "reconcile_shapes"]
