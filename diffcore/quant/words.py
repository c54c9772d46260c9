"""Quantized layers in words: the summary's "losing the most" sentence and the report's per-layer lines.

A quantized row's *local SQNR* is ``-20 log10(local relative L2 error)``: the signal-to-quantization-noise
ratio of the layer alone (run on the reference's inputs), the figure quantization tools report per layer.
Pure functions of report rows; nothing here imports a framework.
"""
from __future__ import annotations

import math

TOP = 3  # layers the summary names


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def local_sqnr_db(row) -> float | None:
    """-20 log10 of the row's local relative L2 error (inf for an exact layer), None when unknown."""
    if not _finite(row.local_rel_l2):
        return None
    return math.inf if row.local_rel_l2 == 0 else -20.0 * math.log10(row.local_rel_l2)


def quantized_rows(rows) -> list:
    """Rows of quantized layers (a prediction from their scales) with a local error."""
    return [r for r in rows if _finite(getattr(r, "predicted_rel_l2", None)) and _finite(r.local_rel_l2)]


def losses(layers) -> str:
    """' Layers losing the most to quantization (local SQNR): fc2 35.9 dB, ...' or '' (no quantized row)."""
    rows = sorted(quantized_rows(layers), key=lambda r: -r.local_rel_l2)[:TOP]
    if not rows:
        return ""
    items = ", ".join(f"{r.name} {local_sqnr_db(r):.1f} dB" for r in rows)
    per_channel = " (or to quantize per channel)" if any("per-tensor W" in (r.precision or "") for r in rows) \
        else ""
    return (f" Layers losing the most to quantization (local SQNR): {items}: the first to keep in float32"
            f"{per_channel} where the outputs need more accuracy.")


def lines(report) -> list[str]:
    """One line per quantized layer: what it computes in, local SQNR, measured against predicted error."""
    out = []
    for row in quantized_rows(report.layers):
        out.append(f"{row.name}: {row.precision}; local SQNR {local_sqnr_db(row):.1f} dB, local error "
                   f"{100 * row.local_rel_l2:.3g} % against {100 * row.predicted_rel_l2:.3g} % its scales "
                   f"predict ({row.status})")
    return out
