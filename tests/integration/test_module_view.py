"""The module view of real ONNX exports: values inside one torch module scope fold into one line and
shape-only ops disappear, so an ONNX-vs-ONNX report reads a few lines per block (issue 17, item 2)."""
from __future__ import annotations

import re

import pytest

import diffcore
from diffcore.report.modules import SHAPE_OPS, view_lines

from . import models

N_BLOCKS = 4


@pytest.fixture(scope="module")
def fp16_report(tmp_path_factory):
    inputs = models.stack_inputs()
    path = models.export(models.stack(n_layers=N_BLOCKS), inputs, tmp_path_factory.mktemp("mv") / "s.onnx",
                         dynamo=False)
    return diffcore.compare(path, path, inputs, test_dtype="float16", progress=False)


def test_module_view_folds_an_onnx_transformer_to_a_few_lines_per_block(fp16_report):
    node = view_lines(fp16_report.layers, "node")
    module = view_lines(fp16_report.layers, None)  # the default where scopes exist
    assert len(node) == len(fp16_report.layers) > 30 * N_BLOCKS
    assert len(module) <= 10 * N_BLOCKS and len(module) * 4 < len(node)
    assert not [line for line in module if len(line.members) == 1 and line.row.op_type in SHAPE_OPS]
    names = [line.name for line in module]
    for block in range(N_BLOCKS):
        assert f"blocks.{block}.attn" in names and f"blocks.{block}.ln" in names


def test_the_text_report_uses_the_module_view_and_node_on_request(fp16_report):
    text = fp16_report.to_text(max_rows=None, width=100)
    folded = re.search(r"Layers \((\d+); (\d+) lines by module scope", text)
    assert folded and int(folded.group(2)) * 4 < int(folded.group(1))
    shape_lines = r"^\s+\d+\s+\S+\s+(Reshape|Unsqueeze|Squeeze|Cast|Shape)\s+\S+\s+\S+\s+\w+\s*$"
    # a scope's exit value may be a Transpose; a bare shape op never has a line of its own
    assert not re.search(shape_lines, text[: text.index("Outputs (")], re.MULTILINE)
    nodes = fp16_report.to_text(max_rows=None, width=100, by="node")
    assert "lines by module scope" not in nodes and re.search(r"\bReshape\b", nodes)
    assert max(len(line) for line in text.splitlines() + nodes.splitlines()) <= 100


def test_a_torch_reference_keeps_one_line_per_module(tmp_path):
    inputs = models.stack_inputs()
    model = models.stack(n_layers=2)
    report = diffcore.compare(model, models.export(model, inputs, tmp_path / "s.onnx", dynamo=False), inputs,
                              progress=False)
    assert len(view_lines(report.layers, None)) == len(report.layers)
