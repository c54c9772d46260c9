"""Model Explorer node data: written by diffcore, read back by Model Explorer's own classes, keyed by the
node ids its ONNX adapter gives the same model."""
import json

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
node_data = pytest.importorskip("model_explorer.node_data_builder", reason="ai-edge-model-explorer not installed")

import diffcore  # noqa: E402
from diffcore.report.model_explorer import STATUS_COLORS, write_model_explorer  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(8, 16)
        self.act = torch.nn.GELU()
        self.down = torch.nn.Linear(16, 8)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x):
        return self.norm(x + self.down(self.act(self.up(x))))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = Block().eval()
    folder = tmp_path_factory.mktemp("me")
    x = torch.randn(2, 8)
    good = folder / "block.onnx"
    torch.onnx.export(model, (x,), str(good), dynamo=False, input_names=["x"], opset_version=17)
    bad = onnx.load(str(good))
    for node in bad.graph.node:  # the planted bug: the down-projection's weight scaled by 1.5
        if node.op_type in ("MatMul", "Gemm") and "down" in node.name:
            weight = next(t for t in bad.graph.initializer if t.name == node.input[1])
            array = onnx.numpy_helper.to_array(weight) * 1.5
            weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(bad, str(folder / "bad.onnx"))
    return model, str(good), str(folder / "bad.onnx"), {"x": x.numpy()}


def _read_back(path):
    data = json.loads(open(path).read())
    graphs = {}
    for graph_id, graph in data.items():
        results = {k: node_data.NodeDataResult(**v) for k, v in graph["results"].items()}
        gradient = [node_data.GradientItem(**g) for g in graph.get("gradient", [])]
        graphs[graph_id] = node_data.GraphNodeData(results=results, name=graph.get("name"), gradient=gradient)
    model_data = node_data.ModelNodeData(graphsData=graphs)
    dumped = json.loads(model_data.to_json_string())  # the format's own serialization of what it read
    for graph_id, graph in data.items():
        assert {k: dumped[graph_id][k] for k in graph} == graph
    return model_data


def _adapter_node_ids(path):
    adapter_module = pytest.importorskip("model_explorer_onnx.main", reason="model-explorer-onnx not installed")
    graphs = adapter_module.ONNXAdapter().convert(path, {})["graphs"]
    return {node.id for graph in graphs for node in graph.nodes}


def test_node_data_colours_the_first_divergence_on_the_test_graph(exported, tmp_path):
    model, _, bad, inputs = exported
    report = diffcore.compare(model, bad, inputs)
    assert report.verdict == "fail"
    out = write_model_explorer(report, bad, tmp_path / "drift.json")
    data = _read_back(out["drift"])
    (graph_id, graph), = data.graphsData.items()
    first = report.first_divergence
    first_node = next(n.name for n in onnx.load(bad).graph.node if first.test_tensor in n.output)
    assert graph.results[first_node].bgColor == STATUS_COLORS["diverged"]
    assert graph.results[first_node].value == pytest.approx(100 * first.rel_l2)
    assert set(graph.results) <= _adapter_node_ids(bad)
    if out["local"]:
        _read_back(out["local"])


def test_a_model_that_is_not_the_compared_one_is_refused(exported, tmp_path):
    model, good, _, inputs = exported
    report = diffcore.compare(model, good, inputs)
    other = tmp_path / "other.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["a"], ["b"], name="r")], "g",
                                   [onnx.helper.make_tensor_value_info("a", 1, [1])],
                                   [onnx.helper.make_tensor_value_info("b", 1, [1])])
    onnx.save(onnx.helper.make_model(graph), str(other))
    with pytest.raises(diffcore.DiffcoreError, match="no compared row"):
        write_model_explorer(report, str(other), tmp_path / "x.json")


def test_cli_model_explorer_writes_node_data_for_the_onnx_test_side(exported, tmp_path, capsys):
    """``compare REF TEST --model-explorer FILE``: TEST is ONNX, so its graph is annotated; re-running the
    command replaces diffcore's own earlier file without --force."""
    import numpy as np

    from diffcore.cli import main

    _, good, bad, inputs = exported
    np.savez(tmp_path / "inputs.npz", **inputs)
    target = tmp_path / "nodes.json"
    argv = ["compare", good, bad, "--inputs", str(tmp_path / "inputs.npz"), "--model-explorer", str(target)]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "first divergence" in out
    assert f"wrote Model Explorer node data {target}" in err and "of TEST" in err
    (graph_id, graph), = _read_back(target).graphsData.items()
    assert STATUS_COLORS["diverged"] in {r.bgColor for r in graph.results.values()}
    assert set(graph.results) <= _adapter_node_ids(bad)
    assert main([*argv, "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("diffcore: FAIL: first divergence at ") and len(out.splitlines()) == 1
    assert f"replaced the previous Model Explorer node data {target}" in err
