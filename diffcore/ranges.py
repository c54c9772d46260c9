"""Range diagnosis in the user's words: does a layer's reference fit the test dtype's range?

For every float row the reference's largest magnitude (``LayerRow.ref_absmax``) is set against the largest
finite value of the row's test dtype (65504 for float16, about 3.39e38 for bfloat16): ``headroom_bits`` is
``log2(max_finite / ref_absmax)``, the powers of two left before an overflow (negative: past the maximum).
A row past the maximum gets "this layer's values reach 1.5e+05, 2.3x past float16's maximum (65504)" in its
cause (localize.py) and notes; reference values that flush to zero in the test dtype (``underflow_risk``:
nonzero, at most half the smallest subnormal) get a note too.

Weights: ``weight_findings`` lists the parameters of each torch module (read in the reference's float32)
that overflow or flush to zero in the test dtype of a cast model (under autocast parameters stay float32). ONNX constants are not listed here: findings.py already
reports the constants a float16 converter clamped, which are exactly those.
"""
from __future__ import annotations

import math

from .stats.formats import FORMATS

LOW_PRECISION = ("float16", "bfloat16")
WEIGHT_RANGE = "weight-range"  # finding kind (findings.py lists the others)


def ref_absmax(stats) -> float | None:
    """The reference's largest finite magnitude, from ``DriftStats.ref_min``/``ref_max``."""
    lo, hi = getattr(stats, "ref_min", None), getattr(stats, "ref_max", None)
    if lo is None or hi is None:
        return None
    return max(abs(float(lo)), abs(float(hi)))


def headroom_bits(absmax: float | None, dtype: str) -> float | None:
    """Powers of two between ``absmax`` and ``dtype``'s largest finite value (negative: past it)."""
    if dtype not in LOW_PRECISION or not absmax or not math.isfinite(absmax):
        return None
    return math.log2(FORMATS[dtype].max_finite / absmax)


def overflow_words(row) -> str:
    """"this layer's values reach 1.5e+05, 2.3x past float16's maximum (65504)", or "" when it fits."""
    dtype, absmax = row.test_dtype, getattr(row, "ref_absmax", None)
    if dtype not in LOW_PRECISION or absmax is None or not math.isfinite(absmax):
        return ""
    top = FORMATS[dtype].max_finite
    if absmax <= top and not row.overflow_risk:
        return ""
    return f"this layer's values reach {absmax:.3g}, {absmax / top:.3g}x past {dtype}'s maximum ({top:.6g})"


def underflow_words(row) -> str:
    """How many nonzero reference values flush to zero in the test dtype, or ""."""
    if row.test_dtype not in LOW_PRECISION or not row.underflow_risk:
        return ""
    fmt = FORMATS[row.test_dtype]
    return (f"{row.underflow_risk} nonzero reference values flush to zero in {row.test_dtype} (at most "
            f"{fmt.underflow_threshold:.3g}, half its smallest subnormal)")


def annotate(rows) -> None:
    """Range notes on every row that overflows or underflows its test dtype (the cause is localize.py's)."""
    for row in rows:
        for words in (overflow_words(row), underflow_words(row)):
            if words and words not in row.notes:
                row.notes.append(words)


# ---------------------------------------------------------------------------------------------- weights

def _param_words(name: str, values, dtype: str) -> str:
    fmt = FORMATS[dtype]
    mags = values.abs()
    over = int((mags >= fmt.overflow_threshold).sum())
    under = int(((mags != 0) & (mags <= fmt.underflow_threshold)).sum())
    parts = []
    if over:
        parts.append(f"{over} values overflow (largest {float(mags.max()):.3g}, {dtype} max {fmt.max_finite:.6g})")
    if under:
        small = float(mags[mags != 0].min())
        parts.append(f"{under} values flush to zero (smallest {small:.3g})")
    return f"parameter {name}: " + ", ".join(parts) + f" in {dtype}" if parts else ""


def torch_weight_findings(module, dtype: str) -> list[dict]:
    """Parameters and buffers of ``module`` (float32 or wider) that overflow or flush to zero in ``dtype``.

    One finding per module path that owns such a tensor directly: ``{"kind": "weight-range", "module":
    path, "tensor": qualified name, "message": ...}``.
    """
    if dtype not in LOW_PRECISION:
        return []
    found = []
    for path, sub in module.named_modules():
        tensors = list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False))
        for name, tensor in tensors:
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            full = f"{path}.{name}" if path else name
            words = _param_words(full, tensor.detach().double().cpu(), dtype)
            if words:
                found.append({"kind": WEIGHT_RANGE, "module": path, "tensor": full, "message": words})
    return found


def weight_findings(ref, test) -> list[dict]:
    """Weight-range findings for a torch reference compared with a torch model cast to float16/bfloat16
    (``test_dtype``), else []."""
    module, dtype = getattr(ref, "module", None), getattr(test, "dtype", None)
    # under autocast the parameters stay float32 and each op decides (a LayerNorm keeps them): only a cast
    # model stores every parameter in the test dtype
    if module is None or dtype not in LOW_PRECISION or getattr(ref, "kind", "") != "torch":
        return []
    return torch_weight_findings(module, dtype)


def attach_weights(rows, found) -> None:
    """A note on every row of the module that owns a listed parameter (its output row)."""
    for finding in found:
        owners = [r for r in rows if finding["module"] and r.module == finding["module"]]
        finding["values"] = [r.test_tensor for r in owners]  # findings.lines names these rows
        for row in owners:
            if finding["message"] not in row.notes:
                row.notes.append(finding["message"])


def range_lines(rows) -> list[str]:
    """One line per row whose reference overflows or underflows its test dtype, for the text and HTML views."""
    out = []
    for row in rows:
        words = [w for w in (overflow_words(row), underflow_words(row)) if w]
        if words:
            out.append(f"{row.name}: " + "; ".join(words))
    return out


def diagnosis_lines(report) -> list[str]:
    """The amplification and range lines of a DiffReport (text.py and html.py show them as one block)."""
    from .amplification import amplifier_lines

    rows = list(report.layers) + list(report.outputs)
    return amplifier_lines(report.layers) + range_lines(rows)
