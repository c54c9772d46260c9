"""Samples sharded over Ray actors (``pip install 'diffcore[ray]'``).

One actor per worker opens both models once (one GPU per actor where the cluster has enough) and runs the
shards it is given, returning per-sample reports with the rows' accumulator states: statistics, not
tensors. The driver merges them in sample-index order, the order of one process, so the report is the
same bit for bit however the samples were sharded. An actor that dies has its shard run again once on a
new actor; then the error names the samples it held.
"""
from __future__ import annotations

import os

from .._deps import require
from ..errors import DiffcoreError
from .workers import WORKER_ENV, _check_specs, merged_with_retries, shards


class _Worker:
    """The actor: both runners opened once, kept across shards."""

    def __init__(self, ref, test, opening, options):
        from ..comparison import open_pair

        self.options = options
        self.context, self.ref, self.test = open_pair(ref, test, opening)

    def run(self, shard):
        from ..comparison import reports_on

        from .workers import peak_rss_mib

        return reports_on(self.ref, self.test, shard, self.options), peak_rss_mib()


def _connect(ray, address):
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)


def run_on_ray(ref, test, samples, opening: dict, options: dict, workers: int, progress, address=None):
    """The dataset report of ``samples`` computed on ``workers`` Ray actors (see the module docstring)."""
    ray = require("ray", "sharding a dataset comparison over a Ray cluster (pip install 'diffcore[ray]')")
    _check_specs(ref, test)
    samples = list(samples)
    if not samples:
        raise DiffcoreError("the dataset has no sample: nothing was compared")
    _connect(ray, address)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= workers else 0
    env = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}  # idle OpenMP threads must not spin
    actor = ray.remote(num_gpus=gpus, num_cpus=0, runtime_env={"env_vars": env} if env else None)(_Worker)

    peaks: list = []

    def run_round(pending, results, bar):
        return _round(ray, actor, pending, ref, test, opening, options, results, bar, peaks)

    return merged_with_retries(shards(samples, max(1, workers)), run_round, progress, len(samples), "a Ray actor",
                               peaks)


def _round(ray, actor, pending, ref, test, opening, options, results, bar, peaks) -> list:
    """Run ``pending`` shards, one new actor each; return the shards whose actor died."""
    actors = [actor.remote(ref, test, opening, options) for _ in pending]
    refs = [a.run.remote(shard) for a, shard in zip(actors, pending)]
    failed = []
    for shard, handle in zip(pending, refs):
        try:
            reports, peak = ray.get(handle)
            peaks.append(peak)
            for index, report in reports:
                results[index] = report
                bar.update(1)
        except ray.exceptions.RayActorError:
            failed.append(shard)
        except ray.exceptions.RayTaskError as exc:  # a DiffcoreError inside the actor: the user's to see
            cause = exc.as_instanceof_cause()
            if isinstance(cause, DiffcoreError):
                raise DiffcoreError(str(cause)) from None
            raise
    for a in actors:
        ray.kill(a)
    return failed
