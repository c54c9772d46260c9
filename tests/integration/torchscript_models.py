"""Small models for the TorchScript tests: a block stack, a traced Python branch, a baked sequence length."""
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin, self.act = nn.Linear(width, width), nn.Tanh()

    def forward(self, x):
        return self.act(self.lin(x))


class Stack(nn.Module):
    def __init__(self, width=8, depth=3):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Branchy(nn.Module):
    """Takes a Python branch on the data: a trace keeps the branch taken when it was traced."""

    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        h = self.lin(x)
        if bool(h.mean() > 0):  # noqa: SIM108 - the data-dependent branch torch.jit.trace bakes in
            return torch.tanh(h)
        return torch.relu(h) * 0.5


class BranchModel(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.pre, self.branch, self.head = nn.Linear(width, width), Branchy(width), nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.branch(self.pre(x)))


class MeanPool(nn.Module):
    """Divides by the sequence length as a Python int: a trace bakes the length it was traced at."""

    def forward(self, x):
        return x.sum(1) / int(x.shape[1])


class Pooled(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.pool, self.head = nn.Linear(width, width), MeanPool(), nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.pool(self.embed(x)))
