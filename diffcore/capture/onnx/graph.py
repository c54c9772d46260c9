"""Pure analysis of an ONNX graph: value types, topological order, torch module scopes, scope boundaries.

Nothing here runs a model. ``GraphIndex`` is built once per model (a weightless skeleton after shape
inference is enough) and answers, in time linear in the graph: which values are worth probing, which torch
module's output each value is, and which values enter and leave a module's scope.

Module scopes come from the exporters:

- TorchScript exporter (``torch.onnx.export(..., dynamo=False)``): node names ``/blocks.0/mlp/mlp.0/MatMul``;
  the levels ``blocks.0``, ``mlp``, ``mlp.0`` join to the paths ``blocks.0``, ``blocks.0.mlp``,
  ``blocks.0.mlp.0``. A repeated call of a module gets a level ``relu_1``; when a sibling level ``relu`` exists
  it is read as the second call of ``relu``.
- dynamo exporter: node metadata ``pkg.torch.onnx.name_scopes`` = ``['', 'blocks.0', 'blocks.0.ln',
  'layer_norm']`` (full module paths; the last entry is the FX node, not a module). Repeated calls share one
  scope; they are told apart as the connected pieces of that scope.

Graph rewriters (ONNX Runtime's transformer optimizer, a session's saved ``ORT_ENABLE_ALL`` graph) give the
nodes they fuse new names (``SkipLayerNorm_AddBias_0``) but keep the TorchScript value names
(``/enc/layer.0/output/LayerNorm/LayerNormalization_output_0``): scopes are read off the value names first,
then off the node name, and a fused node with neither takes the module of its parameters' names
(``enc.embeddings.LayerNorm.weight``). Name parsing lives in scopes.py.

The k-th call (k >= 1) of module ``m`` is keyed ``m#k``, like the torch runner's hook keys.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

from ...errors import DiffcoreError, format_choices
from .scopes import (_BARE_MATMULS, BIAS_INPUT, FUSED_DOMAINS, GAIN_INPUT, SCOPE_KEY, _chain_of_path, _common_path,
                     _common_prefix, _number_calls, _prefixes, _UnionFind, dynamo_levels, node_value_levels,
                     param_module, torchscript_chain, torchscript_levels, value_levels)

__all__ = ["FLOAT_DTYPES", "GraphIndex", "ValueType", "dtype_name"]

# onnx.TensorProto.DataType -> the dtype names diffcore uses (NumPy's where NumPy has one).
DTYPE_NAMES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128",
    16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
    21: "uint4", 22: "int4", 23: "float4e2m1",
}
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "float8e4m3fn", "float8e4m3fnuz",
                          "float8e5m2", "float8e5m2fnuz", "float4e2m1"})

# Ops whose output is not a function of their inputs: never folded into "static" values.
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                               "Multinomial", "Bernoulli"})
_SHAPE_ONLY = frozenset({"Shape", "Size"})  # ops that read their input's shape, not its numbers


def dtype_name(elem_type: int | None) -> str | None:
    """The dtype name of an ONNX element type, or None when unknown."""
    if not elem_type:
        return None
    return DTYPE_NAMES.get(int(elem_type), f"onnx_type_{int(elem_type)}")


@dataclass(frozen=True)
class ValueType:
    """Element type and dims of a tensor value; a dim is an int, a symbol name (str) or None (unknown)."""

    elem_type: int | None
    dims: tuple | None

    @property
    def dtype(self) -> str | None:
        return dtype_name(self.elem_type)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def shape(self) -> tuple | None:
        """Dims with symbols replaced by None (the Probe/InputSpec convention)."""
        if self.dims is None:
            return None
        return tuple(d if isinstance(d, int) else None for d in self.dims)


def value_type(type_proto) -> ValueType:
    """Read a TypeProto; non-tensor types (sequences, maps) have an unknown element type."""
    if not type_proto.HasField("tensor_type"):
        return ValueType(None, None)
    tensor = type_proto.tensor_type
    dims = None
    if tensor.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    return ValueType(tensor.elem_type or None, dims)


def read_types(graph, initializers=()) -> dict:
    """{value name: ValueType} from a graph's inputs, outputs, value_info and ``initializers``."""
    types = {t.name: ValueType(t.data_type, tuple(t.dims)) for t in initializers}
    for info in (*graph.input, *graph.value_info, *graph.output):
        found = value_type(info.type)
        if found.elem_type is not None or info.name not in types:
            types[info.name] = found
    return types


# ---------------------------------------------------------------------------------------------- structure


def subgraphs(node):
    """The graphs held in a node's attributes (If branches, Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def implicit_inputs(node) -> list:
    """Outer-scope values a node's subgraphs read (they are inputs of the node, though not listed)."""
    found: list = []
    for graph in subgraphs(node):
        defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
        for inner in graph.node:
            for name in (*inner.input, *implicit_inputs(inner)):
                if name and name not in defined and name not in found:
                    found.append(name)
            defined.update(inner.output)
    return found


def node_inputs(node) -> list:
    """Explicit (non-empty) and implicit inputs of a node."""
    names = [n for n in node.input if n]
    return names + [n for n in implicit_inputs(node) if n not in names] if len(node.attribute) else names


def topological_order(nodes, available) -> list:
    """Node indices in a topological order, keeping the file's order wherever it is already valid."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    deps = [{producer[n] for n in node_inputs(node) if n in producer and n not in available} for node in nodes]
    if all(all(d < i for d in dep) for i, dep in enumerate(deps)):
        return list(range(len(nodes)))  # the usual case: exporters write nodes in order
    users = defaultdict(list)
    for i, dep in enumerate(deps):
        for d in dep:
            users[d].append(i)
    waiting = [len(dep) for dep in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users[i]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i, w in enumerate(waiting) if w]
        raise DiffcoreError(f"the ONNX graph has a cycle or reads undefined values at nodes {format_choices(stuck, 5)}")
    return order


# ------------------------------------------------------------------------------------------------- index


class GraphIndex:
    """Producers, consumers, static values, types and module scopes of one ONNX graph.

    Args:
        model: an ``onnx.ModelProto`` (weights are not needed; run shape inference first for types).
        initializer_names: names of all initializers, including any stripped from ``model``.
        types: {value name: ValueType}; read from ``model`` when omitted.
        label: how error messages name the model.
    """

    label = "the ONNX graph"  # how error messages name the model; the runner sets its name

    def __init__(self, model, initializer_names=None, types=None, label=None):
        graph = model.graph
        self.label = label or self.label
        self.initializers = set(initializer_names if initializer_names is not None
                                else (t.name for t in graph.initializer))
        self.inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs = [v.name for v in graph.output]
        self.types = types if types is not None else read_types(graph, graph.initializer)
        order = topological_order(graph.node, set(self.inputs) | self.initializers)
        self.nodes = [graph.node[i] for i in order]
        self._link()
        self.static = self._static_values()
        self._assign_scopes()

    # -- structure

    def _link(self) -> None:
        self.producer: dict = {}
        self.consumers: dict = defaultdict(list)
        self.inputs_of: list = []
        for i, node in enumerate(self.nodes):
            names = node_inputs(node)
            self.inputs_of.append(names)
            for name in dict.fromkeys(names):
                self.consumers[name].append(i)
            for out in node.output:
                if out:
                    self.producer[out] = i
        self.node_by_name = {node.name: node for node in self.nodes if node.name}
        self._output_index = {name: k for k, name in reversed(list(enumerate(self.outputs)))}

    def _static_values(self) -> set:
        """Values that do not depend on the model inputs: initializers, constants and what is computed from
        them alone (Identity of a weight, a Cast of a constant)."""
        static = set(self.initializers)
        for node, names in zip(self.nodes, self.inputs_of):
            folds = node.op_type == "Constant" or (
                names and node.op_type not in _NONDETERMINISTIC and all(n in static for n in names))
            if folds:
                static.update(out for out in node.output if out)
        return static - set(self.inputs)

    def is_value(self, name: str) -> bool:
        return name in self.producer or name in self.inputs or name in self.initializers

    def type_of(self, name: str) -> ValueType:
        return self.types.get(name, ValueType(None, None))

    def output_index(self, name: str) -> int | None:
        return self._output_index.get(name)

    # -- scopes

    def _assign_scopes(self) -> None:
        """Give every node its chain of module-call keys (outermost first) and its raw scope string."""
        self.raw_scope: list = [None] * len(self.nodes)
        self.fused: set = set()  # nodes a graph rewriter made (contrib ops, scope read off value names)
        found = [self._raw_chain(i, node) for i, node in enumerate(self.nodes)]
        extra = self._output_levels(found)
        prefixes = {p for kind, levels in [*found, *(f for _, f in extra)] if kind == "ts"
                    for p in _prefixes(levels)}
        calls = [self._calls(kind, levels, prefixes) for kind, levels in found]  # [(path, identity)]
        self._split_dynamo_calls(calls)
        extra_calls = [self._calls(kind, levels, prefixes) for _, (kind, levels) in extra]
        keys = _number_calls(calls + extra_calls)
        self.chains: list = [tuple(keys[c] for c in chain) if chain is not None else None for chain in calls]
        # outputs of one fused node that leave different scopes (SkipLayerNormalization's sum output)
        self.out_chains: dict = {name: tuple(keys[c] for c in chain)
                                 for (name, _), chain in zip(extra, extra_calls)}
        self._infer_missing_chains()
        self.module_nodes: dict = defaultdict(list)
        for i, chain in enumerate(self.chains):
            for key in chain:
                self.module_nodes[key].append(i)

    def _raw_chain(self, i: int, node):
        """(kind, levels) of a node's scope. TorchScript scopes are read off the output value names first:
        they survive graph rewriting, while fused nodes get new names (``SkipLayerNorm_AddBias_0``,
        ``/a/MatMul/MatMulScaleFusion/``) that do not name the module."""
        dynamo = dynamo_levels(node)
        if dynamo is not None:
            self.raw_scope[i] = next(p.value for p in node.metadata_props if p.key == SCOPE_KEY)
            return "dynamo", dynamo
        own = torchscript_levels(node.name)
        levels = node_value_levels(node)
        if node.domain in FUSED_DOMAINS or (levels is not None and levels != own):
            self.fused.add(i)
        levels = levels if levels is not None else own
        if levels is not None:
            self.raw_scope[i] = "/" + "/".join(levels)
            return "ts", levels
        return None, None

    def _output_levels(self, found: list) -> list:
        """[(value, ("ts", levels))] for outputs of a fused node named in another scope than the node."""
        extra = []
        for i in sorted(self.fused):
            kind, levels = found[i]
            for out in self.nodes[i].output[1:] if kind == "ts" else ():
                own = value_levels(out)
                if own is not None and own != levels:
                    extra.append((out, ("ts", own)))
        return extra

    @staticmethod
    def _calls(kind, levels, prefixes):
        if kind == "ts":
            return torchscript_chain(levels, prefixes)
        if kind == "dynamo":
            return [(path, None) for path in levels]  # identity filled in by _split_dynamo_calls
        return None

    def _split_dynamo_calls(self, calls: list) -> None:
        """A dynamo scope is one path for every call of a module: its connected pieces are the calls.

        Nodes of one path are joined when one feeds the other or both read the same outside value. Two
        calls back to back (``m(m(x))``) stay joined: the metadata cannot tell them apart.
        """
        uf = _UnionFind()
        paths = [{p for p, ident in chain if ident is None} if chain else set() for chain in calls]
        for i, names in enumerate(self.inputs_of):
            for name in names:
                if name in self.static:
                    continue
                source = self.producer.get(name)
                for path in paths[i]:
                    if source is not None and path in paths[source]:
                        uf.union((path, i), (path, source))
                    else:
                        uf.union((path, i), (path, "in", name))
        for i, chain in enumerate(calls):
            if chain and paths[i]:
                calls[i] = [(p, ident if ident is not None else ("dyn", uf.find((p, i)))) for p, ident in chain]

    def _infer_missing_chains(self) -> None:
        """Nodes without scope (Casts a converter inserted) take the common scope of their neighbours,
        where graph inputs and outputs count as top level; static nodes stay at top level. Fused nodes
        without a scoped name take their parameters' module (see ``_fused_chain``)."""
        known = None
        for i, node in enumerate(self.nodes):
            if self.chains[i] is not None:
                continue
            if all(out in self.static or not out for out in node.output):
                self.chains[i] = ()
                continue
            if i in self.fused:
                known = known if known is not None else self._known_paths()
                self.chains[i] = self._fused_chain(i, known)
                continue
            around = [self._producer_chain(n) for n in self.inputs_of[i] if n not in self.static]
            for out in node.output:
                around += [self.chains[c] for c in self.consumers.get(out, ()) if self.chains[c] is not None]
                around += [()] if out in self._output_index else []
            self.chains[i] = _common_prefix(around)

    def _fused_chain(self, i: int, known: dict) -> tuple:
        """The scope of a fused node named without one (``EmbedLayerNormalization_0``): the module its
        parameters (or its gain, for a normalization) belong to, as TorchScript keeps ``state_dict`` names,
        when that module lies within the common scope of its inputs' producers (weights deduplicated
        across modules point elsewhere); else that common scope."""
        around = _common_prefix([self._producer_chain(n) for n in self.inputs_of[i] if n not in self.static])
        node, k = self.nodes[i], GAIN_INPUT.get(self.nodes[i].op_type)
        names = [node.input[k]] if k is not None and len(node.input) > k else self.inputs_of[i]
        paths = [m for n in names if n in self.initializers and (m := param_module(n))]
        chain = _chain_of_path(_common_path(paths), known) if paths else ()
        return chain if len(chain) > len(around) and chain[:len(around)] == around else around

    def _known_paths(self) -> dict:
        """{module path: the chain of its first call} over the nodes scoped so far."""
        known: dict = {}
        for chain in self.chains:
            for k, key in enumerate(chain or ()):
                known.setdefault(key.split("#")[0], tuple(chain[:k + 1]))
        return known

    def _producer_chain(self, name: str) -> tuple:
        source = self.producer.get(name)
        return () if source is None else self.chains[source]

    def modules_left(self, name: str) -> list:
        """Module keys whose scope ``name`` leaves, innermost first: a value leaves a scope when its producer
        is inside and some consumer is outside, or when it is a graph output."""
        source = self.producer.get(name)
        if source is None or name in self.static:
            return []
        chain = self.out_chains.get(name, self.chains[source])
        if name in self._output_index:
            return list(reversed(chain))
        user_chains = [self.chains[c] for c in self.consumers.get(name, ())]
        return [key for key in reversed(chain) if any(key not in user for user in user_chains)]

    def bias_folded_into(self, name: str):
        """The fused node that adds the bias of the bare MatMul producing ``name`` (a Linear whose bias
        moved into SkipLayerNormalization, BiasGelu, ...), or None."""
        source = self.producer.get(name)
        if source is None or self.nodes[source].op_type not in _BARE_MATMULS:
            return None
        for c in self.consumers.get(name, ()):
            node, k = self.nodes[c], BIAS_INPUT.get(self.nodes[c].op_type)
            if k is not None and len(node.input) > k and node.input[k] and node.input[k] != name:
                return node
        return None

    @property
    def module_keys(self) -> list:
        """Every module-call key, in order of the first node in its scope."""
        return sorted(self.module_nodes, key=lambda k: self.module_nodes[k][0])

    def check_module(self, module: str) -> list:
        """Node indices in the scope of ``module``; DiffcoreError listing the valid ones when unknown."""
        if module not in self.module_nodes:
            raise DiffcoreError(f"no module scope {module!r} in {self.label}; scopes found: "
                                f"{format_choices(self.module_keys)}")
        return self.module_nodes[module]

    def scope_entries(self, module: str) -> list:
        """Non-static values read inside ``module``'s scope but produced outside it, by first reader."""
        inside = set(self.check_module(module))
        entries: dict = {}
        for i in sorted(inside):
            for name in self.inputs_of[i]:
                if name not in self.static and self.producer.get(name) not in inside:
                    entries.setdefault(name, None)
        return list(entries)

    def scope_exits(self, module: str) -> list:
        """Values produced inside ``module``'s scope that leave it, in topological order."""
        inside = self.check_module(module)
        return [out for i in inside for out in self.nodes[i].output if out and module in self.modules_left(out)]

    def upstream_sources(self, name: str, sources) -> list:
        """The values of ``sources`` that ``name`` is computed from, each the first met on its path back
        (``[name]`` when it is one). Shape and Size read only their input's shape, never its numbers, so what
        lies behind them does not count."""
        sources, seen, stack, found = set(sources), set(), [name], {}
        while stack:
            value = stack.pop()
            if value in seen:
                continue
            seen.add(value)
            source = self.producer.get(value)
            if value in sources:
                found[value] = None
            elif source is not None and value not in self.static and self.nodes[source].op_type not in _SHAPE_ONLY:
                stack.extend(self.inputs_of[source])
        return list(found)

    # -- segments (the part of the graph one run needs)

    def needed_nodes(self, wanted, available) -> list:
        """Indices (in topological order) of the nodes that compute ``wanted`` from the ``available`` values:
        the producers of ``wanted`` and, recursively, of every value they read that is not available.
        Initializers are always available; a wanted value that is also available is still recomputed."""
        needed, stack = set(), [self.producer[n] for n in wanted if n in self.producer]
        while stack:
            i = stack.pop()
            if i in needed:
                continue
            needed.add(i)
            stack.extend(self.producer[n] for n in self.inputs_of[i] if n not in available and n in self.producer)
        return sorted(needed)

    def segment_entries(self, node_ids) -> list:
        """Values the nodes ``node_ids`` read but do not produce, initializers excluded, by first reader."""
        inside = {out for i in node_ids for out in self.nodes[i].output if out}
        entries: dict = {}
        for i in node_ids:
            for name in self.inputs_of[i]:
                if name not in inside and name not in self.initializers:
                    entries.setdefault(name, None)
        return list(entries)

    def cut_values(self, node_ids) -> list:
        """Non-static values the nodes ``node_ids`` produce that a node outside them reads: what a later run
        of the rest of the graph needs from this one."""
        inside = set(node_ids)
        return [out for i in sorted(inside) for out in self.nodes[i].output
                if out and out not in self.static and any(c not in inside for c in self.consumers.get(out, ()))]

    def static_closure(self, node_ids) -> list:
        """The static-value producers (Constants, Identity of weights) the given nodes need, recursively."""
        needed, stack = set(), list(node_ids)
        while stack:
            for name in self.inputs_of[stack.pop()]:
                source = self.producer.get(name)
                if name in self.static and source is not None and source not in needed:
                    needed.add(source)
                    stack.append(source)
        return sorted(needed)
