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


def _net(epsilon=1e-3, approximate=False, name="net"):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = keras.layers.LayerNormalization(epsilon=epsilon, name="ln")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(16, name="fc1")(h)
    act = (lambda t: keras.activations.gelu(t, approximate=True)) if approximate else "gelu"
    h = keras.layers.Activation(act, name="act")(h)
    return keras.Model(inp, keras.layers.Dense(5, name="fc2")(h), name=name)


def _tflite(model, path, mode="fp32"):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    path.write_bytes(conv.convert())
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tf")
    model = _net()
    model.save(d / "net.keras")
    out = {"keras": str(d / "net.keras")}
    for mode in ("fp32", "fp16", "int8"):
        out[mode] = _tflite(model, d / f"net_{mode}.tflite", mode)
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


def test_keras_vs_tflite_fp16_weights_drift_at_float16_level_in_every_layer(files):
    # The fp16 model stores float16 weights and dequantizes them: activations are float32, so the default
    # float32 bands flag the drift (known gap: no float16-weights tolerance yet); every layer stays < 0.1 %.
    report = compare(files["keras"], files["fp16"], INPUTS)
    assert len(report.layers) >= 5
    assert max(r.rel_l2 for r in report.layers) < 1e-3, report.summary


def test_keras_vs_dynamic_int8_drifts_but_is_paired_layer_by_layer(files):
    report = compare(files["keras"], files["int8"], INPUTS)
    assert len(report.layers) >= 5
    worst = max(r.rel_l2 for r in report.layers)
    assert 1e-4 < worst < 0.2, report.summary  # int8 weights: visible drift, far from garbage


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


def test_savedmodel_signature_outputs_vs_tflite(tmp_path, files):
    import keras

    model = keras.models.load_model(files["keras"])
    model.export(str(tmp_path / "sm"))
    report = compare(str(tmp_path / "sm"), files["fp32"], INPUTS)
    assert report.passed, report.summary
    with pytest.raises(DiffcoreError, match="has no signature 'nope'"):
        open_runner(str(tmp_path / "sm") + "#nope", role="ref")


@pytest.fixture(scope="module")
def tf2onnx_pair(tmp_path_factory):
    """A conv net with tanh (tf2onnx 1.17 emits Erfc for GELU, which ONNX has no op for) and its tf2onnx export."""
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(16, activation="tanh", name="fc1")(h)
    model = keras.Model(inp, keras.layers.Dense(5, name="fc2")(h), name="net")
    d = tmp_path_factory.mktemp("tf2onnx")
    model.save(d / "net.keras")
    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(d / "net.onnx"))
    return str(d / "net.keras"), str(d / "net.onnx")


def test_keras_vs_tf2onnx_pairs_layers_across_nchw_and_passes(tf2onnx_pair):
    report = compare(*tf2onnx_pair, INPUTS)
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
