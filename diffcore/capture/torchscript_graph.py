"""Per-submodule intermediates of a TorchScript module, read through its graph (ScriptModules take no hooks).

Both ``torch.jit.trace`` and ``torch.jit.script`` keep every submodule call as a
``prim::CallMethod[name="forward"](%child, args...)`` node in the caller's graph. On a private copy of the
module (loaded from the file again: the changes below are made to its method graphs), every such call in every
submodule's graph gets a marker right after it: a ``prim::Print`` of (child, args..., output) tagged with an
attribute. ``prim::Print`` is used because it has side effects: the passes the inliner runs on each callee
keep it, and it carries any arguments. The forward graph is then copied and fully inlined: each marker now
sits in one flat graph, after its call's inlined body, and its first input is the chain of ``prim::GetAttr``
from ``self`` that names the submodule (``encoder.layer.0``), however many instances share one class.
The markers are removed and what they held (each call's inputs and output) is returned along with the
model's output, from one function made of that graph and called with the module as ``self``.

Markers are taken in graph order, which is execution order: a child's call comes before its parent's, as
hooks would fire. A call inside a scripted ``if`` branch leaves the ``prim::If`` as an extra Optional output
(None when its branch did not run); a call inside a loop body is left out (counted in ``skipped``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

_MARK = "diffcore_call"


@dataclass
class ScriptCall:
    """One submodule call in the instrumented graph: its path, key (``path#k`` when called again), and the
    positions of its inputs and output in the instrumented function's result."""

    path: str
    key: str
    inputs: list = field(default_factory=list)  # result positions of the call's arguments (self excluded)
    output: int = -1  # result position of the call's output
    input_sources: list = field(default_factory=list)  # per argument: the call key that produced it, or None


@dataclass
class Instrumented:
    """The instrumented function and the calls it reports; ``fn(module._c, *inputs)`` returns
    ``(model output, value 1, value 2, ...)``."""

    fn: object
    calls: list
    skipped: int


def _mark_calls(module) -> None:
    """Put a marker after every submodule forward call in every method graph of ``module`` (in place)."""
    for _, sub in module.named_modules():
        if not sub._c._has_method("forward"):
            continue  # containers such as ModuleList have no forward of their own
        graph = sub.forward.graph
        for node in list(graph.findAllNodes("prim::CallMethod")):
            if node.s("name") != "forward" or node.outputsSize() != 1:
                continue
            if any(use.user.hasAttribute(_MARK) for use in node.output().uses()):
                continue  # a graph shared by several instances of one class is marked once
            mark = graph.create("prim::Print", list(node.inputs()) + [node.output()], 0)
            mark.s_(_MARK, "1")
            mark.insertAfter(node)


def _path_of(value) -> str | None:
    """The submodule path of a module value: its chain of ``prim::GetAttr`` back to the graph's ``self``."""
    parts = []
    while value.node().kind() == "prim::GetAttr":
        parts.append(value.node().s("name"))
        value = value.node().input()
    if value.node().kind() != "prim::Param":
        return None
    return ".".join(reversed(parts))


def instrument(module) -> Instrumented:
    """The instrumented forward of ``module`` (a ScriptModule the caller owns: its graphs get markers)."""
    import torch

    _mark_calls(module)
    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    values, positions, calls, counts, skipped, producer = [], {}, [], {}, 0, {}

    def position(value):
        if value.unique() not in positions:
            positions[value.unique()] = len(values) + 1  # 0 is the model output
            values.append(value)
        return positions[value.unique()]

    for mark in graph.findAllNodes("prim::Print"):
        if not mark.hasAttribute(_MARK):
            continue
        inputs = list(mark.inputs())
        mark.destroy()
        path = _path_of(inputs[0])
        lifted = [_lift(v, graph) for v in inputs[1:]]
        if path is None or any(v is None for v in lifted):
            skipped += 1
            continue
        inputs = inputs[:1] + lifted
        n = counts.get(path, 0)
        counts[path] = n + 1
        call = ScriptCall(path, path if n == 0 else f"{path}#{n}")
        call.inputs = [position(v) for v in inputs[1:-1]]
        call.input_sources = [producer.get(v.unique()) for v in inputs[1:-1]]
        call.output = position(inputs[-1])
        producer[inputs[-1].unique()] = call.key
        calls.append(call)
    _return_all(graph, values)
    fn = torch._C._create_function_from_graph("diffcore_instrumented_forward", graph)
    return Instrumented(fn, calls, skipped)


def _lift(value, graph):
    """``value`` made visible at the graph's top level: a value defined inside a ``prim::If`` branch leaves
    the If as an extra Optional output (None from the other branch, so the untaken branch's calls read as
    absent); None for a value inside a loop body (loop-carried values are not rewritten)."""
    import torch

    while value.node().owningBlock() != graph.block():
        owner = value.node().owningBlock().owningNode()
        if owner.kind() != "prim::If":
            return None
        for branch in owner.blocks():
            if value.unique() in {o.unique() for n in branch.nodes() for o in n.outputs()}:
                branch.registerOutput(value)
            else:
                none = graph.create("prim::Constant")
                none.output().setType(torch._C.NoneType.get())
                none.insertBefore(branch.returnNode())
                branch.registerOutput(none.output())
        lifted = owner.addOutput()
        kind = value.type().kind()
        lifted.setType(value.type() if kind in ("NoneType", "OptionalType") else torch._C.OptionalType(value.type()))
        value = lifted
    return value


def _return_all(graph, values) -> None:
    """Make the graph return ``(its output, *values)`` as one tuple."""
    import torch

    ret = graph.return_node()
    outputs = [ret.input()] + values
    tup = graph.create("prim::TupleConstruct", outputs)
    tup.output().setType(torch._C.TupleType([v.type() for v in outputs]))
    tup.insertBefore(ret)
    graph.eraseOutput(0)
    graph.registerOutput(tup.output())
    graph.lint()
