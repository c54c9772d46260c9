"""0-d inputs stay 0-d: a scalar model input (Silero VAD's sample rate) is fed, compared and recorded as a
scalar (``np.ascontiguousarray`` would make it shape (1,), which the model refuses)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import diffcore  # noqa: E402
from diffcore.arrays import c_contiguous  # noqa: E402


def _scaled(path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"], name="mul"),
         helper.make_node("Relu", ["y"], ["z"], name="relu")],
        "scaled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_c_contiguous_keeps_scalars_scalar_and_copies_only_strided_arrays():
    scalar = np.array(3.0, dtype=np.float32)
    assert c_contiguous(scalar).shape == ()
    dense = np.ones((2, 3))
    assert c_contiguous(dense) is dense
    strided = np.ones((4, 6))[::2, ::2]
    assert c_contiguous(strided).flags.c_contiguous and c_contiguous(strided).shape == (2, 3)


def test_a_scalar_input_is_fed_as_a_scalar(tmp_path):
    path = _scaled(tmp_path / "scaled.onnx")
    inputs = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "scale": np.array(2.0, dtype=np.float32)}
    report = diffcore.compare(path, path, inputs)
    assert report.verdict == "pass", report.summary
