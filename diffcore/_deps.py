"""Optional dependencies, imported only where they are used.

``import diffcore`` must load NumPy at most; every other framework is imported through ``require`` inside
the function that needs it, so a missing one becomes a ``MissingDependencyError`` naming the pip extra.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .errors import MissingDependencyError

# module name -> the pip extra that installs it
EXTRAS = {
    "torch": "torch",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxconverter_common": "onnx",
    "onnxruntime": "cpu",  # or `gpu` (onnxruntime-gpu) on a CUDA host
    "numba": "core dependency",
    "numba.cuda": "gpu",
    "cupy": "gpu",
    "pynvml": "core dependency (nvidia-ml-py)",
    "matplotlib": "plot",
    "pandas": "pandas",
    "tqdm": "progress",
    "tokenizers": "tokenizers",
    "tabulate": "core dependency",
    "tensorflow": "tf",
    "keras": "tf",
    "ai_edge_litert": "tf",
    "tf2onnx": "tf",
}


def install_hint(module: str) -> str:
    extra = EXTRAS.get(module, EXTRAS.get(module.split(".")[0], ""))
    if extra.startswith("core dependency"):
        return f"reinstall diffcore: {module} is a {extra}"
    if module == "onnxruntime":
        return "pip install 'diffcore[cpu]' (or 'diffcore[gpu]' for onnxruntime-gpu on a CUDA host)"
    return f"pip install 'diffcore[{extra}]'" if extra else f"pip install {module}"


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise ``MissingDependencyError`` that says what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        need = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"{module} is needed{need} but could not be imported ({exc}); {install_hint(module)}"
        ) from exc


def loaded(module: str) -> ModuleType | None:
    """Return ``module`` if something already imported it, without importing it ourselves."""
    return sys.modules.get(module)
