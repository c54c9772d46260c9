"""A TorchScript file is compared layer by layer (its submodules read through its graph): a clean trace pairs
every layer with its eager module and its ONNX export, a traced Python branch and a baked shape are localized to
their submodule."""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import diffcore  # noqa: E402
from diffcore.errors import DiffcoreError  # noqa: E402


class Gate(torch.nn.Module):
    """A Python branch on the data: tracing keeps only the branch taken at trace time."""

    def forward(self, x):
        if x.sum() > 0:
            return torch.relu(x)
        return -x


class Heads(torch.nn.Module):
    """A softmax per position over a reshape whose sequence length ``int()`` bakes into a trace."""

    def forward(self, x):
        b, s, f = x.shape
        return x.reshape(b, int(s), -1).softmax(-1).reshape(b, s, f)


class Net(torch.nn.Module):
    def __init__(self, middle):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(8, 8)
        self.middle = middle
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.norm(self.middle(self.embed(x))))


def _save(module, example, tmp_path, script=False):
    path = str(tmp_path / "model.pt")
    torch.jit.save(torch.jit.script(module) if script else torch.jit.trace(module, (example,)), path)
    return path


def _x(seq=16, sign=1.0):
    rng = np.random.default_rng(0)
    return (sign * np.abs(rng.standard_normal((2, seq, 8)))).astype(np.float32)


@pytest.mark.parametrize("script", [False, True], ids=["traced", "scripted"])
def test_a_clean_torchscript_file_pairs_every_layer_with_its_eager_module(tmp_path, script):
    eager = Net(torch.nn.GELU()).eval()
    path = _save(eager, torch.from_numpy(_x()), tmp_path, script)
    report = diffcore.compare(eager, path, {"x": _x()})
    assert report.verdict == "pass", report.summary
    assert report.coverage["layers"] == {"paired": 4, "total": 4}
    assert [r.name for r in report.layers] == ["embed", "middle", "norm", "head"]


def test_a_traced_python_branch_is_localized_to_its_submodule(tmp_path):
    eager = Net(Gate()).eval()
    with torch.no_grad():  # the gate sees a positive sum at trace time
        eager.embed.bias.fill_(5.0)
    path = _save(eager, torch.from_numpy(_x()), tmp_path)
    with torch.no_grad():
        eager.embed.bias.fill_(-5.0)
    traced = torch.jit.load(path)
    with torch.no_grad():
        traced.embed.bias.fill_(-5.0)
    torch.jit.save(traced, path)
    report = diffcore.compare(eager, path, {"x": _x()})
    assert report.verdict == "fail"
    assert report.first_divergence.name == "middle"
    assert report.layers[0].status == "ok"


def test_a_shape_baked_by_the_trace_is_localized_to_its_submodule(tmp_path):
    eager = Net(Heads()).eval()
    path = _save(eager, torch.from_numpy(_x(seq=16)), tmp_path)
    report = diffcore.compare(eager, path, {"x": _x(seq=32)})
    assert report.verdict == "fail"
    assert report.first_divergence.name == "middle"


class FixedHeads(torch.nn.Module):
    """4 heads whose width ``int()`` bakes into a trace: another sequence length cannot be reshaped."""

    def forward(self, x):
        return x.reshape(x.shape[0], 4, int(x.shape[1]) * 2).softmax(-1).reshape(x.shape[0], -1, 8)


def test_a_baked_shape_that_cannot_reshape_names_its_submodule(tmp_path):
    eager = Net(FixedHeads()).eval()
    path = _save(eager, torch.from_numpy(_x(seq=16)), tmp_path)
    with pytest.raises(DiffcoreError, match=r"^forward of test failed in submodule 'middle': RuntimeError: shape "
                                            r"'\[2, 4, 32\]' is invalid .*\(TorchScript: .*torch\.reshape"):
        diffcore.compare(eager, path, {"x": _x(seq=32)})


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_a_torchscript_file_pairs_its_layers_with_its_onnx_export(tmp_path, dynamo):
    eager = Net(torch.nn.GELU()).eval()
    example = torch.from_numpy(_x())
    path = _save(eager, example, tmp_path)
    onnx_path = str(tmp_path / "model.onnx")
    torch.onnx.export(eager, (example,), onnx_path, input_names=["x"], dynamo=dynamo)
    report = diffcore.compare(path, onnx_path, {"x": _x()})
    assert report.verdict == "pass", report.summary
    assert report.coverage["layers"]["paired"] >= 3, report.coverage


def test_a_corrupt_torchscript_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DiffcoreError, match=r"model\.pt is not a TorchScript file: .*truncated or corrupt"):
        diffcore.compare(Net(torch.nn.GELU()).eval(), str(path), {"x": _x()})


def test_a_truncated_torchscript_archive_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(Net(torch.nn.GELU()).eval()), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DiffcoreError, match=r"model\.pt is not a TorchScript file: .*truncated or corrupt"):
        diffcore.compare(Net(torch.nn.GELU()).eval(), str(path), {"x": _x()})


class Branches(torch.nn.Module):
    """Submodule calls in both branches of a data-dependent if, and one in a loop."""

    def __init__(self):
        super().__init__()
        self.up, self.down, self.step = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Tanh()

    def forward(self, x):
        if bool(x.sum() > 0):
            x = self.up(x)
        else:
            x = self.down(x)
        for _ in range(2):
            x = self.step(x)
        return x


@pytest.mark.parametrize("sign, taken", [(1.0, "middle.up"), (-1.0, "middle.down")])
def test_a_scripted_if_captures_the_branch_that_ran_and_counts_loop_calls(tmp_path, sign, taken):
    eager = Net(Branches()).eval()
    with torch.no_grad():
        eager.embed.weight.copy_(torch.eye(8))
        eager.embed.bias.zero_()
    path = _save(eager, None, tmp_path, script=True)
    report = diffcore.compare(eager, path, {"x": _x(sign=sign)})
    names = [r.name for r in report.layers]
    assert taken in names and ({"middle.up", "middle.down"} - {taken}).isdisjoint(names), names
    assert report.verdict == "pass", report.summary
    assert any("1 submodule call site(s) inside a scripted loop body are not captured" in w
               for w in report.warnings), report.warnings


def test_a_graph_the_rewrite_cannot_instrument_is_compared_at_its_outputs_with_a_warning(tmp_path, monkeypatch):
    from diffcore.capture import torchscript_runner

    def refuse(module):
        raise RuntimeError("unsupported graph")

    monkeypatch.setattr(torchscript_runner, "instrument", refuse)
    eager = Net(torch.nn.GELU()).eval()
    path = _save(eager, torch.from_numpy(_x()), tmp_path)
    report = diffcore.compare(eager, path, {"x": _x()})
    assert report.outputs and report.outputs[0].rel_l2 == 0
    assert report.coverage["layers"]["paired"] == 0
    assert any(re.search(r"could not be instrumented \(RuntimeError: unsupported graph\), so only its outputs", w)
               for w in report.warnings), report.warnings
