"""Files diffcore reads and writes: inputs, traces, golden sets, reports, benchmark results.

The file policies of docs/ARCHITECTURE.md, written once: archives are read without pickle; everything is written to a
temporary file next to its target and then put in place, so a reader never sees half a file; an existing
file is never replaced without ``force`` (``os.link`` fails atomically when the name is taken).
"""
from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import zipfile
import zlib

import numpy as np

from .errors import DiffcoreError

# What a broken or hostile .npz raises inside NumPy: a bad zip, a truncated member, a pickled object array.
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _what_is(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _existing(path: str):
    """``os.lstat`` of ``path`` (links not followed), or None when nothing is there."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ENAMETOOLONG, ENOTDIR, EACCES, ELOOP: the name cannot be used
        raise DiffcoreError(f"cannot write to {path}: {exc.strerror or exc}") from None


def _check_existing(path: str, force: bool, what: str) -> None:
    info = _existing(path)
    if info is None:
        return
    if not stat.S_ISREG(info.st_mode):
        # Replacing a device node, FIFO, symlink or directory is never what an output path means, even
        # with --force: as root, --json /dev/null --force would otherwise break the system.
        raise DiffcoreError(f"{what} path {path} is {_what_is(info.st_mode)}; diffcore writes regular files "
                            "only (even with --force): give another name")
    if not force:
        raise DiffcoreError(f"{what} file {path} already exists; pass --force (force=True) to overwrite it")


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _check_directory(path: str, what: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DiffcoreError(f"cannot write {what} file {path}: directory {parent} does not exist")
    name = os.path.basename(path)
    if len(os.fsencode(name)) > _name_max(parent):
        raise DiffcoreError(f"cannot write {what} file {path}: the file name is {len(os.fsencode(name))} "
                            f"bytes, longer than this filesystem allows ({_name_max(parent)})")
    probe_writable(parent, f"{what} file {path}")


def probe_writable(directory: str, what: str) -> None:
    """Refuse a directory that cannot be written: ``access(2)`` answers for permissions as the kernel
    applies them (root included) and for read-only mounts (EROFS). No file is created, so a process
    killed here leaves nothing behind; a full disk is still found, and reported, by the write itself.

    Raises:
        DiffcoreError: the directory cannot be written.
    """
    if not os.access(directory, os.W_OK | os.X_OK):
        reason = "read-only filesystem" if _read_only_mount(directory) else "permission denied"
        raise DiffcoreError(f"cannot write {what}: directory {directory} is not writable ({reason})")


def _read_only_mount(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_target(path, force: bool, what: str = "output") -> None:
    """Refuse an output path before any work is done: an existing file without ``force``; anything but a
    regular file (directory, symlink, device, FIFO, socket) even with ``force``; a missing or unwritable
    parent; a name too long. ``None`` (an output that was not asked for) passes.

    Raises:
        DiffcoreError: the path cannot be written as asked (one line saying why).
    """
    if path is None:
        return
    path = os.fspath(path)
    if not path:
        raise DiffcoreError(f"{what} path is empty; give a file name")
    _check_existing(path, force, what)
    _check_directory(path, what)


def same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` name one file (after resolving links, or the same inode)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct(outputs: dict, inputs: dict | None = None) -> None:
    """Refuse two outputs naming one file, and an output naming an input (``--json`` over the inputs
    archive with ``--force`` would destroy it).

    Args:
        outputs: {flag or description: path or None}.
        inputs: {flag or description: path or None} read by the same command.

    Raises:
        DiffcoreError: two outputs, or an output and an input, are one file.
    """
    given = [(k, os.fspath(v)) for k, v in outputs.items() if v is not None]
    for i, (flag, path) in enumerate(given):
        for other, other_path in given[:i]:
            if same_file(path, other_path):
                raise DiffcoreError(f"{other} and {flag} name the same file {path}: give each output its "
                                    "own path")
        for source, source_path in (inputs or {}).items():
            if source_path is not None and same_file(path, source_path):
                raise DiffcoreError(f"{flag} {path} is the {source} file: writing it would destroy an input; "
                                    "give another output path")


TEMP_PREFIX = ".diffcore-"


def write_atomic(path, write, *, force: bool = False, what: str = "output", binary: bool = False) -> str:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it, then put it in place.

    Raises:
        DiffcoreError: ``path`` exists and ``force`` is False, is not a regular file, or cannot be written.
    """
    path = os.fspath(path)
    check_target(path, force, what)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        # A short temporary name: a target name near NAME_MAX must not fail on its temporary's name.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=".tmp")
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _new_file_mode())
        _check_existing(path, force, what)  # again: the path may have become a link or device meanwhile
        _put_in_place(tmp, path, force, what)
        fsync_directory(directory)
    except OSError as exc:
        raise DiffcoreError(f"cannot write {what} file {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            _remove_quietly(tmp)
    return path


def fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (best effort: some filesystems refuse O_RDONLY dir fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        if os.path.lexists(path):
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


VALIDATE_WRITES_ENV = "DIFFCORE_VALIDATE_WRITES"


class SchemaViolation(AssertionError):
    """A document diffcore was about to write does not follow its published schema (a bug in diffcore,
    raised only where ``DIFFCORE_VALIDATE_WRITES=1``: the test suite sets it)."""


def _check_written_document(text: str, what: str) -> None:
    """Under ``DIFFCORE_VALIDATE_WRITES=1``: a JSON document carrying a known ``schema_version`` must
    follow its schema (diffcore/schemas) before it is written; the test suite checks every document this
    way, whichever code path writes it."""
    if not validating_writes() or not text.lstrip().startswith("{"):
        return
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SchemaViolation(f"{what}: diffcore wrote invalid JSON: {exc}") from None
    check_written(document, what)


def validating_writes() -> bool:
    """True under ``DIFFCORE_VALIDATE_WRITES=1`` (the test suite): documents are checked before writing."""
    return os.environ.get(VALIDATE_WRITES_ENV, "") not in ("", "0")


def check_written(document, what: str) -> None:
    """Under ``DIFFCORE_VALIDATE_WRITES=1``: ``document`` (about to be written, e.g. a trace's metadata)
    must follow the schema its ``schema_version``/``schema`` names; ``SchemaViolation`` otherwise."""
    if not validating_writes():
        return
    from . import schemas

    name = schemas.schema_for(document)
    if name is None:
        return
    try:
        schemas.validate(document, name, what)
    except DiffcoreError as exc:
        raise SchemaViolation(str(exc)) from None
    schemas.VALIDATED_WRITES[name] = schemas.VALIDATED_WRITES.get(name, 0) + 1


def write_text(path, text: str, *, force: bool = False, what: str = "output") -> str:
    """Write UTF-8 ``text`` atomically (see ``write_atomic``)."""
    _check_written_document(text, what)
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


MAX_INPUT_BYTES_ENV = "DIFFCORE_MAX_INPUT_BYTES"
DEFAULT_MAX_INPUT_BYTES = 4 << 30  # 4 GiB of decompressed arrays per archive


def max_input_bytes() -> int:
    """The most decompressed bytes one .npz archive may hold: ``DIFFCORE_MAX_INPUT_BYTES`` (bytes, an
    integer; suffixes K/M/G/T accepted) or 4 GiB. Checked from the zip and .npy headers before anything is
    allocated, so a zip bomb is refused, not unpacked."""
    text = os.environ.get(MAX_INPUT_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_INPUT_BYTES
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:].upper(), 1)
    try:
        value = int(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        value = -1
    if value <= 0:
        raise DiffcoreError(f"{MAX_INPUT_BYTES_ENV}={text!r} is not a positive number of bytes (e.g. 8G)")
    return value


def read_npz(path, what: str = "inputs") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, read without pickle, after checking every member's header:
    each member must be an .npy of a numeric or bool dtype, whose header agrees with its size, and all of
    them together within ``max_input_bytes()``.

    Raises:
        DiffcoreError: the file is missing, not an .npz (a .npy, or no zip signature), damaged, holds
            object/string arrays or a member that is not .npy, is too large, or is empty.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DiffcoreError(f"{what} file not found: {path}")
    _check_signature(path, what)
    try:
        _check_members(path, what)
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}  # members decompress here: errors show here
    except READ_ERRORS as exc:
        raise DiffcoreError(f"cannot read {what} file {path} (damaged or not written by NumPy): "
                            f"{type(exc).__name__}: {exc}") from None
    except MemoryError:
        raise DiffcoreError(f"{what} file {path} does not fit in memory") from None
    if not arrays:
        raise DiffcoreError(f"{what} file {path} holds no arrays")
    return arrays


_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float


def _check_members(path: str, what: str) -> None:
    limit, total = max_input_bytes(), 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            total += _check_member(archive, info, path, what)
            if total > limit:
                raise DiffcoreError(
                    f"{what} file {path} holds more than {limit} bytes of arrays once decompressed (member "
                    f"{info.filename!r}); raise the limit with {MAX_INPUT_BYTES_ENV}=BYTES if this is meant")


def _check_member(archive, info, path: str, what: str) -> int:
    """The bytes member ``info`` holds once decompressed, after checking its .npy header."""
    name = info.filename
    if not name.endswith(".npy"):
        raise DiffcoreError(f"{what} file {path}: member {name!r} is not a NumPy array (.npy); an .npz holds "
                            "only arrays written by numpy.savez")
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):  # 3.0 (utf-8 names) is never written for numeric arrays
                raise ValueError(f".npy format version {version} is not read by diffcore")
            shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                               np.lib.format.read_array_header_2_0)(member, max_header_size=1 << 16)
        except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
            raise DiffcoreError(f"{what} file {path}: member {name!r} is not a valid .npy array "
                                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
        header = member.tell()
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS + "c" or dtype.fields is not None:
        raise DiffcoreError(f"{what} file {path}: array {name[:-4]!r} has dtype {dtype} ({_kind_name(dtype)}); "
                            "diffcore reads numeric and bool arrays only")
    count = 1
    for dim in shape:
        count *= int(dim)
    expected = count * dtype.itemsize
    if header + expected != info.file_size:
        raise DiffcoreError(f"{what} file {path}: array {name[:-4]!r} claims shape {tuple(shape)} of {dtype} "
                            f"({expected} bytes) but its member holds {info.file_size - header} bytes: damaged "
                            "or forged")
    return info.file_size


def _kind_name(dtype: np.dtype) -> str:
    if dtype.hasobject:
        return "Python objects"
    return {"U": "text", "S": "bytes", "V": "raw or structured records", "M": "dates", "m": "time spans"}.get(
        dtype.kind, "not numeric")


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


MAX_JSON_BYTES = 256 << 20  # no document diffcore writes comes near this


def read_json(path, what: str = "JSON", schema: str | None = None) -> object:
    """Parse a UTF-8 JSON file, and check it against ``diffcore/schemas/<schema>.json`` when given.

    Raises:
        DiffcoreError: the file is missing, unreadable, too large, nested too deeply, not valid JSON (e.g.
            truncated), or not valid under its schema.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DiffcoreError(f"{what} file not found: {path}")
    try:
        if os.path.getsize(path) > MAX_JSON_BYTES:
            raise DiffcoreError(f"{what} file {path} is larger than {MAX_JSON_BYTES >> 20} MiB: not a document "
                                "diffcore writes")
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffcoreError(f"cannot read {what} file {path}: {exc}") from None
    data = parse_json(text, f"{what} file {path}")
    if schema is not None:
        from .schemas import validate

        validate(data, schema, f"{what} file {path}")
    return data


def parse_json(text: str, what: str) -> object:
    """``json.loads`` whose failures (invalid, or nested past Python's recursion limit) are DiffcoreError,
    and whose result is checked to be at most ``schemas.MAX_DEPTH`` levels deep."""
    from .schemas import check_depth

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DiffcoreError(f"{what} is not valid JSON (truncated or edited?): {exc}") from None
    except RecursionError:
        raise DiffcoreError(f"{what} is nested too deeply to be a document diffcore writes") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise DiffcoreError(f"{what} is not a document diffcore reads: {exc}") from None
    check_depth(data, what)
    return data
