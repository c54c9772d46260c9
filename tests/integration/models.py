"""Tiny models built in code for the integration tests (no binaries): a transformer stack and a CNN."""
from __future__ import annotations

import copy

import torch
from torch import nn

from diffcore.demo import TinyTransformer

D, HEADS, SEQ, BATCH = 32, 4, 8, 2


class CNN(nn.Module):
    """Conv + BatchNorm (with non-trivial running statistics) + bilinear upsampling."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, image):
        x = self.up(self.relu1(self.bn1(self.conv1(image))))
        return self.head(self.relu2(self.bn2(self.conv2(x))))


def stack(seed: int = 0, n_layers: int = 4) -> TinyTransformer:
    """Transformer blocks with LayerNorm, GELU and masked attention, modules named like blocks.2.ln: the
    demo's transformer at test size."""
    return TinyTransformer(n_layers=n_layers, d=D, heads=HEADS, seq=SEQ, seed=seed).eval()


def cnn(seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    return CNN().eval()


def stack_inputs() -> dict:
    return stack().example_inputs(batch=BATCH)  # causal mask of -1e4: it survives a float16 cast


def cnn_inputs(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(BATCH, 3, 8, 8, generator=g)}


# ---- planted bugs (on copies: the original stays intact) -------------------------------------------------
def with_fp16_overflow(model, block: int = 2):
    """A model whose block ``block`` makes activations past float16's 65504 (harmless in float32)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.blocks[block].mlp[0].weight.mul_(1e5)
        model.blocks[block].mlp[2].weight.div_(1e5)
    return model


def with_tanh_gelu(model, block: int = 2):
    model = copy.deepcopy(model)
    model.blocks[block].mlp[1] = nn.GELU(approximate="tanh")
    return model


def with_swapped_channels(model: CNN, a: int = 0, b: int = 1) -> CNN:
    model = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in (model.conv2.weight, model.conv2.bias):
            tensor[[a, b]] = tensor[[b, a]].clone()
    return model


def export(model, inputs: dict, path, dynamo: bool, opset: int | None = None) -> str:
    """Export with the chosen exporter; input names equal forward()'s parameter names."""
    import warnings

    kwargs = {"opset_version": opset} if opset else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(inputs.values()), str(path), dynamo=dynamo,
                          input_names=list(inputs), output_names=["y"], **kwargs)
    return str(path)
