"""The error family of diffcore.

``DiffcoreError`` is for problems with what the user gave us (a bad file, a wrong shape, a missing extra):
the CLI prints it in one line and exits 2. ``InternalError`` is a bug in diffcore itself.
"""
from __future__ import annotations

__all__ = ["DiffcoreError", "InternalError", "MissingDependencyError"]


class DiffcoreError(Exception):
    """A user error: the message says what is wrong and, where there is a choice, lists the valid ones."""


class MissingDependencyError(DiffcoreError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""


class InternalError(RuntimeError):
    """A bug in diffcore: an invariant that should always hold did not."""


def format_choices(names, limit: int = 20) -> str:
    """Return ``'a', 'b', 'c'`` (at most ``limit`` names, then ``… and N more``) for error messages."""
    names = [str(n) for n in names]
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", … and {len(names) - limit} more"
    return shown or "(none)"
