"""Keras / SavedModel / TFLite (LiteRT) sides: small models built and converted here, compared layer by layer."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from diffcore import compare  # noqa: E402
from diffcore.errors import DiffcoreError  # noqa: E402
from diffcore.spec import open_runner  # noqa: E402

from .tf_models import net as _net  # noqa: E402
from .tf_models import tanh_net  # noqa: E402
from .tf_models import tflite as _tflite  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tf")
    model = _net()
    model.save(d / "net.keras")
    out = {"keras": str(d / "net.keras")}
    for mode in ("fp32", "fp16", "int8", "full8"):
        out[mode] = _tflite(model, d / f"net_{mode}.tflite", mode)
    # a weight float16 cannot hold (|w| > 65504): it becomes inf in the fp16 model only
    big = _net(name="net")
    weights = model.get_weights()
    weights[[w.shape for w in weights].index((144, 16))][0, 0] = 1e5
    big.set_weights(weights)
    big.save(d / "big.keras")
    out["big_keras"] = str(d / "big.keras")
    out["fp16_overflow"] = _tflite(big, d / "net_fp16_overflow.tflite", "fp16")
    # planted bugs: the same weights, a converted copy with a changed epsilon / an approximated GELU
    for bug, kwargs in (("eps", {"epsilon": 1.0}), ("gelu", {"approximate": True})):
        copy = _net(**kwargs, name="net")
        copy.set_weights(model.get_weights())
        out[bug] = _tflite(copy, d / f"net_{bug}.tflite")
    return out


INPUTS = {"x": np.random.default_rng(0).standard_normal((1, 8, 8, 3)).astype(np.float32)}


def test_keras_vs_tflite_fp32_passes_with_layers_paired(files):
    report = compare(files["keras"], files["fp32"], INPUTS)
    assert report.passed, report.summary
    assert {r.name for r in report.layers} >= {"conv", "ln", "flat", "fc1", "act"}


def test_keras_vs_tflite_fp16_weights_passes_judged_by_the_float16_rounding_of_its_weights(files):
    # The fp16 model stores float16 weights and dequantizes them; activations are float32. Each layer that
    # reads a float16 weight is judged against the error that rounding predicts, not float32's noise.
    report = compare(files["keras"], files["fp16"], INPUTS)
    assert report.passed, report.summary
    rows = {r.name: r for r in report.layers}
    for name in ("conv", "fc1"):
        assert rows[name].precision.startswith("float16 W"), rows[name].precision
        assert 0.25 < rows[name].rel_l2 / rows[name].predicted_rel_l2 < 4, (name, rows[name].rel_l2)
    assert len(report.layers) >= 5


def test_keras_vs_dynamic_int8_passes_with_its_int8_layer_predicted(files):
    report = compare(files["keras"], files["int8"], INPUTS)
    assert report.passed, report.summary
    fc1 = report.row("fc1")
    assert "int8 per-channel W" in fc1.precision and "dynamic range" in fc1.precision
    assert 0.25 < fc1.rel_l2 / fc1.predicted_rel_l2 < 4, (fc1.rel_l2, fc1.predicted_rel_l2)
    assert "carried" in report.row("act").cause  # a float op after it carries its int8 error


def test_a_weight_past_float16s_range_clamped_by_the_converter_is_localized_and_named(files):
    report = compare(files["big_keras"], files["fp16_overflow"], INPUTS)
    assert not report.passed
    # TFLiteConverter clamps the weight to float16's largest value (65504): finite, and 35 % off
    assert report.first_divergence.name == "fc1", report.summary
    assert "at float16's limit 65504" in report.first_divergence.cause, report.first_divergence.cause


def test_full_int8_layernorm_is_found_losing_far_more_than_its_scales_predict(files):
    # int8 LayerNormalization (its mean and variance requantized) is the layer a full-int8 model loses in
    report = compare(files["keras"], files["full8"], INPUTS)
    rows = {r.name: r for r in report.layers}
    assert all("TFLite int8" in rows[n].precision for n in ("conv", "ln", "fc1")), report.summary
    assert rows["conv"].rel_l2 < 4 * rows["conv"].predicted_rel_l2
    assert report.first_divergence.name == "ln" and rows["ln"].rel_l2 > 4 * rows["ln"].predicted_rel_l2


def test_changed_layernorm_epsilon_is_localized_to_ln(files):
    report = compare(files["keras"], files["eps"], INPUTS)
    assert not report.passed
    assert report.first_divergence.name == "ln", report.summary


def test_tanh_approximated_gelu_first_differs_at_act(files):
    report = compare(files["keras"], files["gelu"], INPUTS)
    rows = {r.name: r for r in report.layers}
    assert rows["fc1"].rel_l2 < 1e-5 and rows["act"].rel_l2 > 10 * max(rows["fc1"].rel_l2, 1e-7), report.summary


def test_wrong_input_shape_is_one_line_error(files):
    runner = open_runner(files["fp32"], role="test")
    with pytest.raises(DiffcoreError, match=r"input 'x' of test has shape \(1, 4\)"):
        runner.prepare_inputs({"x": np.zeros((1, 4), np.float32)})
    with pytest.raises(DiffcoreError, match=r"unknown 'y'.*expected inputs: 'x'"):
        runner.prepare_inputs({"y": np.zeros((1, 8, 8, 3), np.float32)})


def test_savedmodel_without_serving_signature_exits_2(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={})
    proc = subprocess.run([sys.executable, "-m", "diffcore", "compare", str(tmp_path / "sm"), str(tmp_path / "sm")],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 2, proc.stderr
    assert "has no serving signature" in proc.stderr


def test_savedmodel_intermediates_from_its_frozen_graph_pair_with_tflite_and_keras(tmp_path, files):
    import keras

    model = keras.models.load_model(files["keras"])
    model.export(str(tmp_path / "sm"))
    report = compare(str(tmp_path / "sm"), files["fp32"], INPUTS)
    assert report.passed, report.summary
    # its signature frozen into one graph: every op under the TensorFlow name TFLite kept too
    assert {"net_1/conv_1/Relu", "net_1/ln_1/add_2"} <= {r.name for r in report.layers}, report.summary
    layers = compare(files["keras"], str(tmp_path / "sm"), INPUTS)
    assert layers.passed and {"conv", "ln", "fc1", "act"} <= {r.name for r in layers.layers}, layers.summary
    # TFLite appends a digit to an op's output name a constant took first (fc1's weight is .../MatMul)
    dynamic = compare(str(tmp_path / "sm"), files["int8"], INPUTS)
    assert dynamic.passed and "int8" in dynamic.row("net_1/fc1_1/MatMul").precision, dynamic.summary
    planted = compare(str(tmp_path / "sm"), files["eps"], INPUTS)
    assert not planted.passed and "ln_1" in planted.first_divergence.name, planted.summary
    with pytest.raises(DiffcoreError, match="has no signature 'nope'"):
        open_runner(str(tmp_path / "sm") + "#nope", role="ref")


@pytest.fixture(scope="module")
def tf2onnx_pair(tmp_path_factory):
    """A conv net with tanh (tf2onnx 1.17 emits Erfc for GELU, which ONNX has no op for) and its tf2onnx export."""
    import keras
    import tensorflow as tf
    import tf2onnx

    model = tanh_net()
    d = tmp_path_factory.mktemp("tf2onnx")
    model.save(d / "net.keras")
    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(d / "net.onnx"))
    _tflite(model, d / "net.tflite")
    return str(d / "net.keras"), str(d / "net.onnx"), str(d / "net.tflite")


def test_keras_vs_tf2onnx_pairs_layers_across_nchw_and_passes(tf2onnx_pair):
    report = compare(*tf2onnx_pair[:2], INPUTS)
    assert report.passed, report.summary
    rows = {r.name: r for r in report.layers}
    assert {"conv", "ln", "flat", "fc1"} <= set(rows), report.summary
    assert any("NCHW transposed" in n for n in rows["conv"].notes), rows["conv"].notes


def test_integer_only_tflite_io_is_quantized_and_said_so(files, tmp_path):
    import keras
    import tensorflow as tf

    model = keras.models.load_model(files["keras"])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(2)
    conv.representative_dataset = lambda: ([rng.standard_normal((1, 8, 8, 3)).astype(np.float32)] for _ in range(20))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    (tmp_path / "q.tflite").write_bytes(conv.convert())
    runner = open_runner(str(tmp_path / "q.tflite"), role="test")
    assert re.search(r"integer input 'x' \(int8\) quantized with scale [\d.e-]+, zero point -?\d+", runner.description)
    assert "integer output" in runner.description and "dequantized" in runner.description
    report = compare(files["keras"], runner, INPUTS)
    assert report.outputs[0].rel_l2 < 0.2, report.summary  # int8 everywhere: drift, not garbage


def test_tflite_vs_tf2onnx_pair_the_tensorflow_ops_both_converters_kept(tf2onnx_pair):
    _, onnx_path, tflite_path = tf2onnx_pair
    report = compare(tflite_path, onnx_path, INPUTS)
    assert report.passed, report.summary
    rows = {r.name: r for r in report.layers}
    assert len(rows) >= 10 and {"net_1/conv_1/Relu", "net_1/ln_1/add_2", "net_1/fc1_1/Tanh"} <= set(rows)
    assert any("NCHW transposed" in n for n in rows["net_1/conv_1/Relu"].notes)
    # tf2onnx expands SquaredDifference into Sub + Mul and names the Sub after it: never paired by name
    assert "net_1/ln_1/moments/SquaredDifference" not in rows


def test_tf2onnx_erfc_gelu_is_refused_with_what_to_do(files, tmp_path):
    import keras
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(files["keras"])
    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(tmp_path / "g.onnx"))
    with pytest.raises(DiffcoreError, match=r"Erfc is no ONNX operator: tf2onnx writes Keras 3's exact GELU"):
        compare(files["keras"], str(tmp_path / "g.onnx"), INPUTS)


def test_dense_only_fp16_model_pairs_layers_not_the_xnnpack_weight_dequantizations(tmp_path):
    # With a dynamic batch XNNPACK lists a DELEGATE node per constant Dequantize; read as ops they paired
    # each Dense layer
    # with its (8, 8) float32 weight tensor, so 0 layers were compared and only the output was judged.
    # The converter saturates a float16 weight beyond 65504 to 65504 (not inf): pinned for the README.
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,), name="x")
    y = keras.layers.Dense(8, activation="relu", name="fc0")(inp)
    y = keras.layers.Dense(8, name="big")(y)
    model = keras.Model(inp, keras.layers.Dense(4, name="out")(y))
    w, b = model.get_layer("big").get_weights()
    w[0, 0] = 1e5
    model.get_layer("big").set_weights([w, b])
    model.save(tmp_path / "m.keras")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations, conv.target_spec.supported_types = [tf.lite.Optimize.DEFAULT], [tf.float16]
    (tmp_path / "m.tflite").write_bytes(conv.convert())
    interp = Interpreter(str(tmp_path / "m.tflite"))
    fp16 = [interp.get_tensor(d["index"]) for d in interp.get_tensor_details() if d["dtype"] == np.float16]
    assert max(float(np.abs(t.astype(np.float32)).max()) for t in fp16) == 65504.0
    x = {"x": np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)}
    report = compare(str(tmp_path / "m.keras"), str(tmp_path / "m.tflite"), x)
    assert {r.name for r in report.layers} >= {"fc0", "big"}, report.summary
    assert "at float16's limit 65504" in report.row("big").quant_issue  # named even where this input hides it
