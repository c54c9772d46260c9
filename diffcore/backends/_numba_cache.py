"""Numba's disk cache, keyed on every source a kernel is built from.

Numba checks a cached function against the file that defines it only. Our drivers inline code from other
files (the shared per-element source, the state layout), so an edit there, or an upgrade of diffcore that
changes them, would load stale machine code. These locators give every diffcore kernel one freshness stamp:
a digest of all those sources and the Numba version. Where Numba's internals are not what we expect,
``install`` returns False and the kernels are compiled without a disk cache instead.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
SOURCES = ("backends/_numba_source.py", "backends/_numba_build.py", "backends/_numba_cpu_kernels.py",
           "stats/layout.py", "stats/params.py")


def _digest() -> str:
    import numba

    h = hashlib.sha256(numba.__version__.encode())
    for name in SOURCES:
        h.update((_PACKAGE / name).read_bytes())
    return h.hexdigest()


def _ours(py_file: str) -> bool:
    return Path(py_file).resolve().is_relative_to(_PACKAGE)


def _locators(caching, stamp: str) -> list:
    class Stamped:
        """The package-wide digest as the source stamp, for diffcore's files only."""

        def get_source_stamp(self):
            return stamp

        @classmethod
        def from_function(cls, py_func, py_file):
            return super().from_function(py_func, py_file) if _ours(py_file) else None

    bases = (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator, caching.UserWideCacheLocator)
    return [type(f"Diffcore{base.__name__}", (Stamped, base), {}) for base in bases]


_installed: bool | None = None


def install() -> bool:
    """Put diffcore's locators first in Numba's search (once). True when the disk cache is safe to use."""
    global _installed
    if _installed is None:
        try:
            from numba.core import caching

            impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # public from Numba 0.61
            locators = impl._locator_classes
            locators[:0] = _locators(caching, _digest())
            _installed = True
        except (ImportError, AttributeError, TypeError, OSError):
            _installed = False
    return _installed
