"""Samples sharded over worker processes (diffcore/dataset/workers.py): the same report bit for bit as one
process, and a worker that dies is retried once or its samples named."""
from __future__ import annotations

import json

import numpy as np
import pytest

import diffcore
from diffcore.dataset.workers import shards

SPEC = "tests/integration/dataset_models.py:build"
CRASHING = "tests/integration/dataset_models.py:crashing"


def samples(count=10, crash_at=None):
    rng = np.random.default_rng(1)
    out = [{"x": (rng.standard_normal((2, 8)) * 0.5).astype(np.float32)} for _ in range(count)]
    if crash_at is not None:
        out[crash_at]["x"][0, 0] = 99.0
    return out


def _stable(report) -> str:
    data = json.loads(report.to_json())
    for key in ("timings", "environment"):
        data.pop(key, None)
    data["dataset"].pop("worker_peak_rss_mib", None)  # how much memory each worker took: not a result
    return json.dumps(data, sort_keys=True)


def test_shards_are_contiguous_and_cover_every_sample():
    parts = shards(list(range(10)), 3)
    assert [[i for i, _ in p] for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert shards([1], 4) == [[(0, 1)]]


def test_two_workers_give_the_report_of_one_process_bit_for_bit():
    one = diffcore.compare(SPEC, SPEC, samples(), test_dtype="float16", progress=False)
    two = diffcore.compare(SPEC, SPEC, samples(), test_dtype="float16", progress=False, workers=2)
    assert two.dataset["samples"] == 10 and len(two.dataset["worker_peak_rss_mib"]) == 2
    assert _stable(one) == _stable(two)


def test_a_worker_that_dies_once_is_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCORE_TEST_CRASH_ONCE", str(tmp_path / "crashed"))
    report = diffcore.compare(CRASHING, CRASHING, samples(6, crash_at=4), progress=False, workers=2)
    assert (tmp_path / "crashed").exists() and report.dataset["samples"] == 6


def test_a_worker_that_dies_twice_names_its_samples(monkeypatch):
    monkeypatch.delenv("DIFFCORE_TEST_CRASH_ONCE", raising=False)
    with pytest.raises(diffcore.DiffcoreError, match=r"died twice running samples 3, 4, 5"):
        diffcore.compare(CRASHING, CRASHING, samples(6, crash_at=4), progress=False, workers=2)


def test_workers_need_model_specs_not_objects():
    from tests.integration.dataset_models import build

    with pytest.raises(diffcore.DiffcoreError, match="spec string"):
        diffcore.compare(build(), build(), samples(4), progress=False, workers=2)
