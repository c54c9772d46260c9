"""Per-submodule intermediates of a TorchScript model, read from its graph.

ScriptModules take no hooks. Their forward graph, inlined (``torch._C._jit_pass_inline``), still says which
module call each node came from (``Node.getModuleHierarchy()``: ``encoder(Encoder).layer.0(Layer)``), for
traced and scripted modules alike. A module call's output is what its nodes compute and a node outside
it reads (or the graph returns): the values leaving its scope, as for an ONNX export's scopes. Those
values are appended to a copy of the graph's outputs, the copy becomes a function of the same module
(``torch._C._create_function_from_graph``), and one run of it gives the model outputs and every module
output. The keys are the module paths the eager module's hooks give, so a TorchScript file pairs with the
module it came from and with its ONNX export.

What it cannot give: a module's inputs (the local error of a TorchScript *reference* layer; as the test
side its submodules run on the reference's inputs like any module), and values computed inside a loop or
branch body (only what leaves the body is in the outer graph: Silero VAD's jit calls its model inside
``if sr == 16000``, so it is compared at its outputs, with the warning an opaque module gets).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DiffcoreError
from .torch_hooks import _unique


def _torch():
    import torch

    return torch


# Containers are never called: the graph's hierarchy names the called module by its own attribute name
# (``0(Block)`` for ``blocks.0``), so the container levels are found again in the module tree.
_CONTAINERS = ("ModuleList", "Sequential", "ModuleDict")


class ModulePaths:
    """Module paths (``blocks.0.lin``) of the graph's module hierarchies (``0(Block).lin(Linear)``)."""

    def __init__(self, root):
        self.root = root
        self._paths: dict = {"": ""}

    def of(self, node) -> str:
        hierarchy = node.getModuleHierarchy()
        if hierarchy not in self._paths:
            self._paths[hierarchy] = self._resolve(hierarchy)
        return self._paths[hierarchy]

    def _resolve(self, hierarchy: str) -> str:
        module, parts = self.root, []
        for level in hierarchy.split("."):
            name = level.split("(", 1)[0]
            if name == "SELF":  # a method of the same module, inlined (self.validate(x))
                continue
            found = _find_child(module, name)
            if found is None:  # not in the tree (should not happen): keep the graph's own name
                parts.append(name)
                continue
            steps, module = found
            parts.extend(steps)
        return ".".join(parts)


def _class_name(module) -> str:
    return getattr(module, "original_name", None) or type(module).__name__


def _find_child(module, name: str):
    """(path steps, module) of the child called ``name``, directly or inside containers of ``module``."""
    children = dict(module.named_children())
    if name in children:
        return [name], children[name]
    for child_name, child in children.items():
        if _class_name(child) in _CONTAINERS:
            found = _find_child(child, name)
            if found is not None:
                return [child_name, *found[0]], found[1]
    return None


def _inside(path: str, scope: str) -> bool:
    return path == scope or path.startswith(scope + ".")


@dataclass
class Tap:
    """One module output read off the graph: its module path and its index in the function's outputs."""

    path: str
    index: int


class ScriptGraphTaps:
    """The instrumented function of one TorchScript module (see the module docstring)."""

    def __init__(self, module):
        torch = _torch()
        graph = module.forward.graph.copy()
        torch._C._jit_pass_inline(graph)
        self.originals = len(list(graph.outputs()))
        self.taps: list[Tap] = []
        for path, value in self._exits(graph, ModulePaths(module)):
            graph.registerOutput(value)
            self.taps.append(Tap(path, self.originals + len(self.taps)))
        graph.makeMultiOutputIntoTuple()
        self.function = torch._C._create_function_from_graph("diffcore_module_outputs", graph)
        self.schema = module.forward.schema.arguments[1:]

    @staticmethod
    def _exits(graph, paths: ModulePaths) -> list:
        """(module path, value) of every tensor leaving a module call's scope, in execution order; a value
        leaving several nested scopes is the output of each (innermost first, as hooks report them)."""
        exits = []
        for node in graph.nodes():
            path = paths.of(node)
            for value in node.outputs():
                if not path or value.type().kind() != "TensorType":
                    continue
                readers = [paths.of(use.user) for use in value.uses()]
                scope = path
                while scope:
                    if any(not _inside(reader, scope) for reader in readers):
                        exits.append((scope, value))
                    scope = scope.rpartition(".")[0]
        return exits

    def arguments(self, args, kwargs) -> list:
        """The forward's arguments in schema order (the function takes them positionally)."""
        ordered = list(args)
        for argument in self.schema[len(ordered):]:
            if argument.name in kwargs:
                ordered.append(kwargs[argument.name])
            elif argument.has_default_value():
                ordered.append(argument.default_value)
            else:
                raise DiffcoreError(f"TorchScript forward needs the input {argument.name!r}")
        return ordered


def callable_script(traced, device):
    """A traced module as torch.jit.load gives it back: the same graph, but submodules that can be called
    alone (a test layer re-run on the reference's inputs for its local error; ``TracedModule``s refuse)."""
    import io

    buffer = io.BytesIO()
    _torch().jit.save(traced, buffer)
    buffer.seek(0)
    return _torch().jit.load(buffer, map_location=device).eval()


def script_call(module, args, kwargs):
    """(args, kwargs) for a TorchScript submodule called with the eager module's arguments.

    A traced forward keeps only the tensors the trace used, under names of its own
    (``forward(self, Tensor input_ids, Tensor input)`` for BertEmbeddings called with ``input_ids=...,
    token_type_ids=..., position_ids=None, ...``): where the eager names do not fit its schema, the call's
    tensors are passed positionally, in order, when their number is the schema's.
    """
    names = [a.name for a in module.forward.schema.arguments[1:]]
    if all(k in names for k in kwargs) and len(args) <= len(names):
        return args, kwargs
    torch = _torch()
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    if len(tensors) == len(names):
        return tuple(tensors), {}
    raise DiffcoreError(f"the TorchScript module takes ({', '.join(names)}), not the eager call's "
                        f"{len(tensors)} tensor(s)")


def build_taps(module):
    """The taps of a TorchScript root, or None where its graph cannot be instrumented (then it is
    compared at its outputs only)."""
    try:
        taps = ScriptGraphTaps(module)
    except (RuntimeError, AttributeError, TypeError):
        return None
    return taps if taps.taps else None  # every module call inside a branch or loop body: outputs only


class ScriptTaps:
    """Stands in for ``_Hooks`` on a TorchScript root: one run of the instrumented graph, each module output
    handed to ``on_output`` in execution order. Module inputs are never seen (``on_inputs`` is not called)."""

    def __init__(self, taps: ScriptGraphTaps, root, name: str, on_inputs=None, on_output=None):
        self.graph_taps, self.root, self.name = taps, root, name
        self.on_output = on_output
        self.used: set = set()
        self.keys: list = []
        self.calls: dict = {}
        self.stack: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def call(self, module, args, kwargs):
        outputs = self.graph_taps.function(module._c, *self.graph_taps.arguments(args, kwargs))
        for tap in self.graph_taps.taps:
            key = _unique(tap.path, self.used)
            self.keys.append(key)
            if self.on_output is not None:
                self.on_output(key, tap.path, tap.path, _submodule(self.root, tap.path), outputs[tap.index])
        originals = outputs[:self.graph_taps.originals]
        return originals[0] if len(originals) == 1 else tuple(originals)

    def error(self, exc: BaseException) -> DiffcoreError:
        return DiffcoreError(f"forward of TorchScript {self.name} failed: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}")


def _submodule(root, path: str):
    try:
        return submodule_at(root, path)
    except AttributeError:
        return root


def submodule_at(root, path: str):
    """``root.get_submodule(path)``, also inside TorchScript modules (which refuse ``get_submodule``).

    Raises:
        AttributeError: no module at ``path``.
    """
    module = root
    for name in path.split(".") if path else ():
        child = getattr(module, name, None)
        if not isinstance(child, _torch().nn.Module):
            raise AttributeError(f"no submodule {name!r} in {path!r}")
        module = child
    return module
