"""Running a comparison over samples: each sample runs both models once through the same runners."""
from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import DiffcoreError
from ..texts import fitted
from .aggregate import DatasetBuilder
from .sources import materialize


def is_dataset(inputs) -> bool:
    """True for an iterable of samples (a list, a generator, a DataLoader): not a dict, a path or None."""
    if inputs is None or isinstance(inputs, (str, bytes, os.PathLike, Mapping)):
        return False
    return hasattr(inputs, "__iter__")


def run_dataset(comparison_for, samples, progress, input_names=None):
    """The dataset report of ``samples``; ``comparison_for()`` gives a fresh per-sample comparison.

    Memory holds one sample's capture and the rows of the samples so far (statistics, not tensors).
    ``input_names``: what the models take; tokenizer outputs they do not take are dropped (texts.py).
    """
    total = len(samples) if hasattr(samples, "__len__") else None
    builder = DatasetBuilder()
    with progress.phase("samples", total=total, unit="sample") as bar:
        for index, sample in enumerate(samples):
            try:
                report = comparison_for().run(fitted(materialize(sample), input_names))
            except DiffcoreError as exc:
                raise DiffcoreError(f"sample {index}: {exc}") from exc
            builder.add(index, report)
            bar.update(1)
    if not builder.count:
        raise DiffcoreError("the dataset has no sample: nothing was compared")
    return builder.report()
