"""Where samples come from: a folder of .npz files, one .npz split along a sample axis, or any iterable."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DiffcoreError
from ..files import read_npz


def npz_folder(folder) -> list:
    """The .npz files of ``folder`` in name order, each loaded when its sample is run (a lazy list)."""
    paths = sorted(Path(folder).glob("*.npz"))
    if not paths:
        raise DiffcoreError(f"{folder}: no .npz file in this folder")
    return [_Lazy(p) for p in paths]


class _Lazy:
    """One .npz file, read when the comparison reaches it (memory holds one sample at a time)."""

    def __init__(self, path):
        self.path = path

    def load(self) -> dict:
        return read_npz(str(self.path))

    def __repr__(self) -> str:
        return os.fspath(self.path)


def split_npz(path, axis: int = 0) -> list:
    """The arrays of one .npz split into samples of one along ``axis`` (kept, of size 1)."""
    arrays = read_npz(str(path))
    sizes = {name: _axis_size(name, a, axis, path) for name, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise DiffcoreError(f"{path}: the inputs have different sizes along axis {axis}: {sizes}; --sample-axis "
                            "splits every input into the same number of samples")
    count = next(iter(sizes.values()))
    return [{name: np.take(a, [k], axis=axis) for name, a in arrays.items()} for k in range(count)]


def _axis_size(name, array, axis, path) -> int:
    if array.ndim == 0 or not -array.ndim <= axis < array.ndim:
        raise DiffcoreError(f"{path}: input {name!r} of shape {tuple(array.shape)} has no axis {axis} to split "
                            "samples along")
    return array.shape[axis]


def materialize(sample):
    """A sample as a dict of arrays (a lazily read file is read now)."""
    if isinstance(sample, _Lazy):
        return sample.load()
    if isinstance(sample, dict):
        return sample
    if hasattr(sample, "keys") and hasattr(sample, "__getitem__"):
        return {k: sample[k] for k in sample.keys()}  # noqa: SIM118 - a Mapping-like, not a dict
    raise DiffcoreError(f"a dataset sample must be a dict of input name -> array, got {type(sample).__name__}")
