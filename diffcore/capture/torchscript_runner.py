"""A TorchScript file as a side with per-submodule intermediates (torchscript_graph.py reads them).

Probes are keyed as TorchRunner keys hooked modules (``path``, ``path#k``, flattened ``.i``), so a TorchScript
file pairs with the eager module it came from and with its ONNX export by the same names. The model outputs
are judged on the plain module (no instrumentation), and ``check_hooks`` compares the instrumented run's
outputs with them.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from ..errors import DiffcoreError
from .base import Probe
from .torch_hooks import _detached_clone, _flatten, _has_bias, _unique
from .torch_plain import hooks_change
from .torch_runner import TorchRunner, _check_found, dtype_name
from .torchscript_graph import instrument


class TorchScriptRunner(TorchRunner):
    """Runs a TorchScript file: outputs from the module as saved, intermediates from an instrumented copy."""

    kind = "torch"
    torchscript = True  # a submodule that cannot run on the eager call's arguments skips its local error

    def __init__(self, path: str, module, instrumented_copy, **kwargs):
        super().__init__(module, **kwargs)
        import torch

        copy = instrumented_copy.to(self.device)
        if kwargs.get("dtype"):
            copy = copy.to(getattr(torch, kwargs["dtype"]))
        self._copy = copy.eval()
        self._by_path = dict(self._copy.named_modules())  # ScriptModules have no get_submodule
        self.path = path
        self.description = f"TorchScript {path} ({self.dtype}, {self.device})"
        try:
            self._inst = instrument(self._copy)
        except (RuntimeError, AttributeError) as exc:  # a graph this rewrite does not handle: outputs only
            self._inst = None
            self.warnings.append(f"{self.name}: its graph could not be instrumented ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}), so only its outputs are compared")
            return
        self.warnings = []
        if self._inst.skipped:
            self.warnings.append(f"{self.name}: {self._inst.skipped} submodule call site(s) inside a scripted loop "
                                 "body are not captured, only what leaves the loop")

    # ------------------------------------------------------------------------------------------- running

    def _run(self, inputs: Mapping) -> tuple:
        import torch

        args, kwargs = self._split_call(self.prepare_inputs(inputs))
        ordered = list(args) + [kwargs[p.name] for p in self._params if p.name in kwargs]
        with torch.no_grad(), self._autocast():
            try:
                return self._inst.fn(self._copy._c, *ordered)
            except (RuntimeError, TypeError) as exc:  # torch.jit.Error is a RuntimeError
                raise DiffcoreError(f"forward of {self.name} failed{_script_error(exc)}") from None

    def _flat(self, result) -> tuple:
        """[(key, call, tensor)] of the submodule outputs in execution order, and the model outputs
        [(key, index, tensor)], keys unique as a hooked pass makes them."""
        tensor, used, flat, counts = _torch_tensor(), set(), [], {}
        self._runtime_keys = {}
        for call in self._inst.calls:
            if result[call.output] is None:
                continue  # a call in the branch of an ``if`` not taken: it did not run
            n = counts.get(call.path, 0)
            counts[call.path] = n + 1
            key = call.path if n == 0 else f"{call.path}#{n}"  # numbered as hooks number the calls that ran
            self._runtime_keys[key] = call
            items: list = []
            _flatten(key, result[call.output], items, tensor)
            flat.extend((_unique(k, used), call, t) for k, t in items)
        items = []
        _flatten("output", result[0], items, tensor)
        outputs = [(_unique(k, used), i, t) for i, (k, t) in enumerate(items)]
        return flat, outputs

    def outputs(self, inputs: Mapping) -> dict:
        """The saved module's own outputs; when it fails, the instrumented run fails the same way and names
        the submodule (the interpreter's traceback marks each call on the way)."""
        try:
            return super().outputs(inputs)
        except DiffcoreError:
            if self._inst is not None:
                self._run(inputs)
            raise

    def probes(self, inputs: Mapping) -> list[Probe]:
        """Every submodule output and model output in execution order (see TorchRunner.probes)."""
        if self._inst is None:
            return super().probes(inputs)
        flat, outputs = self._flat(self._run(inputs))
        probes: list = []
        for key, call, t in flat:
            module = self._by_path[call.path]
            probes.append(Probe(key, len(probes), tuple(t.shape), dtype_name(t.dtype), module=call.path,
                                op_type=_class_name(module),
                                meta={"call": self._call_key(call), "has_bias": _has_bias(module)}))
        for key, index, t in outputs:
            probes.append(Probe(key, len(probes), tuple(t.shape), dtype_name(t.dtype), output_index=index))
        return probes

    def visit(self, inputs: Mapping, keys: Collection[str], on_value, calls: Collection[str] = (),
              on_call=None) -> list:
        """One instrumented run handing ``keys`` values to ``on_value`` and ``calls`` inputs to ``on_call``
        (see TorchRunner.visit); returns the instrumented run's model outputs."""
        if self._inst is None:
            return super().visit(inputs, keys, on_value, calls, on_call)
        result = self._run(inputs)
        flat, outputs = self._flat(result)
        wanted, found, seen = set(keys), set(), []
        for key, _, t in flat:
            seen.append(key)
            if key in wanted:
                found.add(key)
                on_value(key, t, False)
        for key, _, t in outputs:
            seen.append(key)
            if key in wanted:
                found.add(key)
                on_value(key, t.detach(), True)
        _check_found(wanted, dict.fromkeys(found), seen, self.name, "probe")
        if calls:
            got = self._call_inputs(result, calls)
            for call in calls:
                on_call(call, *got[call])
        return [t.detach() for _, _, t in outputs]

    def _call_key(self, call) -> str:
        return next(k for k, c in self._runtime_keys.items() if c is call)

    def _call_inputs(self, result, keys, sources: dict | None = None) -> dict:
        self._flat(result)
        by_key = dict(self._runtime_keys)
        runtime = {c.key: k for k, c in by_key.items()}  # graph call key -> key of the call that ran
        _check_found(set(keys), {k: 1 for k in keys if k in by_key}, list(by_key), self.name, "module call")
        got = {}
        for key in keys:
            call = by_key[key]
            args = tuple(_clone(result[i]) for i in call.inputs)
            got[key] = (args, {})
            if sources is not None:
                sources[key] = {id(a): runtime[src] for a, src in zip(args, call.input_sources) if src in runtime}
        return got

    def capture_inputs(self, inputs: Mapping, keys: Collection[str], sources: dict | None = None) -> dict:
        """The inputs of the given submodule calls, from one instrumented run (see TorchRunner)."""
        if self._inst is None:
            return super().capture_inputs(inputs, keys, sources)
        return self._call_inputs(self._run(inputs), list(keys), sources)

    def check_hooks(self, inputs: Mapping, plain: Mapping | None = None, hooked: list | None = None) -> str:
        """Compare the instrumented run's model outputs with the saved module's own run."""
        if self._inst is None:
            return super().check_hooks(inputs, plain, hooked)
        if hooked is None:
            hooked = [t.detach() for _, _, t in self._flat(self._run(inputs))[1]]
        plain = list((plain if plain is not None else self.outputs(inputs)).values())
        message = hooks_change(self.name, hooked, plain)
        if message and message not in self.warnings:
            self.warnings.append(message)
        return message

    def _own_float_dtype(self, path: str):
        return self.float_dtype  # a TorchScript file runs in one dtype (cast whole by --dtype)

    def layer_count(self) -> int:
        """How many submodule calls the instrumented graph reports."""
        return len(self._inst.calls) if self._inst is not None else 0


def _torch_tensor():
    import torch

    return torch.Tensor


def _clone(value):
    return _detached_clone(value) if isinstance(value, _torch_tensor()) else value


def _class_name(module) -> str:
    """The Python class a ScriptModule was compiled from (``Linear``), as hooks name it."""
    return getattr(module, "original_name", None) or type(module).__name__


def _script_error(exc: BaseException) -> str:
    """The TorchScript interpreter's error in one line (`` in submodule 'a.b': Error: ... (TorchScript:
    code)``): the error itself, the submodule it was raised in
    (read from the serialized code's traceback: each caller frame marks its ``(child).forward(...)`` call)
    and the failing code line."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    error = lines[-1] if lines else type(exc).__name__
    if not error.startswith(type(exc).__name__):
        error = f"{type(exc).__name__}: {error}"
    frames = text.split("Traceback of TorchScript, original code")[0].split("\n  File ")[1:]
    path = [name for frame in frames[:-1] for name in _called_child(frame)]
    where = f" in submodule '{'.'.join(path)}'" if path else ""
    failing = _marked_line(frames[-1]) if frames else ""
    return f"{where}: {error}" + (f" (TorchScript: {failing})" if failing else "")


def _marked_line(frame: str) -> str:
    """The code line a frame marks with ``<--- HERE``."""
    lines = frame.splitlines()
    for i, line in enumerate(lines):
        if "<--- HERE" in line and i > 0:
            return lines[i - 1].strip()
    return ""


def _called_child(frame: str) -> list:
    """The attribute path of the child a caller frame was calling when the error came (``self.middle`` read
    as ``middle = self.middle`` or ``_0 = getattr(layers, "0")`` in the serialized code)."""
    found = re.search(r"\((\w+)\)\.forward\(", _marked_line(frame))
    if not found:
        return []
    return _resolve(found.group(1), frame, 0)


def _resolve(var: str, frame: str, depth: int) -> list:
    if depth > 8:
        return [var]
    attr = re.search(rf"\b{re.escape(var)} = self\.(\w+)", frame)
    if attr:
        return [attr.group(1)]
    item = re.search(rf'\b{re.escape(var)} = getattr\((\w+), "(\w+)"\)', frame)
    if item:
        return _resolve(item.group(1), frame, depth + 1) + [item.group(2)]
    return [var]


__all__ = ["TorchScriptRunner"]
