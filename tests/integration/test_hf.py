"""A Hugging Face checkpoint folder (hf:PATH) is a model side, loaded offline; a folder without config.json or
without weights is refused in one line."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import diffcore  # noqa: E402
from diffcore.errors import DiffcoreError  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    folder = tmp_path_factory.mktemp("bert")
    transformers.BertModel(config).eval().save_pretrained(str(folder))
    return folder


def _inputs():
    ids = np.random.default_rng(0).integers(1, 50, size=(2, 7)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def test_a_checkpoint_folder_matches_itself_layer_by_layer(checkpoint):
    report = diffcore.compare(f"hf:{checkpoint}", f"hf:{checkpoint}", _inputs())
    assert report.verdict == "pass", report.summary
    assert any("encoder.layer.1" in r.name for r in report.layers)


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(DiffcoreError, match=r"hf:.*: no config\.json in the checkpoint folder"):
        diffcore.compare(f"hf:{tmp_path}", f"hf:{tmp_path}", _inputs())


def test_a_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DiffcoreError, match=r"hf:.*: no weights in the checkpoint folder"):
        diffcore.compare(f"hf:{tmp_path}", f"hf:{tmp_path}", _inputs())
