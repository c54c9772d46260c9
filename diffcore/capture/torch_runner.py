"""Capturing a torch model's intermediate tensors with module hooks.

Every submodule's output is a probe keyed by its qualified name (``blocks.0.ln``), in the order the hooks
fire, which is execution order (a parent's output comes after its children's). A module called again in the
same forward gets ``path#1``, ``path#2``; tuple/list outputs are flattened as ``path.0``, ``path.1`` and dict
outputs as ``path.<key>``; the model's own outputs are ``output`` (one tensor) or ``output.0``/``output.<key>``.
Should a flattened key equal another probe's key (a module returning a tuple next to a child named ``0``, a
top-level module named ``output``), the later probe gets ``~1``, ``~2`` appended so keys stay unique.

Only modules called through ``module(...)`` are seen: hooks do not fire for ``module.forward(...)`` or for
weights used directly (``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``).

torch is imported inside the functions that use it, never at import of diffcore.
"""
from __future__ import annotations

import copy
import inspect
import weakref
from collections.abc import Collection, Mapping
from contextlib import nullcontext

import numpy as np

from .._deps import require
from ..arrays import c_contiguous
from ..errors import DiffcoreError, format_choices
from .base import InputSpec, Probe, Runner
from .torch_factory import load_factory
from .torch_hooks import (_detached_clone, _eval_mode, _has_bias, _Hooks, _is_script_module, _map_tensors,
                          _unique, flatten_outputs, script_subtrees)
from .torch_plain import NoHooks, hooks_change
from .torchscript import script_call, submodule_at

__all__ = ["TorchRunner", "load_factory", "flatten_outputs"]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
AUTOCAST_DTYPES = ("float16", "bfloat16")
_NAMED_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY)


def _torch():
    return require("torch", "running torch models")


def dtype_name(dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).replace("torch.", "")


# -------------------------------------------------------------------------------------- module preparation

def _parse_device(device):
    torch = _torch()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DiffcoreError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda[:N]'") from exc
    if dev.type not in ("cpu", "cuda"):
        raise DiffcoreError(f"device {device!r} is not supported; use 'cpu' or 'cuda[:N]'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DiffcoreError(f"device {device!r} asked for, but torch sees no CUDA GPU here "
                                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use 'cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _needs_copy(module, dtype, device) -> bool:
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.device != device:
            return True
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            return True
    return False


def _working_module(module, dtype: str | None, device):
    """``module`` itself, or a deep copy cast to ``dtype`` and moved to ``device`` when either changes
    anything: the user's object is never modified."""
    torch = _torch()
    target = getattr(torch, dtype) if dtype else None
    if not _needs_copy(module, target, device):
        return module
    try:
        work = copy.deepcopy(module)
    except Exception as exc:  # e.g. modules holding non-leaf tensors or open handles
        raise DiffcoreError(f"cannot copy {type(module).__name__} to change its dtype/device "
                            f"({type(exc).__name__}: {exc}); cast and move it yourself and pass dtype=None, "
                            "device=<its device>") from exc
    return work.to(device=device, dtype=target) if target is not None else work.to(device)


def _float_dtype(module):
    """The dtype of the module's first floating parameter (or buffer); float32 for a module with none."""
    torch = _torch()
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _forward_parameters(module) -> list:
    """The named parameters of ``module.forward``; *args/**kwargs alone cannot be fed by name."""
    try:
        params = _script_parameters(module) if _is_script_module(module) else \
            list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DiffcoreError(f"cannot read the signature of {type(module).__name__}.forward: {exc}") from exc
    named = [p for p in params if p.kind in _NAMED_KINDS]
    if not named:
        raise DiffcoreError(
            f"{type(module).__name__}.forward takes only *args/**kwargs, but diffcore passes inputs by name "
            "(the ONNX graph input names): wrap the model in a module whose forward names its inputs")
    return named


def _script_parameters(module) -> list:
    """A TorchScript forward's parameters from its schema (Python's inspect cannot read a ScriptMethod);
    traced modules name them after the traced Python function's arguments."""
    arguments = module.forward.schema.arguments[1:]  # the first is self
    return [inspect.Parameter(a.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in arguments]


def _check_choice(what: str, value, choices) -> None:
    if value is not None and value not in choices:
        raise DiffcoreError(f"{what} {value!r} is not supported; choose one of {format_choices(choices)}")


def _array_dtype_name(value) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return type(value).__name__
    return dtype_name(dtype) if type(value).__module__.startswith("torch") else np.dtype(dtype).name


def _as_tensor(name: str, value):
    """A torch tensor for a NumPy array or tensor (on the host, not yet cast)."""
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        arr = c_contiguous(value)  # torch cannot take negative strides
        if arr.dtype.name == "bfloat16":  # ml_dtypes.bfloat16: torch has no NumPy bridge for it
            return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
        return torch.as_tensor(arr)
    raise DiffcoreError(f"input {name!r} must be a numpy.ndarray or torch.Tensor, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------- the runner

class TorchRunner(Runner):
    """Runs a ``torch.nn.Module`` and captures its submodules' outputs through hooks.

    Args:
        module: the model. Runs in eval mode (restored after each run) under ``torch.no_grad``; never modified:
            a dtype or device change happens on a ``copy.deepcopy``.
        dtype: ``"float16"``, ``"bfloat16"``, ``"float32"`` or ``"float64"``: run a copy cast to it.
        autocast: ``"float16"`` or ``"bfloat16"``: run forward under ``torch.autocast``.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        name: shown in descriptions and messages (default: the module's class name).
        example_inputs: {input name: array/tensor}, giving the dtypes and shapes of ``input_specs``.

    Raises:
        DiffcoreError: not a module, an unsupported dtype/autocast/device, or example inputs that ``forward``
            does not take.
    """

    kind = "torch"

    def __init__(self, module, *, dtype: str | None = None, autocast: str | None = None,
                 device: str = "cpu", name: str | None = None, example_inputs: Mapping | None = None):
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            raise DiffcoreError(f"TorchRunner needs a torch.nn.Module, got {type(module).__name__}")
        _check_choice("dtype", dtype, FLOAT_DTYPES)
        _check_choice("autocast", autocast, AUTOCAST_DTYPES)
        self.device = _parse_device(device)
        self.module = _working_module(module, dtype, self.device)
        self.autocast = autocast
        self.float_dtype = _float_dtype(self.module)
        self.dtype = dtype_name(self.float_dtype)
        self.name = name or type(module).__name__
        self._params = _forward_parameters(self.module)
        self.example_inputs = self._check_examples(example_inputs)
        amp = f", autocast {autocast}" if autocast else ""
        self.description = f"torch {self.name} ({self.dtype}{amp}, {self.device})"
        self.warnings = [_opaque_warning(p, self.name) for p in script_subtrees(self.module)]

    # ------------------------------------------------------------------------------------------- inputs

    def _input_names(self) -> list:
        return [p.name for p in self._params]

    def _check_examples(self, examples):
        if examples is None:
            return None
        unknown = [n for n in examples if n not in self._input_names()]
        if unknown:
            raise DiffcoreError(f"example input(s) {format_choices(unknown)} are not parameters of "
                                f"{self.name}.forward, which takes {format_choices(self._input_names())}")
        return dict(examples)

    def input_specs(self) -> list[InputSpec]:
        """The parameters of ``forward`` that need a value (required ones, and optional ones the example
        inputs give), with dtype/shape from the example inputs, else ``float32`` and an unknown shape."""
        examples = self.example_inputs or {}
        specs = []
        for p in self._params:
            example = examples.get(p.name)
            if example is None and p.default is not inspect.Parameter.empty:
                continue
            if example is None:
                specs.append(InputSpec(p.name, "float32", None))
            else:
                specs.append(InputSpec(p.name, _array_dtype_name(example), tuple(example.shape)))
        return specs

    def prepare_inputs(self, inputs: Mapping) -> dict:
        """Tensors on this runner's device, in ``forward``'s parameter order. Floating inputs are cast to the
        module's floating dtype (its parameters' dtype, never the autocast dtype); others are kept.

        Raises:
            DiffcoreError: an input ``forward`` does not take, a required one missing, or not an array.
        """
        names = self._input_names()
        unknown = [n for n in inputs if n not in names]
        missing = [p.name for p in self._params
                   if p.default is inspect.Parameter.empty and p.name not in inputs]
        if unknown or missing:
            problem = "; ".join(filter(None, [
                f"unknown input(s) {format_choices(unknown)}" if unknown else "",
                f"missing input(s) {format_choices(missing)}" if missing else ""]))
            raise DiffcoreError(f"{problem}: {self.name}.forward takes {format_choices(names)}")
        return {n: self._to_device(_as_tensor(n, inputs[n]), cast=True) for n in names if n in inputs}

    def _to_device(self, tensor, cast: bool, dtype=None):
        if cast and tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=dtype or self.float_dtype)
        return tensor.to(device=self.device)

    def _own_float_dtype(self, path: str):
        """The float dtype the submodule at ``path`` computes in: that of the nearest module on its path (it,
        then its parents) holding floating parameters or buffers — a float32 island kept by
        ``precision.keep_in_float32`` in a float16 model, a GELU inside it too — else the model's."""
        parts = path.split(".") if path else []
        for depth in range(len(parts), 0, -1):
            module = submodule_at(self.module, ".".join(parts[:depth]))
            if any(t.is_floating_point() for t in list(module.parameters()) + list(module.buffers())):
                return _float_dtype(module)
        return self.float_dtype

    def module_dtype(self, key: str) -> str:
        """The float dtype name the submodule of ``key`` (``path`` or ``path#k``) computes in."""
        path = key.split("#", 1)[0]
        self._submodule(path)  # a clear error for an unknown path
        return dtype_name(self._own_float_dtype(path))

    def _split_call(self, prepared: dict):
        positional = [p.name for p in self._params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
        args = [prepared[n] for n in positional if n in prepared]
        kwargs = {n: t for n, t in prepared.items() if n not in positional}
        return args, kwargs

    # ------------------------------------------------------------------------------------------- running

    def _autocast(self):
        if not self.autocast:
            return nullcontext()
        torch = _torch()
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, self.autocast))

    def _call(self, module, hooks: _Hooks, args, kwargs):
        """``module(*args, **kwargs)`` in eval mode, without grad, under autocast when set, with ``hooks``;
        an exception becomes a DiffcoreError naming the innermost running module."""
        torch = _torch()
        with _eval_mode(module), torch.no_grad(), self._autocast(), hooks:
            try:
                return module(*args, **kwargs)
            except _CallbackFailed as failed:  # the caller's callback failed, not the model: its own error
                raise failed.error from None
            except Exception as exc:
                raise hooks.error(exc) from exc

    def _forward(self, inputs: Mapping, hooks: _Hooks):
        args, kwargs = self._split_call(self.prepare_inputs(inputs))
        return self._call(self.module, hooks, args, kwargs)

    @staticmethod
    def _model_outputs(output, hooks: _Hooks) -> list:
        """[(key, output index, tensor)] for the model's outputs, keys unique against the pass's probes."""
        flat = flatten_outputs("output", output)
        return [(_unique(key, hooks.used), i, tensor) for i, (key, tensor) in enumerate(flat)]

    def probes(self, inputs: Mapping) -> list[Probe]:
        """Every submodule output and model output in execution order, from one forward that keeps only
        shapes and dtypes. ``Probe.meta["call"]`` is the module call's key (what ``capture_inputs`` takes);
        ``meta["has_bias"]`` says whether the module adds a bias of its own (a graph optimizer may move it
        into a fused neighbour, leaving no value equal to the module's output)."""
        probes: list = []

        def on_output(key, call, path, module, tensor):
            probes.append(Probe(key, len(probes), tuple(tensor.shape), dtype_name(tensor.dtype), module=path,
                                op_type=type(module).__name__, meta={"call": call,
                                                                     "has_bias": _has_bias(module)}))

        hooks = _Hooks(self.module, on_output=on_output)
        output = self._forward(inputs, hooks)
        for key, index, tensor in self._model_outputs(output, hooks):
            probes.append(Probe(key, len(probes), tuple(tensor.shape), dtype_name(tensor.dtype),
                                output_index=index))
        return probes

    def capture(self, inputs: Mapping, keys: Collection[str]) -> dict:
        """One forward keeping detached clones of the ``keys`` probes (model outputs included), on the
        device that computed them.

        Raises:
            DiffcoreError: a key that is no probe of this run (the message lists the probes).
        """
        got: dict = {}

        def keep(key, tensor, is_output=False):
            got[key] = tensor if is_output else _detached_clone(tensor)

        self.visit(inputs, keys, keep)
        return {key: got[key] for key in keys}

    def visit(self, inputs: Mapping, keys: Collection[str], on_value, calls: Collection[str] = (),
              on_call=None) -> list:
        """One forward handing each ``keys`` probe to ``on_value(key, tensor, is_output)`` as soon as it is
        produced, and the inputs of each ``calls`` module call to ``on_call(call, args, kwargs)`` before it
        runs. The tensors are the live ones (valid during the callback: clone to keep them), so a caller can
        reduce a value the moment it exists instead of holding every probe of the pass.

        Returns:
            The model outputs of this hooked pass, detached (what ``check_hooks`` compares).

        Raises:
            DiffcoreError: a key or call that is not in this run (the message lists what is).
        """
        wanted, found, wanted_calls, found_calls, seen = set(keys), set(), set(calls), set(), []

        def on_output(key, call, path, module, tensor):
            if key in wanted:
                found.add(key)
                _callback(on_value, key, tensor, False)

        def on_inputs(call, args, kwargs):
            seen.append(call)
            if call in wanted_calls:
                found_calls.add(call)
                _callback(on_call, call, args, kwargs)

        hooks = _Hooks(self.module, on_inputs=on_inputs if wanted_calls else None, on_output=on_output)
        output = self._forward(inputs, hooks)
        outputs = self._model_outputs(output, hooks)
        for key, _, tensor in outputs:
            hooks.keys.append(key)
            if key in wanted:
                found.add(key)
                on_value(key, tensor.detach(), True)
        _check_found(wanted, dict.fromkeys(found), hooks.keys, self.name, "probe")
        _check_found(wanted_calls, dict.fromkeys(found_calls), seen, self.name, "module call")
        return [t.detach() for _, _, t in outputs]

    def capture_inputs(self, inputs: Mapping, keys: Collection[str], sources: dict | None = None) -> dict:
        """One forward keeping detached clones of the inputs of the given module calls.

        Args:
            keys: module call keys, ``path`` or ``path#k`` (``Probe.meta["call"]``).
            sources: if given, filled with {call key: {id(cloned tensor): probe key}} for the arguments that
                are the very tensor an earlier module call returned (that module's probe), so a caller can
                tell a module's output passed on from a value computed in between (a sum, a slice).

        Returns:
            {call key: (args tuple, kwargs dict)}, tensors cloned, other values as passed.
        """
        wanted, got, seen, produced = set(keys), {}, [], {}

        def on_output(key, call, path, module, tensor):
            produced[id(tensor)] = (weakref.ref(tensor), key)  # weak: the forward may free it

        def on_inputs(call, args, kwargs):
            seen.append(call)
            if call in wanted:
                memo: dict = {}  # shared by args and kwargs: aliasing across them is kept too
                got[call] = (_map_tensors(tuple(args), _detached_clone, memo),
                             _map_tensors(dict(kwargs), _detached_clone, memo))
                if sources is not None:
                    sources[call] = {id(clone): produced[key][1] for key, (original, clone) in memo.items()
                                     if key in produced and produced[key][0]() is original}

        hooks = _Hooks(self.module, on_inputs=on_inputs, on_output=on_output if sources is not None else None)
        self._forward(inputs, hooks)
        _check_found(wanted, got, seen, self.name, "module call")
        return {key: got[key] for key in keys}

    def run_module(self, key: str, args, kwargs=None) -> dict:
        """Run this runner's submodule for ``key`` (``path`` or ``path#k``) on ``args``/``kwargs`` — the test
        layer on the reference's inputs — and return its outputs flattened under ``key``.

        Floating tensors are moved to the device and cast to the module's dtype (left as given under autocast,
        which casts per op as the model run would).

        Raises:
            DiffcoreError: no submodule at that path, or its forward raised.
        """
        path = key.split("#", 1)[0]
        module = self._submodule(path)
        dtype = self._own_float_dtype(path)
        cast = lambda t: self._to_device(t, cast=not self.autocast, dtype=dtype)  # noqa: E731
        memo: dict = {}
        args = _map_tensors(tuple(args), cast, memo)
        kwargs = _map_tensors(dict(kwargs or {}), cast, memo)
        if _is_script_module(module):
            args, kwargs = script_call(module, args, kwargs)
        output = self._call(module, _Hooks(module, prefix=path), args, kwargs)
        return {k: t.detach() for k, t in flatten_outputs(key, output)}

    def _submodule(self, path: str):
        try:
            if not path:
                raise AttributeError("empty path")
            return submodule_at(self.module, path)
        except AttributeError as exc:
            paths = [p for p, _ in self.module.named_modules() if p]
            raise DiffcoreError(f"{self.name} has no submodule {path!r}; submodules: "
                                f"{format_choices(paths)}") from exc

    def outputs(self, inputs: Mapping) -> dict:
        """The model outputs {``output`` key: tensor} of one forward without any hook: the model as deployed.

        Keys are ``output``/``output.i``/``output.<name>`` in output-index order (without the ``~n`` a
        hooked pass may append to keep them apart from module paths)."""
        args, kwargs = self._split_call(self.prepare_inputs(inputs))
        try:
            output = self._call(self.module, NoHooks(self.name), args, kwargs)
        except DiffcoreError:
            self._forward(inputs, _Hooks(self.module))  # the same failure again, located by the hooks
            raise
        return {key: tensor.detach() for key, tensor in flatten_outputs("output", output)}

    def check_hooks(self, inputs: Mapping, plain: Mapping | None = None, hooked: list | None = None) -> str:
        """Run once with a hook on every module (or take ``hooked``, the outputs of such a run) and compare the
        model outputs with the unhooked run's (``plain``, else computed). A hook-free forward can differ when a module changes behaviour under
        hooks (e.g. a fast path that hooks disable); then the captured layers come from another computation.

        Returns:
            "" when the outputs are bitwise equal, else the warning (also appended to ``self.warnings``).
        """
        if hooked is None:  # else the outputs of a hooked pass already run (``visit``)
            hooks = _Hooks(self.module)
            hooked = [t.detach() for _, _, t in self._model_outputs(self._forward(inputs, hooks), hooks)]
        plain = list((plain if plain is not None else self.outputs(inputs)).values())
        message = hooks_change(self.name, hooked, plain)
        if message and message not in self.warnings:
            self.warnings.append(message)
        return message

    def close(self) -> None:
        """Nothing to release: the module (or its copy) is freed with the runner."""


class _CallbackFailed(Exception):
    """A ``visit`` callback raised inside a hook: ``_call`` re-raises ``error`` as is, not as a failure of the
    model's forward."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _callback(fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:
        raise _CallbackFailed(exc) from exc


def _opaque_warning(path: str, name: str) -> str:
    where = f"module {path!r} of {name}" if path else name
    return (f"{where} is TorchScript, which takes no hooks: its intermediate values are not captured, only "
            f"what leaves it")


def _check_found(wanted: set, got: dict, seen: list, model: str, what: str) -> None:
    missing = sorted(wanted - got.keys())
    if missing:
        raise DiffcoreError(f"{model} has no {what} {format_choices(missing)} in this run; "
                            f"{what}s: {format_choices(seen)}")
