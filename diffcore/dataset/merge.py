"""Merging one row's statistics across samples exactly, through the accumulator states (stats/layout.py).

Each sample's row keeps its state (I, F, H rows). Samples merge in sample order with ``merge_into``, each
state's flat indices (argmax, first NaN/Inf) shifted by the elements of the samples before it, as if the
samples' tensors were concatenated along their first axis. Counts, extrema, histograms, first indices and
argmax are therefore exactly those of one pass over the concatenation; sums (of squares, of |d|, of
relative errors) are float64 sums added in sample order, equal to the concatenated pass up to float64
rounding of the order of addition (every backend's tiles are merged the same way). The merge order is the
sample order whatever produced the rows, so the result is the same bit for bit however samples were split.
"""
from __future__ import annotations

import math

from ..stats.layout import (
    I_ARGMAX,
    I_FIRST_INF_T,
    I_FIRST_NAN_R,
    NO_INDEX,
    empty_rows,
    merge_into,
)
from ..stats.result import finalize


class RowMerger:
    """Merges one row's per-sample states (``add`` in sample order), then ``finalize``."""

    def __init__(self):
        self.i, self.f, self.h = (r[0] for r in empty_rows(1))
        self.elements = 0
        self.rescaled = False
        self.shapes = []
        self.meta = None

    def add(self, state, shape, meta) -> None:
        i_row, f_row, h_row, rescaled = state
        i_row = i_row.copy()
        offset = self.elements
        if i_row[I_ARGMAX] >= 0:
            i_row[I_ARGMAX] += offset
        for k in range(I_FIRST_NAN_R, I_FIRST_INF_T + 1):
            if i_row[k] != NO_INDEX:
                i_row[k] += offset
        merge_into(self.i, self.f, i_row, f_row)
        self.h += h_row
        self.elements += math.prod(shape)
        self.rescaled = self.rescaled or rescaled
        self.shapes.append(tuple(shape))
        self.meta = self.meta or meta

    def shape(self) -> tuple:
        """The concatenation's shape along the first axis where the samples agree past it, else flat."""
        tails = {s[1:] for s in self.shapes}
        if len(tails) == 1 and all(len(s) for s in self.shapes):
            return (sum(s[0] for s in self.shapes), *next(iter(tails)))
        return (self.elements,)

    def finalize(self):
        ref_dtype, test_dtype, tolerance, backend = self.meta
        return finalize(self.i, self.f, self.h, shape=self.shape(), ref_dtype=ref_dtype, test_dtype=test_dtype,
                        tolerance=tolerance, backend=backend)
