"""Output that fits: terminal widths, the compact and wide tables, the module view, short reprs, the
DataFrame's column order, ULPs only where they mean something, the plot's x axis (issue 17, item 2)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from diffcore.drift import drift
from diffcore.report import LayerRow
from diffcore.report.modules import default_view, is_shape_only, view_lines
from diffcore.report.table import shorten_middle, target_width
from diffcore.report.text import render_text, ulp_cell

from .test_report_views import make_report, make_row

LONG = "encoder.layers.11.self_attention.multi_head.output_projection.dense"


def _table_lines(text: str) -> list[str]:
    """The lines of the layer and output tables (header, dashes, rows)."""
    return [line for line in text.splitlines() if re.match(r"^(>>|\s{2,}|--)\s*(\d+|#|\.\.\.|-+)\s", line)]


@pytest.mark.parametrize("width", [80, 120, 200])
def test_every_line_fits_the_width(width):
    report = make_report()
    report.layers[5].name = LONG
    report.layers[70].cause = "error born here: " + "the float16 product overflows " * 5
    text = render_text(report, width=width)
    assert len(_table_lines(text)) > 60
    assert max(len(line) for line in text.splitlines()) <= width


def test_width_defaults_to_100_when_stdout_is_not_a_terminal(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert target_width() == 100
    monkeypatch.setenv("COLUMNS", "132")
    assert target_width() == 132


def test_the_compact_table_has_the_key_columns_and_wide_has_all():
    compact, wide = render_text(make_report()), render_text(make_report(), wide=True)
    header = next(line for line in compact.splitlines() if re.search(r"#\s+name", line))
    assert re.search(r"#\s+name\s+op\s+rel L2 %\s+local %\s+status\s+why", header)
    assert "cosine" not in compact and "max ULP" not in compact
    for column in ("shape", "max |d|", "cosine", "SNR dB", "max ULP", "new NaN/Inf", "local rel L2 %"):
        assert column in wide


def test_long_names_keep_the_end_of_the_module_path():
    report = make_report(n=10, diverge_at=5)
    report.layers[2].name = LONG
    text = render_text(report, width=80)
    row = next(line for line in text.splitlines() if re.match(r"^\s+2\s", line))
    assert "..." in row and "projection.dense " in row and "encoder.layers" not in row
    assert shorten_middle(LONG, 24).endswith("projection.dense") and len(shorten_middle(LONG, 24)) == 24


def test_summary_block_comes_before_the_table():
    text = render_text(make_report())
    head = text[: text.index("Layers (")]
    assert head.startswith("diffcore FAIL: first divergence at")
    assert re.search(r"first:\s+<script>.*\(#70 Linear\): rel L2 20 %, local 19 %, diverged", head)
    assert "cause:     error born here" in head and "coverage:" in head
    assert re.search(r"worst out: output\.0 \(#100\): rel L2 25 %, carried", head)


# ---- module view -----------------------------------------------------------------------------------------
def _scoped_rows():
    """Two blocks exported to ONNX: nodes inside module scopes plus shape ops outside any scope."""
    rows, index = [], 0
    for block in range(2):
        for op in ("MatMul", "Reshape", "Transpose", "Softmax", "MatMul", "Add"):
            rows.append(make_row(index, f"/blocks.{block}/attn/{op}_{index}", 1e-4 * (index + 1), op=op))
            rows[-1].module = f"blocks.{block}.attn"
            index += 1
        for op in ("Reshape", "Cast", "Unsqueeze"):
            rows.append(make_row(index, f"/{op}_{index}", 1e-4, op=op))
            index += 1
    return rows


def test_module_view_folds_scopes_and_drops_shape_ops():
    rows = _scoped_rows()
    assert default_view(rows) == "module"
    lines = view_lines(rows, None)
    assert [line.name for line in lines] == ["blocks.0.attn", "blocks.1.attn"]
    assert lines[0].row is rows[5] and len(lines[0].members) == 6  # the exit value, standing for the scope
    assert len(view_lines(rows, "node")) == len(rows)


def test_module_line_reports_the_worst_error_inside_and_the_first_divergence():
    rows = _scoped_rows()
    rows[3].rel_l2, rows[3].status = 0.3, "diverged"
    rows[3].cause = "error born here"
    lines = view_lines(rows, "module", first=rows[3])
    assert lines[0].status == "diverged" and lines[0].contains(rows[3])
    assert lines[0].note.startswith("first divergence at /blocks.0/attn/Softmax_3: error born here")
    text = render_text(_report_of(rows, rows[3]), width=120)
    marked = [line for line in text.splitlines() if line.startswith(">>")]
    assert len(marked) == 1 and "blocks.0.attn" in marked[0] and "diverged" in marked[0]


def test_a_diverged_shape_op_is_never_dropped():
    rows = _scoped_rows()
    rows[6].status = "diverged"  # a wrong Transpose permutation is a real bug
    assert "/Reshape_6" in [line.name for line in view_lines(rows, "module")]
    assert is_shape_only(rows[7]) and not is_shape_only(rows[0])


def test_unknown_view_is_a_user_error():
    from diffcore import DiffcoreError

    with pytest.raises(DiffcoreError, match=r"unknown view 'graph'; valid: .*module"):
        render_text(make_report(), by="graph")


def _report_of(rows, first):
    report = make_report(n=3, diverge_at=None, verdict="fail")
    report.layers, report.first_divergence = rows, first
    return report


# ---- ULPs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("test_dtype, ulp, shown", [
    ("float16", 3.0, "3"), ("bfloat16", 250.0, "250"), ("float16", 4000.0, "-"), ("float16", math.inf, "-"),
    ("float32", 3.0, "-"), ("float32", 40000.0, "-"),
])
def test_ulps_are_shown_only_for_small_half_precision_counts(test_dtype, ulp, shown):
    row = make_row(0, "a", 1e-4)
    row.test_dtype, row.max_ulp = test_dtype, ulp
    assert ulp_cell(row) == shown


# ---- reprs and data --------------------------------------------------------------------------------------
def test_reprs_are_short():
    report = make_report()
    assert len(repr(report)) < 300 and "\n" not in repr(report)
    assert re.match(r"<DiffReport FAIL: 100 layers, 1 outputs, first divergence .* \(#70, diverged\)", repr(report))
    assert repr(report.layers[70]) == ("LayerRow(#70 \"<script>alert('x')</script>\", diverged, rel_l2=0.2, "
                                       "local_rel_l2=0.19)")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 64)).astype(np.float32)
    stats = drift(a, a.astype(np.float16))
    assert len(repr(stats)) < 200 and "\n" not in repr(stats) and "rel_l2=" in repr(stats)
    assert "p50/p90/p99" in str(stats)  # the full description is still there


def test_layer_row_notebook_view_is_a_small_table():
    html = make_report().layers[70]._repr_html_()
    assert html.count("<tr>") == 8 and "&lt;script&gt;" in html and "<script>" not in html
    assert "dc-s-diverged" in html and "error born here" in html


def test_rows_put_the_key_columns_first():
    row = make_report().rows(include_outputs=True)[-1]
    assert list(row)[:5] == ["name", "status", "rel_l2", "local_rel_l2", "cause"] and row["is_output"]


def test_to_dataframe_puts_the_key_columns_first():
    pytest.importorskip("pandas")
    frame = make_report().to_dataframe(include_outputs=True)
    assert list(frame.columns)[:5] == ["name", "status", "rel_l2", "local_rel_l2", "cause"]
    assert list(frame.columns)[-1] == "is_output" and len(frame) == 101
    assert frame.loc[70, "status"] == "diverged"
    assert len(frame.columns) == len({f for f in LayerRow.__dataclass_fields__}) + 1


# ---- plot ------------------------------------------------------------------------------------------------
def test_plot_x_axis_is_the_table_number_with_names_labelled():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = make_report(n=30, diverge_at=20)
    for row in report.layers:
        row.index += 100  # the table's "#" (a reference order), not the list position
    report.layers[25].rel_l2 = 0.9
    ax = report.plot()
    try:
        assert min(ax.lines[0].get_xdata()) == 100 and max(ax.lines[0].get_xdata()) == 129
        texts = {t.get_gid(): [] for t in ax.texts}
        for t in ax.texts:
            texts[t.get_gid()].append((t.get_text(), t.xy[0]))
        assert texts["diffcore-first"] == [("<script>alert('x')</script>", 120)]
        assert ("blocks.25.mlp", 125) in texts["diffcore-largest"]
        assert "#" in ax.get_xlabel()
    finally:
        plt.close("all")


def test_a_row_with_a_converter_finding_is_marked_in_the_why_column():
    report = make_report(n=5, diverge_at=None, verdict="pass")
    report.findings = [{"kind": "clamp", "message": "converter clamped -1e9 to -1e4"}]
    report.layers[2].notes.append("converter clamped -1e9 to -1e4")
    row = next(line for line in render_text(report, width=120).splitlines() if re.match(r"^\s+2\s", line))
    assert row.endswith("finding: converter clamped -1e9 to -1e4")
