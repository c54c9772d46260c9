"""``drift`` and ``drift_many``: statistics of (ref, test) pairs wherever they live."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import backends
from .arrays import as_operand, check_pair, differences_operands, scaled_operand
from .backends.base import PairJob
from .errors import DiffcoreError
from .stats.formats import format_named
from .stats.overflow import DIFFERENCES, differences_exponent, overflow_exponent
from .stats.params import StatParams
from .stats.result import DriftStats, finalize
from .stats.tolerance import resolve_tolerance

__all__ = ["drift", "drift_many"]


def _job(ref, test, name, atol, rtol, test_dtype) -> PairJob:
    ref_op = as_operand(ref, f"ref of {name}" if name else "ref")
    test_op = as_operand(test, f"test of {name}" if name else "test")
    check_pair(ref_op, test_op, name)
    fmt = format_named(test_dtype) if test_dtype else test_op.format
    return PairJob(ref_op, test_op, StatParams(resolve_tolerance(atol, rtol, fmt), fmt))


def _named_pairs(pairs) -> list[tuple[str, object, object]]:
    items = pairs.items() if isinstance(pairs, Mapping) else enumerate(pairs)
    out = []
    for name, pair in items:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DiffcoreError(f"pair {name!r} must be a (ref, test) tuple, got {type(pair).__name__}")
        out.append((str(name), pair[0], pair[1]))
    return out


def _reduce(jobs: list[PairJob], backend: str, states: list | None = None) -> list[DriftStats]:
    """DriftStats of each job; with ``states`` (a list), also each job's accumulator state appended to it as
    (I row, F row, H row, rescaled): what a dataset merges across samples (diffcore/dataset/merge.py)."""
    by_backend: dict[str, tuple] = {}
    for k, job in enumerate(jobs):
        chosen = backends.select(backend, job.ref.device)
        by_backend.setdefault(chosen.name, (chosen, []))[1].append(k)
    results: list = [None] * len(jobs)
    by_index: dict = {}
    for chosen, indices in by_backend.values():
        reduced = chosen.reduce([jobs[k] for k in indices])
        for k, (i_row, f_row, h_row) in zip(indices, reduced):
            job = jobs[k]
            scaled = _rescaled(chosen, job, i_row, f_row)
            results[k] = finalize(i_row, f_row, h_row, shape=job.ref.shape, ref_dtype=job.ref.dtype,
                                  test_dtype=job.params.test_format.name, tolerance=job.params.tolerance,
                                  backend=chosen.name, scaled=scaled)
            if states is not None:
                by_index[k] = (i_row.copy(), f_row.copy(), h_row.copy(), scaled is not None)
    if states is not None:
        states.extend(by_index[k] for k in range(len(jobs)))
    return results


def _rescaled(chosen, job: PairJob, i_row, f_row):
    """[(F row of ``job`` reduced with both sides times 2^-k, k, None)] when a sum of squares overflowed or
    underflowed, plus a differences pass when both happened; else None (stats/overflow.py: the state
    layout and kernels stay as they are; these passes are the rare case)."""
    k = overflow_exponent(i_row, f_row)
    if k == 0:
        return None
    ref, test = scaled_operand(job.ref, k), scaled_operand(job.test, k)
    if ref is None or test is None:
        return None  # a bare CUDA array interface object: no exact scaled copy here
    (_, f_scaled, _), = chosen.reduce([PairJob(ref, test, job.params)])
    passes = [(f_scaled, k, None)]
    k_d = differences_exponent(i_row, f_row, k)
    if k_d:
        zeros, diffs = differences_operands(job.ref, job.test, k_d)
        if diffs is not None:
            (_, f_d, _), = chosen.reduce([PairJob(zeros, diffs, job.params)])
            passes.append((f_d, k_d, DIFFERENCES))
    return passes


def drift(ref, test, *, atol=None, rtol=None, backend: str = "auto", test_dtype: str | None = None
          ) -> DriftStats:
    """Drift statistics of ``test`` against the reference ``ref``.

    Args:
        ref, test: arrays of one shape (NumPy arrays, torch tensors on CPU or CUDA, CuPy arrays) of any
            float dtype, float16 and bfloat16 included; integers are promoted to float64.
        atol, rtol: the mismatch rule |t - r| <= atol + rtol |r|; both or neither (then the test dtype's
            defaults, as in torch.testing).
        backend: ``auto`` (follows the data), ``numpy``, ``numba-cpu``, ``numba-cuda`` or ``cupy``.
        test_dtype: measure ULPs, headroom and default tolerances in this format instead of test's dtype
            (e.g. ``float16`` for a float16 model whose outputs were cast to float32).

    Returns:
        DriftStats: plain data; ``stats.to_dict()`` for JSON.

    Raises:
        DiffcoreError: shapes or devices differ, a dtype is unsupported, an argument is not an array, a
            tolerance is malformed, or the requested backend cannot run here.
    """
    return drift_many([(ref, test)], atol=atol, rtol=rtol, backend=backend, test_dtype=test_dtype)[0]


def drift_many(pairs: Iterable | Mapping, *, atol=None, rtol=None, backend: str = "auto",
               test_dtype: str | None = None, states: list | None = None):
    """``drift`` for many pairs at once: one parallel pass on the CPU, one or a few launches on a GPU.

    Args:
        pairs: a sequence of (ref, test) tuples, or a mapping name -> (ref, test).
        atol, rtol, backend, test_dtype: as for ``drift``, applied to every pair.
        states: a list to which each pair's accumulator state is appended, in order (for merging).

    Returns:
        list[DriftStats] in the order given, or a dict with the mapping's keys. Identical to calling
        ``drift`` on each pair.
    """
    named = _named_pairs(pairs)
    jobs = [_job(ref, test, name if isinstance(pairs, Mapping) else "", atol, rtol, test_dtype)
            for name, ref, test in named]
    results = _reduce(jobs, backend, states)
    if isinstance(pairs, Mapping):
        return {name: stats for (name, _, _), stats in zip(named, results)}
    return results
