"""Graphs whose shapes only a run knows, and graphs ONNX Runtime rewrote, are matched where their values
survive: ORT's transformer optimizer (com.microsoft SkipLayerNormalization, Attention, BiasGelu,
EmbedLayerNormalization) and a session's ORT_ENABLE_ALL save, against the unfused export and against
torch; a Pad whose amount is computed at run time; the real Silero VAD's ONNX files.
"""
import os
import re

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import diffcore
from diffcore.capture.onnx.runner import OnnxRunner
from tests.integration import fused_models as fm

FUSED_OPS = {"SkipLayerNormalization", "Attention", "MultiHeadAttention", "BiasGelu", "FastGelu"}
BIASED_LINEARS = [f"bert.encoder.layer.{i}.{m}.dense" for i in range(fm.LAYERS)
                  for m in ("attention.output", "intermediate", "output")]
FOLDED_REASON = re.compile(r"its bias was folded into (SkipLayerNormalization|BiasGelu|FastGelu) '[^']+': "
                           r"no value equals this module's output")


@pytest.fixture(scope="module")
def bert():
    return fm.Bert()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, bert):
    folder = tmp_path_factory.mktemp("bert")
    plain = fm.export_bert(bert, folder / "bert.onnx")
    return {"plain": plain, "fused": fm.ort_optimize(plain, folder / "bert_fused.onnx"),
            "ort_all": fm.ort_save_optimized(plain, folder / "bert_ort_all.onnx"), "folder": folder}


def _ops(path) -> set:
    return {node.op_type for node in onnx.load(path).graph.node}


def _rows_by_op(report, op) -> list:
    return [row for row in report.layers if row.op_type == op]


def test_the_ort_optimizer_really_fused_the_bert(graphs):
    ops = _ops(graphs["fused"])
    assert {"SkipLayerNormalization", "BiasGelu"} <= ops, ops
    assert ops & {"Attention", "MultiHeadAttention"}, ops
    assert "LayerNormalization" not in ops and "Softmax" not in ops


def test_fused_graph_matches_the_unfused_graph_at_the_surviving_boundaries(graphs):
    report = diffcore.compare(graphs["plain"], graphs["fused"], fm.bert_inputs())
    assert report.passed, report.summary
    assert [o.name for o in report.outputs] == ["y"] and report.outputs[0].rel_l2 < 1e-5
    # per layer: Attention, 3 MatMuls, 2 SkipLayerNormalization, BiasGelu; and the embeddings
    assert len(report.layers) >= 7 * fm.LAYERS + 1, [r.name for r in report.layers]
    assert len(_rows_by_op(report, "SkipLayerNormalization")) == 2 * fm.LAYERS
    assert len(_rows_by_op(report, "Attention")) == fm.LAYERS
    embeddings = _rows_by_op(report, "EmbedLayerNormalization")
    assert [r.ref_tensor for r in embeddings] == ["/bert/embeddings/LayerNorm/LayerNormalization_output_0"]
    assert all(any("matched at a fused boundary" in n for n in r.notes)
               for r in _rows_by_op(report, "SkipLayerNormalization") + embeddings)


def test_fused_graph_matches_torch_and_never_pairs_a_linear_with_its_biasless_matmul(bert, graphs):
    report = diffcore.compare(bert, graphs["fused"], fm.bert_inputs())
    assert report.passed, report.summary
    assert report.outputs and report.outputs[0].rel_l2 < 1e-5
    names = {r.name for r in report.layers}
    assert len(names) >= 8 * fm.LAYERS, sorted(names)
    for i in range(fm.LAYERS):
        layer = f"bert.encoder.layer.{i}"
        assert {f"{layer}.attention.output.LayerNorm", f"{layer}.output.LayerNorm",
                f"{layer}.intermediate.intermediate_act_fn", f"{layer}.attention.self.0"} <= names
    assert "bert.embeddings" in names
    assert not names & set(BIASED_LINEARS)
    unmatched = {u.key: u.reason for u in report.unmatched if u.side == "ref"}
    for linear in BIASED_LINEARS:
        assert FOLDED_REASON.fullmatch(unmatched[linear]), unmatched[linear]
    by_name = {r.name: r for r in report.layers}
    assert by_name["bert.encoder.layer.0.attention.output.LayerNorm"].op_type == "SkipLayerNormalization"
    assert by_name["bert.encoder.layer.1.attention.self.0"].op_type in {"Attention", "MultiHeadAttention"}


def test_a_graph_ort_saved_at_enable_all_matches_torch(bert, graphs):
    assert _ops(graphs["ort_all"]) & {"BiasGelu", "FusedMatMul", "FastGelu"}
    report = diffcore.compare(bert, graphs["ort_all"], fm.bert_inputs())
    assert report.passed, report.summary
    assert report.outputs and report.outputs[0].rel_l2 < 1e-5
    names = {r.name for r in report.layers}
    assert len(names) >= 10 * fm.LAYERS, sorted(names)
    gelu = [r for r in report.layers if r.name.endswith("intermediate_act_fn")]
    assert len(gelu) == fm.LAYERS and all(r.op_type == "BiasGelu" for r in gelu)
    unmatched = {u.key: u.reason for u in report.unmatched if u.side == "ref"}
    assert FOLDED_REASON.fullmatch(unmatched["bert.encoder.layer.0.intermediate.dense"])


def _plant_gamma(fused_path, out, value_name, factor=1.5) -> str:
    """Scale the gain (gamma) of the SkipLayerNormalization that writes ``value_name``."""
    model = onnx.load(fused_path)
    node = next(n for n in model.graph.node if n.op_type == "SkipLayerNormalization" and value_name in n.output)
    gamma = next(t for t in model.graph.initializer if t.name == node.input[2])
    users = [n for n in model.graph.node if gamma.name in n.input]
    assert users == [node], "the planted gain must be this node's alone"
    array = onnx.numpy_helper.to_array(gamma) * factor
    gamma.CopyFrom(onnx.numpy_helper.from_array(array, gamma.name))
    onnx.save(model, str(out))
    return str(out)


BUG_AT = "/bert/encoder/layer.1/attention/output/LayerNorm/LayerNormalization_output_0"


def test_a_bug_planted_in_a_fused_skip_layer_norm_is_found_at_that_op(bert, graphs):
    buggy = _plant_gamma(graphs["fused"], graphs["folder"] / "bert_fused_bug.onnx", BUG_AT)
    vs_torch = diffcore.compare(bert, buggy, fm.bert_inputs())
    assert not vs_torch.passed
    first = vs_torch.first_divergence
    assert first.test_tensor == BUG_AT and first.op_type == "SkipLayerNormalization"
    assert first.name.startswith("bert.encoder.layer.1.attention.output"), first.name
    vs_onnx = diffcore.compare(graphs["plain"], buggy, fm.bert_inputs())
    assert not vs_onnx.passed and vs_onnx.first_divergence.name == BUG_AT


def test_shapes_a_run_time_pad_decides_come_from_the_run(tmp_path):
    model = fm.RunTimePad()
    path = fm.export_pad(model, tmp_path / "pad.onnx")
    inputs = fm.pad_inputs()
    with OnnxRunner(path) as runner:
        probes = {p.key: p for p in runner.probes(inputs)}
    assert probes["/Pad_output_0"].shape == (2, 1, 64) and probes["/Pad_output_0"].meta["shape_from"] == "run"
    assert probes["y"].shape == (2, 4)
    report = diffcore.compare(model, path, inputs)
    assert report.passed, report.summary
    assert [r.name for r in report.layers] == ["conv", "act", "proj"]
    assert report.layers[0].shape == [2, 8, 15]
    assert len(report.outputs) == 1 and report.outputs[0].rel_l2 < 1e-5


# ------------------------------------------------------------------------------------------ Silero VAD


@pytest.fixture(scope="module")
def silero_data():
    silero_vad = pytest.importorskip("silero_vad")
    return os.path.join(os.path.dirname(silero_vad.__file__), "data")


def _vad_inputs(path) -> dict:
    import numpy as np

    chunk = np.random.default_rng(3).standard_normal((1, 512)).astype(np.float32) * 0.1
    feeds = {"input": chunk, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    declared = {i.name for i in onnx.load(path).graph.input}
    return {k: v for k, v in feeds.items() if k in declared}


def test_silero_vad_onnx_pairs_its_layers_against_the_ort_optimized_save(silero_data, tmp_path):
    """silero_vad_16k_op15.onnx: a TorchScript export whose STFT pads by an amount computed at run time."""
    source = os.path.join(silero_data, "silero_vad_16k_op15.onnx")
    saved = fm.ort_save_optimized(source, tmp_path / "vad_ort_all.onnx")
    inputs = _vad_inputs(source)
    with OnnxRunner(source) as runner:
        probes = {p.key: p for p in runner.probes(inputs)}
    assert probes["/model/stft/padding/Pad_output_0"].shape == (1, 576)
    # the pad amount follows from constants and the input's shape: folded, no shape run needed
    assert "shape_from" not in probes["/model/stft/padding/Pad_output_0"].meta
    report = diffcore.compare(source, saved, inputs)
    assert report.passed, report.summary
    assert sorted(o.name for o in report.outputs) == ["output", "stateN"]
    assert len(report.layers) >= 20, [r.name for r in report.layers]
    assert any(r.name.startswith("/model/encoder/") and r.op_type == "FusedConv" for r in report.layers)


def test_silero_vad_if_wrapped_onnx_pairs_its_outputs(silero_data, tmp_path):
    """silero_vad.onnx computes everything inside an If on the sample rate: the outputs still pair."""
    source = os.path.join(silero_data, "silero_vad.onnx")
    saved = fm.ort_save_optimized(source, tmp_path / "vad_ort_all.onnx")
    report = diffcore.compare(source, saved, _vad_inputs(source))
    assert report.passed, report.summary
    assert sorted(o.name for o in report.outputs) == ["output", "stateN"]
    assert all(o.rel_l2 < 1e-6 for o in report.outputs)


def test_a_graph_ort_saved_at_enable_all_matches_the_unfused_graph(graphs):
    report = diffcore.compare(graphs["plain"], graphs["ort_all"], fm.bert_inputs())
    assert report.passed, report.summary
    assert report.outputs and report.outputs[0].rel_l2 < 1e-6
    assert len(report.layers) >= 25 * fm.LAYERS, len(report.layers)
    gelu = _rows_by_op(report, "BiasGelu")
    assert len(gelu) == fm.LAYERS
    assert all(any(n.startswith("matched at a fused boundary: test BiasGelu") for n in r.notes) for r in gelu)
