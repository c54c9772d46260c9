"""Files the CLI reads and writes: input archives and reports (the library's diffcore/files.py policies).

Policies (docs/ARCHITECTURE.md#policies): inputs are read without pickle; outputs are written to a temporary file in the
target's directory and renamed into place, an existing file is never overwritten without ``--force``, and
only regular files are ever replaced. Every output path is checked before any model runs: writable
folder, a name the filesystem accepts, no two outputs on one file, no output on an input.
"""
from __future__ import annotations

import os

from ..files import check_distinct, check_target, read_npz, write_npz, write_text
from ..spec import spec_path

__all__ = ["check_outputs", "check_target", "input_paths", "load_inputs", "save_npz_atomic",
           "write_text_atomic"]


def load_inputs(path: str):
    """Read an ``.npz`` archive of named inputs (no pickle) into ``{name: array}``, normalized (native byte
    order, numeric dtypes, size limits: diffcore.inputs)."""
    from ..inputs import normalize_inputs

    return normalize_inputs(read_npz(path, "inputs"), f"inputs file {path}")


def input_paths(**named) -> dict:
    """{description: file path} of the existing files a command reads: model specs (upper-case names: the
    file the spec names), --inputs, --texts, artifacts (a list)."""
    out = {}
    for what, value in named.items():
        items = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
        for item in items:
            path = spec_path(item) if what.isupper() else item
            if path is not None and os.path.exists(path):
                out[f"{what} {item}" if isinstance(value, (list, tuple)) else what] = path
    return out


def check_outputs(outputs: dict, inputs: dict, force: bool) -> None:
    """``check_target`` for every output, then ``check_distinct`` (outputs vs each other and the inputs).

    Raises:
        DiffcoreError: an output cannot be written, two outputs are one file, or an output is an input.
    """
    check_distinct(outputs, inputs)
    for what, path in outputs.items():
        check_target(path, force, what)


def write_text_atomic(path: str, text: str, *, force: bool, what: str = "output") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, never replacing a file without ``force``."""
    write_text(path, text, force=force, what=what)


def save_npz_atomic(path: str, arrays: dict, *, force: bool = False, what: str = "inputs") -> None:
    """``numpy.savez`` of ``arrays`` to ``path`` atomically."""
    write_npz(path, arrays, force=force, what=what)
