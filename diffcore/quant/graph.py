"""Where a quantized ONNX graph quantizes, and with which scales.

Three layouts are read (as onnxruntime.quantization writes them):

- **QDQ**: a float op whose inputs come from ``DequantizeLinear`` and whose output goes through
  ``QuantizeLinear`` -> ``DequantizeLinear``. A DQ input fed by an initializer is a weight; otherwise an
  activation, standing for the float value its ``QuantizeLinear`` reads.
- **QOperator**: ``QLinearMatMul``/``QLinearConv``/``QGemm``/``QLinearAdd``/... take (value, scale, zero point)
  triples and requantize their output with their own output scale.
- **Dynamic**: ``DynamicQuantizeLinear`` quantizes an activation at run time (uint8, its range from the
  data), ``MatMulInteger``/``ConvInteger`` multiply it by int8 weights, a ``Mul`` applies the two scales.

``layer_precisions(model)`` maps every float value a layer produces (the row a comparison shows) to a
``LayerPrecision``: the op, its activation operands (the float value each stands for, scale, bits), its
weights (dequantized values, per-tensor or per-channel scales) and its output requantization, if any.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

QDQ, QOPERATOR, DYNAMIC = "QDQ", "QOperator", "dynamic"

# QOperator ops: input positions of (value, scale, zero point) per operand, and of the output scale/zero point.
_QOP_OPERANDS = {
    "QLinearMatMul": ([(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearConv": ([(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QGemm": ([(0, 1, 2), (3, 4, 5)], (7, 8)),
    "QLinearAdd": ([(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearMul": ([(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearSigmoid": ([(0, 1, 2)], (3, 4)),
    "QLinearLeakyRelu": ([(0, 1, 2)], (3, 4)),
    "QLinearAveragePool": ([(0, 1, 2)], (3, 4)),
    "QLinearGlobalAveragePool": ([(0, 1, 2)], (3, 4)),
}
_INTEGER_OPS = {"MatMulInteger", "ConvInteger"}
# The ops that make a graph quantized: without one, a graph has no layer precision to read.
QUANTIZATION_OPS = {"DequantizeLinear", "DynamicQuantizeLinear", *_QOP_OPERANDS, *_INTEGER_OPS}
_PASS_THROUGH = {"Cast", "Mul", "Add"}  # dynamic quantization's rescale and bias after the integer op


@dataclass
class Operand:
    """One quantized input of a layer."""

    value: str                 # the float value it stands for (the reference has a value of that name)
    scale: np.ndarray          # per tensor (size 1) or per channel
    zero_point: np.ndarray
    dtype: str                 # int8, uint8, int16, ...
    axis: int | None = None    # the channel axis of per-channel scales
    weight: np.ndarray | None = None  # a weight's dequantized values
    dynamic: bool = False      # scale computed at run time from the data (DynamicQuantizeLinear)
    written_as: tuple | None = None  # (scale, zero point) of the QuantizeLinear that wrote it, where known
    node: str = ""             # the DequantizeLinear (or op) that reads it with ``scale``/``zero_point``
    dequantized: str = ""      # QDQ: the DequantizeLinear output the layer reads
    constant: bool = False     # a quantized constant computed in the graph (a table gathered at fixed indices)

    def representable(self) -> tuple[float, float]:
        """The float range its integer type holds with this scale and zero point (per tensor)."""
        info = np.iinfo(np.dtype(self.dtype))
        scale, zero = float(np.max(self.scale)), float(self.zero_point.reshape(-1)[0])
        return (info.min - zero) * scale, (info.max - zero) * scale

    def mismatch(self) -> str:
        """Words when the reader's scale/zero point differ from the writer's: every value is misread."""
        if self.written_as is None:
            return ""
        scale, zero = self.written_as
        if np.array_equal(np.asarray(scale, np.float64).reshape(-1), self.scale.reshape(-1)) and \
                np.array_equal(np.asarray(zero, np.int64).reshape(-1), self.zero_point.reshape(-1)):
            return ""
        return (f"{self.node or 'a DequantizeLinear'} reads {self.value!r} with scale {_show(self.scale)} and zero "
                f"point {_show(self.zero_point)}, but its QuantizeLinear wrote it with scale {_show(scale)} and "
                f"zero point {_show(zero)}: every value is misread")

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class LayerPrecision:
    """What one layer computes in: its quantized operands and its output requantization."""

    kind: str                  # QDQ, QOperator or dynamic
    node: str                  # the op node's name
    op_type: str
    activations: list = field(default_factory=list)   # Operand
    weights: list = field(default_factory=list)       # Operand
    output: Operand | None = None                     # requantization of the output (None: stays float)
    float_output: str = ""     # the op's own output value (QDQ: before its QuantizeLinear)
    constants: list = field(default_factory=list)     # Operand: dequantized constants without their array

    def describe(self) -> str:
        """E.g. ``int8 per-channel W, uint8 A -> uint8 (QDQ)``; ``float32 (reads int8, dequantized)`` for a
        float op that only reads a dequantized value (a GELU between two QGemm)."""
        if not self.weights and not self.constants and self.output is None and self.activations:
            return f"float32 (reads {self.activations[0].dtype}, dequantized)"
        parts = []
        if self.weights:
            w = self.weights[0]
            grid = "" if w.dtype.startswith("float") else f" {'per-channel' if w.per_channel else 'per-tensor'}"
            parts.append(f"{w.dtype}{grid} W")
        if self.constants:
            c = self.constants[0]
            parts.append(f"{c.dtype} {'per-channel' if c.per_channel else 'per-tensor'} table")
        if self.activations:
            a = self.activations[0]
            parts.append(f"{a.dtype} A")
        text = ", ".join(parts) or "float"
        if self.output is not None:
            text += f" -> {self.output.dtype}"
        return f"{text} ({self.kind})"


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        graph = model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:  # Constant nodes hold scales in some exports
            if node.op_type == "Constant" and node.attribute:
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    self.inits[node.output[0]] = numpy_helper.to_array(attr.t)
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.nodes = list(graph.node)
        self.static = self._static(graph)

    def _static(self, graph) -> set:
        """Values computed from initializers and Constants alone (a table gathered at fixed indices)."""
        static = set(self.inits)
        for node in graph.node:
            inputs = [i for i in node.input if i]
            if inputs and all(i in static for i in inputs) and not node.op_type.startswith("Random"):
                static.update(o for o in node.output if o)
        return static - {i.name for i in graph.input if i.name not in self.inits}

    def const(self, name):
        return self.inits.get(name) if name else None

    def only_consumer(self, value, op_type=None):
        users = self.consumers.get(value, [])
        if len(users) != 1 or (op_type and users[0].op_type != op_type):
            return None
        return users[0]

    def dequantizer(self, quantized: str):
        """The DequantizeLinear node that reads ``quantized``, or None."""
        return next((n for n in self.consumers.get(quantized, []) if n.op_type == "DequantizeLinear"), None)

    def dequantized_output(self, quantized: str) -> str | None:
        """The float value a DequantizeLinear makes of ``quantized``."""
        dq = self.dequantizer(quantized)
        return dq.output[0] if dq is not None else None

    def float_of_quantized(self, quantized: str) -> str | None:
        """The float value a quantized activation stands for: its QuantizeLinear's input, else its DQ."""
        producer = self.producer.get(quantized)
        if producer is not None and producer.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"):
            return producer.input[0]
        return self.dequantized_output(quantized)


def _show(array) -> str:
    flat = np.asarray(array).reshape(-1)
    return f"{flat[0]:.6g}" if flat.size == 1 else f"[{flat.size} per channel]"


def _dtype_of(zero_point, data=None) -> str:
    for array in (zero_point, data):
        if array is not None:
            return str(np.asarray(array).dtype)
    return "uint8"  # ONNX's default zero point type


def _axis(node) -> int | None:
    attr = next((a for a in node.attribute if a.name == "axis"), None)
    return int(attr.i) if attr is not None else None


def _operand(g: _Graph, value, scale_name, zp_name, axis=None) -> Operand | None:
    scale = g.const(scale_name)
    if scale is None:
        return None
    zp = g.const(zp_name)
    data = g.const(value)
    zero_point = np.zeros_like(scale, dtype=np.int64) if zp is None else zp.astype(np.int64)
    if data is not None:  # a weight: keep its dequantized values
        weight = _dequantize(data, scale, zero_point, axis)
        return Operand(value, np.asarray(scale, np.float64), zero_point, _dtype_of(zp, data), axis, weight)
    float_value = g.float_of_quantized(value) or value
    if value in g.static:  # an integer constant the graph computes (Gather of a table at fixed indices)
        return Operand(float_value, np.asarray(scale, np.float64), zero_point, _dtype_of(zp), axis, constant=True)
    operand = Operand(float_value, np.asarray(scale, np.float64), zero_point, _dtype_of(zp), axis)
    writer = g.producer.get(value)
    if writer is not None and writer.op_type == "QuantizeLinear":
        w_zp = g.const(writer.input[2]) if len(writer.input) > 2 else None
        w_scale = g.const(writer.input[1])
        if w_scale is not None:
            operand.written_as = (w_scale, np.zeros_like(w_scale, np.int64) if w_zp is None else w_zp)
    return operand


def _dequantize(data, scale, zero_point, axis) -> np.ndarray:
    data = data.astype(np.float64)
    if scale.size > 1:
        shape = [1] * data.ndim
        shape[axis if axis is not None else 1] = scale.size
        return (data - zero_point.reshape(shape)) * scale.reshape(shape).astype(np.float64)
    return (data - float(zero_point.reshape(-1)[0])) * float(scale.reshape(-1)[0])


def _operands_of(layer, operand) -> list:
    """The list of ``layer`` an operand belongs to: weights (arrays), constants, or activations."""
    if operand.weight is not None:
        return layer.weights
    return layer.constants if operand.constant else layer.activations


def _gathered_layers(g: _Graph) -> dict:
    """quantize_dynamic's embeddings: Gather of an integer table, then DequantizeLinear with the table's
    scale. The dequantized rows are the layer's output; the table is its weight."""
    found = {}
    for dq in g.nodes:
        gather = g.producer.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if gather is None or gather.op_type != "Gather" or g.const(gather.input[0]) is None:
            continue
        table = _operand(g, gather.input[0], dq.input[1], dq.input[2] if len(dq.input) > 2 else "", _axis(dq))
        if table is not None and table.weight is not None and dq.output[0] not in g.static:
            found[dq.output[0]] = LayerPrecision("Gather", gather.name, "Gather", weights=[table])
    return found


def _qdq_layers(g: _Graph) -> dict:
    found = {}
    for node in g.nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.op_type in _QOP_OPERANDS:
            continue
        dqs = [g.producer.get(i) for i in node.input]
        dqs = [d for d in dqs if d is not None and d.op_type == "DequantizeLinear"]
        if not dqs:
            continue
        layer = LayerPrecision(QDQ, node.name, node.op_type, float_output=node.output[0])
        for dq in dqs:
            operand = _operand(g, dq.input[0], dq.input[1], dq.input[2] if len(dq.input) > 2 else "", _axis(dq))
            if operand is not None:
                operand.node, operand.dequantized = dq.name or dq.output[0], dq.output[0]
                _operands_of(layer, operand).append(operand)
        for out in node.output:
            found[out] = layer
            q = g.only_consumer(out, "QuantizeLinear")
            dq = g.dequantizer(q.output[0]) if q is not None else None
            if dq is not None:
                requant = _operand(g, q.output[0], dq.input[1], dq.input[2] if len(dq.input) > 2 else "")
                if requant is not None:
                    requant.node = dq.name or dq.output[0]
                    found[dq.output[0]] = LayerPrecision(QDQ, node.name, node.op_type, layer.activations,
                                                         layer.weights, requant, node.output[0],
                                                         layer.constants)
    return found


def _qoperator_layers(g: _Graph) -> dict:
    found = {}
    for node in g.nodes:
        spec = _QOP_OPERANDS.get(node.op_type)
        if spec is None:
            continue
        operands, (ys, yz) = spec
        layer = LayerPrecision(QOPERATOR, node.name, node.op_type)
        def name(i, node=node):
            return node.input[i] if i < len(node.input) else ""

        for v, s, z in operands:
            operand = _operand(g, name(v), name(s), name(z), _weight_axis(node))
            if operand is not None:
                _operands_of(layer, operand).append(operand)
        out_scale = node.input[ys] if ys < len(node.input) else ""
        if out_scale:
            layer.output = _operand(g, node.output[0], out_scale, node.input[yz] if yz < len(node.input) else "")
            deq = g.dequantized_output(node.output[0])
            if deq is not None:
                found[deq] = layer
        else:
            found[node.output[0]] = layer
    return found


def _weight_axis(node) -> int:
    """The output-channel axis of a QOperator op's weight: Conv [M, C, ...] and Gemm with transB [N, K]
    on 0, MatMul [K, N] and Gemm without transB on 1."""
    if node.op_type == "QLinearConv":
        return 0
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if node.op_type == "QGemm" and trans_b else 1


def _dynamic_layers(g: _Graph) -> dict:
    found = {}
    for node in g.nodes:
        if node.op_type not in _INTEGER_OPS:
            continue
        layer = LayerPrecision(DYNAMIC, node.name, node.op_type)
        act, weight = node.input[0], node.input[1]
        producer = g.producer.get(act)
        if producer is not None and producer.op_type == "DynamicQuantizeLinear":
            layer.activations.append(Operand(producer.input[0], np.zeros(1), np.zeros(1, np.int64), "uint8",
                                             dynamic=True))
        w_scale = _dynamic_weight_scale(g, node)
        data = g.const(weight)
        if data is not None and w_scale is not None:
            zp = g.const(node.input[3]) if len(node.input) > 3 else None
            zero_point = np.zeros_like(w_scale, np.int64) if zp is None else zp.astype(np.int64)
            axis = 1 if w_scale.size > 1 else None  # MatMul weights [K, N]: per output column
            layer.weights.append(Operand(weight, w_scale, zero_point, _dtype_of(zp, data), axis,
                                         _dequantize(data, w_scale, zero_point, axis)))
        value = node.output[0]
        while value is not None:  # the Cast -> Mul (scales) -> Add (bias) chain leaves float values
            found[value] = layer
            nxt = g.only_consumer(value)
            value = nxt.output[0] if nxt is not None and nxt.op_type in _PASS_THROUGH else None
    return found


def _dynamic_weight_scale(g: _Graph, node) -> np.ndarray | None:
    """The weight scale of a MatMulInteger/ConvInteger: the constant in the factor that rescales *its* int32
    result (Cast -> Mul by ``activation scale x weight scale``). One DynamicQuantizeLinear may feed several
    of them (a transformer's query, key and value projections), each with its own weight scale."""
    value = node.output[0]
    while value is not None:
        for user in g.consumers.get(value, []):
            if user.op_type == "Mul":
                factor = next((i for i in user.input if i != value), None)
                scale = _constant_factor(g, factor)
                if scale is not None:
                    return scale
        cast = g.only_consumer(value, "Cast")
        value = cast.output[0] if cast is not None else None
    return None


def _constant_factor(g: _Graph, name) -> np.ndarray | None:
    """``name`` if it is a constant, else the constant operand of the Mul producing it."""
    scale = g.const(name)
    producer = g.producer.get(name) if scale is None else None
    if producer is not None and producer.op_type == "Mul":
        scale = next((g.const(i) for i in producer.input if g.const(i) is not None), None)
    return None if scale is None else np.asarray(scale, np.float64).reshape(-1)


# QDQ ops ONNX Runtime runs as integer kernels (DequantizeLinear -> op -> QuantizeLinear fused into QGemm,
# QLinearConv, QLinearMatMul): their local runs read the reference's values through the input's own
# QuantizeLinear -> DequantizeLinear, as the deployed kernel does; a float op reading a DequantizeLinear
# (GELU, LayerNorm) computes in float whatever feeds it.
INTEGER_KERNELS = frozenset({"Gemm", "MatMul", "Conv"})


def fed_before_quantization(layer) -> bool:
    """Whether a QDQ layer's local run feeds its activations before their QuantizeLinear."""
    return layer.kind == QDQ and layer.op_type in INTEGER_KERNELS and bool(layer.activations)


def layer_precisions(model) -> dict:
    """{float value name: LayerPrecision} of every value a quantized layer produces; empty for a float
    model."""
    g = _Graph(model)
    found = _qdq_layers(g)
    found.update(_qoperator_layers(g))
    found.update(_dynamic_layers(g))
    found.update(_gathered_layers(g))
    return found
