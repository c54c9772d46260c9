"""Small deterministic models for the demo, the docs and the tests.

Every model is built in code from a fixed seed (no weights are downloaded or stored), so the same module
path always holds the same numbers. ``transformer`` and ``cnn`` are factories usable as model specs
(``diffcore compare diffcore.demo:transformer model.onnx``).

This module needs torch (it defines ``torch.nn.Module`` classes at import time); ``import diffcore`` does
not import it.
"""
from __future__ import annotations

import contextlib

from ._deps import require

torch = require("torch", "the demo models")
nn = torch.nn

__all__ = ["Block", "NaiveRMSNorm", "TinyCNN", "TinyTransformer", "cnn", "overflowing_transformer",
           "transformer"]

SEED = 0
# A large finite negative rather than -inf: it survives a cast to float16 (max 65504) and keeps softmax
# free of inf - inf on every backend the demo exports to.
MASKED = -1e4


@contextlib.contextmanager
def _seeded(seed: int):
    """Module initialisation inside draws from ``seed`` without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _generator(seed: int):
    return torch.Generator().manual_seed(seed)


class Block(nn.Module):
    """A pre-norm transformer block: attention and an MLP, each around a residual connection."""

    def __init__(self, d: int, heads: int):
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


class TinyTransformer(nn.Module):
    """A four-block pre-norm transformer over float features: ``forward(x, mask)``.

    Args:
        n_layers: number of blocks (``blocks.0`` …).
        d: model width; ``x`` is ``[batch, seq, d]``.
        heads: attention heads (must divide ``d``).
        seq: sequence length of ``example_inputs``; ``mask`` is an additive float ``[seq, seq]`` mask.
        seed: initialisation seed.
    """

    def __init__(self, n_layers: int = 4, d: int = 64, heads: int = 4, seq: int = 16, *, seed: int = SEED):
        super().__init__()
        self.d, self.seq, self.seed = d, seq, seed
        with _seeded(seed):
            self.embed = nn.Linear(d, d)
            self.blocks = nn.ModuleList(Block(d, heads) for _ in range(n_layers))
            self.ln_f = nn.LayerNorm(d)
            self.head = nn.Linear(d, d)

    def forward(self, x, mask):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln_f(x))

    def example_inputs(self, batch: int = 2) -> dict:
        """``{"x": [batch, seq, d] normal, "mask": causal [seq, seq]}``, the same on every call."""
        x = torch.randn(batch, self.seq, self.d, generator=_generator(self.seed + 1))
        causal = torch.ones(self.seq, self.seq, dtype=torch.bool).triu(diagonal=1)
        mask = torch.zeros(self.seq, self.seq).masked_fill(causal, MASKED)
        return {"x": x, "mask": mask}


class NaiveRMSNorm(nn.Module):
    """RMSNorm as it is often hand-written: the mean square is taken in the input's own dtype (no upcast).

    Right in float32; in float16 any value past 256 squares past 65504 to inf and the row normalises to 0.
    """

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


# The demo's residual stream is scaled so the final norm sees values in the hundreds, as large models' do.
OVERFLOW_SCALE = 150.0


class TinyCNN(nn.Module):
    """Conv → BatchNorm (non-trivial running statistics) → ReLU → 2× bilinear upsample → conv head."""

    def __init__(self, channels: int = 8, *, seed: int = SEED):
        super().__init__()
        self.seed = seed
        with _seeded(seed):
            self.conv = nn.Conv2d(3, channels, 3, padding=1)
            self.bn = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU()
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.head = nn.Conv2d(channels, 4, 3, padding=1)
        self._set_bn_stats(channels)

    @torch.no_grad()
    def _set_bn_stats(self, channels: int):
        # Fresh BatchNorm is the identity in eval mode (mean 0, var 1, weight 1, bias 0): a converter that
        # drops or mis-folds it would go unnoticed, so give every statistic a distinct value.
        ramp = torch.linspace(0.0, 1.0, channels)
        self.bn.running_mean.copy_(ramp - 0.5)
        self.bn.running_var.copy_(0.5 + 1.5 * ramp)
        self.bn.weight.copy_(1.25 - 0.5 * ramp)
        self.bn.bias.copy_(0.1 - 0.2 * ramp)
        self.bn.num_batches_tracked.fill_(100)

    def forward(self, image):
        return self.head(self.up(self.relu(self.bn(self.conv(image)))))

    def example_inputs(self, batch: int = 1, size: int = 16) -> dict:
        """``{"image": [batch, 3, size, size] normal}``, the same on every call."""
        return {"image": torch.randn(batch, 3, size, size, generator=_generator(self.seed + 1))}


def transformer() -> TinyTransformer:
    """The demo transformer in eval mode (factory spec ``diffcore.demo:transformer``)."""
    return TinyTransformer().eval()


def overflowing_transformer() -> TinyTransformer:
    """The demo transformer with a float16 bug planted: its embedding scaled by ``OVERFLOW_SCALE`` and its
    final norm a ``NaiveRMSNorm``, so the float16 version overflows in ``ln_f`` (factory spec
    ``diffcore.demo:overflowing_transformer``). Exported to ONNX in float32 it is a clean conversion."""
    model = TinyTransformer()
    with torch.no_grad():
        model.embed.weight.mul_(OVERFLOW_SCALE)
        model.embed.bias.mul_(OVERFLOW_SCALE)
    model.ln_f = NaiveRMSNorm(model.d)
    return model.eval()


def cnn() -> TinyCNN:
    """The demo CNN in eval mode (factory spec ``diffcore.demo:cnn``)."""
    return TinyCNN().eval()
