"""What an ONNX-vs-ONNX comparison costs in ONNX Runtime work: sessions and node runs stay linear in depth.

A layerwise comparison should cost a small multiple of running the two models. These tests pin the parts
that made it grow faster: a probe run that left every later chunk recomputing the graph from the inputs
(quadratic in depth), a dedicated chunked probe run for shapes static inference leaves unknown, and a
whole-model session per purpose.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import diffcore
from diffcore import comparison
from diffcore.capture.onnx import OnnxRunner
from diffcore.capture.onnx.shapes import unknown_values

from . import models


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """{depth: (reference path, test path with one LayerNorm epsilon changed)}, TorchScript exports whose
    attention Reshapes read computed shapes (static inference leaves them unknown until constants are
    folded)."""
    folder = tmp_path_factory.mktemp("stacks")
    inputs = models.stack_inputs()
    paths = {}
    for depth in (2, 8):
        ref = models.stack(n_layers=depth)
        test = models.stack(n_layers=depth)
        test.blocks[depth // 2].ln.eps = 1e-2
        paths[depth] = (models.export(ref, inputs, folder / f"ref{depth}.onnx", dynamo=False),
                        models.export(test, inputs, folder / f"test{depth}.onnx", dynamo=False))
    return paths


@pytest.fixture
def inputs():
    return {k: v.numpy() for k, v in models.stack_inputs().items()}


def _count_sessions(monkeypatch) -> list:
    """[(runner name, nodes that compute: not Constant, not an added Shape)] of every session built."""
    built: list = []
    original = OnnxRunner._new_session

    def counting(self, variant, *args, **kwargs):
        nodes = self.graph.nodes if isinstance(variant, str) else variant.graph.node  # str: the model file
        built.append((self.name, sum(n.op_type not in ("Constant", "Shape") for n in nodes)))
        return original(self, variant, *args, **kwargs)

    monkeypatch.setattr(OnnxRunner, "_new_session", counting)
    return built


def _non_constant(graph, ids) -> list:
    return [i for i in ids if graph.nodes[i].op_type != "Constant"]


def test_folded_constants_leave_no_shape_to_a_run_and_probes_build_no_session(stacks, inputs, monkeypatch):
    # The TorchScript attention Reshape reads a Mod of two constants, where ONNX data propagation stops: without
    # folding, every shape after it was unknown and cost a whole-model shape run per side.
    built = _count_sessions(monkeypatch)
    with OnnxRunner(stacks[8][0]) as runner:
        feed = runner.prepare_inputs(inputs)
        assert not unknown_values(runner.graph, runner._types_for(feed))
        assert runner._folded, "nothing was folded"
        probes = runner.probes(inputs)
        assert not [p.key for p in probes if p.meta.get("shape_from") == "run"]
        assert built == []
        captured = runner.capture(inputs, [p.key for p in probes[:40]])
    for probe in probes[:40]:
        assert probe.shape == tuple(captured[probe.key].shape), probe.key


def test_without_folding_the_models_have_shapes_only_a_run_gives(stacks, inputs, monkeypatch):
    monkeypatch.setattr(OnnxRunner, "_fold_constants", lambda self, types: {})
    with OnnxRunner(stacks[2][0]) as runner:
        feed = runner.prepare_inputs(inputs)
        assert unknown_values(runner.graph, runner._types_for(feed)), "the shape run would not be exercised"


def test_unknown_shapes_come_from_one_run_of_shape_nodes_equal_to_the_captured_shapes(stacks, inputs,
                                                                                        monkeypatch):
    monkeypatch.setattr(OnnxRunner, "_fold_constants", lambda self, types: {})  # keep shapes unknown
    built = _count_sessions(monkeypatch)
    with OnnxRunner(stacks[8][0]) as runner:
        probes = {p.key: p for p in runner.probes(inputs)}
        from_run = [k for k, p in probes.items() if p.meta.get("shape_from") == "run"]
        assert len(from_run) > 8
        assert len(built) == 1, built  # one session for every unknown shape, whatever the depth
        captured = runner.capture(inputs, from_run)
    for key in from_run:
        assert probes[key].shape == tuple(captured[key].shape), key


def test_chunks_captured_after_the_probes_run_each_node_once(stacks, inputs, monkeypatch):
    with OnnxRunner(stacks[8][0]) as runner:
        keys = [p.key for p in runner.probes(inputs) if p.key not in runner.graph.outputs]
        runs: list = []
        build = runner._segment_variant
        monkeypatch.setattr(runner, "_segment_variant",
                            lambda ids, *a, **k: runs.append(list(ids)) or build(ids, *a, **k))
        size = -(-len(keys) // 8)
        for k in range(8):
            runner.capture(inputs, keys[k * size:(k + 1) * size])
        executed = [i for ids in runs for i in _non_constant(runner.graph, ids)]
        assert len(executed) == len(set(executed)), "a chunk recomputed the graph from the inputs"


def _compare_sessions(paths, inputs, monkeypatch, pairs_per_chunk=None):
    if pairs_per_chunk:  # many chunks of a tiny model, as a large model makes within its memory budget
        monkeypatch.setattr(comparison, "plan_chunks", lambda pairs, budget: [
            pairs[k:k + pairs_per_chunk] for k in range(0, len(pairs), pairs_per_chunk)])
    built = _count_sessions(monkeypatch)
    report = diffcore.compare(str(paths[0]), str(paths[1]), inputs, local="all", memory_budget_mb=4096)
    monkeypatch.undo()
    return report, built


def test_sessions_of_a_comparison_do_not_grow_with_depth_at_one_chunk(stacks, inputs, monkeypatch):
    report2, built2 = _compare_sessions(stacks[2], inputs, monkeypatch)
    report8, built8 = _compare_sessions(stacks[8], inputs, monkeypatch)
    assert report2.verdict == report8.verdict == "fail"
    assert len(report8.layers) > 3 * len(report2.layers) / 2
    assert len(built8) == len(built2), (built2, built8)


def test_nodes_run_by_a_chunked_comparison_stay_linear_in_depth(stacks, inputs, monkeypatch):
    """In many chunks, the reference side's segments together run each node about once: its sessions
    (the shape run, the deployed one, the segments) hold about three graphs, not one per chunk."""
    report, built = _compare_sessions(stacks[8], inputs, monkeypatch, pairs_per_chunk=16)
    with OnnxRunner(stacks[8][0]) as runner:
        nodes = len(_non_constant(runner.graph, range(len(runner.graph.nodes))))
    ref = [n for name, n in built if name == built[0][0]]
    assert len(ref) > 12, "the comparison did not run in many chunks"
    assert sum(ref) < 3.5 * nodes, f"{sum(ref)} nodes run for a graph of {nodes}: {ref}"
    assert any(r.local_rel_l2 is not None for r in report.layers)


def test_the_deployed_session_loads_the_model_file_itself(stacks, inputs, monkeypatch):
    loaded = []
    original = OnnxRunner._load
    monkeypatch.setattr(OnnxRunner, "_load", lambda self, source, options: loaded.append(source) or
                        original(self, source, options))
    with OnnxRunner(stacks[2][0]) as runner:
        outputs = runner.outputs(inputs)
    assert loaded == [str(stacks[2][0])]
    plain = ort.InferenceSession(str(stacks[2][0]), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(outputs["y"], plain.run(["y"], inputs)[0])


def test_scopes_run_together_give_what_each_scope_gives_alone(stacks, inputs):
    with OnnxRunner(stacks[2][0]) as runner:
        modules = [m for m in runner.graph.module_nodes if m.startswith("blocks.")][:12]
        assert len(modules) >= 6
        captured = runner.capture(inputs, {e for m in modules for e in runner.graph.scope_entries(m)})
        feeds = {m: {e: captured[e] for e in runner.graph.scope_entries(m)} for m in modules}
        together = runner.run_scopes(feeds)
        for module in modules:
            alone = runner.run_scope(module, feeds[module])
            assert set(together[module]) == set(alone)
            for name, value in alone.items():
                np.testing.assert_array_equal(together[module][name], value, err_msg=f"{module} {name}")


def test_torch_vs_onnx_local_errors_build_one_session_per_chunk_not_per_module(stacks, inputs, monkeypatch):
    sessions = {}
    for depth in (2, 8):
        built = _count_sessions(monkeypatch)
        report = diffcore.compare(models.stack(n_layers=depth), str(stacks[depth][0]), models.stack_inputs(),
                                  local="all", memory_budget_mb=4096)
        monkeypatch.undo()
        assert sum(r.local_rel_l2 is not None for r in report.layers) > 4 * depth
        sessions[depth] = len(built)
    assert sessions[8] == sessions[2], sessions


def test_weights_past_32_mib_are_held_once_in_a_file_not_in_memory(tmp_path):
    """A runner of a large model keeps no serialized copy of its weights in memory: they go once to an
    external-data file its sessions read, and captures are those of the model file itself."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3072, 3072), torch.nn.GELU(), torch.nn.Linear(3072, 8)).eval()
    x = torch.randn(2, 3072)
    path = tmp_path / "large.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    with OnnxRunner(path) as runner:
        assert runner._store._external is not None and not hasattr(runner._store, "_inline")
        keys = [p.key for p in runner.probes({"x": x.numpy()})]
        captured = runner.capture({"x": x.numpy()}, keys)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in plain.get_outputs()], plain.run(None, {"x": x.numpy()})))
    np.testing.assert_array_equal(captured["y"], want["y"])
    np.testing.assert_allclose(captured[keys[0]], model[0](x).detach().numpy(), rtol=1e-4, atol=1e-4)
