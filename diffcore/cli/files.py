"""Files the CLI reads and writes: model specs that name files, input archives, reports.

Policies (DESIGN.md): inputs are read without pickle; outputs are written to a temporary file in the
target's directory and renamed into place, and an existing file is never overwritten without ``--force``.
"""
from __future__ import annotations

import os

from ..errors import DiffcoreError
from ..files import check_target, read_npz, write_npz, write_text

__all__ = ["check_spec", "check_target", "load_inputs", "save_npz_atomic", "spec_path", "write_text_atomic"]


def spec_path(spec: str) -> str | None:
    """The file a model spec names, or None for ``package.module:factory``.

    ``model.onnx`` and ``trace.npz`` name themselves; ``file.py:factory`` names ``file.py``. A colon followed
    by a Python identifier after something other than a ``.py`` file is an importable module path.
    """
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py"):
        return head
    if sep and tail.isidentifier():
        return None
    return spec


def check_spec(spec: str, role: str) -> None:
    """Raise DiffcoreError when ``spec`` names a file that does not exist (before any model is loaded)."""
    path = spec_path(spec)
    if path is not None and not os.path.exists(path):
        raise DiffcoreError(f"{role} model file not found: {path}")


def load_inputs(path: str):
    """Read an ``.npz`` archive of named inputs (no pickle) into ``{name: array}``."""
    return read_npz(path, "inputs")


def write_text_atomic(path: str, text: str, *, force: bool, what: str = "output") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, never replacing a file without ``force``."""
    write_text(path, text, force=force, what=what)


def save_npz_atomic(path: str, arrays: dict, *, force: bool = False, what: str = "inputs") -> None:
    """``numpy.savez`` of ``arrays`` to ``path`` atomically."""
    write_npz(path, arrays, force=force, what=what)
