"""diffcore's own disk cache for its Numba kernels: in the user's cache folder, checked, safe under concurrency.

Where it lives: ``$NUMBA_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/diffcore/numba``, else
``~/.cache/diffcore/numba``; one subfolder per installed copy of diffcore (``cache_dir()``). Never inside the
installed package, which may be read-only or shared.

Numba's own cache has three faults this one closes:

- *Freshness.* Numba checks a cached function against the file that defines it only. Our drivers inline
  code from other files (the shared per-element source, the state layout), so an edit there, or an upgrade
  of diffcore, would load stale machine code. Every diffcore kernel here carries one stamp: a digest of all
  those sources and the Numba and llvmlite versions.
- *Corruption.* Numba unpickles whatever the files hold: a truncated, empty or garbage file raises on every
  later run. Here each file carries a magic line and the SHA-256 of its payload; a data file also names the
  key it was written for. A file that fails any check is discarded and the kernel recompiled, which
  repairs the cache.
- *Concurrency.* Numba updates a function's index by read-modify-write and numbers its data files by the
  first free slot, so processes compiling at once overwrite each other's entries (or point two keys at
  one file). Here each data file gets a fresh random name and is written (temp file + ``os.replace``)
  before the index that names it, both under an exclusive ``fcntl`` lock that every index update holds
  (a writer prunes the data files the index does not name, so none may exist unindexed outside it).

Where the cache folder cannot be written, or Numba's internals are not what we expect, kernels compile
without a disk cache (correct, only slower to start).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import time
import uuid
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
SOURCES = ("backends/_numba_source.py", "backends/_numba_build.py", "backends/_numba_cpu_kernels.py",
           "backends/_numba_cache.py", "stats/layout.py", "stats/params.py")
MAGIC_INDEX = b"diffcore-numba-index-1\n"
MAGIC_DATA = b"diffcore-numba-data-1\n"
_DIGEST_SIZE = 32
COMPILING_MESSAGE = "diffcore: compiling kernels (first run only)..."


def cache_root() -> Path:
    """The folder every diffcore cache lives under (see the module docstring)."""
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "diffcore" / "numba"


def cache_dir() -> Path:
    """This copy of diffcore's cache folder: the root plus a digest of the package's path, so that two
    installations (or checkouts) never share index files."""
    tag = hashlib.sha1(str(_PACKAGE).encode()).hexdigest()[:16]
    return cache_root() / f"diffcore-{tag}"


def _digest() -> str:
    import llvmlite
    import numba

    h = hashlib.sha256(f"{numba.__version__} {llvmlite.__version__} {sys.version}".encode())
    for name in SOURCES:
        h.update((_PACKAGE / name).read_bytes())
    return h.hexdigest()


# ---- the file format: magic, SHA-256 of the payload, payload ---------------------------------------------
def seal(magic: bytes, payload: bytes) -> bytes:
    return magic + hashlib.sha256(payload).digest() + payload


def unseal(magic: bytes, blob: bytes) -> bytes | None:
    """The payload of a sealed file, or None when the file is not one intact (truncated, empty, garbage)."""
    head = len(magic) + _DIGEST_SIZE
    if len(blob) < head or not blob.startswith(magic):
        return None
    payload = blob[head:]
    return payload if hashlib.sha256(payload).digest() == blob[len(magic):head] else None


def write_atomic(path: str, blob: bytes) -> None:
    """Write ``blob`` to ``path`` whole or not at all: a temporary file in the same folder, then os.replace."""
    tmp = f"{path}.tmp.{uuid.uuid4().hex[:16]}"
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: str):
    """An exclusive lock on ``path`` (created if missing) for the block; no lock where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: index updates race, but every file stays whole and checked
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ---- compile announcements -------------------------------------------------------------------------------
_announce = False
_progress_announce = False
_announced = False


def set_announce(enabled: bool) -> bool:
    """Print ``COMPILING_MESSAGE`` on stderr when a kernel is compiled (once a process); returns the old
    setting. The CLI turns it on; in Python it follows ``progress=``."""
    global _announce
    old, _announce = _announce, bool(enabled)
    return old


def follow_progress(enabled: bool) -> None:
    """The Python API's setting (``progress=`` shown or not, the latest call's); ``set_announce`` (the
    CLI's) holds whatever this says."""
    global _progress_announce
    _progress_announce = bool(enabled)


def _note_compile() -> None:
    global _announced
    if (_announce or _progress_announce) and not _announced:
        _announced = True
        with contextlib.suppress(Exception):  # a closed or replaced stderr never breaks a comparison
            from ..progress import note  # through tqdm.write when a bar is drawn: the bar stays whole

            note(COMPILING_MESSAGE)


# ---- Numba glue --------------------------------------------------------------------------------------------
def _ours(py_file: str) -> bool:
    return Path(py_file).resolve().is_relative_to(_PACKAGE)


def _classes():
    """The cache classes, built on first use (this module must not import Numba by itself)."""
    from numba.core import caching
    from numba.core.serialize import dumps

    stamp = _digest()

    class Locator(caching._CacheLocator):
        """diffcore's files only, in ``cache_dir()``, stamped with the digest of every kernel source."""

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno

        def get_cache_path(self):
            return str(cache_dir())

        def get_source_stamp(self):
            return stamp

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _ours(py_file):
                return None
            locator = cls(py_func, py_file)
            try:
                locator.ensure_cache_path()
            except OSError:
                return None  # an unwritable cache folder: compile without a disk cache
            return locator

    class CheckedCacheFile(caching.IndexDataCacheFile):
        """Index and data files sealed with a digest, written atomically, the index updated under a lock."""

        def __init__(self, cache_path, filename_base, source_stamp):
            super().__init__(cache_path, filename_base, source_stamp)
            self._base = filename_base
            self._lock_path = os.path.join(cache_path, f"{filename_base}.lock")

        def _load_index(self):
            """The index as a dict, {} when missing, stale or damaged."""
            try:
                with open(self._index_path, "rb") as f:
                    blob = f.read()
            except OSError:
                return {}
            payload = unseal(MAGIC_INDEX, blob)
            try:
                version, source_stamp, overloads = pickle.loads(payload)
            except Exception:  # None (damaged) or a payload of another shape
                return {}
            if version != self._version or source_stamp != self._source_stamp or not isinstance(overloads,
                                                                                                 dict):
                return {}
            return overloads

        def _save_index(self, overloads):
            payload = dumps((self._version, self._source_stamp, overloads))
            write_atomic(self._index_path, seal(MAGIC_INDEX, payload))

        def flush(self):
            with locked(self._lock_path):
                self._save_index({})
                self._prune({})

        def load(self, key):
            overloads = self._load_index()
            name = overloads.get(key)
            if name is None:
                return None
            try:
                with open(self._data_path(name), "rb") as f:
                    blob = f.read()
            except OSError:  # pruned by another process meanwhile: a miss
                return None
            try:
                stored_key, data = pickle.loads(unseal(MAGIC_DATA, blob))
                if stored_key != key:
                    raise ValueError("data file of another key")
            except Exception:
                self.discard(key, name)
                return None
            return data

        def save(self, key, data):
            name = f"{self._base}.{uuid.uuid4().hex[:16]}.nbc"
            blob = seal(MAGIC_DATA, dumps((key, data)))
            # The data file is written under the lock too: another writer's prune deletes every data file
            # the index does not name, so one written before the lock could vanish before it is indexed.
            with locked(self._lock_path):  # read-modify-write of the index: one process at a time
                write_atomic(self._data_path(name), blob)
                overloads = self._load_index()
                overloads[key] = name
                self._save_index(overloads)
                self._prune(overloads)

        def discard(self, key, name):
            """Forget a damaged entry (if the index still names that file) and delete its file."""
            with locked(self._lock_path):
                overloads = self._load_index()
                if overloads.get(key) == name:
                    del overloads[key]
                    self._save_index(overloads)
                self._prune(overloads)

        def _prune(self, overloads):
            """Delete this function's data files the index does not name (stale, replaced or orphaned).
            Called under the lock: every writer's data file is named by the index before it lets go."""
            keep = set(overloads.values())
            prefix = f"{self._base}."
            with contextlib.suppress(OSError):
                for entry in os.scandir(self._cache_path):
                    name = entry.name
                    if name.startswith(prefix) and name.endswith(".nbc") and name not in keep:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    class Impl(caching.CompileResultCacheImpl):
        _locator_classes = [Locator]

    class FunctionCache(caching.FunctionCache):
        """Numba's per-function cache with diffcore's locator and checked files."""

        _impl_class = Impl

        def __init__(self, py_func):
            super().__init__(py_func)
            self._cache_file = CheckedCacheFile(self._cache_path, self._impl.filename_base,
                                                self._impl.locator.get_source_stamp())

        def _load_overload(self, sig, target_context):
            try:
                data = super()._load_overload(sig, target_context)
            except Exception:  # an intact file Numba cannot rebuild (say, another LLVM): compile anew
                data = None
            if data is None:
                _note_compile()
            return data

    return FunctionCache


_function_cache = None
_usable: bool | None = None


def _cache_class():
    global _function_cache, _usable
    if _usable is None:
        try:
            _function_cache, _usable = _classes(), True
        except (ImportError, AttributeError, TypeError, OSError):  # Numba internals moved: no disk cache
            _usable = False
    return _function_cache


def attach(dispatcher) -> bool:
    """Give a Numba dispatcher diffcore's disk cache; False (no disk cache, compiles announced all the same)
    where that is impossible."""
    cls = _cache_class()
    if cls is not None:
        try:
            dispatcher._cache = cls(dispatcher.py_func)
            return True
        except Exception:  # no usable locator (cache folder not writable): compile without a disk cache
            pass
    return False


def jit(**options):
    """``numba.njit(**options)`` with diffcore's disk cache."""
    import numba

    def decorate(func):
        dispatcher = numba.njit(**options)(func)
        attach(dispatcher)
        return dispatcher

    return decorate


class CompileTimer:
    """Seconds Numba spent compiling while it was active (top-level compiles only), via numba.core.event:
    ``seconds`` of wall time and ``cpu_seconds`` of this process's CPU time (the steadier figure on a busy
    machine: Numba compiles on one thread)."""

    def __init__(self):
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.compiles = 0
        self._depth = 0
        self._start = 0.0
        self._cpu_start = 0.0

    def __enter__(self):
        from numba.core import event

        timer = self

        class Listener(event.Listener):
            def on_start(self, ev):
                if timer._depth == 0:
                    timer._start, timer._cpu_start = time.perf_counter(), time.process_time()
                timer._depth += 1

            def on_end(self, ev):
                timer._depth -= 1
                if timer._depth == 0:
                    timer.seconds += time.perf_counter() - timer._start
                    timer.cpu_seconds += time.process_time() - timer._cpu_start
                    timer.compiles += 1

        self._listener = Listener()
        event.register("numba:compile", self._listener)
        return self

    def __exit__(self, *exc):
        from numba.core import event

        event.unregister("numba:compile", self._listener)
        return False
