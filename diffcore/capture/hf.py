"""Loading a Hugging Face checkpoint folder (``hf:PATH``: config.json + weights) offline as a torch side.

The model comes from transformers' AutoModel with HF_HUB_OFFLINE=1 (never the network) and runs as an
eager nn.Module, so TorchRunner's hooks give its per-submodule intermediates, named like its ONNX export's
scopes. A sentence-transformers folder (``modules.json``: transformer, pooling, normalize) is loaded as
the whole pipeline, the model optimum exports for it (outputs ``token_embeddings`` and
``sentence_embedding``): comparing the bare BertModel with that export would pair nothing and fail on
outputs that are not the same quantity. A folder without config.json or without weights is a user
error, said in one line.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DiffcoreError

HF_PREFIX = "hf:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


# the files of a checkpoint folder that turn text into the model's inputs: its preprocessing artifacts
PREPROCESSING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                       "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                       "sentencepiece.bpe.model", "preprocessor_config.json")


def preprocessing_files(folder: str) -> list[Path]:
    """The preprocessing files (tokenizer and preprocessor) present in a checkpoint folder."""
    return [Path(folder) / name for name in PREPROCESSING_FILES if (Path(folder) / name).is_file()]


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
    """The eager model saved in ``folder``, in eval mode, loaded without the network: the
    sentence-transformers pipeline where the folder is one, else transformers' AutoModel."""
    path = check_checkpoint(folder, role)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("USE_TF", "0")  # Keras 3 installed beside transformers breaks its TF import
    if (path / "modules.json").is_file():
        return _sentence_transformer(path, folder, role)
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


def _sentence_transformer(path: Path, folder: str, role: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DiffcoreError(f"{role} hf:{folder} is a sentence-transformers folder (modules.json): it needs "
                            "sentence-transformers (pip install sentence-transformers)") from None
    try:
        pipeline = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DiffcoreError(f"{role} hf:{folder}: sentence-transformers could not load it: "
                            f"{str(exc).splitlines()[0]}") from None
    return SentenceTransformerSide(pipeline).eval()


def _side_class():
    import torch

    class SentenceTransformerSide(torch.nn.Module):
        """A sentence-transformers pipeline called the way optimum exports it: ``(input_ids,
        attention_mask)`` in, its features dict out without the inputs (``token_embeddings``,
        ``sentence_embedding``). The pipeline's modules are this module's children under their own
        names (``0``, ``1``, ...), so layer paths are the pipeline's, as in the export's scopes."""

        def __init__(self, pipeline):
            super().__init__()
            for name, child in pipeline.named_children():
                self.add_module(name, child)
            object.__setattr__(self, "_pipeline", pipeline)  # not a child: its modules are ours already

        def forward(self, input_ids, attention_mask):
            features = self._pipeline({"input_ids": input_ids, "attention_mask": attention_mask})
            return {k: v for k, v in features.items() if k in _PIPELINE_OUTPUTS}

    return SentenceTransformerSide


# what optimum's sentence-transformers export returns: the features dict less its inputs and per-layer lists
_PIPELINE_OUTPUTS = ("token_embeddings", "sentence_embedding")


def SentenceTransformerSide(pipeline):  # noqa: N802 - builds the class lazily: importing torch is optional
    return _side_class()(pipeline)
