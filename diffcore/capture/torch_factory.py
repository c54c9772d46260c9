"""Model specs that name a factory: ``path/to/file.py:factory`` or ``package.module:factory``, and the
example inputs that come with the model or its module."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from contextlib import contextmanager

from .._deps import require
from ..errors import DiffcoreError, format_choices


def _torch():
    return require("torch", "running torch models")


# ------------------------------------------------------------------------------------------- load_factory

def load_factory(spec: str):
    """Build a model from ``"path/to/file.py:factory"`` or ``"package.module:factory"``.

    The factory is called without arguments and must return a ``torch.nn.Module``. Example inputs come from
    the model's ``example_inputs`` attribute (a dict, or a callable returning one), else from a module-level
    ``example_inputs()`` next to the factory. A file's directory is on ``sys.path`` while it loads and while
    the factory runs, so it can import its neighbours.

    Returns:
        (module, example inputs dict or None)

    Raises:
        DiffcoreError: a malformed spec, a missing file, a module that does not import, a missing attribute
            (the callables it has are listed), a factory that raises or returns something else.
    """
    torch = _torch()
    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr:
        raise DiffcoreError(f"model spec {spec!r} must be 'path/to/file.py:factory' or "
                            "'package.module:factory'")
    is_file = source.endswith(".py") or "/" in source or os.sep in source
    with _on_sys_path(os.path.dirname(os.path.abspath(source)) if is_file else None):
        module = _load_file(source) if is_file else _import_module(source)
        factory = _factory(module, attr, spec)
        try:
            model = factory()
        except Exception as exc:
            raise DiffcoreError(f"model factory {spec!r} raised {type(exc).__name__}: {exc} "
                                "(it is called without arguments)") from exc
        if not isinstance(model, torch.nn.Module):
            raise DiffcoreError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model, _example_inputs(model, module, spec)


@contextmanager
def _on_sys_path(directory: str | None):
    if directory is None or directory in sys.path:
        yield
        return
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        if directory in sys.path:
            sys.path.remove(directory)


def _load_file(path: str):
    if not os.path.isfile(path):
        raise DiffcoreError(f"model file {path!r} does not exist")
    # A private, path-derived name: two files called model.py must not replace each other in sys.modules.
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    name = f"_diffcore_model_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DiffcoreError(f"model file {path!r} cannot be imported as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here while they execute
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise DiffcoreError(f"model file {path!r} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise DiffcoreError(f"cannot import module {name!r}: {exc} (is it installed or on sys.path? "
                            "for a file, write path/to/file.py:factory)") from exc
    except Exception as exc:
        raise DiffcoreError(f"importing module {name!r} raised {type(exc).__name__}: {exc}") from exc


def _factory(module, attr: str, spec: str):
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    if obj is None or not callable(obj):
        where = module.__file__ if module.__name__.startswith("_diffcore_model_") else module.__name__
        raise DiffcoreError(f"{spec!r}: {where} has no callable {attr!r}; "
                            f"its callables: {format_choices(_callables(module))}")
    return obj


def _callables(module) -> list:
    """Public callables of ``module``, those defined in it first (imports like ``nn`` are not factories)."""
    public = {n: v for n, v in vars(module).items()
              if not n.startswith("_") and callable(v) and not inspect.ismodule(v)}
    own = [n for n, v in public.items() if getattr(v, "__module__", None) == module.__name__]
    return sorted(own) + sorted(n for n in public if n not in own)


def _example_inputs(model, module, spec: str):
    examples = getattr(model, "example_inputs", None)
    if examples is None:
        examples = getattr(module, "example_inputs", None)
    if examples is None:
        return None
    if callable(examples):
        try:
            examples = examples()
        except Exception as exc:
            raise DiffcoreError(f"example_inputs() of {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(examples, Mapping) or not all(isinstance(k, str) for k in examples):
        raise DiffcoreError(f"example_inputs of {spec!r} must be a dict {{input name: array or tensor}}, "
                            f"got {type(examples).__name__}")
    return dict(examples)
