"""Loading a Hugging Face checkpoint folder (``hf:PATH``: config.json + weights) offline as a torch side.

The model comes from transformers' AutoModel with HF_HUB_OFFLINE=1 (never the network) and runs as an
eager nn.Module, so TorchRunner's hooks give its per-submodule intermediates, named like its ONNX export's
scopes. A folder without config.json or without weights is a user error, said in one line.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DiffcoreError

HF_PREFIX = "hf:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


def check_checkpoint(folder: str, role: str) -> Path:
    """The checkpoint folder; DiffcoreError when it lacks config.json or weights."""
    path = Path(folder)
    if not path.is_dir():
        raise DiffcoreError(f"{role} hf:{folder}: not a folder (expected a Hugging Face checkpoint folder)")
    if not (path / "config.json").is_file():
        raise DiffcoreError(f"{role} hf:{folder}: no config.json in the checkpoint folder")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise DiffcoreError(f"{role} hf:{folder}: no weights in the checkpoint folder (expected one of "
                            f"{', '.join(WEIGHT_FILES)})")
    return path


def load_checkpoint(folder: str, role: str):
    """The eager transformers model saved in ``folder``, in eval mode, loaded without the network."""
    path = check_checkpoint(folder, role)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("USE_TF", "0")  # Keras 3 installed beside transformers breaks its TF import
    try:
        from transformers import AutoModel
    except ImportError:
        raise DiffcoreError(f"{role} hf:{folder} needs transformers: pip install 'diffcore[hf]'") from None
    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DiffcoreError(f"{role} hf:{folder}: transformers could not load it: {str(exc).splitlines()[0]}") \
            from None
    return model.eval()
