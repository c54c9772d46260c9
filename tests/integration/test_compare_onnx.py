"""Layer-by-layer comparison with ONNX on one side or both: clean exports and conversions pass, planted
bugs are localized to the layer where they were planted.

Modes: torch vs its ONNX export on ONNX Runtime with both exporters; ONNX fp32 vs the float16 model
onnxconverter-common makes from it (with and without keep_io_types); the same model on two execution
providers (GPU tier).
"""
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import diffcore  # noqa: E402
from tests.integration import models, onnx_edits  # noqa: E402

EXPORTERS = {"torchscript": False, "dynamo": True}


@pytest.fixture(scope="module")
def stack():
    return models.stack()


@pytest.fixture(scope="module")
def cnn():
    return models.cnn()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, stack, cnn):
    """Each test model exported once with each exporter (opset 20 for the stack: a Gelu op to edit)."""
    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for exporter, dynamo in EXPORTERS.items():
        out["stack", exporter] = models.export(stack, models.stack_inputs(), folder / f"stack_{exporter}.onnx",
                                               dynamo=dynamo, opset=20)
        out["cnn", exporter] = models.export(cnn, models.cnn_inputs(), folder / f"cnn_{exporter}.onnx",
                                             dynamo=dynamo)
    return out


def _model_and_inputs(name, stack, cnn):
    return (stack, models.stack_inputs()) if name == "stack" else (cnn, models.cnn_inputs())


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("name", ["stack", "cnn"])
def test_clean_exports_pass_with_both_exporters(exports, stack, cnn, name, exporter):
    model, inputs = _model_and_inputs(name, stack, cnn)
    report = diffcore.compare(model, exports[name, exporter], inputs)
    assert report.passed, report.summary
    assert {r.match for r in report.layers} == {"module-scope"}
    assert report.outputs[0].match == "output" and report.outputs[0].rel_l2 < 1e-5
    assert any(r.local_rel_l2 is not None for r in report.layers)


@pytest.mark.parametrize("keep_io_types", [True, False])
@pytest.mark.parametrize("name", ["stack", "cnn"])
def test_clean_float16_conversion_passes(exports, stack, cnn, name, keep_io_types):
    _, inputs = _model_and_inputs(name, stack, cnn)
    path = exports[name, "torchscript"]
    report = diffcore.compare(path, path, inputs, test_dtype="float16", keep_io_types=keep_io_types)
    assert report.passed, report.summary
    assert any(r.test_dtype == "float16" for r in report.layers)
    if keep_io_types:  # inserted Casts are listed, never dropped silently
        assert any("inserted Cast" in u.reason for u in report.unmatched)


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_changed_layernorm_epsilon_is_localized(tmp_path, exports, stack, exporter):
    def plant(model):
        onnx_edits.set_attribute(onnx_edits.find_node(model, "blocks.1.ln", "LayerNormalization",
                                                        "/blocks.1/ln/"), "epsilon", 1e-2)

    broken = onnx_edits.edited(exports["stack", exporter], str(tmp_path / "eps.onnx"), plant)
    report = diffcore.compare(stack, broken, models.stack_inputs())
    assert not report.passed
    assert report.first_divergence.name == "blocks.1.ln", report.summary
    assert report.first_divergence.status == "diverged"
    onnx_vs_onnx = diffcore.compare(exports["stack", exporter], broken, models.stack_inputs())
    first = onnx_vs_onnx.first_divergence
    assert first.op_type == "LayerNormalization" and first.module == "blocks.1.ln", onnx_vs_onnx.summary


def test_a_gelu_replaced_by_its_tanh_approximation_is_localized(tmp_path, exports, stack):
    def plant(model):
        onnx_edits.set_attribute(onnx_edits.find_node(model, "blocks.2.mlp.1", "Gelu",
                                                        "/blocks.2/mlp/mlp.1/"), "approximate", "tanh")

    broken = onnx_edits.edited(exports["stack", "torchscript"], str(tmp_path / "gelu.onnx"), plant)
    report = diffcore.compare(stack, broken, models.stack_inputs())
    assert report.first_divergence.name == "blocks.2.mlp.1", report.summary
    assert report.first_divergence.rel_l2 < 0.05  # small, yet far above float32 noise: still caught
    rows_before = [r for r in report.layers if r.index < report.first_divergence.index]
    assert all(r.status == "ok" for r in rows_before)


def test_swapped_conv_output_channels_are_localized(tmp_path, exports, cnn):
    def plant(model):
        onnx_edits.swap_output_channels(model, onnx_edits.find_node(model, "conv2", "Conv", "/conv2/"))

    broken = onnx_edits.edited(exports["cnn", "torchscript"], str(tmp_path / "swap.onnx"), plant)
    report = diffcore.compare(cnn, broken, models.cnn_inputs())
    assert report.first_divergence.name == "conv2", report.summary
    assert report.first_divergence.rel_l2 > 0.05
    assert report.row("bn1").status == "ok"


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_a_changed_resize_coordinate_mode_is_localized(tmp_path, exports, cnn, exporter):
    def plant(model):
        node = next(n for n in model.graph.node if n.op_type == "Resize")
        onnx_edits.set_attribute(node, "coordinate_transformation_mode", "asymmetric")

    broken = onnx_edits.edited(exports["cnn", exporter], str(tmp_path / "resize.onnx"), plant)
    report = diffcore.compare(cnn, broken, models.cnn_inputs())
    assert report.first_divergence.name == "up", report.summary
    onnx_vs_onnx = diffcore.compare(exports["cnn", exporter], broken, models.cnn_inputs())
    assert onnx_vs_onnx.first_divergence.op_type == "Resize", onnx_vs_onnx.summary


@pytest.mark.gpu
def test_the_same_model_on_cpu_and_cuda_providers(exports):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu with the CUDA provider is not installed")
    path = exports["stack", "torchscript"]
    report = diffcore.compare(path, path, models.stack_inputs(), ref_providers=["CPUExecutionProvider"],
                              test_providers=["CUDAExecutionProvider"])
    assert report.passed, report.summary


@pytest.fixture(scope="module")
def decomposed_and_fused(tmp_path_factory, stack):
    """The stack exported at opset 16 (LayerNorm decomposed into ~9 nodes) and 17 (one fused op)."""
    folder = tmp_path_factory.mktemp("fusion")
    inputs = models.stack_inputs()
    return (models.export(stack, inputs, folder / "ln16.onnx", dynamo=False, opset=16),
            models.export(stack, inputs, folder / "ln17.onnx", dynamo=False, opset=17))


def test_a_fused_op_is_compared_at_the_boundary_that_survives(tmp_path, decomposed_and_fused):
    decomposed, fused = decomposed_and_fused
    report = diffcore.compare(decomposed, fused, models.stack_inputs())
    assert report.passed, report.summary
    boundaries = [r for r in report.layers if r.module == "blocks.1.ln"]
    assert boundaries and boundaries[0].match == "module-scope"
    assert boundaries[0].test_tensor.endswith("LayerNormalization_output_0")
    assert any("ReduceMean" in u.key for u in report.unmatched if u.side == "ref")  # inside the fused region

    def plant(model):
        onnx_edits.set_attribute(onnx_edits.find_node(model, "blocks.1.ln", "LayerNormalization",
                                                        "/blocks.1/ln/"), "epsilon", 1e-2)

    broken = diffcore.compare(decomposed, onnx_edits.edited(fused, str(tmp_path / "eps.onnx"), plant),
                              models.stack_inputs())
    assert broken.first_divergence.module == "blocks.1.ln", broken.summary


def test_providers_can_be_chosen_per_side(exports):
    path = exports["cnn", "torchscript"]
    report = diffcore.compare(path, path, models.cnn_inputs(), ref_providers=["CPUExecutionProvider"],
                              test_providers=["CPUExecutionProvider"])
    assert report.passed and "CPUExecutionProvider" in report.test["description"]
    with pytest.raises(diffcore.DiffcoreError, match="NoSuchExecutionProvider"):
        diffcore.compare(path, path, models.cnn_inputs(), test_providers=["NoSuchExecutionProvider"])


def test_inputs_are_synthesized_from_static_shapes_when_omitted(exports):
    path = exports["cnn", "torchscript"]
    report = diffcore.compare(path, path, None, test_dtype="float16")
    assert report.passed and any("synthesized" in w for w in report.warnings)


def test_a_float16_overflow_in_the_converted_onnx_model_is_localized(tmp_path, stack):
    inputs = models.stack_inputs()
    path = models.export(models.with_fp16_overflow(stack, block=2), inputs, tmp_path / "big.onnx", dynamo=False)
    report = diffcore.compare(path, path, inputs, test_dtype="float16")
    first = report.first_divergence
    assert first.module == "blocks.2.mlp.0" and first.status == "diverged", report.summary
    assert "overflow" in first.cause and first.overflow_risk > 0
    later = [r for r in report.layers if r.index > first.index and r.new_nonfinite]
    assert later and all(r.status == "carried" for r in later)


def test_two_onnx_models_are_compared_without_importing_torch(exports, tmp_path):
    """torch takes about a second to import: an ONNX-only comparison (and its report) must not need it."""
    import subprocess
    import sys

    import numpy as np

    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **{k: v.numpy() for k, v in models.stack_inputs().items()})
    path = exports["stack", "torchscript"]
    code = ("import sys, numpy as np, diffcore\n"
            f"data = dict(np.load({str(inputs)!r}))\n"
            f"report = diffcore.compare({str(path)!r}, {str(path)!r}, data, test_dtype='float16')\n"
            "report.to_json()\n"
            "print(report.verdict, 'torch' in sys.modules, report.environment['torch'].get('note', ''))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    verdict, imported, note = done.stdout.split(maxsplit=2)
    assert verdict == "pass" and imported == "False" and "not imported" in note
