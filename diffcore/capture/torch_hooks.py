"""torch module hooks for one forward pass: probe keys, flattened outputs, and which modules take hooks.

Keys follow torch_runner.py's docstring: ``path``, ``path#k`` for repeated calls, ``.i``/``.name`` for
flattened outputs, ``~k`` where a flattened key would collide. TorchScript modules refuse hooks, so their
subtrees are left out (``hookable_modules``).
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

from .._deps import require
from ..errors import DiffcoreError


def _torch():
    return require("torch", "running torch models")


# ----------------------------------------------------------------------------------------------- flattening

def flatten_outputs(prefix: str, value) -> list:
    """``[(key, tensor)]`` for a module output: a tensor is ``prefix``, tuple/list items ``prefix.i`` (nested
    recursively), mapping items ``prefix.<key>``; anything that is not a tensor (None, numbers, text) is
    skipped."""
    out: list = []
    _flatten(prefix, value, out, _torch().Tensor)
    return out


def _flatten(prefix, value, out, tensor_type) -> None:
    if isinstance(value, tensor_type):
        out.append((prefix, value))
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _flatten(f"{prefix}.{i}", item, out, tensor_type)
    elif isinstance(value, Mapping):  # dict, OrderedDict, Hugging Face ModelOutput
        for name, item in value.items():
            _flatten(f"{prefix}.{name}", item, out, tensor_type)


def _unique(key: str, used: set) -> str:
    """``key``, or ``key~n`` when it is taken already; the result is added to ``used``."""
    result, n = key, 0
    while result in used:
        n += 1
        result = f"{key}~{n}"
    used.add(result)
    return result


def _map_tensors(value, fn, memo: dict | None = None):
    """``value`` with every tensor inside tuples/lists/dicts replaced by ``fn(tensor)``.

    One tensor passed several times maps to one result (``memo``, by identity): modules branch on aliasing
    (``nn.MultiheadAttention`` packs the q/k/v projection when ``query is key is value``), so a copy must
    keep it to reproduce the call exactly.
    """
    torch = _torch()
    memo = {} if memo is None else memo
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = (value, fn(value))  # keep value alive so its id is not reused
        return memo[id(value)][1]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple: rebuild positionally
        return type(value)(*(_map_tensors(v, fn, memo) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(v, fn, memo) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn, memo) for k, v in value.items()}
    return value


def map_floats(value, fn):
    """``value`` with every floating tensor replaced by ``fn(tensor)`` (others kept), aliasing preserved."""
    return _map_tensors(value, lambda t: fn(t) if t.is_floating_point() else t)


def _detached_clone(tensor):
    # A clone, not a view: in-place ops later in the forward (ReLU(inplace=True), x += ...) would change it.
    return tensor.detach().clone()


# ----------------------------------------------------------------------------------------------------- hooks

class _Hooks:
    """Hooks on one module tree for one forward pass (a context manager; hooks are removed on exit).

    Gives each module call its key (``path``, then ``path#1``, ...), keeps the stack of modules running now
    (to name the innermost one when forward raises) and hands each call's inputs and flattened outputs to
    callbacks. The root's own output is no probe: the model outputs get the ``output`` keys instead.
    """

    def __init__(self, root, prefix: str = "", on_inputs=None, on_output=None):
        self.root, self.prefix = root, prefix
        self.on_inputs, self.on_output = on_inputs, on_output
        self._tensor = _torch().Tensor  # looked up once: the hooks run for every module call
        self.stack: list = []  # (call key, module) of the modules running now, innermost last
        self.calls: dict = {}  # path -> number of calls so far
        self.used: set = set()  # probe keys handed out in this pass
        self.keys: list = []  # the same, in execution order (for error messages)
        self._handles: list = []

    def __enter__(self):
        try:
            for path, module in hookable_modules(self.root, self.prefix):
                is_root = module is self.root
                self._handles.append(
                    module.register_forward_pre_hook(self._pre_hook(path, is_root), with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._post_hook(path, is_root)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre_hook(self, path, is_root):
        def hook(module, args, kwargs):
            n = self.calls.get(path, 0)
            self.calls[path] = n + 1
            call = path if n == 0 else f"{path}#{n}"
            self.stack.append((call, module))
            if self.on_inputs is not None and not is_root:
                self.on_inputs(call, args, kwargs)
        return hook

    def _post_hook(self, path, is_root):
        def hook(module, args, output):
            call, _ = self.stack.pop()
            if is_root:
                return
            flat: list = []
            _flatten(call, output, flat, self._tensor)
            for key, tensor in flat:
                key = _unique(key, self.used)
                self.keys.append(key)
                if self.on_output is not None:
                    self.on_output(key, call, path, module, tensor)
        return hook

    def error(self, exc: BaseException) -> DiffcoreError:
        """A DiffcoreError naming the innermost module running when ``exc`` was raised."""
        call, module = self.stack[-1] if self.stack else (self.prefix, self.root)
        if module is self.root and not self.prefix:
            where = f"the model's own forward ({type(module).__name__})"
        else:
            where = f"module '{call}' ({type(module).__name__})"
        return DiffcoreError(f"forward failed in {where}: {type(exc).__name__}: {exc}")


def _is_script_module(module) -> bool:
    return isinstance(module, _torch().jit.ScriptModule)


def hookable_modules(root, prefix: str = ""):
    """(path, module) of every module that takes hooks: TorchScript modules (compiled by torch.jit.script or
    trace) refuse them, and so do all modules inside one, so those subtrees are left out."""
    opaque: list = []
    for path, module in root.named_modules(prefix=prefix):
        if any(path == p or path.startswith(p + ".") or not p for p in opaque):
            continue
        if _is_script_module(module):
            opaque.append(path)
            continue
        yield path, module


def script_subtrees(root) -> list:
    """Paths of the outermost TorchScript modules in ``root`` ('' for a TorchScript root)."""
    found: list = []
    for path, module in root.named_modules():
        if _is_script_module(module) and not any(path.startswith(p + ".") or not p for p in found):
            found.append(path)
    return found


def _has_bias(module) -> bool:
    """Whether a module adds a bias tensor of its own (Linear, Conv, HF Conv1D with bias=True)."""
    return isinstance(getattr(module, "bias", None), _torch().Tensor)


@contextmanager
def _eval_mode(module):
    """Eval mode for the duration of a run, restoring every module's flag after: the user's object is ours
    only for the run."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
