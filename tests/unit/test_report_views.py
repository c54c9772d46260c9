"""The views of a DiffReport (text, HTML, JSON, plot), on reports built by hand."""
from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET

import pytest

from diffcore import DiffcoreError
from diffcore.report import DiffReport, LayerRow, Unmatched
from diffcore.report.html import render_html, render_page, sparkline_svg
from diffcore.report.text import fmt_pct, kept_positions, render_text

EVIL = "<script>alert('x')</script>"


def make_row(index: int, name: str, rel: float, status: str = "ok", local=None, op="Linear") -> LayerRow:
    """A row whose statistics follow from ``rel`` (any float, inf and NaN included)."""
    finite = math.isfinite(rel)
    return LayerRow(
        index=index, name=name, ref_tensor=name, test_tensor=name, shape=[2, 16, 64], ref_dtype="float32",
        test_dtype="float16", max_abs=rel * 3, mean_abs=rel, max_rel=rel * 10, rel_l2=rel,
        cosine=1 - rel * rel / 2 if finite else math.nan,
        snr_db=-20 * math.log10(rel) if finite and rel > 0 else math.inf, mismatch_frac=0.0, nan_ref=0,
        nan_test=0 if finite else 5, inf_ref=0, inf_test=0, max_ulp=rel * 1e4, op_type=op,
        local_rel_l2=local, status=status, cause="error born here" if status == "diverged" else "",
    )


def make_report(n: int = 100, diverge_at: int | None = 70, verdict: str = "fail",
                diverged_name: str = EVIL) -> DiffReport:
    """``n`` layers with slowly growing drift; from ``diverge_at`` on a jump (the last layer NaN)."""
    layers = [make_row(i, f"blocks.{i}.mlp", 1e-4 * 1.05 ** i) for i in range(n)]
    if diverge_at is not None:
        layers[diverge_at] = make_row(diverge_at, diverged_name, 0.2, "diverged", local=0.19)
        for j in range(diverge_at + 1, n):
            layers[j] = make_row(j, f"blocks.{j}.mlp", math.nan if j == n - 1 else 0.3, "carried", 1e-4)
    if n > 2:
        layers[1].status = "drift"
    outputs = [make_row(n, "output.0", 0.25 if diverge_at is not None else 1e-4, op=None,
                        status="carried" if diverge_at is not None else "ok")]
    return DiffReport(
        verdict=verdict, tolerance={"atol": 1e-5, "rtol": 1e-3, "source": "user"}, layers=layers,
        outputs=outputs, first_divergence=layers[diverge_at] if diverge_at is not None else None,
        unmatched=[Unmatched("ref", "blocks.0.attn.1", "a None output", "blocks.0.attn"),
                   Unmatched("test", "/Cast_3", f"inserted cast {EVIL}")],
        ref={"kind": "torch", "description": "make.py:model"}, test={"kind": "onnx", "description": "m.onnx"},
        summary=f"FAIL: first divergence at {EVIL}.", warnings=[f"odd & {EVIL}"],
    )


# ---- text -----------------------------------------------------------------------------------------------
def test_text_marks_the_first_divergence_and_elides_around_it():
    text = render_text(make_report(), max_rows=20)
    marked = [line for line in text.splitlines() if line.startswith(">>")]
    assert len(marked) == 1 and EVIL in marked[0] and "diverged" in marked[0]
    assert re.search(r"\((\d+) rows elided\)", text)
    shown = set(re.findall(r"^\S*\s+(\d+)\s+blocks\.", text, re.MULTILINE))
    assert {"69", "71"} <= shown and "30" not in shown


def test_elision_counts_every_hidden_row():
    text = render_text(make_report(), max_rows=20)
    hidden = sum(int(n) for n in re.findall(r"\((\d+) rows elided\)", text))
    shown = len(re.findall(r"^(?:>>)?\s+\d+\s+(?:blocks|<script)", text, re.MULTILINE))
    assert shown == 20 and shown + hidden == 100


def test_short_tables_and_max_rows_none_are_not_elided():
    assert "elided" not in render_text(make_report(n=10, diverge_at=5))
    assert "elided" not in render_text(make_report(), max_rows=None)


def test_without_divergence_the_window_follows_the_largest_error():
    report = make_report(n=100, diverge_at=None, verdict="pass")
    report.layers[40].rel_l2 = 0.04
    text = render_text(report, max_rows=10)
    assert re.search(r"^\s+40\s+blocks\.40\.mlp", text, re.MULTILINE)
    assert ">>" not in text and "PASS" in text


def test_kept_positions_stay_within_the_budget():
    for n, anchor, budget in [(100, 0, 10), (100, 99, 10), (100, 50, 1), (5, 2, 0), (50, None, 7)]:
        kept = kept_positions(n, anchor, budget)
        assert len(kept) <= max(budget, 1) and kept == sorted(set(kept))
        assert anchor is None or anchor in kept


@pytest.mark.parametrize("fraction, text", [(0.0123456, "1.23"), (0.05, "5"), (1e-7, "1e-05"), (0.0, "0"),
                                            (math.inf, "inf"), (math.nan, "nan"), (None, "-")])
def test_percentages_have_three_significant_digits(fraction, text):
    assert fmt_pct(fraction) == text


def test_text_header_outputs_unmatched_and_warnings():
    text = render_text(make_report())
    assert text.startswith("diffcore FAIL: first divergence at")
    assert "atol=1e-05 rtol=0.001 (user)" in text and "make.py:model" in text and "m.onnx" in text
    assert "cause:     error born here" in text
    assert "Outputs (1):" in text and "output.0" in text
    assert re.search(r"Unmatched in ref \(1\):\n  - blocks\.0\.attn\.1 \(blocks\.0\.attn\): a None output", text)
    assert "Unmatched in test (1):" in text and "Warnings (1):" in text
    assert re.search(r"\bnan\b", text)
    assert re.search(r"\binf\b", render_text(make_report(), wide=True))  # SNR of a NaN row: a wide column


def test_empty_report_renders():
    report = DiffReport(verdict="pass", tolerance={}, layers=[], outputs=[])
    assert "Layers: none matched" in render_text(report)
    assert "No layers matched" in render_html(report) and sparkline_svg(report) == ""


# ---- HTML -----------------------------------------------------------------------------------------------
def test_html_escapes_every_user_string():
    fragment = render_html(make_report())
    assert "<script" not in fragment
    assert "&lt;script&gt;" in fragment and "&amp;" in fragment


def test_html_highlights_the_first_divergence_only():
    fragment = render_html(make_report())
    rows = re.findall(r'<tr class="dc-first"[^>]*>.*?</tr>', fragment)
    assert len(rows) == 1 and "&lt;script&gt;" in rows[0]
    assert 'title="error born here"' in rows[0]


def test_html_colours_every_status():
    fragment = render_html(make_report())
    for status in ("ok", "drift", "diverged", "carried"):
        assert f"dc-s-{status}" in fragment


def test_sparkline_is_valid_svg_with_bands_and_marker():
    svg = sparkline_svg(make_report())
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    points = root.find(f"{ns}polyline").get("points").split()
    assert len(points) == 99  # the NaN layer is a cross at the top, not a point
    assert svg.count("stroke-dasharray") == 2  # the 0.1 % and 5 % bands
    assert root.find(f"{ns}g[@class='dc-first-divergence']") is not None
    assert "<svg" in render_html(make_report())


def test_page_is_a_standalone_document():
    page = render_page(make_report())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>diffcore FAIL: &lt;script&gt;" in page
    assert render_html(make_report()) in page
    assert make_report()._repr_html_() == render_html(make_report())


# ---- JSON -----------------------------------------------------------------------------------------------
def _nan_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN!"
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    return value


def test_json_round_trip_keeps_inf_and_nan():
    report = make_report()
    report.layers[0].max_abs, report.layers[0].snr_db = math.inf, -math.inf
    text = report.to_json()

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    json.loads(text, parse_constant=refuse)  # strict JSON: no bare NaN/Infinity
    back = DiffReport.from_json(text)
    assert _nan_safe(back.to_dict()) == _nan_safe(report.to_dict())
    assert math.isnan(back.layers[-1].rel_l2) and back.layers[0].max_abs == math.inf
    assert back.layers[0].snr_db == -math.inf
    assert render_text(back) == render_text(report)


# ---- plot -----------------------------------------------------------------------------------------------
@pytest.fixture
def agg():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_plot_returns_log_axes_with_bands_and_local_series(agg):
    from matplotlib.axes import Axes

    ax = make_report().plot()
    assert isinstance(ax, Axes) and ax.get_yscale() == "log"
    levels = {line.get_ydata()[0] for line in ax.lines if len(set(line.get_ydata())) == 1
              and len(line.get_ydata()) == 2}
    assert {1e-3, 5e-2} <= levels
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("local") for label in labels)
    assert any(label.startswith("first divergence") for label in labels)


def test_plot_draws_on_the_given_axes_and_checks_the_metric(agg):
    _, ax = agg.subplots()
    assert make_report(n=10, diverge_at=None, verdict="pass").plot(ax=ax, metric="snr_db") is ax
    assert ax.get_yscale() == "linear"
    with pytest.raises(DiffcoreError, match="unknown metric 'nope'"):
        make_report().plot(metric="nope")


def test_many_unmatched_tensors_are_summarised_by_reason():
    report = make_report(n=5, diverge_at=2)
    report.unmatched = [Unmatched("test", f"/v{i}", "internal ONNX value") for i in range(50)]
    report.unmatched += [Unmatched("test", f"/Cast_{i}", f"inserted Cast of 'x{i}'") for i in range(30)]
    text = render_text(report)
    assert "Unmatched in test (80):" in text
    assert "  - 50 x internal ONNX value: /v0, /v1, /v2, /v3, /v4, ... and 45 more" in text
    assert "  - /Cast_0: inserted Cast of 'x0'" in text and "/Cast_25" not in text
    assert "... 11 more lines (the JSON and HTML reports list all)" in text
    assert render_html(report).count("<li>") == 80 + 1  # every tensor, plus the one warning
