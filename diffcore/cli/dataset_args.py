"""``diffcore compare``'s dataset options: --inputs FOLDER, --sample-axis, --texts with --tokenizer."""
from __future__ import annotations

import os

from ..errors import DiffcoreError


def add_dataset_options(parser) -> None:
    parser.add_argument("--sample-axis", type=int, default=None, metavar="N",
                        help="split --inputs FILE.npz along this axis into samples of one, each run once; the "
                             "report merges them (a dataset comparison)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="run the samples of a dataset comparison in N local processes (same report)")
    parser.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                        help="run the samples on --workers Ray actors: the running or a new local Ray "
                             "instance, or the cluster at ADDRESS (pip install 'diffcore[ray]')")
    parser.add_argument("--texts", metavar="FILE", default=None,
                        help="one sample per non-empty line, tokenized by --tokenizer (a dataset comparison)")
    parser.add_argument("--tokenizer", metavar="tokenizer.json", default=None,
                        help="the tokenizers-library file that turns --texts into input_ids / attention_mask / "
                             "token_type_ids (default: tokenizer.json of an hf:FOLDER side)")


def compare_inputs(args, load_inputs):
    """What ``compare`` runs on: one input dict, or a dataset (a list of samples) for a folder of .npz
    files, --sample-axis or --texts; None for the model's own inputs."""
    from ..dataset import npz_folder, split_npz

    if args.texts:
        if args.inputs:
            raise DiffcoreError("give --inputs or --texts, not both")
        from ..texts import read_lines, text_samples

        return text_samples(read_lines(args.texts), args.tokenizer or _hf_tokenizer(args))
    if args.tokenizer:
        raise DiffcoreError("--tokenizer is for --texts")
    if not args.inputs:
        if args.sample_axis is not None:
            raise DiffcoreError("--sample-axis splits --inputs FILE.npz: give --inputs")
        return None
    if os.path.isdir(args.inputs):
        if args.sample_axis is not None:
            raise DiffcoreError("--sample-axis splits one .npz file, not a folder of samples")
        return npz_folder(args.inputs)
    if args.sample_axis is not None:
        return split_npz(args.inputs, args.sample_axis)
    return load_inputs(args.inputs)


def _hf_tokenizer(args) -> str | None:
    for spec in (args.ref, args.test):
        if spec.startswith("hf:"):
            path = os.path.join(spec[3:], "tokenizer.json")
            if os.path.isfile(path):
                return path
            raise DiffcoreError(f"{spec}: no tokenizer.json in this folder for --texts; give --tokenizer")
    return None
