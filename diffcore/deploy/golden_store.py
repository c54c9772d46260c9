"""How a golden folder is written and sealed: replaced as a whole, never left half old and half new.

A record writes the new golden into a sibling temporary folder ``.<name>.diffcore-new-<pid>-<random>``;
only when every file is written and fsync'd is it swapped in (one ``renameat2(RENAME_EXCHANGE)`` where the
kernel offers it, else: old folder renamed aside, new one renamed in), and the old one removed. So an
interrupted record (SIGKILL, a full disk) leaves the previous golden intact, and the temporary folders of a
killed run (their pid no longer alive) are removed, or an old one put back, by the next record or load.

The seal: ``seal`` is the sha256 of golden.json's canonical content. It detects corruption (a truncated or
edited file), not forgery: anyone who edits the file can recompute it. Given a key (``key=`` or the
environment variable ``DIFFCORE_GOLDEN_KEY``; the CLI's ``--key-file``), ``hmac`` holds an HMAC-SHA256 of
the same content, which only a holder of the key can produce; ``golden check`` with the key verifies it.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import hmac
import json
import os
import shutil
import tempfile

from ..errors import DiffcoreError

__all__ = ["KEY_ENV", "canonical", "hmac_of", "install_folder", "new_folder", "prepare_folder", "recover",
           "resolve_key", "seal_of"]

KEY_ENV = "DIFFCORE_GOLDEN_KEY"
_TAG = ".diffcore-"


# ------------------------------------------------------------------------------------------- sealing

def canonical(data) -> str:
    """The canonical JSON the seal and the keyed seal are computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def _content(meta: dict) -> bytes:
    return canonical({k: v for k, v in meta.items() if k not in ("seal", "hmac")}).encode()


def seal_of(meta: dict) -> str:
    """sha256 of the manifest without its seals: detects corruption, not forgery."""
    return hashlib.sha256(_content(meta)).hexdigest()


def hmac_of(meta: dict, key: bytes) -> str:
    """HMAC-SHA256 of the manifest without its seals under ``key``: only a key holder can produce it."""
    return hmac.new(key, _content(meta), hashlib.sha256).hexdigest()


def resolve_key(key) -> bytes | None:
    """The golden key: ``key`` (bytes or str) if given, else ``$DIFFCORE_GOLDEN_KEY``, else None.

    Raises:
        DiffcoreError: an empty key.
    """
    if key is None:
        key = os.environ.get(KEY_ENV) or None
        if key is None:
            return None
    key = key.encode() if isinstance(key, str) else bytes(key)
    if not key:
        raise DiffcoreError(f"the golden key is empty: give a non-empty key (--key-file or {KEY_ENV})")
    return key


def read_key_file(path: str) -> bytes:
    """A key from a file (a trailing newline is not part of it).

    Raises:
        DiffcoreError: the file cannot be read or is empty.
    """
    try:
        with open(path, "rb") as handle:
            key = handle.read(1 << 16).rstrip(b"\r\n")
    except OSError as exc:
        raise DiffcoreError(f"cannot read --key-file {path}: {exc.strerror or exc}") from None
    if not key:
        raise DiffcoreError(f"--key-file {path} is empty")
    return key


# ------------------------------------------------------------------------------------------- folders

def _siblings(directory: str, kind: str) -> list:
    parent, name = os.path.split(directory)
    prefix = f".{name}{_TAG}{kind}-"
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    return [os.path.join(parent, e) for e in entries if e.startswith(prefix)]


def _owner_alive(path: str, kind: str) -> bool:
    rest = os.path.basename(path).split(f"{_TAG}{kind}-", 1)[-1]
    try:
        pid = int(rest.split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, another user's
    return True


def recover(directory: str) -> None:
    """Finish or undo what a killed record left beside ``directory``: put a golden that was renamed aside
    back when the folder is missing, and remove temporary folders of dead processes."""
    for old in _siblings(directory, "old"):
        if _owner_alive(old, "old"):
            continue
        if not os.path.lexists(directory):
            try:
                os.rename(old, directory)
                continue
            except OSError:
                pass
        shutil.rmtree(old, ignore_errors=True)
    for new in _siblings(directory, "new"):
        if not _owner_alive(new, "new"):
            shutil.rmtree(new, ignore_errors=True)


def prepare_folder(directory, force: bool, known_files, manifest: str) -> str:
    """Check that a golden can be written at ``directory``, before anything runs; return its absolute path.

    Raises:
        DiffcoreError: it is not a folder (a file, a link, a device), holds a golden and ``force`` is
            False, holds files that are not a golden's (replacing the folder would delete them), or its
            parent is missing or not writable.
    """
    from ..files import probe_writable

    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    if not os.path.isdir(parent):
        raise DiffcoreError(f"cannot create golden directory {directory}: {parent} does not exist")
    _check_name(directory)
    recover(directory)
    if os.path.islink(directory) or (os.path.lexists(directory) and not os.path.isdir(directory)):
        raise DiffcoreError(f"golden path {directory} is not a directory (a file or a link); give a directory")
    if os.path.isdir(directory):
        _check_contents(directory, force, set(known_files) | {manifest}, manifest)
    probe_writable(parent, f"golden directory {directory}")
    return directory


def _check_name(directory: str) -> None:
    from ..files import _name_max

    name = os.path.basename(directory)
    room = _name_max(os.path.dirname(directory)) - len(f".{_TAG}new-{os.getpid()}-12345678")
    if len(os.fsencode(name)) > room:
        raise DiffcoreError(f"golden directory name {name[:40]}... is {len(os.fsencode(name))} bytes: too long for "
                            f"this filesystem once diffcore stages it beside the target (at most {room})")


def _check_contents(directory: str, force: bool, allowed: set, manifest: str) -> None:
    try:
        entries = set(os.listdir(directory))
    except OSError as exc:
        raise DiffcoreError(f"cannot read golden directory {directory}: {exc.strerror or exc}") from None
    if manifest in entries and not force:
        raise DiffcoreError(f"golden {directory} already exists ({manifest}); pass --force (force=True) to "
                            "replace it")
    foreign = sorted(entries - allowed)
    if foreign:
        raise DiffcoreError(f"golden directory {directory} holds other files ({', '.join(foreign[:5])}"
                            f"{', ...' if len(foreign) > 5 else ''}); a golden is replaced as a whole folder: "
                            "move them, or choose an empty or new directory")


def new_folder(directory: str) -> str:
    """A fresh temporary sibling folder of ``directory`` for the new golden."""
    parent, name = os.path.split(directory)
    try:
        staged = tempfile.mkdtemp(dir=parent, prefix=f".{name}{_TAG}new-{os.getpid()}-")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staged, 0o777 & ~umask)  # mkdtemp makes 0700; a golden folder gets what mkdir would give
        return staged
    except OSError as exc:
        raise DiffcoreError(f"cannot create golden directory beside {directory}: {exc.strerror or exc}") from None


def install_folder(staged: str, directory: str) -> None:
    """Put the complete folder ``staged`` at ``directory``; the previous one (if any) is removed only after.

    Raises:
        DiffcoreError: the rename failed (``staged`` is removed, the previous golden is untouched).
    """
    from ..files import fsync_directory

    parent = os.path.dirname(directory)
    fsync_directory(staged)
    try:
        if os.path.isdir(directory):
            old = _swap(staged, directory)
        else:
            os.rename(staged, directory)
            old = None
    except OSError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise DiffcoreError(f"cannot put the new golden in place at {directory}: {exc.strerror or exc}") from None
    fsync_directory(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _swap(staged: str, directory: str) -> str:
    """Exchange ``staged`` and ``directory``; return where the old golden now is."""
    if _exchange(staged, directory):
        return staged  # now holds the old golden; killed before it is removed, recover() removes it
    old = tempfile.mkdtemp(dir=os.path.dirname(directory),
                           prefix=f".{os.path.basename(directory)}{_TAG}old-{os.getpid()}-")
    os.rmdir(old)
    os.rename(directory, old)      # killed here: recover() renames it back
    os.rename(staged, directory)
    return old


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Atomically exchange two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err))
