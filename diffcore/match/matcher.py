"""Matching the tensors of two sides: which reference tensor each test tensor should be compared with.

Every pair records how it was matched (``method``); every tensor left without a counterpart is listed with
the reason, never dropped silently. Strategies, in order:

1. ``output``: model outputs by name (the same output name on both sides, a torch dict's ``output.<key>``
   named ``<key>``; Hugging Face's ``last_hidden_state`` is optimum's ``token_embeddings``), then by
   position, except between two Hugging Face names that are different tensors (``pooler_output`` is never
   a ``sentence_embedding``).
2. ``name``: the same key on both sides (torch vs torch module paths; ONNX vs ONNX value names).
3. ``module-scope``: torch module paths vs ONNX values leaving that module's scope (both exporters leave
   module paths: TorchScript in node names, dynamo in ``pkg.torch.onnx.name_scopes``).
4. ``node``: ONNX values produced by the same-named node at the same output slot (a converter that renames
   a value, e.g. the pre-Cast output of a keep_io_types float16 model).
5. ``module-scope`` between two ONNX graphs: values still unpaired that leave the same torch module's
   scope, e.g. a LayerNorm exported decomposed on one side and as one fused op on the other: the values
   inside the fused region have no counterpart (listed), the boundary that survives is compared.

Graphs rewritten by ONNX Runtime (its transformer optimizer, or a session's saved ``ORT_ENABLE_ALL``
graph) are matched at the boundaries that survive fusion, many-to-one: a fused node's output keeps the value
name (and so the module scope) of the last node it replaced, so SkipLayerNormalization pairs with the
LayerNorm module (or the unfused LayerNormalization value), Attention with the attention module, BiasGelu
with the GELU; such pairs carry a note. A Linear whose bias moved into a fused neighbour is never paired
with the bias-less MatMul left behind: no value equals its output, and the reason is listed.

Shapes are reconciled: equal, equal once size-1 dimensions are dropped, or the same element count
(compared flattened, with a note). The ONNX runner takes shapes static inference could not give from a
probe run; a dimension still unknown (None) is accepted against a known one when every known dimension
agrees (with a note). Anything else is reported unmatched with both shapes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..capture.base import Probe
from ..report.model import Unmatched
from .scope_alias import dropped_wrapper_aliases
from .tf_names import helper_ops, layout_note, layout_transpose, tf_layers, tf_op_name


@dataclass
class Pair:
    """A reference tensor and the test tensor it is compared with."""

    ref: Probe
    test: Probe
    name: str          # display name: the torch module path where known, else the ONNX value name
    method: str        # output | name | module-scope | node
    notes: list = field(default_factory=list)
    layout: tuple | None = None  # axes transposing the test tensor into the reference's layout (NCHW/NHWC)

    @property
    def is_output(self) -> bool:
        return self.ref.is_output and self.test.is_output and self.method == "output"


@dataclass
class MatchResult:
    pairs: list        # Pair, in the reference's execution order (outputs last)
    unmatched: list    # Unmatched
    # test key -> ref key for test-only values that are a matched tensor across an inserted Cast: not
    # compared (they are listed as unmatched), but re-run local errors feed them the reference's value.
    aliases: dict = field(default_factory=dict)
    # torch module path -> the ONNX scope of that module where the exporter dropped a wrapper level
    # (scope_alias.py); local errors run that scope for that module
    scope_aliases: dict = field(default_factory=dict)

    def scope_of(self, call: str) -> str:
        """The ONNX scope of a torch module call (``path`` or ``path#k``)."""
        path, sep, index = call.partition("#")
        return self.scope_aliases.get(path, path) + sep + index

    @property
    def layer_pairs(self) -> list:
        return [p for p in self.pairs if not p.is_output]

    @property
    def output_pairs(self) -> list:
        return [p for p in self.pairs if p.is_output]


def is_graph_probe(probe: Probe) -> bool:
    """True for ONNX-like probes (values produced by graph nodes), False for torch module outputs."""
    return bool(probe.meta.get("graph")) or probe.node is not None


def _has_unknown_dim(shape) -> bool:
    return shape is not None and any(d is None for d in shape)


def _numel(shape) -> int | None:
    return None if shape is None or any(d is None for d in shape) else math.prod(shape)


def reconcile_shapes(ref_shape, test_shape) -> tuple[bool, str]:
    """Whether two shapes can be compared element by element, and the note saying how."""
    if ref_shape is None or test_shape is None or tuple(ref_shape) == tuple(test_shape):
        return True, ""
    squeeze = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
    if squeeze(ref_shape) == squeeze(test_shape):
        return True, f"size-1 dims differ: ref {tuple(ref_shape)} vs test {tuple(test_shape)}"
    n_ref, n_test = _numel(ref_shape), _numel(test_shape)
    if n_ref is not None and n_ref == n_test:
        return True, f"compared flattened: ref {tuple(ref_shape)} vs test {tuple(test_shape)}"
    if _agree_where_known(ref_shape, test_shape):
        return True, f"sizes unknown before running: ref {tuple(ref_shape)} vs test {tuple(test_shape)}"
    return False, f"shape differs: ref {tuple(ref_shape)} vs test {tuple(test_shape)}"


def _agree_where_known(ref_shape, test_shape) -> bool:
    """Same rank, some dimension unknown (None), and every dimension known on both sides equal."""
    if len(ref_shape) != len(test_shape) or (_numel(ref_shape) is not None and _numel(test_shape) is not None):
        return False
    return all(a is None or b is None or a == b for a, b in zip(ref_shape, test_shape))


def fused_note(ref: Probe, test: Probe) -> str:
    """The note of a pair where one side is a node a graph rewriter fused, else ''."""
    fused = [(side, p) for side, p in (("ref", ref), ("test", test)) if p.meta.get("fused")]
    if not fused:
        return ""
    side, probe = fused[0]
    other = test if side == "ref" else ref
    if other.meta.get("fused") and other.op_type == probe.op_type:
        return ""
    return (f"matched at a fused boundary: {side} {probe.meta['fused']} computes in one node what "
            f"{other.op_type or 'the other side'} ends; the values inside the fused region have no counterpart")


def _display_name(ref: Probe, test: Probe) -> str:
    """The torch key (module path, with #k / .i suffixes) where a side is torch, else the ONNX value name."""
    for probe in (ref, test):
        if not is_graph_probe(probe):
            return probe.key
    return ref.key


def _fits(probe: Probe, other: Probe) -> bool:
    """Comparable shapes, or a TensorFlow value in the other layout (NCHW vs NHWC)."""
    return reconcile_shapes(probe.shape, other.shape)[0] or \
        bool(_tf_named(probe, other) and layout_transpose(probe.shape, other.shape))


def _tf_named(ref: Probe, test: Probe) -> bool:
    """A pair where one side is a TensorFlow-converted graph value (the only sides that change layout)."""
    return any(is_graph_probe(p) and tf_layers(p.node or p.key) for p in (ref, test))


# Hugging Face output names: the same tensor under another name (optimum names a sentence-transformers
# pipeline's transformer output token_embeddings), and the names of distinct tensors, which never pair by
# position (a BertModel's pooler_output and a pipeline's mean-pooled sentence_embedding share a shape).
SAME_OUTPUT = {"last_hidden_state": "token_embeddings", "token_embeddings": "last_hidden_state"}
NAMED_OUTPUTS = frozenset({"last_hidden_state", "token_embeddings", "pooler_output", "sentence_embedding"})


def output_name(probe: Probe) -> str:
    """A model output's name: an ONNX output's value name, a torch dict output's key (``output.<key>``)."""
    return probe.key[len("output."):] if not is_graph_probe(probe) and probe.key.startswith("output.") else probe.key


def _same_output(ref: Probe, test: Probe) -> bool:
    a, b = output_name(ref), output_name(test)
    return a == b or SAME_OUTPUT.get(a) == b


def _distinct_outputs(ref: Probe, test: Probe) -> bool:
    a, b = output_name(ref), output_name(test)
    return a in NAMED_OUTPUTS and b in NAMED_OUTPUTS and not _same_output(ref, test)


class _Matcher:
    def __init__(self, ref_probes, test_probes):
        self.ref = list(ref_probes)
        self.test = list(test_probes)
        self.test_keys = {p.key for p in self.test}
        self.by_key = {"ref": {p.key: p for p in self.ref}, "test": {p.key: p for p in self.test}}
        self.cast_targets = {}  # test key -> the test keys of Casts reading it
        for probe in self.test:
            if probe.meta.get("cast_of") is not None:
                self.cast_targets.setdefault(probe.meta["cast_of"], []).append(probe.key)
        self.pairs: list[Pair] = []
        self.unmatched: list[Unmatched] = []
        self.paired_ref: set[str] = set()
        self.paired_test: set[str] = set()
        self.reasons: dict = {}  # (side, key) -> why it is left unmatched, where a strategy knows better
        self.output_why: dict = {}  # output key -> why it did not pair with the other side's output
        self.scope_aliases: dict = {}  # torch module path -> its ONNX scope, where a wrapper level was dropped

    def add(self, ref: Probe, test: Probe, method: str, name: str | None = None) -> bool:
        ok, note = reconcile_shapes(ref.shape, test.shape)
        axes = layout_transpose(ref.shape, test.shape) if _tf_named(ref, test) else None
        if not (ok or axes):
            return False
        note = layout_note(axes) if axes else note
        notes = [n for n in (note, fused_note(ref, test)) if n]
        self.pairs.append(Pair(ref, test, name or _display_name(ref, test), method, notes, axes))
        self.paired_ref.add(ref.key)
        self.paired_test.add(test.key)
        return True

    def outputs(self):
        """Model outputs: the same name on both sides first, then the rest by position (output index)."""
        refs = sorted((p for p in self.ref if p.is_output), key=lambda p: p.output_index)
        tests = sorted((p for p in self.test if p.is_output), key=lambda p: p.output_index)
        test_by_key = {p.key: p for p in tests}
        for ref in refs:
            if ref.key in test_by_key:
                self._add_output(ref, test_by_key[ref.key])
        for ref in (p for p in refs if p.key not in self.paired_ref):
            test = next((p for p in tests if p.key not in self.paired_test and _same_output(ref, p)), None)
            if test is not None:
                self._add_output(ref, test)
        left_test = [p for p in tests if p.key not in self.paired_test]
        for ref in (p for p in refs if p.key not in self.paired_ref):
            open_test = [p for p in left_test if not _distinct_outputs(ref, p)]
            test = next((p for p in open_test if p.output_index == ref.output_index), None) or \
                next(iter(open_test), None)
            if test is not None and self._add_output(ref, test):
                left_test.remove(test)
            elif test is not None:  # say why the model outputs did not pair: no output goes unexplained
                note = reconcile_shapes(ref.shape, test.shape)[1]
                self.output_why[ref.key] = f"model output; does not pair with test output {test.key!r}: {note}"
                self.output_why.setdefault(test.key, f"model output; does not pair with reference output "
                                                     f"{ref.key!r}: {note}")
        self._distinct_why(refs, tests)

    def _distinct_why(self, refs, tests) -> None:
        """Why model outputs left over did not pair: the other side's are differently named tensors."""
        for side, mine, other in (("reference", refs, tests), ("test", tests, refs)):
            paired = self.paired_ref if side == "reference" else self.paired_test
            names = [output_name(p) for p in other]
            for probe in (p for p in mine if p.key not in paired and p.key not in self.output_why):
                if output_name(probe) in NAMED_OUTPUTS:
                    self.output_why[probe.key] = (f"model output {output_name(probe)!r}; the other side's outputs "
                                                  f"({', '.join(names)}) are other tensors")

    def _add_output(self, ref: Probe, test: Probe) -> bool:
        label = ref.key if is_graph_probe(ref) else (test.key if is_graph_probe(test) else ref.key)
        if self.add(ref, test, "output", name=label):
            return True
        if _has_unknown_dim(ref.shape) or _has_unknown_dim(test.shape):
            # static inference left a dimension open: the run-time shapes decide (comparison.py checks them)
            self.pairs.append(Pair(ref, test, label, "output", ["shapes checked at run time"]))
            self.paired_ref.add(ref.key)
            self.paired_test.add(test.key)
            return True
        return False

    def by_name(self):
        test_by_key = {p.key: p for p in self.test}
        for ref in self.ref:
            test = test_by_key.get(ref.key)
            # torch "output" probes repeat the last module's output: they are output rows only. ONNX outputs
            # are also the last values of the graph, so they stay among the layers too.
            torch_output = ref.is_output and not is_graph_probe(ref)
            if test is not None and not torch_output and is_graph_probe(ref) == is_graph_probe(test):
                self.add(ref, test, "name")

    def by_tf_op_name(self):
        """Two TensorFlow conversions (TFLite and tf2onnx of one model): values of the same TensorFlow op,
        which both converters keep in their tensor names, NHWC/NCHW layouts reconciled."""
        expanded = helper_ops(self.ref) | helper_ops(self.test)
        tests = {}
        for probe in self.test:
            name = tf_op_name(probe) if is_graph_probe(probe) and probe.key not in self.paired_test else None
            if name is not None:
                tests.setdefault(name, probe)
        for ref in self.ref:
            name = tf_op_name(ref) if is_graph_probe(ref) and ref.key not in self.paired_ref else None
            test = tests.get(name) if name is not None and name not in expanded else None
            if test is not None and test.key not in self.paired_test and not (ref.is_output or test.is_output):
                self.add(ref, test, "name", name=name)

    def by_module_scope(self):
        """torch module outputs vs ONNX values leaving that module's scope, pairing repeated calls in order."""
        torch_side, graph_side, torch_is_ref = self._split_kinds()
        if torch_side is None:
            return
        exits = {}
        for value in graph_side:
            for module in value.meta.get("modules") or ([value.module] if value.module else []) \
                    or tf_layers(value.node):
                exits.setdefault(module, []).append(value)
        side = "ref" if torch_is_ref else "test"
        groups = self._torch_by_module(torch_side)
        self.scope_aliases = dropped_wrapper_aliases(groups, exits)
        for module, probes in groups.items():
            scope = self.scope_aliases.get(module, module)
            candidates = sorted(exits.get(scope, []), key=lambda v: v.order)
            candidates = self._without_folded_bias(side, scope, probes, candidates)
            for probe, value in zip(probes, self._pick(probes, candidates)):
                if value is not None:
                    ref, test = (probe, value) if torch_is_ref else (value, probe)
                    self.add(ref, test, "module-scope", name=probe.key)

    def _without_folded_bias(self, side: str, module: str, probes: list, candidates: list) -> list:
        """Drop bare MatMul values whose bias a fused node adds, unless ``module`` is their innermost scope
        and adds no bias: they are not the output of a module with a bias (no value is; the reason is kept
        for the unmatched list), nor of an outer module ending with that Linear."""
        folded = [c for c in candidates if c.meta.get("bias_folded_into")]
        if not folded:
            return candidates
        biased = any(p.meta.get("has_bias") for p in probes)
        for probe in probes:
            if probe.meta.get("has_bias"):
                self.reasons[side, probe.key] = (f"its bias was folded into {folded[-1].meta['bias_folded_into']}: "
                                                 "no value equals this module's output")
        return [c for c in candidates if c not in folded or (not biased and c.module == module)]

    def _split_kinds(self):
        ref_graph = any(is_graph_probe(p) for p in self.ref)
        test_graph = any(is_graph_probe(p) for p in self.test)
        if ref_graph == test_graph:
            return None, None, None
        return (self.ref, self.test, True) if test_graph else (self.test, self.ref, False)

    @staticmethod
    def _torch_by_module(torch_side):
        groups = {}
        for probe in torch_side:
            if probe.is_output or probe.module is None:
                continue
            groups.setdefault(probe.module, []).append(probe)
        return groups

    @staticmethod
    def _pick(probes, candidates):
        """Candidate value for each torch probe of one module: by shape, in execution order."""
        chosen, used = [], set()
        for probe in probes:
            fits = [c for c in candidates if c.key not in used and _fits(probe, c)]
            # Several values may leave the scope (e.g. a value reused outside); the module's output is the last.
            pick = fits[-1] if len(probes) == 1 and fits else (fits[0] if fits else None)
            if pick is not None:
                used.add(pick.key)
            chosen.append(pick)
        return chosen

    def by_node(self):
        test_by_slot = {(p.node, p.meta.get("slot", 0)): p for p in self.test
                        if p.node and p.key not in self.paired_test}
        for ref in self.ref:
            if ref.key in self.paired_ref or not ref.node:
                continue
            test = test_by_slot.get((ref.node, ref.meta.get("slot", 0)))
            if test is not None and test.meta.get("cast_of") is None:
                self.add(ref, test, "node")

    def cast_aliases(self) -> dict:
        """Test-only values on either side of an inserted Cast whose other side is matched."""
        ref_of = {p.test.key: p.ref.key for p in self.pairs}
        aliases = {}
        for probe in self.test:
            source = probe.meta.get("cast_of")
            if source is None or probe.key in ref_of and source in ref_of:
                continue
            if source in ref_of:                  # Cast(matched) -> this
                aliases[probe.key] = ref_of[source]
            elif probe.key in ref_of and source in self.test_keys:  # this = Cast(unmatched source)
                aliases[source] = ref_of[probe.key]
        return aliases

    def by_graph_scope(self):
        """ONNX vs ONNX: unpaired values leaving the same module scope, in execution order; then values
        still unpaired that are the only ones on each side leaving some outer scope (a fused node whose
        scope is its module, e.g. EmbedLayerNormalization for the LayerNorm ending ``embeddings``)."""
        if not (any(is_graph_probe(p) for p in self.ref) and any(is_graph_probe(p) for p in self.test)):
            return
        ref_exits, test_exits = self._graph_exits(self.ref, self.paired_ref, False), \
            self._graph_exits(self.test, self.paired_test, False)
        for module, refs in ref_exits.items():
            for ref, test in zip(refs, self._pick(refs, test_exits.get(module, []))):
                if test is not None:
                    self.add(ref, test, "module-scope", name=ref.key)
        ref_exits, test_exits = self._graph_exits(self.ref, self.paired_ref, True), \
            self._graph_exits(self.test, self.paired_test, True)
        for module, refs in ref_exits.items():
            tests = test_exits.get(module, [])
            if len(refs) == 1 and len(tests) == 1 and not ({refs[0].key} & self.paired_ref
                                                           or {tests[0].key} & self.paired_test):
                self.add(refs[0], tests[0], "module-scope", name=refs[0].key)

    @staticmethod
    def _graph_exits(probes, paired, every_scope: bool) -> dict:
        """{module: unpaired graph values leaving it} by innermost module, or by every module left."""
        exits: dict = {}
        for probe in probes:
            if is_graph_probe(probe) and probe.module and probe.key not in paired:
                for module in (probe.meta.get("modules") or [probe.module]) if every_scope else [probe.module]:
                    exits.setdefault(module, []).append(probe)
        return exits

    def leftovers(self):
        for side, probes, paired in (("ref", self.ref, self.paired_ref), ("test", self.test, self.paired_test)):
            for probe in probes:
                if probe.key not in paired:
                    self.unmatched.append(Unmatched(side, probe.key, self._why(side, probe),
                                                    probe.module or ""))

    def _why(self, side: str, probe: Probe) -> str:
        if (side, probe.key) in self.reasons:
            return self.reasons[side, probe.key]
        if probe.is_output and probe.key in self.output_why:
            return self.output_why[probe.key]
        cast_of = probe.meta.get("cast_of")
        if cast_of is not None and side == "test":
            return f"inserted Cast of {cast_of!r} (the same tensor in another dtype)"
        cast_to = next((k for k in self.cast_targets.get(probe.key, ()) if k in self.paired_test), None) \
            if side == "test" else None
        if cast_to is not None:
            return f"input of the inserted Cast to {cast_to!r} (compared as {cast_to!r})"
        other = self.test if side == "ref" else self.ref
        twin = self.by_key["test" if side == "ref" else "ref"].get(probe.key)
        if twin is not None:
            return reconcile_shapes(*((probe.shape, twin.shape) if side == "ref" else (twin.shape, probe.shape)))[1]
        if is_graph_probe(probe) and not any(is_graph_probe(p) for p in other):
            return "internal ONNX value: no module output leaves the graph here"
        if not is_graph_probe(probe) and any(is_graph_probe(p) for p in other):
            return "no ONNX value leaves this module's scope (folded or removed by the exporter)"
        return f"no counterpart on the {'test' if side == 'ref' else 'reference'} side (removed, renamed or fused)"

    def run(self) -> MatchResult:
        self.outputs()
        self.by_name()
        self.by_tf_op_name()
        self.by_module_scope()
        self.by_node()
        self.by_graph_scope()
        self.leftovers()
        order = {p.key: p.order for p in self.ref}
        self.pairs.sort(key=lambda pair: (pair.is_output, order[pair.ref.key]))
        return MatchResult(self.pairs, self.unmatched, self.cast_aliases(), self.scope_aliases)


def match_probes(ref_probes, test_probes) -> MatchResult:
    """Pair the probes of two sides (see the module docstring for the strategies)."""
    return _Matcher(ref_probes, test_probes).run()
