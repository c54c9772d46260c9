"""The README's first command: ``diffcore demo`` tells the story in one screen and leaves nothing behind."""
import os
import re
import subprocess
import sys
import tempfile

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_the_demo_finds_the_planted_overflow_proves_the_fix_and_passes_the_clean_export(tmp_path):
    env = {**os.environ, "COLUMNS": "100", "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "diffcore", "demo"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) < 40 and all(len(line) <= 100 for line in lines), done.stdout
    text = " ".join(done.stdout.split())
    assert re.search(r"FAIL: first divergence at ln_f \(NaiveRMSNorm\).*born in this layer", text), text
    assert ">>" in done.stdout and "keep in float32: ln_f; verified" in text
    assert re.search(r"PASS: \d+ layers compared", text) and "35/35 reference layers" in text
    assert not [p for p in os.listdir(tmp_path) if p.startswith("diffcore-demo-")]  # nothing left behind
    assert tempfile.gettempdir() != str(tmp_path)  # (the child used TMPDIR; this process did not)
