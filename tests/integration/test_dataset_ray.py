"""Samples sharded over Ray actors on a local Ray instance started in the test (dataset/ray_backend.py)."""
from __future__ import annotations

import pytest

import diffcore

from .test_dataset_workers import CRASHING, SPEC, _stable, samples

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_actors_give_the_report_of_one_process_bit_for_bit():
    one = diffcore.compare(SPEC, SPEC, samples(), test_dtype="float16", progress=False)
    on_ray = diffcore.compare(SPEC, SPEC, samples(), test_dtype="float16", progress=False, workers=2, ray=True)
    assert on_ray.dataset["samples"] == 10
    assert _stable(one) == _stable(on_ray)


def test_an_actor_that_dies_twice_names_its_samples(monkeypatch):
    monkeypatch.delenv("DIFFCORE_TEST_CRASH_ONCE", raising=False)
    with pytest.raises(diffcore.DiffcoreError, match=r"a Ray actor died twice running samples 3, 4, 5"):
        diffcore.compare(CRASHING, CRASHING, samples(6, crash_at=4), progress=False, workers=2, ray=True)
