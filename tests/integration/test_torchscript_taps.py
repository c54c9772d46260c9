"""A TorchScript file's per-submodule outputs, read from its graph (ScriptModules take no hooks), on models
with ModuleLists and nested blocks:
traced and scripted files pair layer by layer with the eager module and with the ONNX export, and the
typical TorchScript bugs (a traced Python branch, a baked sequence length) are localized to their module."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import diffcore  # noqa: E402

from .torchscript_models import BranchModel, Pooled, Stack  # noqa: E402

STACK_LAYERS = {"blocks.0.lin", "blocks.0.act", "blocks.0", "blocks.1.lin", "blocks.1.act", "blocks.1",
                "blocks.2.lin", "blocks.2.act", "blocks.2", "head"}


def _save(module, path, how, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about the very bugs these tests plant
        compiled = torch.jit.trace(module, example) if how == "traced" else torch.jit.script(module)
    torch.jit.save(compiled, str(path))
    return str(path)


def _x(*shape, sign=1.0):
    return np.abs(np.random.default_rng(0).standard_normal(shape)).astype(np.float32) * sign


@pytest.mark.parametrize("how", ["traced", "scripted"])
def test_a_torchscript_file_pairs_every_submodule_of_its_eager_module(tmp_path, how):
    eager = Stack().eval()
    path = _save(eager, tmp_path / "m.pt", how, torch.zeros(2, 8))
    report = diffcore.compare(eager, path, {"x": _x(2, 8)}, progress=False)
    assert report.verdict == "pass", report.summary
    assert {r.name for r in report.layers} == STACK_LAYERS
    assert "compared 10/10 reference layers" in report.summary
    assert all(r.local_rel_l2 is not None for r in report.layers)  # the test's submodules re-run


def test_as_the_reference_its_layers_pair_with_local_errors(tmp_path):
    eager = Stack().eval()
    path = _save(eager, tmp_path / "m.pt", "scripted", None)
    report = diffcore.compare(path, eager, {"x": _x(2, 8)}, progress=False)
    assert report.verdict == "pass" and {r.name for r in report.layers} == STACK_LAYERS
    assert all(r.local_rel_l2 is not None for r in report.layers)  # its calls' inputs come from its graph


def test_a_changed_weight_in_the_file_is_localized_to_its_layer(tmp_path):
    eager = Stack().eval()
    compiled = torch.jit.script(Stack().eval())
    with torch.no_grad():
        compiled.blocks[1].lin.weight[0, 0] += 0.5
    torch.jit.save(compiled, str(tmp_path / "bug.pt"))
    report = diffcore.compare(eager, str(tmp_path / "bug.pt"), {"x": _x(2, 8)}, progress=False)
    assert report.verdict == "fail"
    assert report.first_divergence.name == "blocks.1.lin", report.summary


def test_a_traced_python_branch_is_localized_to_the_module_that_took_it(tmp_path):
    eager = BranchModel().eval()
    traced_at = torch.from_numpy(_x(4, 8))
    taken = bool(eager.branch.lin(eager.pre(traced_at)).mean() > 0)
    for shift in (-1.0, 1.0, -10.0, 10.0, -100.0, 100.0):  # h's mean is linear in a shift of the input
        candidate = _x(4, 8) + np.float32(shift)
        with torch.no_grad():
            h = eager.branch.lin(eager.pre(torch.from_numpy(candidate)))
        if bool(h.mean() > 0) != taken:
            run_at = candidate
            break
    else:
        pytest.fail("no input takes the other branch")
    path = _save(eager, tmp_path / "m.pt", "traced", traced_at)
    report = diffcore.compare(eager, path, {"x": run_at}, progress=False)
    assert report.verdict == "fail"
    assert report.first_divergence.name == "branch", report.summary
    assert report.row("pre").rel_l2 == 0 and report.row("branch.lin").rel_l2 == 0


def test_a_sequence_length_baked_by_the_trace_is_localized_to_the_pooling(tmp_path):
    eager = Pooled().eval()
    path = _save(eager, tmp_path / "m.pt", "traced", torch.zeros(2, 4, 8))
    assert diffcore.compare(eager, path, {"x": _x(2, 4, 8)}, progress=False).verdict == "pass"
    report = diffcore.compare(eager, path, {"x": _x(2, 16, 8)}, progress=False)  # run at another length
    assert report.verdict == "fail"
    assert report.first_divergence.name == "pool", report.summary


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_a_torchscript_file_pairs_with_the_onnx_export_of_its_module(tmp_path, dynamo):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    eager = Stack().eval()
    path = _save(eager, tmp_path / "m.pt", "traced", torch.zeros(2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(eager, (torch.zeros(2, 8),), str(tmp_path / "m.onnx"), input_names=["x"],
                          dynamo=dynamo)
    report = diffcore.compare(path, str(tmp_path / "m.onnx"), {"x": _x(2, 8)}, progress=False)
    assert report.verdict == "pass", report.summary
    assert len(report.layers) >= 6, report.summary
