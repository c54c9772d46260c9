"""Error against depth with matplotlib (the ``plot`` extra), for notebooks and saved figures."""
from __future__ import annotations

import math

from .._deps import require
from ..errors import DiffcoreError, format_choices
from .table import shorten_middle
from .text import bands, divergence_position

__all__ = ["METRICS", "largest_positions", "plot_depth"]

LABELLED = 3       # the largest errors labelled by name (the first divergence is labelled too)
LABEL_CHARS = 32   # names are shortened in the middle beyond this

# metric -> (axis label, log scale?, the LayerRow field holding its local counterpart, or None)
METRICS = {
    "rel_l2": ("relative L2 error", True, "local_rel_l2"),
    "max_abs": ("max |d|", True, "local_max_abs"),
    "mean_abs": ("mean |d|", True, None),
    "max_rel": ("max relative error", True, None),
    "p99_abs": ("p99 |d|", True, None),
    "max_ulp": ("max ULP distance", True, None),
    "mismatch_frac": ("mismatch fraction", True, None),
    "cosine": ("cosine similarity", False, None),
    "snr_db": ("SNR (dB)", False, None),
}


def _series(rows, field: str) -> list[float]:
    """Values of ``field`` as floats, NaN where missing or non-finite (matplotlib leaves a gap)."""
    out = []
    for row in rows:
        value = getattr(row, field)
        out.append(float(value) if value is not None and math.isfinite(float(value)) else math.nan)
    return out


def _axes(ax):
    if ax is not None:
        return ax
    plt = require("matplotlib.pyplot", "plots")
    _, ax = plt.subplots(figsize=(9, 3.5))
    return ax


def _draw_bands(ax, report):
    fine, bug = bands(report)
    ax.axhline(fine, color="tab:green", linestyle="--", linewidth=1, label=f"{fine * 100:g} % (fine)")
    ax.axhline(bug, color="tab:red", linestyle="--", linewidth=1, label=f"{bug * 100:g} % (conversion bug)")


def _draw_non_finite(ax, rows, field: str):
    # NaN/Inf cannot sit on a log axis: mark those layers along the top edge instead of dropping them.
    bad = [r.index for r in rows if getattr(r, field) is not None and not math.isfinite(getattr(r, field))]
    if bad:
        ax.scatter(bad, [1.0] * len(bad), transform=ax.get_xaxis_transform(), marker="x", color="tab:red",
                   clip_on=False, zorder=3, label="NaN/Inf")


def _plain(name: str) -> str:
    # A "$" in a layer name would switch matplotlib to mathtext.
    return name.replace("$", r"\$")


def _draw_first(ax, report, values):
    pos = divergence_position(report.layers, report.first_divergence)
    if pos is None:
        return
    x = report.layers[pos].index
    ax.axvline(x, color="tab:red", alpha=0.4, linewidth=1)
    label = "first divergence: " + _plain(shorten_middle(report.first_divergence.name, LABEL_CHARS))
    if math.isfinite(values[pos]):
        ax.plot([x], [values[pos]], "o", mfc="none", mec="tab:red", ms=9, mew=2, label=label)
        ax.annotate(_plain(shorten_middle(report.layers[pos].name, LABEL_CHARS)), (x, values[pos]),
                    xytext=(4, 6), textcoords="offset points", fontsize="x-small", color="tab:red",
                    gid="diffcore-first")
    else:
        ax.plot([], [], "o", mfc="none", mec="tab:red", label=label)


def largest_positions(rows, values, count: int = LABELLED) -> list[int]:
    """Positions of the ``count`` largest finite values, largest first."""
    finite = [pos for pos, v in enumerate(values) if math.isfinite(v)]
    return sorted(finite, key=lambda pos: -values[pos])[:count]


def _label_largest(ax, report, values, skip: int | None):
    for pos in largest_positions(report.layers, values):
        if pos == skip:
            continue
        row = report.layers[pos]
        ax.annotate(_plain(shorten_middle(row.name, LABEL_CHARS)), (row.index, values[pos]), xytext=(4, -10),
                    textcoords="offset points", fontsize="x-small", color="0.25", gid="diffcore-largest")


def plot_depth(report, ax=None, metric: str = "rel_l2"):
    """Plot ``metric`` of every layer against its depth: the x axis is the table's ``#``, the first divergence
    and the largest errors are labelled by name.

    Args:
        report: the ``DiffReport``.
        ax: a matplotlib Axes to draw on; a new figure is made when None.
        metric: a ``LayerRow`` statistic (see ``METRICS``). Error metrics use a log y axis; ``rel_l2`` also
            gets the 0.1 % and 5 % bands and, where computed, the local error as a second series.

    Returns:
        The matplotlib Axes.

    Raises:
        DiffcoreError: unknown ``metric``; MissingDependencyError without matplotlib.
    """
    if metric not in METRICS:  # checked first: a typo should not need matplotlib to be reported
        raise DiffcoreError(f"unknown metric {metric!r}; valid: {format_choices(METRICS)}")
    require("matplotlib", "plots")
    label, log, local_field = METRICS[metric]
    own_figure = ax is None
    ax = _axes(ax)
    rows = report.layers
    values = _series(rows, metric)
    xs = [r.index for r in rows]  # the table's "#": a row read off the plot is found in the table
    ax.plot(xs, values, "-", color="tab:blue", linewidth=1.5, marker=".", ms=3, label=label)
    if local_field and any(getattr(r, local_field) is not None for r in rows):
        ax.plot(xs, _series(rows, local_field), ".", color="tab:purple", ms=5,
                label=f"local {label}")
    if metric == "rel_l2" and any(getattr(r, "samples", None) for r in rows):  # a dataset: spread over samples
        spread = [r.samples or {} for r in rows]
        low = [s.get("p50", math.nan) for s in spread]
        high = [s.get("max", math.nan) for s in spread]
        ax.fill_between(xs, low, high, color="tab:blue", alpha=0.15, label="per sample: p50 to worst")
    if log:
        ax.set_yscale("log", nonpositive="mask")
    if metric == "rel_l2":
        _draw_bands(ax, report)
    _draw_non_finite(ax, rows, metric)
    _draw_first(ax, report, values)
    if metric not in ("cosine", "snr_db"):  # for these the largest values are the best layers
        _label_largest(ax, report, values, divergence_position(rows, report.first_divergence))
    ax.set_xlabel("# (the table's row number, execution order)")
    ax.set_ylabel(label)
    ax.set_title(f"diffcore {'PASS' if report.passed else 'FAIL'}: {label} against depth")
    if rows:
        ax.legend(loc="best", fontsize="small")
    if own_figure:
        ax.figure.tight_layout()
    return ax
