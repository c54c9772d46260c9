"""Error amplification per layer: how many times a layer multiplies the error it receives.

For a layer with output ``y = f(x)``, the test computes ``y' = f'(x')``. Its error splits as
``y' - y = (f'(x') - f(x')) + (f(x') - f(x))``: what the layer computes differently on the same inputs
(the *local* error, local.py) plus the input error ``x' - x`` carried through ``f``. In relative L2 terms,
with ``e_in = ||x' - x|| / ||x||`` the error arriving at the inputs (``LayerRow.input_rel_l2``),
``local`` the local error and ``rel_l2`` the error leaving:

    rel_l2 ≈ gain · e_in + local,      gain = max(rel_l2 - local, 0) / e_in

By the triangle inequality ``rel_l2 - local`` is a lower bound of the carried part, so ``gain`` never
overstates an amplification; a gain of 1 passes the error on unchanged, below 1 damps it (a ReLU, a
softmax over small logits), far above 1 amplifies it (a LayerNorm over a near-constant row, a softmax over
large logits, a division by a small number). No gain is given where ``e_in`` is unknown, or below
``MIN_INPUT_ERROR`` (nothing arrived to amplify), where the local error is unknown, or where the layer's
output has NaN/Inf the reference has not (its errors then cover a finite subset only: an overflow is
reported as such, ranges.py).

Where ``e_in`` comes from:

- torch reference and torch test: both sides record the inputs of every paired module call
  (``capture_inputs``, one extra forward per side); ``e_in`` is the largest relative L2 error of its
  floating arguments (per tensor: an exact attention mask must not swamp the hidden states' error). It
  sees exactly what the module received, sums and slices included.
- ONNX test side (against ONNX or torch): the inputs of the node producing the test value. Each input that
  is a paired value contributes that row's ``rel_l2``; a graph input contributes the relative error between
  the two sides' feeds; initializers are the layer's own (their rounding is part of its local error).
  ``e_in`` is the largest of them (the relative error of the inputs together is at most that); unknown when
  an input is none of these.
"""
from __future__ import annotations

import math

import numpy as np

MIN_INPUT_ERROR = 1e-12  # an input error below this is no error to amplify: no gain


def gain_of(rel_l2, local_rel_l2, input_rel_l2) -> float | None:
    """``max(rel_l2 - local, 0) / e_in``, or None where a term is unknown or nothing arrived."""
    terms = (rel_l2, local_rel_l2, input_rel_l2)
    if any(t is None or not math.isfinite(t) for t in terms) or input_rel_l2 < MIN_INPUT_ERROR:
        return None
    return max(rel_l2 - local_rel_l2, 0.0) / input_rel_l2


def _floats(value) -> list:
    """Floating arrays (float64, flattened) in a nested args/kwargs structure."""
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _floats(v)]
    if isinstance(value, dict):
        return [a for k in sorted(value, key=str) for a in _floats(value[k])]
    if hasattr(value, "is_floating_point") and value.is_floating_point():
        return [value.detach().double().cpu().numpy().ravel()]
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return [value.astype(np.float64).ravel()]
    return []


def _rel_l2(x, y) -> float | None:
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        return None
    norm, diff = float(np.linalg.norm(x[keep])), float(np.linalg.norm(y[keep] - x[keep]))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / norm


def rel_l2_of(ref, test) -> float | None:
    """The largest relative L2 error of ``test`` against ``ref`` over their floating tensors (same
    structure), each over its elements finite on both sides; None where the structures differ or nothing
    is comparable. Per tensor, not over all together: an exact mask of -1e4 beside the hidden states would
    otherwise swamp their error."""
    a, b = _floats(ref), _floats(test)
    if not a or len(a) != len(b) or any(x.size != y.size for x, y in zip(a, b)):
        return None
    errors = [e for e in (_rel_l2(x, y) for x, y in zip(a, b)) if e is not None]
    return max(errors) if errors else None


# ------------------------------------------------------------------------------------------- e_in per side

def torch_input_errors(ref, test, ref_feed, test_feed, calls) -> dict:
    """{call key: e_in} from both torch sides' recorded module inputs."""
    calls = list(dict.fromkeys(calls))
    if not calls:
        return {}
    got_ref = ref.capture_inputs(ref_feed, calls)
    got_test = test.capture_inputs(test_feed, calls)
    return {c: rel_l2_of(got_ref[c], got_test[c]) for c in calls if c in got_ref and c in got_test}


def onnx_input_error(graph, test_key, row_of_test, feed_error) -> float | None:
    """e_in of the node producing ``test_key``: the largest error of its non-constant inputs."""
    node = graph.producer.get(test_key)
    if node is None:
        return None
    errors = []
    for name in graph.inputs_of[node]:
        if not name or name in graph.initializers:
            continue
        if name in row_of_test and row_of_test[name].rel_l2 is not None:
            errors.append(row_of_test[name].rel_l2)
        elif name in feed_error:
            errors.append(feed_error[name])
        elif name in graph.producer and not graph.type_of(name).is_float:
            continue  # an integer shape or index: compared exactly elsewhere, not an error to amplify
        else:
            return None
    finite = [e for e in errors if e is not None and math.isfinite(e)]
    return max(finite) if finite and len(finite) == len(errors) else None


def feed_errors(ref_feed, test_feed) -> dict:
    """{input name: relative L2 error between the two sides' prepared inputs} for the float inputs."""
    out = {}
    for name, value in (test_feed or {}).items():
        if name in (ref_feed or {}):
            err = rel_l2_of(ref_feed[name], value)
            if err is not None:
                out[name] = err
    return out


# ------------------------------------------------------------------------------------------------ rows

def apply(pairs, rows, ref, test, ref_feed, test_feed, call_key, chunk=None,  # noqa: PLR0913
          input_errors=None) -> list[str]:
    """Set ``input_rel_l2`` and ``gain`` on the rows of ``pairs`` whose local error is known (``rows``:
    {id(pair): LayerRow}; every paired row serves as a possible input of another). ``chunk`` splits the
    torch pairs into groups whose inputs are held at once (one forward per side and group);
    ``input_errors`` ({call: e_in}) are the ones the comparison's own passes measured already (torch_pass.py),
    so only the calls missing there cost a forward.

    Returns warnings (an input capture that failed leaves the rows without a gain)."""
    known = [p for p in pairs if id(p) in rows and not rows[id(p)].exact]
    wanted = [p for p in known if rows[id(p)].local_rel_l2 is not None]
    if not wanted:
        return []
    try:
        if getattr(test, "kind", "") == "onnx":
            _onnx(wanted, known, rows, test, ref_feed, test_feed)
        elif getattr(ref, "kind", "") == "torch" and getattr(test, "kind", "") == "torch":
            _torch(wanted, rows, ref, test, ref_feed, test_feed, call_key, chunk, input_errors or {})
    except Exception as exc:  # noqa: BLE001 - amplification is extra: never lose the comparison for it
        return [f"error amplification not computed: {type(exc).__name__}: {exc}"]
    for pair in wanted:
        row = rows[id(pair)]
        if not (row.new_nonfinite or row.local_new_nonfinite):  # errors over a finite subset: no gain
            row.gain = gain_of(row.rel_l2, row.local_rel_l2, row.input_rel_l2)
    return []


def _torch(pairs, rows, ref, test, ref_feed, test_feed, call_key, chunk=None,  # noqa: PLR0913
           known=None) -> None:
    known = known or {}
    with_module = [p for p in pairs if p.method != "output" and p.ref.module]
    for pair in with_module:
        rows[id(pair)].input_rel_l2 = known.get(call_key(pair.ref))
    missing = [p for p in with_module if call_key(p.ref) not in known]
    for group in (chunk or (lambda ps: [ps]))(missing):  # bounded memory: the inputs of one chunk
        errors = torch_input_errors(ref, test, ref_feed, test_feed, [call_key(p.ref) for p in group])
        for pair in group:
            rows[id(pair)].input_rel_l2 = errors.get(call_key(pair.ref))


def _onnx(pairs, known, rows, test, ref_feed, test_feed) -> None:
    graph = test.graph
    row_of_test = {rows[id(p)].test_tensor: rows[id(p)] for p in known}
    feeds = {k: v for k, v in feed_errors(ref_feed, test_feed).items() if k in graph.inputs}
    for pair in pairs:
        rows[id(pair)].input_rel_l2 = onnx_input_error(graph, pair.test.key, row_of_test, feeds)


def top_amplifiers(rows, count: int = 3, min_gain: float = 2.0) -> list:
    """The rows with the largest gains above ``min_gain``, largest first."""
    found = [r for r in rows if r.gain is not None and math.isfinite(r.gain) and r.gain >= min_gain]
    return sorted(found, key=lambda r: -r.gain)[:count]


def amplifier_of(row, rows):
    """The layer that amplified the error ``row`` carries: the largest gain at or before it, or None."""
    upto = rows[: rows.index(row) + 1] if row in rows else rows
    top = top_amplifiers(upto, count=1)
    return top[0] if top else None


def gain_words(gain: float) -> str:
    """A gain for people: 280x, 3.5x, 0.02x."""
    return f"{gain:.3g}x"


def amplifier_lines(rows, count: int = 5) -> list[str]:
    """One line per largest amplifier, for the text and HTML views."""
    return [f"{r.name}: amplifies the error it receives {gain_words(r.gain)} (input error "
            f"{100 * r.input_rel_l2:.3g} % -> output error {100 * r.rel_l2:.3g} %, local error "
            f"{100 * r.local_rel_l2:.3g} %)" for r in top_amplifiers(rows, count=count)]
