"""A SavedModel signature's intermediate tensors, from its function frozen into one inlined graph.

Keras 3 cannot rebuild layers from a SavedModel, but TensorFlow can freeze a signature's concrete function
(``convert_variables_to_constants_v2``: variables become constants, called functions are inlined), and
every op of the frozen graph keeps its TensorFlow name (``StatefulPartitionedCall/net_1/conv_1/Relu``),
the names Keras layers, the TFLite converter and tf2onnx keep. The graph is imported into a wrapped
function and pruned to the tensors a capture asks for, so one run computes exactly those.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_CALL_PREFIX = "StatefulPartitionedCall/"
# ops whose outputs are no computation of the model: constants, variable reads, identities, placeholders
_NOT_VALUES = {"Const", "Identity", "IdentityN", "Placeholder", "ReadVariableOp", "NoOp", "Shape", "Reshape"}


def op_name(tensor_name: str) -> str:
    """``StatefulPartitionedCall/net_1/conv_1/Relu:0`` -> ``net_1/conv_1/Relu`` (the name converters keep)."""
    name = tensor_name.rsplit(":", 1)[0]
    return name[len(_CALL_PREFIX):] if name.startswith(_CALL_PREFIX) else name


class FrozenSignature:
    """The frozen graph of one signature: its float intermediate tensors by op name, and runs of them."""

    def __init__(self, function):
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        frozen = convert_variables_to_constants_v2(function)
        graph_def = frozen.graph.as_graph_def()
        self._wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        graph = self._wrapped.graph
        self.inputs = {op_name(t.name): graph.get_tensor_by_name(t.name) for t in frozen.inputs}
        outputs = {t.name for t in frozen.outputs}
        self.tensors = {}  # op name -> tensor, in graph order
        for op in graph.get_operations():
            if op.type in _NOT_VALUES or op.type.startswith("Identity"):
                continue
            for tensor in op.outputs[:1]:
                if tensor.dtype.is_floating and tensor.name not in outputs and op_name(tensor.name) not in self.inputs:
                    self.tensors[op_name(tensor.name)] = tensor
        self._pruned: dict = {}

    def run(self, feed: Mapping, names) -> dict:
        """{op name: value} of ``names`` computed from ``feed`` {input name: array} in one pruned run."""
        import tensorflow as tf

        names = tuple(names)
        if names not in self._pruned:
            inputs = list(self.inputs)
            self._pruned[names] = (inputs, self._wrapped.prune([self.inputs[n] for n in inputs],
                                                               [self.tensors[n] for n in names]))
        inputs, pruned = self._pruned[names]
        values = pruned(*[tf.constant(feed[n]) for n in inputs])
        return {n: np.asarray(v) for n, v in zip(names, values)}
