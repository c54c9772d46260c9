"""Small Keras models and their TFLite conversions, for the TensorFlow tests and bench/tf_pairs.py."""
import numpy as np


def net(epsilon=1e-3, approximate=False, name="net"):
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


def tanh_net():
    """The conv net with tanh instead of GELU (tf2onnx 1.17 writes Keras 3's GELU as Erfc, no ONNX op)."""
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(16, activation="tanh", name="fc1")(h)
    return keras.Model(inp, keras.layers.Dense(5, name="fc2")(h), name="net")


def tflite(model, path, mode="fp32"):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "full8":  # int8 activations too, calibrated on a representative dataset (float I/O)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rng = np.random.default_rng(2)
        conv.representative_dataset = lambda: ([rng.standard_normal((1, 8, 8, 3)).astype(np.float32)]
                                               for _ in range(20))
    path.write_bytes(conv.convert())
    return str(path)
