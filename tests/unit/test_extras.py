"""The GPU extras resolve to one CUDA major and at most one owner of the ``onnxruntime`` module.

Each extra is resolved by pip itself (``pip install --dry-run --report``, metadata only, nothing installed),
as a user's ``pip install "diffcore[...]"`` would be. Skipped with the reason where no package index
answers.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Packages whose version's major is the CUDA major they are built for.
VERSIONED_BY_CUDA = {"cuda-bindings", "cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc",
                     "nvidia-nvjitlink", "nvidia-nvvm"}
ORT_MODULE_OWNERS = {"onnxruntime", "onnxruntime-gpu"}


def cuda_major(name: str, version: str) -> int | None:
    """The CUDA major a distribution is built for, or None for one that is not CUDA-specific."""
    name = name.lower()
    suffix = re.search(r"-cu(\d+)$", name) or re.fullmatch(r"cupy-cuda(\d+)x", name)
    if suffix:
        return int(suffix.group(1))
    if name in VERSIONED_BY_CUDA:
        return int(version.split(".")[0])
    return None


def resolve(extras: str, tmp_path) -> list:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), f"{ROOT}[{extras}]"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"pip could not resolve diffcore[{extras}] here: {done.stderr.strip().splitlines()[-1:]}")
    installs = json.loads(report.read_text())["install"]
    return [(i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in installs]


def test_cuda_major_reads_names_and_versions():
    assert cuda_major("nvidia-cuda-runtime-cu12", "12.9.79") == 12
    assert cuda_major("cupy-cuda13x", "14.2.0") == 13
    assert cuda_major("cuda-bindings", "12.9.10") == 12
    assert cuda_major("nvidia-cufft", "12.5.0") is None  # versioned on its own scheme
    assert cuda_major("numpy", "2.4.6") is None


@pytest.mark.slow
@pytest.mark.parametrize("extras", ["gpu-cu12", "gpu-cu13", "ort-gpu,gpu-cu13"])
def test_gpu_extras_resolve_to_one_cuda_major_and_one_onnxruntime(extras, tmp_path):
    installs = resolve(extras, tmp_path)
    majors = {name: cuda_major(name, version) for name, version in installs}
    found = {m for m in majors.values() if m is not None}
    assert len(found) == 1, f"diffcore[{extras}] mixes CUDA majors: {sorted(majors.items())}"
    owners = ORT_MODULE_OWNERS & {name for name, _ in installs}
    assert len(owners) <= 1, f"diffcore[{extras}] installs {owners}, which both own the onnxruntime module"
    if "ort-gpu" in extras:
        assert owners == {"onnxruntime-gpu"}
