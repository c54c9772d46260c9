"""Issue 11's four answers on the real all-MiniLM-L6-v2 made to fail in float16, in one run.

    HF_HUB_OFFLINE=1 python bench/answers_minilm.py [--scale 1e4] [--out bench/results/answers-minilm-<date>.txt]

The model is bench/suggest_fp32_minilm.py's: layer 3's FFN up-projection scaled by ``--scale`` and its
down-projection by 1/scale (the same function in float32; in float16 the intermediate activations pass
65504). Printed: (1) the float16 comparison's summary with the range diagnosis and the largest error
amplifiers; (2) what to keep in float32, proven by running it; (3) the mixed-precision model compared again;
(4) the report diff before -> after the fix.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import real_model  # noqa: E402
from suggest_fp32_minilm import planted  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1e4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import diffcore
    from diffcore.files import write_text
    from diffcore.precision import keep_in_float32
    from diffcore.ranges import diagnosis_lines

    model, folder = planted(args.scale)
    inputs = real_model.tokenize(folder)
    lines = [f"all-MiniLM-L6-v2, layer 3 FFN scaled by {args.scale:g}; torch float32 vs float16 cast"]
    start = time.perf_counter()
    before = diffcore.compare(model, model, inputs, test_dtype="float16")
    lines += ["", "1. the float16 comparison", before.summary, "", *diagnosis_lines(before)]
    found = before.suggest_fp32(model, model, inputs, test_dtype="float16")
    lines += ["", "2. what to keep in float32", str(found)]
    mixed = keep_in_float32(model, found.units, dtype="float16") if found.units else model
    after = diffcore.compare(model, mixed, inputs)
    lines += ["", "3. the fixed (mixed-precision) model compared again", after.summary]
    change = before.diff(after)
    lines += ["", "4. report diff before -> after", change.to_text(), "",
              f"wall {time.perf_counter() - start:.1f} s"]
    text = "\n".join(lines)
    print(text)
    out = args.out or ROOT / "bench" / "results" / f"answers-minilm-{datetime.date.today():%Y%m%d}.txt"
    write_text(out, text + "\n", what="issue 11 answers", force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
