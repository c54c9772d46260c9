"""JSON Schemas of every JSON/metadata document diffcore reads, and the one function that checks them.

The schemas are JSON files beside this module (package data), the published format of every document
diffcore writes or reads: ``report.json`` (diffcore.report/1, ``compare --json``), ``report-diff.json``
(``report diff --json``), ``validate.json`` (the checklist), ``golden-check.json``, ``golden.json`` (a
golden set's golden.json), ``trace.json`` (a trace file's ``__meta__``), ``environment.json`` (what ``env
diff`` reads), ``artifacts.json`` (an ``.artifacts.json``). ``schema_for`` maps a document's
``schema_version`` to its schema. ``jsonschema`` is imported on first use only, so
``import diffcore`` still loads NumPy alone; where it is missing, ``_subset.py`` checks the same keywords.
"""
from __future__ import annotations

import functools
import json
from importlib import resources

from ..errors import DiffcoreError

__all__ = ["MAX_DEPTH", "SCHEMAS", "check_depth", "schema_for", "schema_path", "validate"]

# schema_version of a written document -> its schema file (without .json)
SCHEMAS = {"diffcore.report/1": "report", "diffcore.report-diff/1": "report-diff",
           "diffcore.validate/1": "validate", "diffcore.golden-check/1": "golden-check",
           "diffcore.golden/1": "golden", "diffcore.artifacts/1": "artifacts", "diffcore.env/1": "environment",
           "diffcore.env-diff/1": "env-diff", "diffcore.trace/1": "trace"}

VALIDATED_WRITES: dict = {}  # schema name -> documents checked before writing (DIFFCORE_VALIDATE_WRITES=1)


def schema_for(document) -> str | None:
    """The schema name of a document diffcore writes (by its ``schema_version`` or ``schema`` key)."""
    if not isinstance(document, dict):
        return None
    return SCHEMAS.get(document.get("schema_version") or document.get("schema"))


def schema_path(name: str):
    """The schema file of ``name`` inside the installed package (an importlib.resources Traversable)."""
    return resources.files(__package__).joinpath(f"{name}.json")

MAX_DEPTH = 64  # far deeper than any document diffcore writes; deeper input is hostile or broken


def check_depth(document, what: str, limit: int = MAX_DEPTH) -> None:
    """Refuse a document nested deeper than ``limit`` (checked without recursion).

    Raises:
        DiffcoreError: too deep.
    """
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise DiffcoreError(f"{what} is nested more than {limit} levels deep: not a document diffcore "
                                "writes (damaged or hostile)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


@functools.cache
def _validator(name: str):
    schema = json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    try:
        import jsonschema
    except ImportError:  # a declared dependency; the subset validator keeps a broken install safe
        from ._subset import SubsetValidator

        return SubsetValidator(schema)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(document, name: str, what: str) -> None:
    """Check ``document`` against schema ``name`` (a file ``diffcore/schemas/<name>.json``).

    Raises:
        DiffcoreError: too deep, or not valid: one line naming the first problem and where it is.
    """
    check_depth(document, what)
    error = next(iter(sorted(_validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))),
                 None)
    if error is not None:
        where = "".join(f"[{p!r}]" for p in error.absolute_path) or "(top level)"
        message = " ".join(error.message.split())
        raise DiffcoreError(f"{what} does not follow its schema ({name}): at {where}: "
                            f"{message[:200]}{'...' if len(message) > 200 else ''}")
