"""Progress over the phases of a comparison, the way the ecosystem shows it: ``tqdm.auto``.

``tqdm.auto`` draws a widget in a notebook and a text bar in a terminal. By default (``progress=None``)
bars are shown only where a person is watching: when stderr is a terminal or inside a notebook kernel;
piped or redirected, nothing is printed. Each phase (load, probe, capture, local errors, ...) gets one bar,
closed when the phase ends, so a call shows one bar at a time. Without tqdm (the ``progress`` extra) there
are no bars and no error.

    bars = Progress(None)
    with bars.phase("load", total=2) as bar:
        ...; bar.update()
    for chunk in bars.iterate(chunks, "capture", unit="chunk"):
        ...
"""
from __future__ import annotations

import contextlib
import sys

__all__ = ["Progress", "as_progress", "in_notebook", "note", "wanted"]

PREFIX = "diffcore"


def in_notebook() -> bool:
    """True inside a Jupyter (IPython) kernel, where tqdm.auto draws widgets."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an IPython without a shell is not a notebook
        return False
    return shell is not None and hasattr(shell, "kernel")


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def wanted(progress: bool | None) -> bool:
    """``progress`` when given; for None, True when a person is watching (stderr a terminal, or a notebook)."""
    if progress is not None:
        return bool(progress)
    return _stderr_is_tty() or in_notebook()


class _NoBar:
    """What a phase yields when no bar is shown: accepts the bar calls and does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "") -> None:
        pass


def _widgets_missing() -> bool:
    """True in a notebook whose kernel lacks ipywidgets: tqdm.auto would then warn and draw a text bar on
    stderr (red blocks in a notebook)."""
    if not in_notebook():
        return False
    try:
        from tqdm.notebook import IProgress
    except ImportError:
        return True
    return IProgress is None


def _make_bar(**kwargs):
    """A tqdm.auto bar (a widget in a notebook, a text bar in a terminal), or None without tqdm. A notebook
    without ipywidgets gets the text bar on stdout."""
    try:
        if _widgets_missing():
            from tqdm.std import tqdm

            return tqdm(file=sys.stdout, **kwargs)
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(**kwargs)


def note(text: str) -> None:
    """Print ``text`` on stderr as its own line without breaking a bar being drawn (e.g. "compiling kernels
    (first run only)" while the capture bar runs): through ``tqdm.write`` when tqdm is loaded."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None and hasattr(tqdm, "tqdm"):
        tqdm.tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


class Progress:
    """Bars for the phases of one call; ``Progress(False)`` (or not ``wanted``) shows nothing."""

    def __init__(self, progress: bool | None = None):
        self.enabled = wanted(progress)
        self.shown: list[str] = []    # the phases that drew a bar, in order (for tests and timings)
        # Where a person watches, say why a first run pauses while its kernels compile; the latest call's
        # setting holds, so a later call with progress=False stays silent.
        from .backends import _numba_cache  # the standard library only: no Numba imported here

        _numba_cache.follow_progress(self.enabled)

    @contextlib.contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "step"):
        """A bar for phase ``name`` with ``total`` steps (None: a counter); yields an object with
        ``update(n)``; the bar is closed (and, in a terminal, cleared) when the phase ends."""
        bar = _make_bar(total=total, desc=f"{PREFIX}: {name}", unit=unit, leave=False,
                        dynamic_ncols=True) if self.enabled else None
        if bar is not None:
            self.shown.append(name)
        try:
            yield bar if bar is not None else _NoBar()
        finally:
            if bar is not None:
                bar.close()

    def iterate(self, items, name: str, unit: str = "step"):
        """``items`` one by one under a bar for phase ``name``."""
        items = list(items)
        with self.phase(name, total=len(items), unit=unit) as bar:
            for item in items:
                yield item
                bar.update(1)


def as_progress(progress) -> Progress:
    """``progress`` as a ``Progress``: one passed through, else ``Progress(progress)``."""
    return progress if isinstance(progress, Progress) else Progress(progress)
