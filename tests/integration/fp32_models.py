"""Tiny models whose float16 (or bfloat16) run fails in one known place, for the --suggest-fp32 tests."""
from __future__ import annotations

import torch
from torch import nn

D, SEQ, BATCH = 16, 4, 2


class FFN(nn.Module):
    """up -> ReLU -> down, as separate modules."""

    def __init__(self, d: int = D, hidden: int = 4 * D):
        super().__init__()
        self.up, self.act, self.down = nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, d)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    def __init__(self, mixer: nn.Module):
        super().__init__()
        self.ln, self.mix = nn.LayerNorm(D), mixer

    def forward(self, x):
        return x + self.mix(self.ln(x))


class NaiveSoftmax(nn.Module):
    """exp without subtracting the maximum: overflows float16 for logits past about 11."""

    def forward(self, x):
        e = torch.exp(x)
        return e / e.sum(dim=-1, keepdim=True)


class OnePassLayerNorm(nn.Module):
    """var = E[x^2] - E[x]^2: x^2 overflows float16 for |x| past 256, and cancels."""

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = (x * x).mean(dim=-1, keepdim=True) - mean * mean
        return (x - mean) / torch.sqrt(var + 1e-5)


class OffsetOnePassLayerNorm(OnePassLayerNorm):
    """The one-pass LayerNorm of activations offset by 256: E[x^2] - E[x]^2 cancels catastrophically in
    bfloat16 (8 significant bits: the offset swallows the variation), never in float32."""

    def forward(self, x):
        return super().forward(x + 256.0)


class RMSNormNoUpcast(nn.Module):
    """x / sqrt(mean(x^2)) in the input's dtype: x^2 overflows float16 for |x| past 256."""

    def __init__(self, d: int = D):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.weight * (x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-6))


class Net(nn.Module):
    """Linear in, three residual FFN blocks, a head; ``special`` runs between the input projection and
    the blocks (the culprit of a planted failure)."""

    def __init__(self, special: nn.Module | None = None, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(D, D)
        self.special = special or nn.Identity()
        self.blocks = nn.ModuleList(Block(FFN()) for _ in range(3))
        self.head = nn.Linear(D, D)

    def forward(self, x):
        x = self.special(self.inp(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def inputs(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(BATCH, SEQ, D, generator=g)}


def clean() -> Net:
    return Net().eval()


def ffn_overflow(block: int = 1) -> Net:
    """Block ``block``'s up-projection makes values past 65504 (its down-projection scales them back)."""
    model = Net().eval()
    with torch.no_grad():
        ffn = model.blocks[block].mix
        ffn.up.weight.mul_(1e5)
        ffn.up.bias.mul_(1e5)
        ffn.down.weight.div_(1e5)
    return model


def _scaled_input(special: nn.Module, scale: float, shift: float = 0.0) -> Net:
    model = Net(special).eval()
    with torch.no_grad():
        model.inp.weight.mul_(scale)
        model.inp.bias.add_(shift)
    return model


def naive_softmax() -> Net:
    return _scaled_input(NaiveSoftmax(), 30.0)


def one_pass_layernorm() -> Net:
    return _scaled_input(OnePassLayerNorm(), 400.0)


def rmsnorm_no_upcast() -> Net:
    return _scaled_input(RMSNormNoUpcast(), 400.0)


def offset_layernorm() -> Net:
    return Net(OffsetOnePassLayerNorm()).eval()
