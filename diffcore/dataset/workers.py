"""Samples sharded over local worker processes, merged exactly as one process merges them.

Samples are split into ``workers`` contiguous shards by index. Each worker process (spawned, so no
framework state is inherited) opens both models once and returns, per sample, its report with the rows'
accumulator states (comparison.sample_reports): statistics, never tensors. The driver feeds them to the
DatasetBuilder in sample-index order, the order one process uses, so the report is the same bit for bit
however the samples were sharded. A shard whose worker dies is run again once in a new process; if it
fails again, the error names the samples it held: no sample is ever dropped silently.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..errors import DiffcoreError
from .aggregate import DatasetBuilder

RETRIES = 1


def _check_specs(ref, test) -> None:
    for role, spec in (("REF", ref), ("TEST", test)):
        if not isinstance(spec, str):
            raise DiffcoreError(f"workers > 1 needs {role} as a spec string (a model path or file.py:factory) that "
                                f"each worker process can open, not a {type(spec).__name__} object")


def shards(samples: list, workers: int) -> list[list]:
    """``workers`` contiguous shards of (index, sample), the earlier ones one larger when uneven."""
    indexed = list(enumerate(samples))
    size, extra = divmod(len(indexed), workers)
    out, start = [], 0
    for k in range(workers):
        stop = start + size + (1 if k < extra else 0)
        if stop > start:
            out.append(indexed[start:stop])
        start = stop
    return out


def _run_shard(ref, test, shard, opening, options, threads: int):
    from ..comparison import sample_reports

    _limit_threads(threads)
    return sample_reports(ref, test, shard, opening, options), peak_rss_mib()


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (MiB), where the platform tells it."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# OpenMP (torch's and Numba's CPU threads) spins idle threads by default: harmless in one process, but N
# worker processes spinning on a few cores starve each other. Set before the worker imports torch.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def _limit_threads(threads: int) -> None:
    """Each of N workers gets its share of the cores: torch's and Numba's thread pools would otherwise each
    take every core, and N workers would oversubscribe the machine N times."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)  # a value the user set is kept
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def run_sharded(ref, test, samples, opening: dict, options: dict, workers: int, progress):
    """The dataset report of ``samples`` computed by ``workers`` processes (see the module docstring)."""
    _check_specs(ref, test)
    samples = list(samples)
    if not samples:
        raise DiffcoreError("the dataset has no sample: nothing was compared")
    context = multiprocessing.get_context("spawn")
    peaks: list = []

    def run_round(pending, results, bar):
        return _run_round(pending, ref, test, opening, options, context, results, bar, peaks)

    return merged_with_retries(shards(samples, workers), run_round, progress, len(samples), "a worker process",
                               peaks)


def merged_with_retries(pending, run_round, progress, total: int, who: str, peaks: list):
    """Run the shards with ``run_round(pending, results, bar) -> failed shards``, once more for the failed
    ones, then merge every sample's report in sample order (the order of one process). ``peaks``: the
    workers' peak memory, filled by ``run_round``, stated in ``report.dataset``."""
    results: dict = {}
    with progress.phase("samples", total=total, unit="sample") as bar:
        for _ in range(RETRIES + 1):
            pending = run_round(pending, results, bar)
            if not pending:
                break
        else:
            held = sorted(i for shard in pending for i, _ in shard)
            raise DiffcoreError(f"{who} died twice running samples {_indices(held)}: those samples were not "
                                "compared (run them alone to see why)")
    builder = DatasetBuilder()
    for index in sorted(results):
        builder.add(index, results[index])
    report = builder.report()
    report.dataset["worker_peak_rss_mib"] = [None if p is None else round(p, 1) for p in peaks]
    return report


def _run_round(pending, ref, test, opening, options, context, results, bar, peaks) -> list:
    """Run ``pending`` shards in one pool; return the shards whose worker died."""
    failed = []
    with ProcessPoolExecutor(max_workers=len(pending), mp_context=context) as pool:
        threads = max(1, (os.cpu_count() or 1) // len(pending))
        futures = [(shard, pool.submit(_run_shard, ref, test, shard, opening, options, threads))
                   for shard in pending]
        for shard, future in futures:
            try:
                reports, peak = future.result()
                peaks.append(peak)
                for index, report in reports:
                    results[index] = report
                    bar.update(1)
            except BrokenProcessPool:
                failed.append(shard)
    return failed


def _indices(indices, limit: int = 20) -> str:
    shown = ", ".join(str(k) for k in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")
