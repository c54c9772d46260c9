"""Output flags of every subcommand, with one meaning (the conventions of pytest, Polygraphy and git).

- ``-`` names standard output: the document goes there, and the human text moves to stderr so stdout
  stays parseable (``diffcore compare a b --json - | jq .verdict``).
- Re-running a command works: a file diffcore itself wrote earlier, of the same kind (a JSON document
  carrying a ``diffcore.*`` schema_version, an HTML report, a Model Explorer node-data file), is replaced
  with a one-line note on stderr. Anything else still needs ``--force`` (issue 10: nothing is silently
  overwritten), and only regular files are ever replaced (diffcore/files.py).
"""
from __future__ import annotations

import json
import os
import stat
import sys

from ..files import check_distinct, check_target, write_text

__all__ = ["NODE_DATA", "STDOUT", "Outputs", "is_stdout", "previous_output"]

STDOUT = "-"
_SNIFF_BYTES = 1 << 16  # enough to see the schema_version / the HTML marker near a document's start
_HTML_MARKER = "diffcore-report"


def is_stdout(path) -> bool:
    """True when an output flag names standard output (``-``)."""
    return path == STDOUT


def _head(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(_SNIFF_BYTES)
    except OSError:
        return ""


NODE_DATA = "model-explorer-node-data"


def _is_json_document(path: str, kind: str) -> bool:
    try:
        if os.path.getsize(path) > 512 << 20:
            return False
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(data, dict):
        return False
    if kind == NODE_DATA:  # {graph_id: {"name": "diffcore ...", "results": {...}}}
        return bool(data) and all(isinstance(v, dict) and str(v.get("name", "")).startswith("diffcore ")
                                  and "results" in v for v in data.values())
    return (data.get("schema_version") or data.get("schema")) == kind


def previous_output(path, kind: str) -> bool:
    """True when ``path`` is a regular file that diffcore wrote earlier as a document of ``kind``: "html"
    (a diffcore HTML report), ``NODE_DATA``, or a schema id such as "diffcore.report/1" (a JSON document
    of that schema): re-running the command may replace it without ``--force``."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    if kind == "html":
        head = _head(path)
        return head.lstrip().lower().startswith("<!doctype html") and _HTML_MARKER in head
    return _is_json_document(path, kind)


class Outputs:
    """The output files of one command: checked together before any model runs, then written.

    Args:
        outputs: {flag: (path or None, kind)}; kind as in ``previous_output`` (None: never replaced
            without ``--force``).
        inputs: {description: path} the command reads (an output may not be one of them).
        force: ``--force``.
    """

    def __init__(self, outputs: dict, inputs: dict, force: bool):
        self.outputs = {flag: spec for flag, spec in outputs.items() if spec[0] is not None}
        self.force = force
        self.replacing = set()
        stdout_flags = [flag for flag, (path, _) in self.outputs.items() if is_stdout(path)]
        if len(stdout_flags) > 1:
            from ..errors import DiffcoreError

            raise DiffcoreError(f"{' and '.join(stdout_flags)} both write to standard output ('-'): give "
                                "all but one a file name")
        files = {flag: path for flag, (path, _) in self.outputs.items() if not is_stdout(path)}
        check_distinct(files, inputs)
        for flag, (path, kind) in self.outputs.items():
            if is_stdout(path):
                continue
            if not force and kind is not None and previous_output(path, kind):
                self.replacing.add(flag)
            check_target(path, force or flag in self.replacing, flag)

    @property
    def to_stdout(self) -> bool:
        """True when a document goes to stdout: the human text must then go to stderr."""
        return any(is_stdout(path) for path, _ in self.outputs.values())

    def path(self, flag: str):
        return self.outputs.get(flag, (None, None))[0]

    def write(self, flag: str, text: str, what: str, quiet: bool = False) -> None:
        """Write ``text`` for ``flag`` (to stdout for ``-``), saying on stderr what was written."""
        path = self.path(flag)
        if path is None:
            return
        if is_stdout(path):
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
            return
        write_text(path, text, force=self.force or flag in self.replacing, what=what)
        if flag in self.replacing:
            print(f"diffcore: replaced the previous {what} {path}", file=sys.stderr)
        elif not quiet:
            print(f"diffcore: wrote {path}", file=sys.stderr)
