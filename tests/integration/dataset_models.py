"""Factories for the dataset worker tests: specs (file.py:factory) each worker process opens itself."""
from __future__ import annotations

import os

import torch
from torch import nn


class ExpNet(nn.Module):
    """Linear -> exp -> Linear (exp overflows float16 past an input of ~11)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin1, self.lin2 = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.lin2(torch.exp(self.lin1(x)))


class Crashing(ExpNet):
    """Kills its process on an input whose first element is 99, unless the marker file exists: then it
    creates the marker first (crash once) or (no marker path set) crashes every time."""

    def forward(self, x):
        if float(x.reshape(-1)[0]) == 99.0:
            marker = os.environ.get("DIFFCORE_TEST_CRASH_ONCE")
            if not marker or not os.path.exists(marker):
                if marker:
                    open(marker, "w").close()
                os._exit(7)
        return super().forward(x)


def build():
    return ExpNet().eval()


def crashing():
    return Crashing().eval()
