"""torch.ao quantized modules as a side: each dynamically quantized Linear's precision and predicted error.

``torch.ao.quantization.quantize_dynamic`` replaces ``nn.Linear`` with a module holding int8 weights (per
tensor or per channel) that quantizes its input at run time to quint8 over the input's own range: 7 bits
(``reduce_range``) on the x86/fbgemm engines, 8 on qnnpack. The predicted error uses noise.py's terms; the
input's range and root mean square come from one forward of the test model with pre-hooks on those
modules only (the same inputs the comparison ran).
"""
from __future__ import annotations

import math

import numpy as np

from .graph import LayerPrecision, Operand
from .noise import SQRT12, weight_term

TORCH_AO = "torch.ao dynamic"


def _dynamic_linear_types():
    try:
        from torch.ao.nn.quantized.dynamic import Linear
    except ImportError:  # a torch without torch.ao
        return ()
    return (Linear,)


def module_precisions(module) -> dict:
    """{module path: LayerPrecision} of the dynamically quantized Linear modules of ``module``."""
    types = _dynamic_linear_types()
    found = {}
    for path, sub in module.named_modules():
        if types and isinstance(sub, types):
            found[path] = _linear_precision(path, sub)
    return found


def _linear_precision(path, sub) -> LayerPrecision:
    import torch

    weight = sub.weight()
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scale = weight.q_per_channel_scales().double().numpy()
        zero = weight.q_per_channel_zero_points().numpy().astype(np.int64)
    else:
        scale, zero = np.array([weight.q_scale()], np.float64), np.array([weight.q_zero_point()], np.int64)
    bits = "uint8" if _activation_levels() == 255 else "uint7"
    activation = Operand(f"{path}:input", np.zeros(1), np.zeros(1, np.int64), bits, dynamic=True)
    weights = Operand(f"{path}.weight", scale, zero, "int8", 0, weight.dequantize().double().numpy())
    return LayerPrecision(TORCH_AO, path, "Linear", [activation], [weights])


def _activation_levels() -> int:
    """Steps of the run-time input quantization: fbgemm/x86 reduce the range to 7 bits, qnnpack keeps 8."""
    import torch

    return 255 if torch.backends.quantized.engine == "qnnpack" else 127


def input_summaries(runner, feed, paths) -> dict:
    """{module path: (rms, min, max)} of each module's input in one forward of ``runner``'s module."""
    import torch

    summaries, handles = {}, []
    modules = dict(runner.module.named_modules())

    def hook(path):
        def record(_module, args):
            x = args[0].detach().double()
            summaries[path] = (float(torch.sqrt(torch.mean(x * x))), float(x.min()), float(x.max()))
        return record

    for path in paths:
        handles.append(modules[path].register_forward_pre_hook(hook(path)))
    try:
        runner.outputs(feed)
    finally:
        for handle in handles:
            handle.remove()
    return summaries


def predicted(layer: LayerPrecision, summary) -> tuple[float | None, dict]:
    """The relative error a correct dynamically quantized Linear shows on an input with ``summary``."""
    terms = {}
    if summary is not None and summary[0] > 0:
        rms, low, high = summary
        step = (max(high, 0.0) - min(low, 0.0)) / _activation_levels()
        terms["input (run-time scale)"] = step / SQRT12 / rms
    for operand in layer.weights:
        value = weight_term(operand)
        if value is not None:
            terms[f"weight {operand.value}"] = value
    if not terms:
        return None, terms
    return math.sqrt(sum(v * v for v in terms.values())), terms
