"""Turning what the user names as REF or TEST into a Runner.

A model spec is one of: a ``Runner``; a ``torch.nn.Module``; an ``onnx.ModelProto``; a recorded ``Trace``;
or a string: ``path/model.onnx``, ``path/trace.npz`` (recorded with ``diffcore capture``),
``path/file.py:factory`` or ``package.module:factory`` (a callable returning a torch.nn.Module);
``model.keras``, ``model.tflite`` or a SavedModel folder ``DIR`` / ``DIR#signature`` (diffcore[tf]).
"""
from __future__ import annotations

import os
from pathlib import Path

from . import _deps
from .capture.base import Runner
from .capture.torchscript import TORCHSCRIPT_SUFFIXES
from .errors import DiffcoreError


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def spec_path(spec: str) -> str | None:
    """The file a model spec names, or None for ``package.module:factory``.

    ``model.onnx`` and ``trace.npz`` name themselves; ``file.py:factory`` names ``file.py``. A colon followed
    by a Python identifier after something other than a ``.py`` file is an importable module path.
    """
    if spec.startswith("hf:"):
        return spec[3:]
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py"):
        return head
    if _is_factory(spec):
        return None
    return spec


def _is_factory(spec: str) -> bool:
    """``file.py:factory`` or ``package.module:factory`` (a colon before a Python identifier)."""
    head, sep, tail = spec.rpartition(":")
    return bool(sep) and (head.endswith(".py") or tail.isidentifier())


def check_spec(spec: str, role: str) -> None:
    """Raise DiffcoreError when ``spec`` names a file that does not exist (before any model is loaded)."""
    path = spec_path(spec)
    if path is not None and "#" in path and is_savedmodel(path):
        return
    if path is not None and not os.path.exists(path):
        raise DiffcoreError(f"{role} model file not found: {path}")


def _check_dtype(dtype: str | None, role: str) -> None:
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise DiffcoreError(f"{role} dtype {dtype!r} is not one of {', '.join(FLOAT_DTYPES)}")


def _is_torch_module(obj) -> bool:
    torch = _deps.loaded("torch")  # an nn.Module exists only if torch is loaded
    return torch is not None and isinstance(obj, torch.nn.Module)


def _onnx_runner(model, dtype, providers, keep_io_types, role):
    from .capture.onnx import OnnxRunner

    if dtype not in (None, "float32", "float16"):
        raise DiffcoreError(f"{role}: converting an ONNX model to {dtype} is not supported (onnxconverter-common "
                            "makes float16 models); pass a model already converted")
    return OnnxRunner(model, providers=providers, float16=dtype == "float16", keep_io_types=keep_io_types,
                      name=role)


def _torch_runner(module, dtype, autocast, device, example_inputs, role):
    from .capture.torch_runner import TorchRunner

    return TorchRunner(module, dtype=dtype, autocast=autocast, device=device, name=role,
                       example_inputs=example_inputs)


def is_savedmodel(path: str) -> bool:
    """A SavedModel folder (``DIR`` or ``DIR#signature``): it holds saved_model.pb."""
    return os.path.isfile(os.path.join(path.partition("#")[0], "saved_model.pb"))


def _tf_runner(spec: str, dtype, autocast, role) -> Runner | None:
    """A ``.keras`` file, a ``.tflite`` model or a SavedModel folder; None for any other spec."""
    if not (spec.endswith((".keras", ".tflite")) or is_savedmodel(spec)):
        return None
    if dtype or autocast:
        raise DiffcoreError(f"{role} {spec}: a TensorFlow/TFLite model runs in the dtype it was saved in; convert "
                            "it (e.g. a float16 TFLite model) instead of passing a dtype")
    if not os.path.exists(spec.partition("#")[0]):
        raise DiffcoreError(f"{role} model file not found: {spec}")
    if spec.endswith(".tflite"):
        from .capture.tf.tflite import TfliteRunner

        return TfliteRunner(spec, name=role)
    from .capture.tf.keras import open_tf_model

    return open_tf_model(spec, role)


def _torchscript_runner(spec: str, dtype, autocast, device, role) -> Runner:
    """A TorchScript file (``torch.jit.save``), its submodules' outputs read through its graph."""
    from .capture.torchscript import load_torchscript
    from .capture.torchscript_runner import TorchScriptRunner

    return TorchScriptRunner(spec, load_torchscript(spec, role), load_torchscript(spec, role), dtype=dtype,
                             autocast=autocast, device=device, name=role)


def _script_object_runner(module, dtype, autocast, device, role) -> Runner:
    """A ScriptModule object (traced or scripted in the caller's process), read layer by layer like a file:
    saved to memory and loaded twice, so the caller's module is never instrumented."""
    import io

    import torch

    from .capture.torchscript_runner import TorchScriptRunner

    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    copies = []
    for _ in range(2):
        buffer.seek(0)
        copies.append(torch.jit.load(buffer, map_location="cpu").eval())
    return TorchScriptRunner(f"<{type(module).__name__} object>", *copies, dtype=dtype, autocast=autocast,
                             device=device, name=role)


def _hf_runner(folder: str, dtype, autocast, device, role) -> Runner:
    """A Hugging Face checkpoint folder (``hf:PATH``), loaded offline as an eager torch model."""
    from .capture.hf import load_checkpoint

    return _torch_runner(load_checkpoint(folder, role), dtype, autocast, device, None, role)


def _from_string(spec: str, dtype, autocast, device, providers, keep_io_types, role) -> Runner:
    path = Path(spec)
    if autocast and spec.endswith((".onnx", ".npz")):
        raise DiffcoreError(f"{role} {spec} is {'an ONNX model' if spec.endswith('.onnx') else 'a recorded trace'}: "
                            "autocast applies to torch models only (for ONNX use dtype='float16')")
    if spec.endswith(".onnx"):
        return _onnx_runner(spec, dtype, providers, keep_io_types, role)
    if spec.endswith(".npz"):
        from .capture.trace import Trace, TraceRunner

        if dtype:
            raise DiffcoreError(f"{role} is a recorded trace: its dtype is fixed, --{role}-dtype does not apply")
        return TraceRunner(Trace.load(spec))
    if spec.startswith("hf:"):
        return _hf_runner(spec[3:], dtype, autocast, device, role)
    if spec.endswith(TORCHSCRIPT_SUFFIXES) and path.exists():
        return _torchscript_runner(spec, dtype, autocast, device, role)
    tf_runner = _tf_runner(spec, dtype, autocast, role)
    if tf_runner is not None:
        return tf_runner
    if _is_factory(spec):
        from .capture.torch_runner import load_factory

        module, example_inputs = load_factory(spec)
        return _torch_runner(module, dtype, autocast, device, example_inputs, role)
    if path.exists():
        raise DiffcoreError(f"{role} {spec!r}: unknown model file type; expected a .onnx model, a .npz trace, a "
                            "TorchScript .pt, a .keras or .tflite model or a SavedModel folder")
    raise DiffcoreError(
        f"{role} {spec!r} is not a model: expected path/model.onnx, path/trace.npz, path/file.py:factory or "
        "package.module:factory"
    )


def open_runner(spec, *, role: str = "model", dtype: str | None = None, autocast: str | None = None,
                device: str = "cpu", providers=None, keep_io_types: bool = True) -> Runner:
    """The Runner for a model spec (see the module docstring).

    Args:
        role: "ref" or "test", used in messages.
        dtype: run the model in this float dtype (torch: a cast copy; ONNX: float16 via onnxconverter-common).
        autocast: run a torch model under torch.autocast in this dtype.
        device: "cpu" or "cuda" for torch models; ONNX models use ``providers``.
        providers: ONNX Runtime execution providers.
        keep_io_types: for float16 ONNX conversion, keep float32 inputs and outputs.
    """
    _check_dtype(dtype, role)
    _check_dtype(autocast, role)
    if isinstance(spec, Runner):
        if dtype or autocast:
            raise DiffcoreError(f"{role} is an already opened runner: set its dtype when creating it")
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return _from_string(os.fspath(spec), dtype, autocast, device, providers, keep_io_types, role)
    kind = type(spec).__module__.split(".")[0]
    if kind == "onnx":
        return _onnx_runner(spec, dtype, providers, keep_io_types, role)
    if type(spec).__name__ == "Trace":
        from .capture.trace import TraceRunner

        return TraceRunner(spec)
    if _is_torch_module(spec):
        from .capture.torch_hooks import _is_script_module

        if _is_script_module(spec):
            return _script_object_runner(spec, dtype, autocast, device, role)
        return _torch_runner(spec, dtype, autocast, device, None, role)
    raise DiffcoreError(f"{role} must be a torch.nn.Module, an ONNX model, a recorded trace or a path, "
                        f"got {type(spec).__name__}")
