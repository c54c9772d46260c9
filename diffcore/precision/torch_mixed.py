"""A torch model in a low-precision dtype with chosen modules kept in float32: the cast copy or autocast.

Cast (``test_dtype``): a copy of the model in the low dtype; each chosen module (and its descendants, which
``.float()`` casts with it) runs in float32 behind a forward pre-hook casting its floating inputs to float32
and a forward hook casting its floating outputs back to the dtype its inputs arrived in. A pre-hook on the
root casts the model's floating inputs to the low dtype, so the first module's dtype does not matter.
Autocast (``test_autocast``): a copy whose chosen modules run their forward with autocast disabled, on
inputs cast to float32.
"""
from __future__ import annotations

import copy

from ..errors import DiffcoreError

__all__ = ["TorchTarget"]


def _map(value, fn):
    """``value`` with every floating tensor replaced by ``fn(tensor)`` (tuples, lists and dicts walked)."""
    from ..capture.torch_hooks import map_floats

    return map_floats(value, fn)


def _first_float_dtype(value):
    found = []
    _map(value, lambda t: found.append(t.dtype) or t)
    return found[0] if found else None


def _keep_fp32(module, low_dtype) -> None:
    """``module`` in float32, entered and left through casts (see the module docstring). Its descendants
    get the same casts, so each one also runs alone (as diffcore's local errors run it) on low-dtype inputs."""
    module.float()
    for sub in module.modules():
        if not getattr(sub, "_diffcore_fp32", False):
            _cast_boundaries(sub, low_dtype)
            sub._diffcore_fp32 = True


def _cast_boundaries(module, low_dtype) -> None:
    import torch

    arrived = []

    def before(mod, args, kwargs):
        arrived.append(_first_float_dtype((args, kwargs)) or low_dtype)
        cast = lambda t: t.float()
        return _map(args, cast), _map(kwargs, cast)

    def after(mod, args, kwargs, output):
        dtype = arrived.pop() if arrived else low_dtype
        return _map(output, lambda t: t.to(dtype)) if dtype != torch.float32 else output

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after, with_kwargs=True)


def _exclude_from_autocast(module, device_type: str) -> None:
    """``module``'s forward without autocast, on float32 inputs."""
    import torch

    forward = module.forward

    def fp32_forward(*args, **kwargs):
        cast = lambda t: t.float()
        with torch.autocast(device_type=device_type, enabled=False):
            return forward(*_map(args, cast), **_map(kwargs, cast))

    module.forward = fp32_forward


class TorchTarget:
    """How to run a torch TEST model with a set of its modules in float32."""

    def __init__(self, module, *, dtype: str | None, autocast: str | None, device: str = "cpu"):
        import torch

        if not isinstance(module, torch.nn.Module):
            raise DiffcoreError(f"suggest_fp32 needs a torch.nn.Module as TEST, got {type(module).__name__}")
        self.module, self.device = module, device
        self.autocast = autocast
        self.dtype = autocast or dtype or self._module_dtype(module)
        if self.dtype not in ("float16", "bfloat16"):
            raise DiffcoreError("suggest_fp32: TEST does not run in float16 or bfloat16 (give test_dtype or "
                                f"test_autocast); its dtype is {self.dtype}")
        self.kind = "torch autocast" if autocast else "torch cast"
        self.paths = {name for name, _ in module.named_modules() if name}

    @staticmethod
    def _module_dtype(module) -> str:
        for tensor in module.parameters():
            if tensor.is_floating_point():
                return str(tensor.dtype).replace("torch.", "")
        return "float32"

    def unit_of(self, row) -> str | None:
        """The module a row's tensor leaves (the root is never a candidate: that is no mixed precision)."""
        for name in (row.module, row.name):
            if name and name in self.paths:
                return name
        return None

    def island(self, unit: str, report) -> str:
        """``unit``, or its smallest ancestor whose output the reference keeps within the low dtype's range:
        the whole out-of-range stretch then runs in float32."""
        in_range = {self.unit_of(r) for r in list(report.layers) + list(report.outputs) if not r.overflow_risk}
        parts = unit.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            ancestor = ".".join(parts[:depth])
            if ancestor in in_range:
                return ancestor
        return unit

    def build(self, units):
        """The mixed-precision copy of the model, with ``units`` in float32."""
        import torch

        low = getattr(torch, self.dtype)
        model = copy.deepcopy(self.module).to(self.device)
        if self.autocast:
            exclude_from_autocast(model, units)
            return model
        model.to(low)
        model.register_forward_pre_hook(lambda mod, args, kwargs: (
            _map(args, lambda t: t.to(low)), _map(kwargs, lambda t: t.to(low))), with_kwargs=True)
        for name in units:
            _keep_fp32(model.get_submodule(name), low)
            # the float32 weights themselves, not their float16 rounding cast back
            model.get_submodule(name).load_state_dict(self.module.get_submodule(name).state_dict())
        return model

    def runner(self, units):
        """A Runner of the mixed model for ``diffcore.compare`` (its working dtype stays the low one, so local
        errors feed each module the low dtype and the fp32 modules' hooks cast)."""
        import torch

        from ..capture.torch_runner import TorchRunner

        runner = TorchRunner(self.build(units), autocast=self.autocast, device=self.device, name="test")
        if not self.autocast:
            runner.float_dtype, runner.dtype = getattr(torch, self.dtype), self.dtype
        listed = ", ".join(units) if units else "none"
        runner.description = f"torch test ({self.kind} {self.dtype}; float32: {listed})"
        return runner

    def code(self, units) -> str:
        """A Python snippet applying the set to the user's model ``model``."""
        names = "[" + ", ".join(repr(u) for u in units) + "]"
        if self.autocast:
            return _AUTOCAST_SNIPPET.format(names=names, device=torch_device_type(self.device),
                                            dtype=self.dtype)
        return _CAST_SNIPPET.format(names=names, dtype=self.dtype)


def torch_device_type(device: str) -> str:
    return str(device).split(":")[0]


_CAST_SNIPPET = '''import torch
from diffcore.precision import keep_in_float32
# model: your float32 torch.nn.Module; the result runs in {dtype} with these modules in float32
mixed = keep_in_float32(model, {names}, dtype="{dtype}")'''

_AUTOCAST_SNIPPET = '''import torch
from diffcore.precision import exclude_from_autocast
# model: your torch.nn.Module, run under torch.autocast("{device}", dtype=torch.{dtype})
exclude_from_autocast(model, {names})  # these modules run in float32, in place'''


def keep_in_float32(model, modules, dtype: str = "float16"):
    """A copy of ``model`` in ``dtype`` (float16 or bfloat16) whose ``modules`` (paths as in
    ``named_modules()``) run in float32, with casts at their boundaries. The model's floating inputs are cast
    to ``dtype`` on entry."""
    target = TorchTarget(model, dtype=dtype, autocast=None, device=_device_of(model))
    _check_paths(target, modules)
    return target.build(list(modules))


def exclude_from_autocast(model, modules) -> None:
    """Make ``modules`` of ``model`` (paths as in ``named_modules()``) run in float32 under torch.autocast:
    their forward runs with autocast disabled on inputs cast to float32 (in place)."""
    device = torch_device_type(_device_of(model))
    for name in modules:
        for sub in model.get_submodule(name).modules():  # each one also runs alone (local errors)
            if not getattr(sub, "_diffcore_no_autocast", False):
                _exclude_from_autocast(sub, device)
                sub._diffcore_no_autocast = True


def _device_of(model) -> str:
    for tensor in model.parameters():
        return str(tensor.device)
    return "cpu"


def _check_paths(target: TorchTarget, modules) -> None:
    unknown = [m for m in modules if m not in target.paths]
    if unknown:
        raise DiffcoreError(f"no module named {unknown[0]!r} in {type(target.module).__name__}")
