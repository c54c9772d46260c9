"""Files diffcore reads and writes: inputs, traces, golden sets, reports, benchmark results.

The policies of DESIGN.md, written once: archives are read without pickle; everything is written to a
temporary file next to its target and then put in place, so a reader never sees half a file; an existing
file is never replaced without ``force`` (``os.link`` fails atomically when the name is taken).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

from .errors import DiffcoreError

# What a broken or hostile .npz raises inside NumPy: a bad zip, a truncated member, a pickled object array.
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def check_target(path, force: bool, what: str = "output") -> None:
    """Refuse an output path early: an existing file without ``force``, a directory, a missing parent.
    ``None`` (an output that was not asked for) passes."""
    if path is None:
        return
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DiffcoreError(f"{what} path {path} is a directory; give a file name")
    if os.path.exists(path) and not force:
        raise DiffcoreError(f"{what} file {path} already exists; pass --force (force=True) to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DiffcoreError(f"cannot write {what} file {path}: directory {parent} does not exist")


def write_atomic(path, write, *, force: bool = False, what: str = "output", binary: bool = False) -> str:
    """Call ``write(handle)`` on a temporary file next to ``path``, then put it in place.

    Raises:
        DiffcoreError: ``path`` exists and ``force`` is False, or it cannot be written.
    """
    path = os.fspath(path)
    check_target(path, force, what)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _new_file_mode())
        _put_in_place(tmp, path, force, what)
    except OSError as exc:
        raise DiffcoreError(f"cannot write {what} file {path}: {exc}") from None
    finally:
        _remove_quietly(tmp)
    return path


def _put_in_place(tmp: str, path: str, force: bool, what: str) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the name appeared since check_target: nothing is overwritten
    except FileExistsError:
        raise DiffcoreError(f"{what} file {path} already exists; pass --force (force=True) to overwrite it") \
            from None
    except OSError:  # a filesystem without hard links: a checked rename
        if os.path.exists(path):
            raise DiffcoreError(f"{what} file {path} already exists; pass --force to overwrite it") from None
        os.replace(tmp, path)


def _new_file_mode() -> int:
    # mkstemp creates 0600 files; a result file gets what any new file would (0666 & ~umask).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_text(path, text: str, *, force: bool = False, what: str = "output") -> str:
    """Write UTF-8 ``text`` atomically (see ``write_atomic``)."""
    return write_atomic(path, lambda handle: handle.write(text), force=force, what=what)


_NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def encode_nonfinite(value):
    """``value`` with non-finite floats spelled "Infinity", "-Infinity", "NaN": strict JSON for every file
    diffcore writes (reports, golden checks, checklists, benchmark results)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: encode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_nonfinite(v) for v in value]
    return value


def decode_nonfinite(value):
    """The inverse of ``encode_nonfinite``."""
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, dict):
        return {k: decode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_nonfinite(v) for v in value]
    return value


def to_json(data, indent: int | None = 1) -> str:
    """Strict JSON of ``data`` (non-finite floats encoded, anything else unknown as its str())."""
    return json.dumps(encode_nonfinite(data), indent=indent, allow_nan=False, default=str)


def write_json(path, data, *, force: bool = False, what: str = "output") -> str:
    """Write ``data`` as indented strict JSON atomically."""
    return write_text(path, to_json(data), force=force, what=what)


def write_npz(path, arrays: dict, *, force: bool = False, what: str = "archive") -> str:
    """``numpy.savez`` of ``arrays`` atomically (through a file object, so NumPy adds no suffix)."""
    return write_atomic(path, lambda handle: np.savez(handle, **arrays), force=force, what=what, binary=True)


def read_npz(path, what: str = "inputs") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, read without pickle.

    Raises:
        DiffcoreError: the file is missing, not an .npz (a .npy, or no zip signature), damaged, holds
            object arrays, or is empty.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DiffcoreError(f"{what} file not found: {path}")
    _check_signature(path, what)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}  # members decompress here: errors show here
    except READ_ERRORS as exc:
        raise DiffcoreError(f"cannot read {what} file {path} (damaged or not written by NumPy): "
                            f"{type(exc).__name__}: {exc}") from None
    if not arrays:
        raise DiffcoreError(f"{what} file {path} holds no arrays")
    return arrays


def _check_signature(path: str, what: str) -> None:
    # np.load unpickles anything that is neither .npy nor zip, then blames pickle: say what the file is.
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise DiffcoreError(f"cannot read {what} file {path}: {exc}") from None
    if magic.startswith(b"\x93NUMPY"):
        raise DiffcoreError(f"{what} file {path} holds a single array (.npy), not an .npz archive of named "
                            "arrays (write one with numpy.savez(path, name=array, ...))")
    if not magic.startswith(b"PK"):
        raise DiffcoreError(f"{what} file {path} is not an .npz archive (no zip signature)")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in chunks (model files and artifacts can be large).

    Raises:
        DiffcoreError: the file cannot be read.
    """
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    except OSError as exc:
        raise DiffcoreError(f"cannot read {path}: {exc}") from None
    return digest.hexdigest()


def read_json(path, what: str = "JSON") -> object:
    """Parse a UTF-8 JSON file.

    Raises:
        DiffcoreError: the file is missing, unreadable, or not valid JSON (e.g. truncated).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DiffcoreError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffcoreError(f"cannot read {what} file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DiffcoreError(f"{what} file {path} is not valid JSON (truncated or edited?): {exc}") from None
