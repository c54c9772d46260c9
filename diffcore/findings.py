"""Findings: what a converter, or diffcore itself, changed in a model before it was compared.

A *finding* is a plain dict, JSON-ready, with

- ``kind``: ``"clamped-constant"`` (a float16 converter moved constants or weights to other values: by
  default onnxconverter-common maps finite values beyond ±1e4 to ±1e4 and nonzero values within ±1e-7 to
  ±1e-7) or ``"repair"`` (diffcore edited the model, or disabled an ONNX Runtime optimizer, so that it loads
  and runs; a deployed session does not get the repair);
- ``tensor``: the initializer or Constant output concerned (``None`` for a repair of the whole model);
- ``nodes`` / ``values``: the nodes that read it and the ONNX values they produce (rows of the report whose
  test tensor is one of these carry the finding);
- ``message``: one line for the user; clamps also carry ``count``, ``before`` and ``after`` (the extremes
  of the changed values).

Clamps are found by comparing each float32 constant with its float16 counterpart of the same name: a value
that differs from the plain float16 rounding of the original was changed by the converter. This works for
diffcore's own conversion (``test_dtype="float16"``) and for a model the user converted (the original ONNX
as the reference, the converted file as the test side).

``attach`` puts findings on report rows (as notes); ``blame_converter`` is the localizer's rule that makes a
row reading a clamped constant the cause (``diverged``) when its error is past a limit, instead of
``carried``.
"""
from __future__ import annotations

import numpy as np

CLAMPED, REPAIR = "clamped-constant", "repair"
_CLAMP_NOTE = "the float16 converter clamped constant"
_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto element types
_SLIGHT = 2.0 ** -10  # float16's relative precision: a change below it, relative to the tensor's largest value


# ------------------------------------------------------------------------------------------- constants

def float_constants(graph) -> dict:
    """{name: TensorProto} of the float32/float16 initializers and Constant-node tensors of ``graph`` and
    of its subgraphs (If branches, Loop bodies)."""
    found: dict = {}
    for tensor in graph.initializer:
        if tensor.data_type in (_FLOAT, _FLOAT16):
            found[tensor.name] = tensor
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type in (_FLOAT, _FLOAT16):
                found[node.output[0]] = attr.t
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found.update(float_constants(sub))
    return found


def _array(tensor, load=None) -> np.ndarray:
    from onnx import numpy_helper

    held = load(tensor.name) if load is not None else None  # a large weight held apart (capture/onnx/store.py)
    return numpy_helper.to_array(held if held is not None else tensor)


def clamps(before: dict, after: dict, load_before=None, load_after=None) -> list[dict]:
    """Clamp findings: float32 constants of ``before`` whose float16 counterpart (same name and shape) in
    ``after`` holds other values than their float16 rounding. ``load_*``: name -> the full TensorProto where the
    one in the dict is a stub (its data held elsewhere), else None. ``nodes``/``values`` are left empty (``with_readers`` fills them)."""
    out, slight = [], []
    for name, new in after.items():
        old = before.get(name)
        if old is None or old.data_type != _FLOAT or new.data_type != _FLOAT16 or list(old.dims) != list(new.dims):
            continue
        finding = _clamp(name, _array(old, load_before), _array(new, load_after))
        if finding:
            (slight if finding.pop("slight") else out).append(finding)
    return out + ([_slight_summary(slight)] if slight else [])


def _clamp(name: str, old: np.ndarray, new: np.ndarray) -> dict | None:
    with np.errstate(over="ignore"):
        plain = old.astype(np.float16)
    changed = (new != plain) & ~(np.isnan(new) & np.isnan(plain))
    count = int(changed.sum())
    if not count:
        return None
    was, now = old[changed].astype(np.float64), new[changed].astype(np.float64)
    finite = np.abs(old[np.isfinite(old)])
    scale = float(finite.max()) if finite.size else 0.0
    return {"kind": CLAMPED, "tensor": name, "count": count, "size": int(old.size),
            "before": [float(was.min()), float(was.max())], "after": [float(now.min()), float(now.max())],
            "examples": _examples(was, now), "nodes": [], "values": [], "message": "",
            "slight": bool(np.all(np.abs(now - was) <= _SLIGHT * scale))}


def _slight_summary(found: list) -> dict:
    """One finding for the tensors whose changed values moved by less than float16's precision of the
    tensor (tiny weights raised to ±1e-7 beside weights of order 1): true, but not a cause."""
    count = sum(f["count"] for f in found)
    names = ", ".join(repr(f["tensor"]) for f in found[:2]) + (" ..." if len(found) > 2 else "")
    return {"kind": CLAMPED, "tensor": None, "count": count, "tensors": [f["tensor"] for f in found],
            "nodes": [], "values": [],
            "message": f"the float16 converter also changed {count} value(s) in {len(found)} tensor(s) ({names}) "
                       f"by less than float16's precision of each tensor (e.g. {_pairs(found[0])} in "
                       f"{found[0]['tensor']!r})"}


def _examples(was: np.ndarray, now: np.ndarray, limit: int = 2) -> list:
    """Up to ``limit`` (before, after) pairs: the largest and smallest changed values."""
    picks = dict.fromkeys([int(np.argmax(np.abs(was))), int(np.argmin(np.abs(was)))])
    return [[float(was[i]), float(now[i])] for i in list(picks)[:limit]]


def _pairs(finding: dict) -> str:
    return ", ".join(f"{a:g} -> {b:g}" for a, b in finding["examples"])


def clamp_words(finding: dict) -> str:
    """'(200000 -> 10000)' or '(3 of 64 values, e.g. -1e+09 -> -10000)'."""
    pairs = _pairs(finding)
    if finding["count"] == 1:
        return f"({pairs})"
    return f"({finding['count']} of {finding['size']} values, e.g. {pairs})"


# ------------------------------------------------------------------------------------------- readers

def with_readers(finding: dict, graph) -> dict:
    """``finding`` with the nodes that read its tensor and the values they produce filled in, following
    constant folding (a Cast or Reshape of the constant) to the first nodes that compute from the inputs.
    ``graph``: the runner's GraphIndex (capture/onnx/graph.py). A finding of no one tensor (a summary of
    slight changes, a repair) is returned as it is."""
    if not finding.get("tensor"):
        return finding
    nodes, values, todo, seen = [], [], [finding["tensor"]], set()
    while todo:
        name = todo.pop(0)
        for i in graph.consumers.get(name, ()):
            node = graph.nodes[i]
            if i in seen:
                continue
            seen.add(i)
            outs = [o for o in node.output if o]
            if all(o in graph.static for o in outs):
                todo.extend(outs)  # still a constant: its readers are the ones that matter
                continue
            nodes.append(node.name or outs[0])
            values.extend(outs)
    finding = dict(finding, nodes=nodes, values=values)
    if finding["kind"] == CLAMPED:
        read = f", read by {', '.join(nodes[:3])}{' ...' if len(nodes) > 3 else ''}" if nodes else ""
        finding["message"] = f"{_CLAMP_NOTE} {finding['tensor']!r} {clamp_words(finding)}{read}"
    return finding


# ------------------------------------------------------------------------------------------- collecting

def collect(ref, test) -> list[dict]:
    """The findings of a comparison: each runner's own (``runner.findings``: its conversion and repairs) and
    the clamps of a float16 model the user converted (ONNX reference float32, ONNX test float16)."""
    found = list(getattr(test, "findings", [])) + list(getattr(ref, "findings", []))
    pair = getattr(test, "clamps_against", None)
    if pair is not None and getattr(ref, "kind", None) == "onnx":
        known = {f["tensor"] for f in found if f["kind"] == CLAMPED}
        found += [f for f in pair(ref) if f["tensor"] not in known]
    return found


def attach(rows, findings: list[dict]) -> None:
    """Note each finding on the rows whose test tensor a reading node produces (execution order)."""
    for finding in findings:
        values = set(finding.get("values") or ())
        for row in rows:
            if row.test_tensor in values and finding["message"] not in row.notes:
                row.notes.append(finding["message"])


def converter_cause(row) -> str:
    """The clamp note on ``row`` ('' when none): the converter changed a constant this layer reads."""
    return next((n for n in row.notes if n.startswith(_CLAMP_NOTE)), "")


def blame_converter(row, local_cause: str, limit_cause: str) -> tuple[str, str]:
    """The localizer's rule: a layer past a limit that reads a clamped constant is where the error is born
    (the converter changed what it computes), not ``carried``. Returns (local cause, limit cause)."""
    clamp = converter_cause(row)
    if not clamp or not (local_cause or limit_cause):
        return local_cause, limit_cause
    return f"{clamp}: {'; '.join(c for c in (local_cause, limit_cause) if c)}", ""


def lines(report) -> list[str]:
    """One line per finding of a DiffReport, naming the rows that carry it, for the text and HTML views."""
    out = []
    for finding in report.findings:
        values = set(finding.get("values") or ())
        rows = [r.name for r in report.layers + report.outputs if r.test_tensor in values]
        where = f" [rows: {', '.join(dict.fromkeys(rows))}]" if rows else ""
        out.append(f"{finding['kind']}: {finding['message']}{where}")
    return out
