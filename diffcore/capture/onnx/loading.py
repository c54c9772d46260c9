"""Loading an ONNX model and choosing its execution providers."""
from __future__ import annotations

from pathlib import Path

from ..._deps import require
from ...errors import DiffcoreError, format_choices

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def _load_model(model):
    """(ModelProto, label) from a path or a ModelProto; DiffcoreError for a missing or unparsable file."""
    onnx = require("onnx", "loading ONNX models")
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # we edit it (fp16 conversion); the caller's proto stays untouched
        return copy, model.graph.name or "ModelProto"
    if not isinstance(model, (str, Path)):
        raise DiffcoreError(f"an ONNX model is a path to a .onnx file or an onnx.ModelProto, "
                            f"not {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise DiffcoreError(f"ONNX model file {what}: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise DiffcoreError(f"{path} could not be parsed as ONNX: {exc}") from exc
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        # protobuf accepts many byte strings as a (nearly empty) message: insist on an ONNX model's parts
        raise DiffcoreError(f"{path} could not be parsed as ONNX: no graph, IR version or opset in it")
    return proto, str(path)



def _check_providers(providers) -> list:
    """Providers as given (names or (name, options)); DiffcoreError naming the available ones."""
    ort = require("onnxruntime", "running ONNX models")
    providers = list(providers) if providers else [CPU]
    available = ort.get_available_providers()
    for entry in providers:
        name = entry[0] if isinstance(entry, tuple) else entry
        if name not in available:
            raise DiffcoreError(f"ONNX Runtime execution provider {name!r} is not available here; "
                                f"available: {format_choices(available)}")
    return providers


def _provider_names(providers) -> list:
    return [p[0] if isinstance(p, tuple) else p for p in providers]


def _bound_device(providers) -> tuple | None:
    """("cuda", id) when the first provider is CUDA's: outputs then stay on that device; else None."""
    first = providers[0]
    name, options = (first if isinstance(first, tuple) else (first, {}))
    return ("cuda", int(options.get("device_id", 0))) if name == CUDA else None
