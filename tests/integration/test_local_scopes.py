"""Local errors, torch vs ONNX, where the exporter did not cut a module's scope at its arguments.

A post-norm encoder (the BERT layout, ``x = LayerNorm(x + Attention(x, mask))``) exported with both exporters:
each LayerNorm's scope reads the residual sum (a value no torch module outputs), each attention scope a mask
computed in the top-level forward, the head a slice. Local errors are computed for every layer anyway, and
bugs planted in those scopes are localized by their local error, below the 5 % band. Every row without a
local error says why, in the text and HTML views too.
"""
import math
import re

import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import diffcore  # noqa: E402
from tests.integration import models, onnx_edits  # noqa: E402

EXPORTERS = {"torchscript": False, "dynamo": True}
D, HEADS, SEQ, BATCH, VOCAB = 32, 4, 8, 2, 50
LOCAL_CAUSE = re.compile(r"^local error \S+ % above its threshold")


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value, self.out = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x, mask):
        b, s, _ = x.shape
        split = lambda t: t.view(b, s, HEADS, D // HEADS).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // HEADS) + mask
        return self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, D))


class PostNormLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = SelfAttention()
        self.ln1 = nn.LayerNorm(D)
        self.ffn = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
        self.ln2 = nn.LayerNorm(D)

    def forward(self, x, mask):
        x = self.ln1(x + self.attention(x, mask))
        return self.ln2(x + self.ffn(x))


class PostNormEncoder(nn.Module):
    """Token ids -> embedding -> LayerNorm -> 2 post-norm layers -> a head on the first token."""

    def __init__(self, n_layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.ln_embed = nn.LayerNorm(D)
        self.layers = nn.ModuleList(PostNormLayer() for _ in range(n_layers))
        self.head = nn.Linear(D, 3)

    def forward(self, ids, attention_mask):
        mask = (1.0 - attention_mask[:, None, None, :].float()) * -1e4  # computed outside every module
        x = self.ln_embed(self.embed(ids))
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(x[:, 0])


def encoder_inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[1, SEQ - 2:] = 0
    return {"ids": torch.randint(0, VOCAB, (BATCH, SEQ), generator=g), "attention_mask": mask}


LAYER_NORMS = ["ln_embed", "layers.0.ln1", "layers.0.ln2", "layers.1.ln1", "layers.1.ln2"]
ATTENTION = ["layers.0.attention", "layers.0.attention.out", "layers.1.attention", "layers.1.attention.out"]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return PostNormEncoder().eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, encoder):
    folder = tmp_path_factory.mktemp("postnorm")
    return {name: models.export(encoder, encoder_inputs(), folder / f"postnorm_{name}.onnx", dynamo=dynamo)
            for name, dynamo in EXPORTERS.items()}


def _local_notes(row) -> list:
    return [n for n in row.notes if n.startswith("local error not computed")]


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_every_post_norm_layer_has_a_local_error_though_its_scope_starts_elsewhere(encoder, exports, exporter):
    report = diffcore.compare(encoder, exports[exporter], encoder_inputs())
    assert report.passed, report.summary
    names = {r.name for r in report.layers}
    assert set(LAYER_NORMS + ATTENTION + ["head", "layers.0", "layers.1"]) <= names
    missing = {r.name: _local_notes(r) for r in report.layers if r.local_rel_l2 is None}
    assert not missing, missing
    assert max(r.local_rel_l2 for r in report.layers) < 1e-5  # float32 noise: every entry got the right value
    assert all(r.status == "ok" for r in report.layers)


def _plant(path, out, module, op_type, torchscript_scope, attribute, value) -> str:
    def plant(model):
        onnx_edits.set_attribute(onnx_edits.find_node(model, module, op_type, torchscript_scope), attribute, value)

    return onnx_edits.edited(path, str(out), plant)


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_a_post_norm_layernorm_with_another_epsilon_diverges_by_its_local_error(tmp_path, encoder, exports,
                                                                                  exporter):
    broken = _plant(exports[exporter], tmp_path / "eps.onnx", "layers.1.ln1", "LayerNormalization",
                    "/layers.1/ln1/", "epsilon", 1e-2)
    report = diffcore.compare(encoder, broken, encoder_inputs())
    first = report.first_divergence
    assert not report.passed and first.name == "layers.1.ln1", report.summary
    assert first.status == "diverged" and LOCAL_CAUSE.match(first.cause), first.cause
    assert first.rel_l2 < 0.05  # below the conversion-bug band: only the local error tells
    assert all(r.status == "ok" for r in report.layers if r.index < first.index)


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_a_tanh_gelu_in_a_post_norm_layer_diverges_by_its_local_error(tmp_path, encoder, exports, exporter):
    broken = _plant(exports[exporter], tmp_path / "gelu.onnx", "layers.0.ffn.1", "Gelu", "/layers.0/ffn/ffn.1/",
                    "approximate", "tanh")
    report = diffcore.compare(encoder, broken, encoder_inputs())
    first = report.first_divergence
    assert first is not None and first.name == "layers.0.ffn.1", report.summary
    assert first.status == "diverged" and LOCAL_CAUSE.match(first.cause), first.cause
    assert first.rel_l2 < 0.05
    # the post-norm LayerNorm after it receives the error: carried in, not born there
    assert report.row("layers.0.ln2").local_rel_l2 < 1e-6


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_a_softmax_over_the_wrong_axis_diverges_at_the_attention_block(tmp_path, encoder, exports, exporter):
    broken = _plant(exports[exporter], tmp_path / "softmax.onnx", "layers.1.attention", "Softmax",
                    "/layers.1/attention/", "axis", 2)
    report = diffcore.compare(encoder, broken, encoder_inputs())
    first = report.first_divergence
    assert first is not None and first.name == "layers.1.attention", report.summary
    assert first.status == "diverged" and LOCAL_CAUSE.match(first.cause), first.cause
    out = report.row("layers.1.attention.out")  # its Linear is fine: what it receives is not
    assert out.local_rel_l2 < 1e-6 and out.status == "carried"
    assert report.row("layers.1.ln1").local_rel_l2 < 1e-6


def _outputs_of(model, names, inputs) -> dict:
    outputs = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda module, args, out, n=n: outputs.__setitem__(n, out.detach().clone())) for n in names]
    with torch.no_grad():
        model(**inputs)
    for hook in hooks:
        hook.remove()
    return outputs


def test_a_deeper_encoder_still_gets_local_errors_everywhere_by_default(tmp_path):
    """7 layers make 87 module calls, as many as a small real encoder (all-MiniLM-L6-v2 makes 95): a bug
    under the 5 % band must be found by local error without asking for local='all'."""
    torch.manual_seed(0)
    model, inputs = PostNormEncoder(n_layers=7).eval(), encoder_inputs()
    path = models.export(model, inputs, tmp_path / "deep.onnx", dynamo=False)
    broken = _plant(path, tmp_path / "eps.onnx", "layers.5.ln2", "LayerNormalization", "/layers.5/ln2/",
                    "epsilon", 1e-2)
    report = diffcore.compare(model, broken, inputs)
    first = report.first_divergence
    assert first is not None and first.name == "layers.5.ln2", report.summary
    assert LOCAL_CAUSE.match(first.cause) and first.rel_l2 < 0.05, first.cause
    assert all(r.local_rel_l2 is not None for r in report.layers)


def test_local_errors_against_a_float16_conversion_exclude_input_rounding(encoder, exports):
    inputs = encoder_inputs()
    report = diffcore.compare(encoder, exports["torchscript"], inputs, test_dtype="float16")
    assert report.passed, report.summary
    assert all(r.local_rel_l2 is not None for r in report.layers)
    # A LayerNorm fed identical (rounded) values on both sides differs by the float16 rounding of its output
    # alone; had only the ONNX side been given rounded inputs, it would differ by about 1.3 times that.
    for name, out in _outputs_of(encoder, LAYER_NORMS, inputs).items():
        output_rounding = float((out.half().float() - out).norm() / out.norm())
        assert report.row(name).local_rel_l2 < 1.1 * output_rounding, name


class Hoisted(nn.Module):
    """``tanh(2x) + 1``: both exporters compute ``2x`` once, outside it, since its parent needs it too."""

    def forward(self, x):
        return torch.tanh(x * 2.0) + 1.0


class SharesASubexpression(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.child, self.out = nn.Linear(8, 8), Hoisted(), nn.Linear(8, 8)

    def forward(self, x):
        x = self.lin(x)
        return self.out(self.child(x) + torch.sigmoid(x * 2.0))


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_a_subexpression_hoisted_out_of_a_module_is_not_mistaken_for_its_argument(tmp_path, exporter):
    """The child's scope reads ``2x`` (same shape as its argument ``x``): fed ``x``, it would show a 20 %
    local error on a correct export."""
    torch.manual_seed(0)
    model, inputs = SharesASubexpression().eval(), {"x": torch.randn(2, 8)}
    path = models.export(model, inputs, tmp_path / "cse.onnx", dynamo=EXPORTERS[exporter])
    report = diffcore.compare(model, path, inputs)
    assert report.passed, report.summary
    assert report.row("child").local_rel_l2 < 1e-6


def test_text_and_html_views_say_why_each_local_error_is_missing(encoder, exports):
    inputs = encoder_inputs()
    report = diffcore.compare(encoder, exports["torchscript"], inputs)
    text, page = report.to_text(max_rows=None), report._repr_html_()
    assert re.search(r"Local error not computed \(1 of 28 rows\):\n  - a model output is compared end to end.*: y",
                     text), text
    assert "Local error not computed (1 of 28 rows)" in page and "a model output is compared end to end" in page

    none = diffcore.compare(encoder, exports["torchscript"], inputs, local="none")
    text = none.to_text(max_rows=None)
    assert "Local error not computed (28 of 28 rows):" in text
    assert re.search(r"- local errors were not requested: embed, ln_embed,.*\s+and 23 more", text, re.S), text
    assert "local errors were not requested" in none._repr_html_()
    assert all(_local_notes(r) for r in none.layers + none.outputs)  # and in the JSON, on every row
    assert diffcore.DiffReport.from_json(none.to_json()).to_text(max_rows=None) == text


def test_a_module_the_exporter_folded_away_names_the_reason_in_the_views(tmp_path):
    cnn, inputs = models.cnn(), models.cnn_inputs()
    report = diffcore.compare(cnn, models.export(cnn, inputs, tmp_path / "cnn.onnx", dynamo=False), inputs)
    assert report.passed, report.summary
    text = " ".join(report.to_text().split())  # the view wraps long lines
    assert ("- the ONNX graph has no scope of its own for this module call (the exporter folded it into a "
            "neighbour): bn1, bn2") in text, text
    assert "folded it into a neighbour): <code>bn1</code>, <code>bn2</code>" in report._repr_html_()


def test_capture_inputs_names_the_arguments_that_are_a_module_output_passed_on():
    from diffcore.capture.torch_runner import TorchRunner

    torch.manual_seed(0)
    runner, sources = TorchRunner(SharesASubexpression().eval()), {}
    recorded = runner.capture_inputs({"x": torch.randn(2, 8)}, ["child", "out"], sources=sources)
    (child_arg,), _ = recorded["child"]
    assert sources["child"] == {id(child_arg): "lin"}  # lin's output, handed on as it is
    assert sources["out"] == {}  # a sum computed in the parent's forward
    assert runner.capture_inputs({"x": torch.randn(2, 8)}, ["child"]).keys() == {"child"}  # sources optional
