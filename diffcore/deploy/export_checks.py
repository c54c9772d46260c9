"""Checks of an ONNX export, from the seeds' practice: the opset, whether dynamic axes survived, and
whether the signature (input/output names, dtypes, ranks) matches the original model's.

Dynamic axes are checked by running: the sample inputs are regrown to a batch size and sequence length
other than the sample's (batch + 1, sequence + 1, by repeating rows/positions) and the model must run,
keep rows independent (the first rows of the larger batch equal the sample's outputs) and, with the
original model at hand, match it at the new shapes. The batch axis is axis 0; the sequence length is axis
1 of the first integer input of rank >= 2 (token ids), else of the first rank-3 input, and every axis of a
rank <= 3 input with that length follows it. ``dynamic_axes`` ({input: [axis, ...]}) overrides the guess.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .._deps import require
from ..arrays import c_contiguous
from ..errors import DiffcoreError, format_choices
from .checklist import CheckRow, failed, passed, skipped

__all__ = ["check_dynamic_axes", "check_export", "check_opset", "check_signature", "guess_dynamic_axes",
           "onnx_signature"]

CHECK_OPSET, CHECK_AXES, CHECK_SIGNATURE = "export: opset", "export: dynamic axes", "export: signature"
FINE = 1e-3  # rel L2 below 0.1 %: the "fine" band (docs/ARCHITECTURE.md#policies)
_ELEM = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
         9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


def _load(path, weights: bool = False):
    onnx = require("onnx", "checking ONNX exports")
    try:
        return onnx.load(os.fspath(path), load_external_data=weights)
    except Exception as exc:
        raise DiffcoreError(f"{path} could not be parsed as ONNX: {exc}") from None


def onnx_signature(model) -> dict:
    """{"inputs": [(name, dtype, dims)], "outputs": [...]} of an ONNX model (path or ModelProto); dims
    hold ints for fixed sizes, names for symbolic ones, None for unknown."""
    proto = _load(model) if isinstance(model, (str, os.PathLike)) else model
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}

    def entry(info):
        tensor = info.type.tensor_type
        dims = None
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                         for d in tensor.shape.dim)
        return info.name, _ELEM.get(tensor.elem_type, str(tensor.elem_type)), dims

    return {"inputs": [entry(i) for i in graph.input if i.name not in initializers],
            "outputs": [entry(o) for o in graph.output]}


# ------------------------------------------------------------------------------------------- opset

def check_opset(model, target_opset: int | None = None) -> CheckRow:
    """The model's opset and IR version, whether onnx.checker accepts it, and (with ``target_opset``)
    whether the target runtime supports that opset."""
    onnx = require("onnx", "checking ONNX exports")
    proto = _load(model)
    opsets = {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    default = opsets.get("ai.onnx")
    others = ", ".join(f"{d} {v}" for d, v in opsets.items() if d != "ai.onnx")
    text = f"opset {default} (ai.onnx), IR version {proto.ir_version}" + (f"; also {others}" if others else "")
    data = {"opset": default, "ir_version": proto.ir_version, "opsets": opsets, "target_opset": target_opset}
    try:
        onnx.checker.check_model(os.fspath(model))
    except Exception as exc:
        return failed(CHECK_OPSET, f"{text}; onnx.checker rejects the model: {' '.join(str(exc).split())}",
                      "re-export the model; if it was edited by hand, fix the edit", **data)
    if target_opset is not None and default is not None and default > target_opset:
        return failed(CHECK_OPSET, f"{text}, but the target runtime supports opset {target_opset} at most",
                      f"re-export with opset_version={target_opset} (torch.onnx.export(..., "
                      f"opset_version={target_opset}))", **data)
    target = f"; the target supports up to {target_opset}" if target_opset is not None else ""
    return passed(CHECK_OPSET, f"{text}; onnx.checker accepts it{target}", **data)


# ------------------------------------------------------------------------------------------- dynamic axes

def guess_dynamic_axes(sample: Mapping) -> dict:
    """{input: {axis: "batch" | "sequence"}}: the axes a batch size / sequence length change should move
    (see the module docstring)."""
    arrays = {k: np.asarray(v) for k, v in sample.items()}
    ranked = [a for a in arrays.values() if a.ndim >= 1]
    batch = ranked[0].shape[0] if ranked else None
    seq_source = next((a for a in arrays.values() if a.ndim >= 2 and a.dtype.kind in "iu"), None)
    if seq_source is None:
        seq_source = next((a for a in arrays.values() if a.ndim == 3), None)
    seq = seq_source.shape[1] if seq_source is not None else None
    axes = {}
    for name, array in arrays.items():
        found = {}
        if array.ndim >= 1 and array.shape[0] == batch:
            found[0] = "batch"
        if seq is not None and array.ndim <= 3:
            for axis in range(array.ndim):
                if axis not in found and array.shape[axis] == seq:
                    found[axis] = "sequence"
        if found:
            axes[name] = found
    return axes


def _normalise_axes(dynamic_axes: Mapping, sample: Mapping) -> dict:
    out = {}
    for name, axes in dynamic_axes.items():
        if name not in sample:
            raise DiffcoreError(f"dynamic axes name input {name!r}; the inputs are {format_choices(sample)}")
        kinds = axes if isinstance(axes, Mapping) else {int(a): "batch" if int(a) == 0 else "sequence"
                                                        for a in axes}
        out[name] = {int(a): str(k) for a, k in kinds.items()}
    return out


def _grow(sample: Mapping, axes: dict, kinds: set) -> dict:
    """The sample with each ``kinds`` axis one longer (positions repeated cyclically)."""
    out = {}
    for name, value in sample.items():
        array = np.asarray(value)
        for axis, kind in axes.get(name, {}).items():
            if kind in kinds:
                size = array.shape[axis]
                array = np.take(array, np.arange(size + 1) % size, axis=axis)
        out[name] = c_contiguous(array)
    return out


def _session(model, providers):
    ort = require("onnxruntime", "running ONNX models")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(os.fspath(model), options, providers=list(providers or
                                                                              ["CPUExecutionProvider"]))
    except Exception as exc:
        raise DiffcoreError(f"ONNX Runtime could not load {model}: {exc}") from None


def _short(text: str, width: int = 240) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _run(session, feed: Mapping):
    """(outputs list, error text)."""
    try:
        return session.run(None, dict(feed)), ""
    except Exception as exc:
        return None, " ".join(str(exc).split())


def _sizes(sample, axes, kind) -> int | None:
    for name, found in axes.items():
        for axis, k in found.items():
            if k == kind:
                return int(np.asarray(sample[name]).shape[axis])
    return None


def check_dynamic_axes(model, sample: Mapping, *, dynamic_axes: Mapping | None = None, reference=None,
                       providers=None) -> CheckRow:
    """Run ``model`` with a batch size and sequence length other than ``sample``'s; name fixed inputs.

    Args:
        model: path of the ONNX model.
        sample: {input: array} of the export's shapes (golden inputs or given inputs).
        dynamic_axes: {input: [axis, ...]} that must be dynamic; default: ``guess_dynamic_axes(sample)``.
        reference: a Runner of the original model; when given, the outputs at the new shapes must match it.
        providers: ONNX Runtime providers to run on.
    """
    axes = _normalise_axes(dynamic_axes, sample) if dynamic_axes else guess_dynamic_axes(sample)
    if not axes:
        return skipped(CHECK_AXES, "no batch or sequence axis found in the inputs",
                       "name the axes that must be dynamic (--dynamic-axes INPUT:AXIS,AXIS)")
    batch, seq = _sizes(sample, axes, "batch"), _sizes(sample, axes, "sequence")
    wanted = ", ".join(f"{n}[{','.join(f'{a}:{k}' for a, k in sorted(found.items()))}]"
                       for n, found in axes.items())
    data = {"axes": {n: {str(a): k for a, k in f.items()} for n, f in axes.items()}, "batch": batch,
            "sequence": seq}
    fixed = _fixed(model, axes)
    session = _session(model, providers)
    grown = _grow(sample, axes, {"batch", "sequence"})
    new_shapes = f"batch {batch + 1 if batch else '-'}, sequence {seq + 1 if seq else '-'}"
    if fixed:
        _, error = _run(session, grown)
        named = "; ".join(f"{n} axis {a} ({k}) is fixed to {v}" for n, a, k, v in fixed)
        ran = f"running with {new_shapes} fails ({_short(error)})" if error else f"it ran with {new_shapes}"
        return failed(CHECK_AXES, f"{named}: {ran}", _reexport_hint(axes), fixed=[list(f) for f in fixed], **data)
    return _run_grown(session, sample, axes, grown, new_shapes, wanted, reference, data)


def _fixed(model, axes: dict) -> list:
    """[(input, axis, kind, size)] for wanted-dynamic axes the export fixed to a number."""
    dims = {name: d for name, _, d in onnx_signature(model)["inputs"]}
    out = []
    for name, found in axes.items():
        declared = dims.get(name) or ()
        for axis, kind in sorted(found.items()):
            size = declared[axis] if axis < len(declared) else None
            if isinstance(size, int) and size > 0:
                out.append((name, axis, kind, size))
    return out


def _reexport_hint(axes: dict) -> str:
    spec = ", ".join(f"'{n}': {{{', '.join(f'{a}: {k!r}' for a, k in sorted(f.items()))}}}"
                     for n, f in axes.items())
    return (f"re-export with dynamic axes: torch.onnx.export(..., dynamic_axes={{{spec}, <outputs>...}}) (the "
            "dynamo exporter: dynamic_shapes=...)")


def _run_grown(session, sample, axes, grown, new_shapes, wanted, reference, data) -> CheckRow:  # noqa: PLR0913
    base, error = _run(session, sample)
    if error:
        return failed(CHECK_AXES, f"the model does not run on the sample inputs: {_short(error)}",
                      "check the inputs' names, dtypes and shapes against the model", **data)
    more_rows, error = _run(session, _grow(sample, axes, {"batch"}))
    if not error:
        error = _rows_problem(base, more_rows, _sizes(sample, axes, "batch"))
    if not error:
        grown_out, error = _run(session, grown)
    if error:
        return failed(CHECK_AXES, f"{wanted} are declared dynamic, but with {new_shapes}: {_short(error)}",
                      "a size was baked into the graph at export (e.g. a traced x.size(1) or a Python int "
                      "used in a reshape became a constant): make it dynamic in the model code and "
                      "re-export", **data)
    on = ", ".join(session.get_providers()[:1])
    detail = f"{wanted} are dynamic: ran with {new_shapes} (the sample's +1) on {on}, outputs follow"
    if reference is not None:
        problem, worst = _against_reference(reference, grown, grown_out)
        if problem:
            return failed(CHECK_AXES, f"ran with {new_shapes}, but {problem}", "a shape was baked into the "
                          "export: compare the layers at these shapes (diffcore compare REF MODEL --inputs "
                          "...) and re-export", **data)
        detail += f" and match the original there (worst rel L2 {worst:.3g})"
    return passed(CHECK_AXES, detail, **data)


def _rows_problem(base: list, more_rows: list, batch: int | None) -> str:
    """'' when the first rows of the larger batch equal the sample's outputs (rows stay independent)."""
    from ..drift import drift

    for k, (a, b) in enumerate(zip(base, more_rows)):
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim == 0 or b.shape[1:] != a.shape[1:] or b.shape[0] != a.shape[0] + 1:
            if batch is not None and a.ndim and a.shape[0] == batch == b.shape[0]:
                return f"output {k} keeps batch size {batch}: the batch size is baked in"
            continue
        if a.dtype.kind == "f" and a.size:
            rel = drift(a, b[: a.shape[0]]).rel_l2
            if not rel <= FINE:
                return (f"output {k}'s first {a.shape[0]} rows change when the batch grows (rel L2 {rel:.3g}): "
                        "rows are not independent or a batch size is baked in")
    return ""


def _against_reference(reference, feed, outputs) -> tuple[str, float]:
    from ..arrays import host_values
    from ..drift import drift

    try:
        ref = list(reference.outputs(feed).values())
    except DiffcoreError as exc:
        return f"the original model fails at these shapes: {exc}", 0.0
    worst = 0.0
    for k, (r, t) in enumerate(zip(ref, outputs)):
        r, t = host_values(r)[0], np.asarray(t)
        if r.shape != t.shape:
            return f"output {k} has shape {t.shape}, the original's {r.shape}", worst
        if r.dtype.kind == "f":
            rel = drift(r, t.astype(r.dtype)).rel_l2
            worst = max(worst, rel)
            if not rel <= FINE:
                return f"output {k} differs from the original by rel L2 {rel:.3g} at these shapes", worst
    return "", worst


# ------------------------------------------------------------------------------------------- signature

def _rank(dims) -> int | None:
    return None if dims is None else len(dims)


def check_signature(model, *, reference=None, golden=None, sample: Mapping | None = None) -> CheckRow:
    """Input/output names, dtypes and ranks of the ONNX ``model`` against the original's.

    The original is ``reference`` (a Runner: ONNX compared by name; torch: input names against forward's
    parameters, outputs by position after running it on ``sample``), else the golden's recorded signature.
    """
    sig = onnx_signature(model)
    if reference is not None:
        expected, against = _reference_signature(reference, sample), f"the original ({reference.kind})"
    elif golden is not None:
        expected, against = _golden_signature(golden), "the golden's recorded signature"
    else:
        return skipped(CHECK_SIGNATURE, "no original model or golden to compare the signature with",
                       "give the original with --reference (or a golden recorded from it with --golden)")
    problems = _compare_side("input", sig["inputs"], expected["inputs"], by_name=True)
    problems += _compare_side("output", sig["outputs"], expected["outputs"], by_name=expected["output_names"])
    data = {"model": _jsonable(sig), "expected": _jsonable(expected)}
    shown = (f"inputs {', '.join(f'{n} {d}[{_rank(s)}]' for n, d, s in sig['inputs'])}; outputs "
             f"{', '.join(f'{n} {d}[{_rank(s)}]' for n, d, s in sig['outputs'])}")
    if problems:
        return failed(CHECK_SIGNATURE, f"differs from {against}: " + "; ".join(problems),
                      "re-export with input_names/output_names matching the original's and the same "
                      "dtypes, or update the serving code to the new signature", **data)
    names = "" if expected["output_names"] else " (torch outputs are unnamed: compared by position)"
    return passed(CHECK_SIGNATURE, f"matches {against}: {shown}{names}", **data)


def _jsonable(sig: dict) -> dict:
    return {k: [[n, d, None if s is None else list(s)] for n, d, s in v] if isinstance(v, list) else v
            for k, v in sig.items()}


def _reference_signature(reference, sample) -> dict:
    if reference.kind == "onnx":
        graph = reference.graph
        inputs = [(s.name, s.dtype, s.shape) for s in reference.input_specs()]
        outputs = [(n, graph.type_of(n).dtype, graph.type_of(n).dims) for n in graph.outputs]
        return {"inputs": inputs, "outputs": outputs, "output_names": True}
    inputs = [(s.name, None, None) for s in reference.input_specs()]
    if sample is None:
        return {"inputs": inputs, "outputs": [], "output_names": False}
    from ..arrays import host_values

    fed = {n: host_values(v) for n, v in sample.items()}
    inputs = [(n, fed[n][1] if n in fed else None, fed[n][0].shape if n in fed else None) for n, _, _ in inputs]
    host = {k: host_values(v) for k, v in reference.outputs(sample).items()}
    outs = [(k, dtype, array.shape) for k, (array, dtype) in host.items()]
    return {"inputs": inputs, "outputs": outs, "output_names": False}


def _golden_signature(golden) -> dict:
    entries = lambda section: [(e["name"], e["dtype"], tuple(e["shape"])) for e in golden.meta[section]]  # noqa: E731
    outputs = entries("outputs")
    by_name = not any(n == "output" or n.startswith("output.") for n, _, _ in outputs)
    return {"inputs": entries("inputs"), "outputs": outputs, "output_names": by_name}


def _compare_side(side: str, got: list, want: list, by_name: bool) -> list:
    problems = []
    if by_name:
        got_names, want_names = [g[0] for g in got], [w[0] for w in want]
        missing = [n for n in want_names if n not in got_names]
        extra = [n for n in got_names if n not in want_names]
        if missing:
            problems.append(f"{side}(s) {format_choices(missing)} missing (the exporter drops unused inputs; "
                            "outputs must be named with output_names)")
        if extra:
            problems.append(f"unexpected {side}(s) {format_choices(extra)}")
        lookup = {w[0]: w for w in want}
        pairs = [(g, lookup[g[0]]) for g in got if g[0] in lookup]
    else:
        if want and len(got) != len(want):
            problems.append(f"{len(got)} {side}s, the original has {len(want)}")
        pairs = list(zip(got, want))
    for (name, dtype, dims), (_, want_dtype, want_dims) in pairs:
        if want_dtype is not None and dtype != want_dtype:
            problems.append(f"{side} {name!r} is {dtype}, the original's is {want_dtype}")
        if want_dims is not None and dims is not None and len(dims) != len(want_dims):
            problems.append(f"{side} {name!r} has rank {len(dims)}, the original's has {len(want_dims)}")
    return problems


# ------------------------------------------------------------------------------------------- all three

def check_export(model, *, sample: Mapping | None = None, reference=None, golden=None, target_opset=None,
                 dynamic_axes: Mapping | None = None, providers=None) -> list[CheckRow]:
    """The export checks of an ONNX model: opset, dynamic axes, signature.

    Args:
        model: path of the ONNX model.
        sample: inputs with the export's shapes (else the golden's); without any, dynamic axes are skipped.
        reference: a Runner of the original model (signature and outputs at new shapes compared with it).
        golden: a loaded Golden (its inputs and recorded signature are used when nothing better is given).
        target_opset: the highest opset the target runtime supports.
        dynamic_axes: {input: [axis, ...]} that must be dynamic (default: guessed).
        providers: ONNX Runtime providers.
    """
    if sample is None and golden is not None:
        sample = golden.inputs
    rows = [_guarded(CHECK_OPSET, check_opset, model, target_opset)]
    if sample is None:
        rows.append(skipped(CHECK_AXES, "no inputs to grow (give --inputs or --golden)",
                            "give sample inputs with the export's shapes"))
    else:
        rows.append(_guarded(CHECK_AXES, check_dynamic_axes, model, sample, dynamic_axes=dynamic_axes,
                             reference=reference, providers=providers))
    rows.append(_guarded(CHECK_SIGNATURE, check_signature, model, reference=reference, golden=golden,
                         sample=sample))
    return rows


def _guarded(name, fn, *args, **kwargs) -> CheckRow:
    try:
        return fn(*args, **kwargs)
    except DiffcoreError as exc:
        return failed(name, str(exc), "fix the problem named and run the check again")
