"""torch vs torch: one forward per side for every layer's statistics and local errors, whatever the budget.

The reference runs once, keeping the matched values and the inputs of the module calls whose local errors
are wanted in a SpillStore (memory up to ``memory_budget_mb``, past it a temporary file). The test then runs
once; each matched value's drift statistics are computed in its hook, against the stored reference value, the
moment it is produced, and the value is released. Local errors re-run each module call (test and reference
submodule) on the recorded inputs, chunk by chunk, without another whole-model forward.

Results are the ones chunked capture gives: ``drift_many`` is ``drift`` per pair, whatever the grouping.
"""
from __future__ import annotations

import time

from .capture.spill import SpillStore
from .local import call_key, kept_test_key, same_inputs


def streams(ref, test) -> bool:
    """Whether both runners are torch runners that can hand values over as they are produced."""
    return ref.kind == test.kind == "torch" and hasattr(ref, "visit") and hasattr(test, "visit")


def torch_rows(cmp, pairs, ref_feed, test_feed) -> dict:
    """{id(pair): LayerRow} of ``pairs`` (``cmp`` is comparison.py's _Comparison), local errors included
    when they are computed inline; the hooked passes' model outputs are left in ``cmp.hooked``."""
    rows: dict = {}
    with SpillStore(cmp.opt["memory_budget_mb"] << 20) as store:
        calls = cmp.local.torch_calls(pairs) if cmp.local.inline else []
        ref_out = cmp._timed("capture", cmp.ref.visit, ref_feed, {p.ref.key for p in pairs}, store.put,
                             calls, store.put_call)
        # the test side's own calls only: a call its model does not make must not end the pass
        test_calls = {call_key(p.test) for p in pairs}
        test_out = _test_pass(cmp, pairs, test_feed, store, rows, [c for c in calls if c in test_calls])
        cmp.hooked = {id(cmp.ref): ref_out, id(cmp.test): test_out}
        if calls:
            cmp.local.recorded, cmp.local.stored = store.calls(), store
            try:
                for chunk in cmp._chunks([p for p in pairs if id(p) in rows]):
                    cmp._add_local(chunk, rows, ref_feed, test_feed)
            finally:
                cmp.local.recorded, cmp.local.stored = None, None
                cmp.local.test_kept = set()
    return rows


def _test_pass(cmp, pairs, test_feed, store, rows, calls=()) -> list:
    """The test forward, computing each pair's statistics in the hook that produces its test value, and the
    error of each recorded module call's inputs against the reference's (the error amplification's input,
    amplification.py) before the call runs: no further forward of either side for it."""
    from .amplification import rel_l2_of

    def on_call(call, args, kwargs):
        recorded = store.call(call)
        cmp.input_errors[call] = rel_l2_of(recorded, (tuple(args), dict(kwargs)))
        # called on exactly the reference's inputs rounded: its own outputs are its local outputs, kept
        # below instead of re-running the module (and everything under it) for the local error
        if same_inputs(cmp.local.rounded_for_test(call, *recorded), (tuple(args), dict(kwargs))):
            cmp.local.test_kept.add(call)

    by_test: dict = {}
    for pair in pairs:
        by_test.setdefault(pair.test.key, []).append(pair)

    def on_value(key, tensor, is_output):
        group = by_test[key]
        if not is_output and any(call_key(p.test) in cmp.local.test_kept for p in group):
            store.put(kept_test_key(key), tensor)
        ref_vals = {p.ref.key: store.get(p.ref.key) for p in group}
        rows.update(cmp._pair_rows(group, ref_vals, {key: tensor}))

    before = cmp.timings.get("statistics", 0.0)
    start = time.perf_counter()
    try:
        return cmp.test.visit(test_feed, set(by_test), on_value, calls, on_call if calls else None)
    finally:  # the forward alone is capture time; statistics computed in its hooks are counted apart
        spent = time.perf_counter() - start - (cmp.timings.get("statistics", 0.0) - before)
        cmp.timings["capture"] = cmp.timings.get("capture", 0.0) + spent
