"""Small float32 models exported to ONNX and quantized with ONNX Runtime's own tools, for the quantization
tests (issue 16): the MLP of the issue (Linear -> GELU -> Linear -> LayerNorm -> Linear) and a small CNN,
plus planted quantization bugs made by editing a clean quantized graph."""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

BATCH, IN = 32, 64


class MLP(nn.Module):
    def __init__(self, hidden_out: int = IN):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(IN, 128), nn.GELU(), nn.Linear(128, hidden_out)
        self.norm, self.fc3 = nn.LayerNorm(hidden_out), nn.Linear(hidden_out, 10)

    def forward(self, x):
        return self.fc3(self.norm(self.fc2(self.act(self.fc1(x)))))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, image):
        return self.head(self.relu2(self.conv2(self.relu1(self.conv1(image)))))


class Embedder(nn.Module):
    """Token and position embeddings summed, then the MLP: quantize_dynamic quantizes the Gather tables
    (Gather of the uint8 table, then DequantizeLinear) as it does a transformer's embeddings."""

    def __init__(self, vocab: int = 300, seq: int = 12):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, IN), nn.Embedding(seq, IN)
        self.mlp = MLP()

    def forward(self, ids):
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        return self.mlp(self.tokens(ids) + self.positions(positions))


class Fork(nn.Module):
    """Two Linear layers reading one value (attention's query, key and value projections): quantize_dynamic
    quantizes that value once, and each MatMulInteger's result is rescaled by its own weight's scale."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(IN, IN), nn.Linear(IN, IN), nn.Linear(IN, 10)
        with torch.no_grad():
            self.b.weight.mul_(4.0)  # a scale other than a's: dequantized with a's, it would be 4x off

    def forward(self, x):
        return self.out(torch.relu(self.a(x)) * self.b(x))


def fork() -> Fork:
    torch.manual_seed(0)
    return Fork().eval()


def embedder() -> Embedder:
    torch.manual_seed(0)
    return Embedder().eval()


def embedder_inputs(seed: int = 5) -> dict:
    return {"ids": torch.randint(0, 300, (4, 12), generator=torch.Generator().manual_seed(seed)).numpy()}


def mlp(outlier_in_fc2: float | None = None, square: bool = False) -> MLP:
    """The issue's MLP; ``square``: fc2 maps 128 -> 128 (a square weight, like a transformer's projections)."""
    torch.manual_seed(0)
    model = MLP(128 if square else IN).eval()
    if outlier_in_fc2:
        with torch.no_grad():  # one weight far past the others: a per-tensor scale gets coarse for all
            model.fc2.weight[0, 0] = outlier_in_fc2 * model.fc2.weight.abs().max()
    return model


def mlp_inputs(seed: int = 5) -> dict:
    return {"x": torch.randn(BATCH, IN, generator=torch.Generator().manual_seed(seed)).numpy()}


def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


def cnn_inputs(seed: int = 5) -> dict:
    return {"image": torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(seed)).numpy()}


def export(model, inputs: dict, path) -> str:
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    torch.onnx.export(model, args, str(path), input_names=list(inputs), output_names=["y"], dynamo=False)
    return str(path)


class Calibration:
    """Eight batches drawn like the inputs (a CalibrationDataReader)."""

    def __init__(self, make_inputs):
        self._items = iter([make_inputs(seed=100 + i) for i in range(8)])

    def get_next(self):
        return next(self._items, None)


def quantize(fp32: str, out: str, how: str, make_inputs=mlp_inputs, **options) -> str:
    """``how``: "qdq", "qoperator" (quantize_static) or "dynamic" (quantize_dynamic)."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    if how == "dynamic":
        quantize_dynamic(fp32, out, **options)
    else:
        fmt = QuantFormat.QDQ if how == "qdq" else QuantFormat.QOperator
        quantize_static(fp32, out, Calibration(make_inputs), quant_format=fmt, **options)
    return out


def edit_initializer(path: str, out: str, name: str, change) -> str:
    """A copy of the model at ``path`` with initializer ``name`` replaced by ``change(its array)``."""
    model = onnx.load(path)
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(np.asarray(change(numpy_helper.to_array(tensor))), name))
    onnx.save(model, out)
    return out


def misread_zero_point(path: str, out: str, value: str) -> str:
    """A copy whose DequantizeLinear of activation ``value`` reads a zero point one step off from the one its
    QuantizeLinear wrote with (a hand-edited or mis-converted graph)."""
    model = onnx.load(path)
    zp_name = f"{value}_zero_point"
    zp = next(t for t in model.graph.initializer if t.name == zp_name)
    shifted = numpy_helper.from_array(numpy_helper.to_array(zp) + np.array(1, numpy_helper.to_array(zp).dtype),
                                      zp_name + "_misread")
    model.graph.initializer.append(shifted)
    readers = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[2] == zp_name]
    for node in readers:
        node.input[2] = shifted.name
    onnx.save(model, out)
    return out


def ort_output(path: str, inputs: dict) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def rel_l2(ref, test) -> float:
    return float(np.linalg.norm(np.asarray(test, np.float64) - ref) / np.linalg.norm(ref))
