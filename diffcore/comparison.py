"""``compare``: run two models on the same inputs, match their layers, and localize the first divergence.

The deployed run decides: model outputs are compared on each side's uninstrumented run (``Runner.outputs``:
the plain ONNX Runtime session, a torch forward without hooks); layers on the instrumented captures. A torch
side is checked for hooks that change its outputs, an ONNX side for exposed values that change them
(capture/onnx/runner.py). Integer and bool tensors are compared exactly (stats/exact.py).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager

from . import amplification, env, quant, ranges
from .coverage import coverage_of, decide
from .dataset import is_dataset, run_dataset
from .drift import drift_many
from .errors import DiffcoreError
from .findings import attach as attach_findings
from .findings import collect as collect_findings
from .inputs import resolve_inputs
from .local import LocalComputer, call_key
from .localize import DivergenceRule, localize, set_aside_fused, summarize
from .match.matcher import match_probes
from .progress import as_progress
from .report.model import DiffReport, LayerRow, Unmatched
from .spec import open_runner
from .stats.exact import exact_compare, is_exact_dtype
from .torch_pass import streams, torch_rows

__all__ = ["compare"]

# Both sides' tensors of one chunk. A chunk costs one segment run per side, so small chunks are cheap; 256 MiB
# keeps a 12-layer transformer's 1.6 GiB of activations (bench/harness.py) under about 1 GiB of peak memory.
DEFAULT_MEMORY_BUDGET_MB = 256
_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def _pair_bytes(pair) -> int:
    shape = pair.ref.shape or pair.test.shape
    if shape is None or any(d is None for d in shape):
        return 1 << 20  # unknown before running: a nominal megabyte
    n = math.prod(shape)
    return n * (_ITEMSIZE.get(pair.ref.dtype, 4) + _ITEMSIZE.get(pair.test.dtype, 4))


def plan_chunks(pairs, budget_bytes: int) -> list[list]:
    """Consecutive pairs grouped so one chunk's tensors (both sides) stay within ``budget_bytes``. A QDQ
    layer's dequantized result ends its chunk: exposed while a node of the same run reads it, it stops ONNX
    Runtime from fusing the layer into its integer kernel (diffcore/quant/pairing.py)."""
    chunks, current, size = [], [], 0
    for pair in pairs:
        need = _pair_bytes(pair)
        if current and size + need > budget_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(pair)
        size += need
        if pair.test.meta.get("dequantized"):
            chunks.append(current)
            current, size = [], 0
    if current:
        chunks.append(current)
    return chunks


def _value_dtype(value) -> str | None:
    dtype = getattr(value, "dtype", None)
    return None if dtype is None else str(dtype).replace("torch.", "")


def _is_exact_pair(ref, test) -> bool:
    """Integer/bool values on either side are compared exactly, not with float drift statistics."""
    return is_exact_dtype(_value_dtype(ref)) or is_exact_dtype(_value_dtype(test))


def _output_value(values: dict, probe):
    """A model output of an uninstrumented run for ``probe``: by key, else by output index (a hooked torch
    pass may have renamed ``output`` to ``output~1`` to keep it apart from a module path)."""
    if probe.key in values:
        return values[probe.key]
    ordered = list(values.values())
    index = probe.output_index
    return ordered[index] if index is not None and index < len(ordered) else None


def _same_layout(ref, test, axes=None):
    """``test`` viewed in ``ref``'s shape when the matcher allowed a reshape (same element count), after
    transposing it by ``axes`` where the matcher reconciled NCHW and NHWC layouts."""
    if axes is not None:
        test = test.permute(*axes) if hasattr(test, "permute") else test.transpose(axes)
    if tuple(ref.shape) == tuple(test.shape):
        return test
    return test.reshape(tuple(ref.shape))


class _Comparison:
    def __init__(self, ref, test, options):
        self.ref, self.test, self.opt = ref, test, options
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.unmatched: list[Unmatched] = []
        self.hooked: dict = {}  # id(runner) -> model outputs of a hooked pass this comparison ran
        self.input_errors: dict = {}  # module call -> error of its inputs, measured in the test pass

    def _timed(self, name, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def run(self, inputs) -> DiffReport:
        data, notes = resolve_inputs(inputs, self.ref, self.test)
        self.warnings += notes
        ref_feed, test_feed = self.ref.prepare_inputs(data), self.test.prepare_inputs(data)
        with self.opt["progress"].phase("probe", total=2, unit="model") as bar:
            ref_probes = self.ref_probes = self._timed("probe", self.ref.probes, ref_feed)
            bar.update()
            test_probes = self.test_probes = self._timed("probe", self.test.probes, test_feed)
            bar.update()
        match = self._timed("match", match_probes, ref_probes, test_probes)
        if self.test.kind == "onnx" and quant.is_quantized(self.test):  # QDQ layers compared where read
            quant.dequantized_pairs(match, test_probes, quant.precisions_of(self.test))
        self.match_pairs = match.pairs
        self.unmatched += match.unmatched
        self.local = LocalComputer(self.ref, self.test, match, self.opt["local"])
        everywhere = self.local.everywhere()
        if self.local.unavailable_reason():
            self.warnings.append(self.local.unavailable_reason())
        rows = self.rows = self._rows(match.layer_pairs, ref_feed, test_feed)
        rows.update(self._output_rows(match.output_pairs, ref_feed, test_feed))
        self._refold(match, ref_probes, ref_feed, test_feed)
        self.findings = collect_findings(self.ref, self.test)  # what converters and diffcore changed
        attach_findings(rows.values(), self.findings)
        if everywhere and not self.local.inline:
            for chunk in self._chunks([p for p in match.layer_pairs if id(p) in rows], "local errors"):
                self._add_local(chunk, rows, ref_feed, test_feed)
        self._quantized(match, rows, ref_feed, test_feed)
        layers = [rows[id(p)] for p in match.layer_pairs if id(p) in rows]
        outputs = [rows[id(p)] for p in match.output_pairs if id(p) in rows]
        rule = DivergenceRule()
        loc = localize(layers, outputs, rule=rule, explicit_tolerance=self.opt["atol"] is not None)
        if not everywhere and loc.first_divergence is not None and not self.local.unavailable_reason():
            loc = self._local_around(match, layers, outputs, loc, ref_feed, test_feed, rule)
        if loc.first_divergence is not None and not loc.failed_outputs:
            fused = self._fused_predicate()
            loc = set_aside_fused(layers, loc, fused) if fused is not None else loc
        self.local.explain_missing(layers, outputs)
        self._diagnose(match, layers + outputs, ref_feed, test_feed)
        return self._report(layers, outputs, loc, rule)

    def _quantized(self, match, rows, ref_feed, test_feed) -> None:
        """Rows of a quantized test graph's layers (or torch.ao quantized modules) get their precision and the
        error their scales predict, which the divergence rule judges them by (diffcore/quant)."""
        if quant.is_torch_quantized(self.test):
            self.warnings += self._timed("quantization", quant.annotate_torch_rows, match.layer_pairs, rows,
                                         self.test, test_feed)
            return
        if not quant.is_quantized(self.test):
            return
        pairs = match.layer_pairs + match.output_pairs
        self.warnings += self._timed("quantization", quant.annotate_rows, pairs, rows, self.ref, self.test,
                                     ref_feed, self.local.test_to_ref)

    def _diagnose(self, match, rows, ref_feed, test_feed) -> None:
        """Range notes and weight findings (ranges.py), and error amplification (amplification.py)."""
        ranges.annotate(rows)
        weights = ranges.weight_findings(self.ref, self.test)
        ranges.attach_weights(rows, weights)
        self.findings += weights
        self.warnings += self._timed("amplification", amplification.apply, match.layer_pairs, self.rows,
                                     self.ref, self.test, ref_feed, test_feed, call_key,
                                     lambda ps: plan_chunks(ps, self.opt["memory_budget_mb"] << 20),
                                     input_errors=self.input_errors)

    def _output_rows(self, pairs, ref_feed, test_feed) -> dict:
        """Model outputs compared on each side's uninstrumented run: the model as deployed decides."""
        if not pairs:
            return {}
        ref_vals = self._timed("capture", self.ref.outputs, ref_feed)
        test_vals = self._timed("capture", self.test.outputs, test_feed)
        for runner, feed, plain in ((self.ref, ref_feed, ref_vals), (self.test, test_feed, test_vals)):
            if hasattr(runner, "check_hooks"):
                hooked = self.hooked.get(id(runner))  # a hooked pass already run gives its outputs
                self._timed("capture", runner.check_hooks, feed, plain, *([hooked] if hooked else []))
        ref_by_key = {p.ref.key: _output_value(ref_vals, p.ref) for p in pairs}
        test_by_key = {p.test.key: _output_value(test_vals, p.test) for p in pairs}
        return self._pair_rows(pairs, ref_by_key, test_by_key)

    def _fused_predicate(self):
        """``row -> bool``: the row's test value is one the deployed test graph fuses away (ONNX only)."""
        if not hasattr(self.test, "fused_away"):
            return None
        fused = self._timed("match", self.test.fused_away)
        return (lambda row: row.test_tensor in fused) if fused else None

    def _chunks(self, pairs, phase: str = "capture"):
        chunks = plan_chunks(pairs, self.opt["memory_budget_mb"] << 20)
        return self.opt["progress"].iterate(chunks, phase, unit="chunk")

    def _rows(self, pairs, ref_feed, test_feed) -> dict:
        """Statistics (and, where they can be computed from the same captures, local errors) of every
        pair, capturing chunk by chunk so memory stays within the budget."""
        if streams(self.ref, self.test):  # torch vs torch: one forward per side (torch_pass.py)
            return torch_rows(self, pairs, ref_feed, test_feed)
        rows = {}
        for chunk in self._chunks(pairs):
            rows.update(self._chunk_rows(chunk, ref_feed, test_feed, rows))
        return rows

    def _refold(self, match, ref_probes, ref_feed, test_feed) -> None:
        """Exporters fold modules into a neighbour (a BatchNorm into the Conv before it): the value leaving
        the Conv's scope is then the BatchNorm's output. Where a module-scope pair is past the 5 % band,
        try the unmatched torch modules right after it and keep one whose output the ONNX value equals."""
        unmatched = {u.key: u for u in self.unmatched if u.side == "ref"}
        for pair in match.layer_pairs:
            row = self.rows.get(id(pair))
            if row is None or pair.method != "module-scope" or not row.rel_l2 > DivergenceRule.fail_rel_l2:
                continue
            followers = [p for p in ref_probes if p.key in unmatched and 0 < p.order - pair.ref.order <= 3
                         and p.shape == pair.ref.shape]
            best = self._best_follower(pair, followers, ref_feed, test_feed)
            if best is not None and best[1].rel_l2 < row.rel_l2 * 1e-3:
                self._refold_pair(pair, best, unmatched)

    def _best_follower(self, pair, followers, ref_feed, test_feed):
        if not followers:
            return None
        ref_vals = self.ref.capture(ref_feed, {p.key for p in followers})
        test_val = self.test.capture(test_feed, {pair.test.key})[pair.test.key]
        stats = drift_many([(ref_vals[p.key], _same_layout(ref_vals[p.key], test_val)) for p in followers],
                           **self._drift_options())
        return min(zip(followers, stats), key=lambda item: item[1].rel_l2)

    def _refold_pair(self, pair, best, unmatched) -> None:
        folded, (follower, stats) = pair.ref, best
        self.unmatched.remove(unmatched[follower.key])
        self.unmatched.append(Unmatched("ref", folded.key, f"folded by the exporter into {follower.key!r}, "
                                        "whose output leaves the ONNX scope instead", folded.module or ""))
        pair.ref, pair.name = follower, follower.key
        pair.notes.append(f"the exporter folded {folded.key!r} into this module: compared at the boundary "
                          "that survives")
        self.rows[id(pair)] = self._row(pair, stats)

    def _chunk_rows(self, chunk, ref_feed, test_feed, rows) -> dict:
        extra = self.local.needed_ref_keys(chunk) if self.local.inline else set()
        ref_vals = self._timed("capture", self.ref.capture, ref_feed, {p.ref.key for p in chunk} | extra)
        test_vals = self._timed("capture", self.test.capture, test_feed, {p.test.key for p in chunk})
        chunk_rows = self._pair_rows(chunk, ref_vals, test_vals)
        del test_vals  # local errors need the reference's values only: hold one side less
        if self.local.inline:
            rows.update(chunk_rows)
            self._add_local([p for p in chunk if id(p) in chunk_rows], rows, ref_feed, test_feed, ref_vals)
        return chunk_rows

    def _pair_rows(self, pairs, ref_vals, test_vals) -> dict:
        """{id(pair): LayerRow} of the pairs whose values both runs produced with one element count: float
        pairs with drift statistics in one pass, integer/bool pairs exactly."""
        kept, tensors, rows = [], [], {}
        for pair in pairs:
            r, t = ref_vals.get(pair.ref.key), test_vals.get(pair.test.key)
            if r is None or t is None:
                side, key = ("ref", pair.ref.key) if r is None else ("test", pair.test.key)
                self.unmatched.append(Unmatched(side, key, "not produced in this run", pair.name))
                continue
            if math.prod(r.shape) != math.prod(t.shape):
                self.unmatched.append(Unmatched("ref", pair.ref.key, f"shape differs at run time: ref "
                                                f"{tuple(r.shape)} vs test {tuple(t.shape)}", pair.name))
                continue
            if _is_exact_pair(r, t):
                stats = self._timed("statistics", exact_compare, r, t)
                rows[id(pair)] = self._row(pair, stats, LayerRow.from_exact)
                continue
            kept.append(pair)
            tensors.append((r, _same_layout(r, t, pair.layout)))
        states = [] if self.opt.get("keep_states") else None
        stats = self._timed("statistics", drift_many, tensors, **self._drift_options(), states=states)
        rows.update((id(p), self._row(p, s)) for p, s in zip(kept, stats))
        for pair, state, stat in zip(kept, states or (), stats):
            rows[id(pair)].merge_state = (state, stat)  # not a field, never serialized (dataset/merge.py)
        return rows

    def _drift_options(self) -> dict:
        return {"atol": self.opt["atol"], "rtol": self.opt["rtol"], "backend": self.opt["backend"]}

    def _row(self, pair, stats, make=LayerRow.from_stats) -> LayerRow:
        row = make(stats, index=pair.ref.order, name=pair.name, ref_tensor=pair.ref.key,
                                  test_tensor=pair.test.key, op_type=pair.test.op_type or pair.ref.op_type,
                                  match=pair.method, notes=pair.notes)
        # the module the tensor leaves, else (an ONNX value inside a module's scope) the module it lives in
        candidates = (pair.ref.module, pair.test.module, pair.ref.meta.get("in_module"),
                      pair.test.meta.get("in_module"))
        row.module = next((m for m in candidates if m), None)
        return row

    def _add_local(self, pairs, rows, ref_feed, test_feed, ref_values=None) -> None:
        pairs = [p for p in pairs if id(p) not in rows or not rows[id(p)].exact]  # exact rows need none
        overflowing = {p.test.key for p in self.match_pairs if id(p) in rows and rows[id(p)].overflow_risk}
        local = self._timed("local", self.local.compute, pairs, ref_feed, test_feed, ref_values, overflowing)
        for pair in pairs:
            if id(pair) in self.local.skipped and id(pair) in rows:
                rows[id(pair)].notes.append(self.local.skipped[id(pair)])
        if not local:
            return
        items = [(k, r, _same_layout(r, t)) for k, (r, t) in local.items()
                 if math.prod(r.shape) == math.prod(t.shape)]
        stats = self._timed("statistics", drift_many, [(r, t) for _, r, t in items], **self._drift_options())
        for (key, _, _), s in zip(items, stats):
            rows[key].set_local(s)

    def _local_around(self, match, layers, outputs, loc, ref_feed, test_feed, rule):  # noqa: PLR0913
        """Local errors for the first divergence and its neighbours, then localize again."""
        pair_of = {id(self.rows[id(p)]): p for p in match.layer_pairs if id(p) in self.rows}
        index = layers.index(loc.first_divergence)
        around = [pair_of[id(r)] for r in layers[max(0, index - 3): index + 3]]
        self._add_local(around, self.rows, ref_feed, test_feed)
        self.warnings.append("local errors (torch vs ONNX) were computed around the first divergence only")
        return localize(layers, outputs, rule=rule, explicit_tolerance=self.opt["atol"] is not None)

    def _report(self, layers, outputs, loc, rule) -> DiffReport:
        self.warnings += getattr(self.ref, "warnings", []) + getattr(self.test, "warnings", [])
        tolerance = {"atol": self.opt["atol"], "rtol": self.opt["rtol"],
                     "source": "user" if self.opt["atol"] is not None else "default per test dtype",
                     "rule": rule.to_dict()}
        coverage = coverage_of(self.ref_probes, self.test_probes, layers, outputs)
        verdict, reason = decide(loc.failed, outputs, coverage, self.unmatched, self.ref_probes)
        return DiffReport(
            verdict=verdict, reason=reason, coverage=coverage, tolerance=tolerance, layers=layers,
            outputs=outputs,
            first_divergence=loc.first_divergence, unmatched=self.unmatched,
            ref={"kind": self.ref.kind, "description": self.ref.description},
            test={"kind": self.test.kind, "description": self.test.description},
            summary=summarize(layers, outputs, loc, reason=reason, coverage=coverage),
            warnings=list(dict.fromkeys(self.warnings)), findings=self.findings,
            timings={k: round(v, 6) for k, v in self.timings.items()},
            environment=env.collect(import_torch=False),
        )


def compare(ref, test, inputs=None, *, atol=None, rtol=None, ref_dtype=None, test_dtype=None,
            test_autocast=None, device: str = "cpu", providers=None, ref_providers=None,
            test_providers=None, backend: str = "auto",
            local: str = "auto", keep_io_types: bool = True,
            memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
            progress: bool | None = None, workers: int = 1, ray: bool | str | None = None) -> DiffReport:
    """Compare an original model (``ref``) with a converted one (``test``) layer by layer.

    Args:
        ref, test: model specs: a torch.nn.Module, an ONNX model or path, a recorded trace (path or
            Trace), ``file.py:factory`` / ``package.module:factory``, or a Runner (diffcore/spec.py).
        inputs: dict name -> array, an .npz path, or None (a trace's or the model's example inputs, or
            synthesized from static input shapes); or a dataset: any iterable of such dicts (a list, a
            generator, a torch DataLoader yielding dicts), each sample run once, rows merged exactly
            (diffcore/dataset).
        atol, rtol: optional element tolerance (both or neither); with them, outputs must also pass it.
        ref_dtype, test_dtype: run that side in this float dtype (torch: a cast copy; ONNX: float16 through
            onnxconverter-common).
        test_autocast: run a torch test model under torch.autocast in this dtype.
        device: torch device ("cpu" or "cuda"); providers: ONNX Runtime execution providers for both
            sides; ref_providers / test_providers: for one side (the same model on two providers).
        backend: statistics backend (``auto`` follows the data).
        local: "auto", "all" or "none": where to compute local errors (diffcore/local.py).
        memory_budget_mb: MiB of tensors (both sides) captured at once; larger comparisons run in chunks,
            each one run of its part of each model (torch vs torch runs each side once whatever the budget,
            holding the reference's values past it in a temporary file). Peak memory is about 3x this plus
            the models.
        progress: bars over the phases (load, probe, capture, local errors) with tqdm.auto; None shows them
            where a person is watching (stderr a terminal, or a notebook), False never (diffcore/progress.py).
        workers: for a dataset, shard the samples over this many local processes (each opens both models
            once; the models must then be given as specs: paths or ``file.py:factory`` strings). The report is
            the same, bit for bit, as one process's (dataset/workers.py).
        ray: for a dataset, shard the samples over ``workers`` Ray actors instead: True for the running
            (or a new local) Ray instance, or a cluster address (``pip install 'diffcore[ray]'``).

    Returns:
        DiffReport: verdict, per-layer rows, first divergence, outputs, unmatched tensors.

    Raises:
        DiffcoreError: a bad model spec, inputs that do not fit the model, a failing forward pass, ...
    """
    if (atol is None) != (rtol is None):
        raise DiffcoreError("give atol and rtol together, or neither")
    if local not in ("auto", "all", "none"):
        raise DiffcoreError(f"local must be 'auto', 'all' or 'none', got {local!r}")
    if int(workers) < 1:
        raise DiffcoreError(f"workers must be at least 1, got {workers!r}")
    if int(memory_budget_mb) < 1:
        raise DiffcoreError(f"memory_budget_mb must be at least 1, got {memory_budget_mb!r}")
    options = {"atol": atol, "rtol": rtol, "backend": backend, "local": local,
               "memory_budget_mb": int(memory_budget_mb), "progress": as_progress(progress)}
    opening = {"ref_dtype": ref_dtype, "test_dtype": test_dtype, "test_autocast": test_autocast, "device": device,
               "ref_providers": ref_providers or providers, "test_providers": test_providers or providers,
               "keep_io_types": keep_io_types}
    plain = {k: v for k, v in options.items() if k != "progress"}
    if is_dataset(inputs) and ray is not None:  # shards of samples on Ray actors (dataset/ray_backend.py)
        from .dataset.ray_backend import run_on_ray

        return run_on_ray(ref, test, inputs, opening, plain, int(workers), options["progress"],
                          None if ray is True else ray)
    if is_dataset(inputs) and int(workers) > 1:  # shards of samples in worker processes (dataset/workers.py)
        from .dataset.workers import run_sharded

        return run_sharded(ref, test, inputs, opening, plain, int(workers), options["progress"])
    with _opened(ref, test, options["progress"], opening) as (ref_runner, test_runner):
        if is_dataset(inputs):  # every sample runs both models once; rows merge exactly (diffcore/dataset)
            per_sample = {**options, "keep_states": True, "progress": as_progress(False)}
            return run_dataset(lambda: _Comparison(ref_runner, test_runner, per_sample), inputs,
                               options["progress"], _input_names(ref_runner, test_runner))
        return _Comparison(ref_runner, test_runner, options).run(inputs)


def _input_names(*runners) -> set:
    return {s.name for r in runners for s in (r.input_specs() or ())}


@contextmanager
def _opened(ref, test, progress, opening):
    """Both runners (closing the ones opened here: a Runner passed in stays the caller's to close)."""
    opened = []
    try:
        with progress.phase("load", total=2, unit="model") as bar:
            ref_runner = open_runner(ref, role="ref", dtype=opening["ref_dtype"], device=opening["device"],
                                     providers=opening["ref_providers"], keep_io_types=opening["keep_io_types"])
            opened += [ref_runner] if ref_runner is not ref else []
            bar.update()
            test_runner = open_runner(test, role="test", dtype=opening["test_dtype"],
                                      autocast=opening["test_autocast"], device=opening["device"],
                                      providers=opening["test_providers"], keep_io_types=opening["keep_io_types"])
            opened += [test_runner] if test_runner is not test else []
            bar.update()
        yield ref_runner, test_runner
    finally:
        for runner in opened:
            runner.close()


def sample_reports(ref, test, indexed_samples, opening: dict, options: dict) -> list:
    """[(index, per-sample report with merge states)] of ``indexed_samples`` [(index, sample)], on runners
    opened once: what one dataset worker returns (dataset/workers.py)."""
    with _opened(ref, test, as_progress(False), opening) as (ref_runner, test_runner):
        return reports_on(ref_runner, test_runner, indexed_samples, options)


def reports_on(ref_runner, test_runner, indexed_samples, options: dict) -> list:
    """``sample_reports`` on runners already open (a Ray actor keeps its runners across shards)."""
    from .texts import fitted
    from .dataset.sources import materialize

    per_sample = {**options, "keep_states": True, "progress": as_progress(False)}
    names = _input_names(ref_runner, test_runner)
    out = []
    for index, sample in indexed_samples:
        try:
            report = _Comparison(ref_runner, test_runner, per_sample).run(fitted(materialize(sample), names))
        except DiffcoreError as exc:
            raise DiffcoreError(f"sample {index}: {exc}") from exc
        out.append((index, report))
    return out


def open_pair(ref, test, opening: dict):
    """Both runners for a long-lived worker (a Ray actor): (context, ref runner, test runner); close with
    ``context.__exit__(None, None, None)``."""
    context = _opened(ref, test, as_progress(False), opening)
    ref_runner, test_runner = context.__enter__()
    return context, ref_runner, test_runner

