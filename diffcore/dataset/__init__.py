"""Comparison over a dataset: every sample runs both models once; per layer the statistics of all samples
merge exactly (merge.py), and the report adds the worst sample, failing samples, the first divergence across
the set and the spread of error over samples (aggregate.py). Samples come from any iterable of input dicts
(sources.py: a list, a generator, a torch DataLoader, a folder of .npz files, one .npz split along an axis,
lines of text through a tokenizer). docs/ARCHITECTURE.md, "Datasets".
"""
from .driver import is_dataset, run_dataset
from .sources import npz_folder, split_npz

__all__ = ["is_dataset", "npz_folder", "run_dataset", "split_npz"]
