"""Files the CLI reads and writes: input archives and reports (the library's diffcore/files.py policies).

Policies (DESIGN.md): inputs are read without pickle; outputs are written to a temporary file in the
target's directory and renamed into place, and an existing file is never overwritten without ``--force``.
"""
from __future__ import annotations

from ..files import check_target, read_npz, write_npz, write_text

__all__ = ["check_target", "load_inputs", "save_npz_atomic", "write_text_atomic"]


def load_inputs(path: str):
    """Read an ``.npz`` archive of named inputs (no pickle) into ``{name: array}``."""
    return read_npz(path, "inputs")


def write_text_atomic(path: str, text: str, *, force: bool, what: str = "output") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, never replacing a file without ``force``."""
    write_text(path, text, force=force, what=what)


def save_npz_atomic(path: str, arrays: dict, *, force: bool = False, what: str = "inputs") -> None:
    """``numpy.savez`` of ``arrays`` to ``path`` atomically."""
    write_npz(path, arrays, force=force, what=what)
