"""The model and samples of bench/dataset.py: diffcore.demo's transformer at a small size."""
from __future__ import annotations

import numpy as np

from diffcore.demo import TinyTransformer

SEQ, D = 32, 64


def build():
    return TinyTransformer(n_layers=4, d=D, heads=4, seq=SEQ, seed=0).eval()


def sample(k: int) -> dict:
    """Sample ``k``: a [1, SEQ, D] normal input under the model's causal mask."""
    mask = build().example_inputs(batch=1)["mask"].numpy()
    return {"x": np.random.default_rng(k).standard_normal((1, SEQ, D)).astype(np.float32), "mask": mask}
