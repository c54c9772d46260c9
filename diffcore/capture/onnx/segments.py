"""Capturing ONNX values by segments: runs of just the nodes the requested values need.

A segment's run computes the nodes the requested values need, with those values (and the *cut* values
later nodes will read) as its graph outputs. Segments start from the inputs and from the cut values
earlier segments left, so capturing a graph chunk by chunk costs about one forward pass and memory holds
one chunk. Cut values are released once every reader has run; a segment that runs again a node of the
current sweep starts a new sweep (a later capture of earlier values recomputes them from the inputs).

Exposing an intermediate stops ORT from fusing across it, so the model outputs computed that way are
compared with an uninstrumented run's and any difference is reported in ``warnings``. That check comes
with the segment that nearly reaches the outputs: it also runs the few nodes left (the *tail*), and keeps
the values entering the tail, so that a later chunk whose values lie in the tail starts from them instead
of from the inputs. Mixed into OnnxRunner, whose sessions and graph it uses.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

from .edits import _rename_inputs, _value_info
from .values import _bitwise_equal, _digest, _elem_type, _max_abs_diff


class SegmentRuns:
    """``capture`` by segments (see the module docstring)."""

    def capture(self, inputs: Mapping, keys: Collection[str]) -> dict:
        """Compute ``keys`` (exposed as outputs of the part of the graph they need); return {key: value}.

        Runs are segments: a run computes only the nodes its keys need, starting from the inputs and from
        the values earlier runs on the same inputs left for later nodes (the cut values, held until every
        reader has run). Capturing a graph chunk by chunk therefore costs about one forward pass in all.
        Graph outputs are the uninstrumented run's. When a segment reaches near the end of the graph it
        also computes the model outputs, and any difference from the uninstrumented run (ORT fusions
        disabled by the exposed values) is reported in ``warnings``.

        Raises:
            DiffcoreError: an unknown key, bad inputs, or ONNX Runtime failing (naming the node).
        """
        feed = self.prepare_inputs(inputs)
        keys = self._check_keys(keys)
        inner = [k for k in keys if k not in feed and k not in self.graph.outputs]
        cuts = self._cuts_for(feed)
        held = {**self._tail, **cuts}
        values = {k: held[k] for k in inner if k in held}
        todo = [k for k in inner if k not in values]
        if todo:
            values.update(self._run_segment(feed, cuts, todo))
        plain = self._plain_outputs(feed) if len(values) < len(keys) else {}
        return {k: feed[k] if k in feed else values[k] if k in values else plain[k] for k in keys}

    def _cuts_for(self, feed: Mapping) -> dict:
        """The cut values held for these inputs (emptied when the inputs change)."""
        digest = _digest(feed)
        if digest != self._cuts_digest:
            self._reset_cuts(digest)
        return self._cuts

    def _reset_cuts(self, digest: str | None = None) -> None:
        self._cuts: dict = {}  # values earlier segments computed that later nodes read (for _cuts_digest)
        self._executed: set = set()  # nodes run in a segment of the current sweep for those inputs
        self._tail: dict = {}  # values entering the tail the last instrumentation check ran
        self._tail_nodes: set = set()  # that tail's nodes
        self._cuts_digest = digest

    def _run_segment(self, feed: Mapping, cuts: dict, todo: list) -> dict:
        """Run the nodes ``todo`` needs from ``feed`` and ``cuts``; keep the new cut values in ``cuts``."""
        graph = self.graph
        ids = graph.needed_nodes(todo, set(feed) | set(cuts) | set(self._tail))
        # a dequantized value must leave the run without a reader in it (see _before_dequantize)
        tail = None if any(_dequantized(graph, k) for k in todo) else self._check_tail(feed, cuts, ids)
        run_ids = sorted(set(ids) | set(tail or ()))
        new_cuts = [v for v in graph.cut_values(run_ids) if v not in cuts and not _inside_qdq_unit(graph, v)]
        entering = [v for v in graph.segment_entries(tail or ()) if v not in feed]
        computed = [v for v in entering if v not in cuts and v not in self._tail]
        names = list(dict.fromkeys(todo + (graph.outputs if tail is not None else []) + new_cuts + computed))
        held = {**self._tail, **cuts}
        run_feed = {n: feed[n] if n in feed else held[n] for n in graph.segment_entries(run_ids)}
        session = self._session(("segment", tuple(run_ids), tuple(names)),
                                lambda: self._segment_variant(run_ids, run_feed, names))
        values = self._run(session, run_feed, names)
        if self._reruns(ids):
            # A new sweep from the inputs (e.g. the comparison's chunks after a first capture): counting the
            # nodes of the last sweep as run would release every cut at once and make each later chunk
            # recompute the graph from the inputs (quadratic in depth).
            self._executed = set()
        self._executed.update(run_ids)
        if tail is not None:
            self._tail = {v: values[v] if v in values else held[v] for v in entering}
            self._tail_nodes = set(tail)
        cuts.update((v, values[v]) for v in new_cuts)
        self._release_cuts(cuts)
        if tail is not None:
            self._check_instrumentation(feed, values)
        return {k: values[k] for k in todo}

    def _check_tail(self, feed: Mapping, cuts: Mapping, ids: list) -> list | None:
        """The nodes left between segment ``ids`` and the model outputs when they are few enough for this
        segment to run them too and check the outputs (the check comes with the segment that nearly reaches
        the outputs anyway); None when they are not."""
        graph = self.graph
        made = set(feed) | set(cuts) | set(self._tail) | {out for i in ids for out in graph.nodes[i].output}
        to_outputs = set(graph.needed_nodes(graph.outputs, made)) - set(ids)
        return sorted(to_outputs) if len(to_outputs) <= len(ids) // 4 + 8 else None

    def _reruns(self, ids: list) -> bool:
        """Whether the segment ``ids`` runs again a node that computes from the inputs (not a Constant) run
        earlier in this sweep (a node of the last check's tail excepted: a chunk may ask for its values)."""
        graph = self.graph
        return any(i in self._executed and i not in self._tail_nodes
                   and any(o not in graph.static for o in graph.nodes[i].output if o) for i in ids)

    def _release_cuts(self, cuts: dict) -> None:
        """Drop cut values every reader of which has run: memory stays at what the rest of the graph needs
        (a later capture of earlier values recomputes them from the inputs)."""
        graph = self.graph
        for name in [n for n in cuts if all(c in self._executed for c in graph.consumers.get(n, ()))]:
            del cuts[name]

    def _segment_variant(self, ids: list, feed: Mapping, outputs: list, casts=(), rename=None):
        """A model of the nodes ``ids`` alone (after the ``casts`` nodes), whose graph inputs are ``feed``'s
        names and whose outputs are ``outputs``; node inputs named in ``rename`` read the new name."""
        graph = self.graph
        variant = self._store.variant()
        for field in ("node", "input", "output", "value_info"):
            variant.graph.ClearField(field)
        variant.graph.input.extend(_value_info(n, _elem_type(v) or graph.type_of(n).elem_type)
                                   for n, v in feed.items())
        variant.graph.node.extend(casts)
        for i in ids:
            node = variant.graph.node.add()
            node.CopyFrom(graph.nodes[i])
            if rename:
                _rename_inputs(node, rename)
        variant.graph.output.extend(_value_info(n, None) for n in outputs)
        return variant

    def _check_instrumentation(self, feed: Mapping, values: Mapping) -> None:
        """Warn when exposing intermediates changed the final outputs (ORT fused differently); one warning
        per runner, keeping the largest change seen over all captures."""
        plain = self._plain_outputs(feed)
        changed = [(_max_abs_diff(values[name], plain[name]), name) for name in plain
                   if not _bitwise_equal(values[name], plain[name])]
        if not changed:
            return
        worst, name = max(changed)
        if self._instrumentation_change is not None and self._instrumentation_change[0] >= worst:
            return
        old = self._instrumentation_message()
        self._instrumentation_change = (worst, name)
        if old in self.warnings:
            self.warnings.remove(old)
        self.warnings.append(self._instrumentation_message())

    def _instrumentation_message(self) -> str:
        if self._instrumentation_change is None:
            return ""
        worst, name = self._instrumentation_change
        return (f"exposing intermediate values of {self.name} as outputs changed its outputs by up to "
                f"{worst:.3g} (max |diff| on {name!r}) against an uninstrumented run: exposed values disable "
                f"ONNX Runtime fusions{self._half_note()}, so captured values come from a slightly different "
                f"computation")

    def _half_note(self) -> str:
        if not any(t.elem_type == 10 for t in self.graph.types.values()):
            return ""
        return (" and are stored in their declared float16 (ORT's CPU provider otherwise keeps some float16 "
                "values in float32 between the ops it runs in float32)")


# ops ONNX Runtime's CPU provider runs as integer kernels when DequantizeLinear feeds them and QuantizeLinear
# reads them (its QDQ selectors); ops it only drops the Q/DQ around (Reshape, MaxPool) compute the same either way
_QDQ_FUSED = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "GlobalAveragePool",
                        "Sigmoid", "LeakyRelu", "Softmax", "Concat", "Resize"})


def _dequantized(graph, name: str) -> bool:
    """Whether ``name`` is a DequantizeLinear output of a computed (not constant) integer value."""
    source = graph.producer.get(name)
    return source is not None and graph.nodes[source].op_type == "DequantizeLinear" and \
        graph.nodes[source].input[0] not in graph.static


def _inside_qdq_unit(graph, name: str) -> bool:
    """Whether ``name`` lies inside a QDQ node group (a DequantizeLinear or QuantizeLinear output, or the
    output of an op reading a DequantizeLinear): no cut is held there. ONNX Runtime fuses DequantizeLinear ->
    Gemm/MatMul/Conv -> QuantizeLinear into its integer kernels only where no value of the group is a graph
    output or input; a later segment walks back to the last value outside such groups instead, and the
    deployed integer kernels compute what it captures."""
    source = graph.producer.get(name)
    if source is None:
        return False
    node = graph.nodes[source]
    if node.op_type in ("DequantizeLinear", "QuantizeLinear"):
        return node.input[0] not in graph.static
    return node.op_type in _QDQ_FUSED and any(_dequantized(graph, n) for n in graph.inputs_of[source])
