"""Tiny models built in code for the integration tests (no binaries): a transformer stack and a CNN."""
from __future__ import annotations

import copy

import torch
from torch import nn

D, HEADS, SEQ, BATCH = 32, 4, 8, 2


class Block(nn.Module):
    def __init__(self, d: int = D, heads: int = HEADS):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask):
        h = self.ln(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + a
        return x + self.mlp(self.ln2(x))


class Stack(nn.Module):
    """Transformer blocks with LayerNorm, GELU and masked attention; modules named like blocks.2.ln."""

    def __init__(self, n_layers: int = 4, d: int = D):
        super().__init__()
        self.embed = nn.Linear(d, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, d)

    def forward(self, x, mask):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln_f(x))


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


def stack(seed: int = 0, **kw) -> Stack:
    torch.manual_seed(seed)
    return Stack(**kw).eval()


def cnn(seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    return CNN().eval()


def stack_inputs(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.triu(torch.full((SEQ, SEQ), -1e4), diagonal=1)  # causal; -1e4 survives a float16 cast
    return {"x": torch.randn(BATCH, SEQ, D, generator=g), "mask": mask}


def cnn_inputs(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(BATCH, 3, 8, 8, generator=g)}


# ---- planted bugs (on copies: the original stays intact) -------------------------------------------------
def with_fp16_overflow(model: Stack, block: int = 2) -> Stack:
    """A model whose block ``block`` makes activations past float16's 65504 (harmless in float32)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.blocks[block].mlp[0].weight.mul_(1e5)
        model.blocks[block].mlp[2].weight.div_(1e5)
    return model


def with_tanh_gelu(model: Stack, block: int = 2) -> Stack:
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
