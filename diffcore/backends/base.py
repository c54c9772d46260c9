"""What every backend implements, and the work table they share.

A backend reduces a list of ``PairJob`` into one accumulator state per pair (stats/layout.py); ``finalize``
does the rest, so backends differ only in where and how fast they reduce.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arrays import Operand
from ..stats import layout as L
from ..stats.params import StatParams


@dataclass
class PairJob:
    """One pair to reduce: two operands of equal shape on one device, and its parameters."""

    ref: Operand
    test: Operand
    params: StatParams

    @property
    def size(self) -> int:
        return self.ref.size


@dataclass
class WorkTable:
    """Tiles of many pairs for one launch / one parallel pass: tile k covers elements
    ``[start[k], stop[k])`` of pair ``pair[k]``; the tiles of pair p are ``first[p]:first[p + 1]``."""

    pair: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    first: np.ndarray

    @property
    def count(self) -> int:
        return int(self.pair.size)


def plan_tiles(sizes, tile_size) -> WorkTable:
    """Cut each pair into tiles of ``tile_size`` elements (the last one shorter); empty pairs get none.

    ``tile_size`` is one int or one per pair. Backends derive a pair's tile size from that pair alone, so
    its partial sums, and hence its result, do not depend on which other pairs share the call: drift_many
    is bitwise identical to drift pair by pair.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    tile_size = np.broadcast_to(np.asarray(tile_size, dtype=np.int64), sizes.shape)
    counts = -(-sizes // tile_size)
    first = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    pair = np.repeat(np.arange(sizes.size, dtype=np.int64), counts)
    start = (np.arange(pair.size, dtype=np.int64) - first[pair]) * tile_size[pair]
    stop = np.minimum(start + tile_size[pair], sizes[pair])
    return WorkTable(pair, start, stop, first)


def states_from_rows(i_rows, f_rows, h_rows):
    """Split stacked per-pair state rows into a list of (I, F, H) rows."""
    return [(i_rows[k], f_rows[k], h_rows[k]) for k in range(i_rows.shape[0])]


class Backend:
    """Interface of a statistics backend. ``availability`` never raises."""

    name = ""
    device = "cpu"  # where the data must live: "cpu" or "cuda"

    def availability(self) -> tuple[bool, str]:
        raise NotImplementedError

    def reduce(self, jobs: list[PairJob]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Return the accumulator state (I, F, H rows) of each job, in order."""
        raise NotImplementedError


__all__ = ["Backend", "PairJob", "WorkTable", "plan_tiles", "states_from_rows", "L"]
