"""Text inputs for NLP models: one sample per line of a text file, tokenized by a tokenizer.json.

Each non-empty line becomes one sample of batch 1: ``input_ids``, ``attention_mask`` and
``token_type_ids`` (int64, shape [1, tokens]); a model that takes fewer of them gets only those (the
dataset driver drops the ones neither model takes). One sample per line means no padding: every sentence
runs at its own length, which is what exercises run-time shapes.
"""
from __future__ import annotations

import numpy as np

from .errors import DiffcoreError

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def read_lines(path, what: str = "--texts file") -> list[str]:
    """The non-empty lines of a UTF-8 text file (line ends stripped): one text per line."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.rstrip("\r\n") for line in handle]
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffcoreError(f"cannot read {what} {path}: {exc}") from None
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DiffcoreError(f"{what} {path} holds no text (one text per line)")
    return lines


def fitted(sample: dict, input_names) -> dict:
    """``sample`` without the tokenizer outputs neither model takes (``text_samples`` makes all three)."""
    if not input_names:
        return sample
    return {k: v for k, v in sample.items() if k in input_names or k not in TOKEN_INPUTS}


def text_samples(texts, tokenizer_path) -> list[dict]:
    """One sample dict per text, tokenized with the ``tokenizers`` library's ``tokenizer_path``."""
    from .deploy.artifacts import load_tokenizer

    if not tokenizer_path:
        raise DiffcoreError("--texts needs --tokenizer tokenizer.json (or an hf:FOLDER side that has one)")
    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer.no_padding()  # a tokenizer.json may pad to a fixed length: each sentence runs at its own
    return [_token_arrays([tokenizer.encode(text)]) for text in texts]


def text_batch(texts, tokenizer_path) -> dict:
    """One input dict holding every text, padded to the longest (a golden set's inputs from its texts)."""
    from .deploy.artifacts import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer.no_truncation()
    tokenizer.enable_padding()  # pads with the tokenizer's own pad token, to the longest text
    return _token_arrays(tokenizer.encode_batch(list(texts)))


def _token_arrays(encodings) -> dict:
    return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
