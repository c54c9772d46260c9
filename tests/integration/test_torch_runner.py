"""TorchRunner: hook-based capture of a torch model's submodule outputs, and load_factory."""
import copy
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from diffcore.capture.torch_runner import TorchRunner, load_factory  # noqa: E402
from diffcore.demo import Block  # noqa: E402
from diffcore.errors import DiffcoreError  # noqa: E402

# ------------------------------------------------------------------------------------------ tiny models


class TinyTransformer(nn.Module):
    def __init__(self, vocab=32, d=16, heads=2, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens):
        n = tokens.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)  # causal: bool works for every float dtype
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln_f(x))


TRANSFORMER_ORDER = [
    "embed",
    *[f"blocks.{i}.{name}" for i in range(2) for name in
      ("ln", "attn.0", "ln2", "mlp.0", "mlp.1", "mlp.2", "mlp", "")],
    "ln_f", "head", "output",
]
TRANSFORMER_ORDER = [k.rstrip(".") for k in TRANSFORMER_ORDER]


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Conv2d(4, 2, 1)
        with torch.no_grad():  # running stats far from the batch's, so eval and train mode differ
            self.bn.running_mean.fill_(0.5)
            self.bn.running_var.fill_(4.0)

    def forward(self, image):
        return self.out(self.up(self.act(self.bn(self.conv(image)))))


class Twice(nn.Module):
    """``lin`` is called twice; its second output is then modified in place by ReLU(inplace=True)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.lin(self.lin(x)))


class Split(nn.Module):
    def forward(self, x):
        return x[:, :2], (x[:, 2:] * 2, x.sum())


class Heads(nn.Module):
    def forward(self, x):
        return {"mean": x.mean(-1), "max": x.amax(-1), "note": "not a tensor"}


class Structured(nn.Module):
    def __init__(self):
        super().__init__()
        self.split = Split()
        self.heads = Heads()

    def forward(self, x):
        a, (b, total) = self.split(x)
        stats = self.heads(a + b)
        return stats["mean"] * total, {"max": stats["max"]}


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage = nn.Sequential(nn.Linear(4, 5), nn.Linear(4, 3))  # stage.1 gets 5 features, wants 4

    def forward(self, x):
        return self.stage(x)


class RaisesItself(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        raise ValueError("no luck today")


@pytest.fixture
def transformer():
    torch.manual_seed(0)
    return TinyTransformer()


@pytest.fixture
def tokens():
    return {"tokens": np.random.default_rng(0).integers(0, 32, size=(2, 6))}


@pytest.fixture
def vec():
    return {"x": np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)}


def _hooked_outputs(module, inputs):
    """Reference values: plain forward hooks that clone every submodule output, keyed by path."""
    seen, handles = {}, []
    for path, sub in module.named_modules():
        if path:
            handles.append(sub.register_forward_hook(
                lambda m, a, out, path=path: seen.setdefault(path, out.detach().clone())
                if isinstance(out, torch.Tensor) else None))
    try:
        with torch.no_grad():
            module.eval()(**{k: torch.as_tensor(v) for k, v in inputs.items()})
    finally:
        for h in handles:
            h.remove()
    return seen


# ----------------------------------------------------------------------------------------------- probes

def test_probe_order_is_execution_order(transformer, tokens):
    probes = TorchRunner(transformer).probes(tokens)
    assert [p.key for p in probes] == TRANSFORMER_ORDER
    assert [p.order for p in probes] == list(range(len(probes)))
    ln = probes[1]
    assert (ln.module, ln.op_type, ln.shape, ln.dtype) == ("blocks.0.ln", "LayerNorm", (2, 6, 16), "float32")
    attn = next(p for p in probes if p.key == "blocks.0.attn.0")
    assert attn.module == "blocks.0.attn" and attn.op_type == "MultiheadAttention"
    assert attn.meta["call"] == "blocks.0.attn"
    assert probes[-1].output_index == 0 and probes[-1].shape == (2, 6, 32)


def test_repeated_calls_get_occurrence_keys(vec):
    probes = TorchRunner(Twice()).probes(vec)
    assert [p.key for p in probes] == ["lin", "lin#1", "act", "output"]
    assert [p.module for p in probes[:3]] == ["lin", "lin", "act"]
    assert probes[1].meta["call"] == "lin#1"


def test_tuple_and_dict_outputs_are_flattened(vec):
    probes = TorchRunner(Structured()).probes(vec)
    keys = [p.key for p in probes]
    assert keys == ["split.0", "split.1.0", "split.1.1", "heads.mean", "heads.max", "output.0", "output.1.max"]
    assert {p.key: p.output_index for p in probes if p.is_output} == {"output.0": 0, "output.1.max": 1}
    assert probes[2].shape == () and probes[0].module == "split"


def test_colliding_keys_are_made_unique(vec):
    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.output = nn.Linear(4, 4)

        def forward(self, x):
            return self.output(x)

    assert [p.key for p in TorchRunner(Named()).probes(vec)] == ["output", "output~1"]


# ---------------------------------------------------------------------------------------------- capture

def test_capture_equals_plain_hook_values(transformer, tokens):
    want = _hooked_outputs(copy.deepcopy(transformer), tokens)
    runner = TorchRunner(transformer)
    keys = ["embed", "blocks.0.ln", "blocks.1.mlp.1", "blocks.1", "head"]
    got = runner.capture(tokens, keys + ["output"])
    assert list(got) == keys + ["output"]
    for key in keys:
        assert torch.equal(got[key], want[key]), key
    assert torch.equal(got["output"], runner.outputs(tokens)["output"])


def test_capture_is_not_corrupted_by_inplace_ops(vec):
    model = Twice()
    got = TorchRunner(model).capture(vec, ["lin#1", "act"])
    with torch.no_grad():
        x = torch.as_tensor(vec["x"])
        before_relu = model.lin(model.lin(x))
    assert (before_relu < 0).any(), "the test needs negative values for ReLU to overwrite"
    assert torch.equal(got["lin#1"], before_relu)
    assert torch.equal(got["act"], before_relu.clamp(min=0))


def test_capture_unknown_key_lists_probes(vec):
    with pytest.raises(DiffcoreError, match=r"no probe 'lin#2'.*'lin', 'lin#1', 'act', 'output'"):
        TorchRunner(Twice()).capture(vec, ["lin#2"])


def test_runs_in_eval_mode_without_changing_the_user_module():
    torch.manual_seed(0)
    model = TinyCNN().train()
    image = {"image": np.random.default_rng(2).standard_normal((2, 3, 5, 5)).astype(np.float32)}
    runner = TorchRunner(model)
    probes = runner.probes(image)
    assert [p.key for p in probes] == ["conv", "bn", "act", "up", "out", "output"]
    assert probes[3].shape == (2, 4, 10, 10)
    got = runner.outputs(image)["output"]
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        want = copy.deepcopy(model).eval()(torch.as_tensor(image["image"]))
    assert torch.equal(got, want)
    assert torch.equal(model.bn.running_mean, torch.full((4,), 0.5)), "eval mode: running stats untouched"


# ---------------------------------------------------------------------------- local error: inputs + run

@pytest.mark.parametrize("key", ["blocks.0.attn", "blocks.1.mlp", "blocks.1", "blocks.0.mlp.1", "head"])
def test_run_module_on_captured_inputs_reproduces_the_output(transformer, tokens, key):
    ref = TorchRunner(transformer)
    test = TorchRunner(copy.deepcopy(transformer))
    captured = ref.capture(tokens, [p.key for p in ref.probes(tokens) if p.meta.get("call") == key])
    args, kwargs = ref.capture_inputs(tokens, [key])[key]
    got = test.run_module(key, args, kwargs)
    assert list(got) == list(captured)
    for name in captured:
        assert torch.equal(got[name], captured[name]), name


def test_captured_inputs_keep_kwargs_and_aliasing(transformer, tokens):
    args, kwargs = TorchRunner(transformer).capture_inputs(tokens, ["blocks.0.attn"])["blocks.0.attn"]
    assert len(args) == 3 and args[0] is args[1] is args[2]  # self-attention: MHA branches on `q is k`
    assert kwargs["attn_mask"].dtype == torch.bool and kwargs["need_weights"] is False


def test_run_module_of_a_repeated_call(vec):
    ref, test = TorchRunner(Twice()), TorchRunner(Twice())
    test.module.load_state_dict(ref.module.state_dict())
    args, kwargs = ref.capture_inputs(vec, ["lin#1"])["lin#1"]
    got = test.run_module("lin#1", args, kwargs)
    assert torch.equal(got["lin#1"], ref.capture(vec, ["lin#1"])["lin#1"])


def test_run_module_casts_reference_inputs_to_the_test_dtype(transformer, tokens):
    ref = TorchRunner(transformer)
    test = TorchRunner(transformer, dtype="float16")
    args, kwargs = ref.capture_inputs(tokens, ["blocks.0.mlp"])["blocks.0.mlp"]
    got = test.run_module("blocks.0.mlp", args, kwargs)["blocks.0.mlp"]
    want = ref.capture(tokens, ["blocks.0.mlp"])["blocks.0.mlp"]
    assert got.dtype == torch.float16
    assert torch.allclose(got.float(), want, atol=1e-2, rtol=1e-2)


def test_capture_inputs_and_run_module_errors(transformer, tokens):
    runner = TorchRunner(transformer)
    with pytest.raises(DiffcoreError, match=r"no module call 'blocks\.0\.attn\.0'.*'blocks\.0\.attn'"):
        runner.capture_inputs(tokens, ["blocks.0.attn.0"])
    with pytest.raises(DiffcoreError, match=r"no submodule 'blocks\.7'.*'blocks\.0\.ln'"):
        runner.run_module("blocks.7", (), {})


# ------------------------------------------------------------------------------------ dtype / autocast

def test_float16_copy_does_not_modify_the_user_module(transformer, tokens):
    state = {k: v.clone() for k, v in transformer.state_dict().items()}
    runner = TorchRunner(transformer, dtype="float16")
    assert runner.module is not transformer and runner.dtype == "float16"
    probes = runner.probes(tokens)
    assert {p.dtype for p in probes} == {"float16"}
    half = runner.outputs(tokens)["output"]
    full = TorchRunner(transformer).outputs(tokens)["output"]
    assert half.dtype == torch.float16
    assert torch.allclose(half.float(), full, atol=5e-2, rtol=5e-2)
    assert all(torch.equal(v, state[k]) and v.dtype == state[k].dtype
               for k, v in transformer.state_dict().items())


def test_same_dtype_and_device_uses_the_module_itself(transformer):
    assert TorchRunner(transformer, dtype="float32").module is transformer


@pytest.mark.parametrize("amp", ["bfloat16", "float16"])
def test_autocast_runs_matmuls_in_half_precision(transformer, tokens, amp):
    runner = TorchRunner(transformer, autocast=amp)
    dtypes = {p.key: p.dtype for p in runner.probes(tokens)}
    assert dtypes["blocks.0.mlp.0"] == amp and dtypes["head"] == amp
    assert dtypes["blocks.0.ln"] == "float32"  # autocast keeps LayerNorm in float32
    assert runner.module is transformer and next(transformer.parameters()).dtype == torch.float32
    assert "autocast " + amp in runner.description
    got = runner.outputs(tokens)["output"].float()
    want = TorchRunner(transformer).outputs(tokens)["output"]
    assert torch.allclose(got, want, atol=0.1, rtol=0.1)


def test_bad_options_list_the_valid_ones(transformer):
    with pytest.raises(DiffcoreError, match=r"dtype 'half' .*'float16', 'bfloat16'"):
        TorchRunner(transformer, dtype="half")
    with pytest.raises(DiffcoreError, match=r"autocast 'float32' .*'float16', 'bfloat16'"):
        TorchRunner(transformer, autocast="float32")
    with pytest.raises(DiffcoreError, match=r"needs a torch\.nn\.Module, got dict"):
        TorchRunner({})
    with pytest.raises(DiffcoreError, match=r"device 'tpu' "):
        TorchRunner(transformer, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_cuda_device_without_a_gpu_is_a_user_error(transformer):
    with pytest.raises(DiffcoreError, match=r"torch sees no CUDA GPU"):
        TorchRunner(transformer, device="cuda")


# ---------------------------------------------------------------------------------------------- inputs

def test_inputs_are_checked_and_cast(transformer, tokens):
    runner = TorchRunner(transformer, example_inputs={"tokens": torch.zeros(2, 6, dtype=torch.int64)})
    (spec,) = runner.input_specs()
    assert (spec.name, spec.dtype, spec.shape) == ("tokens", "int64", (2, 6))
    with pytest.raises(DiffcoreError, match=r"unknown input\(s\) 'ids'; missing input\(s\) 'tokens'.*"
                                            r"takes 'tokens'"):
        runner.prepare_inputs({"ids": tokens["tokens"]})
    with pytest.raises(DiffcoreError, match=r"input 'tokens' must be a numpy\.ndarray or torch\.Tensor"):
        runner.prepare_inputs({"tokens": [[1, 2]]})
    assert runner.prepare_inputs(tokens)["tokens"].dtype == torch.int64
    half = TorchRunner(Twice(), dtype="float16")
    assert half.prepare_inputs({"x": np.ones((1, 4))})["x"].dtype == torch.float16
    assert TorchRunner(Twice()).input_specs()[0].dtype == "float32"


def test_forward_with_only_varargs_is_a_clear_error():
    class VarArgs(nn.Module):
        def forward(self, *args):
            return args[0]

    with pytest.raises(DiffcoreError, match=r"forward takes only \*args/\*\*kwargs"):
        TorchRunner(VarArgs())


# ---------------------------------------------------------------------------------------------- errors

def test_forward_exception_names_the_innermost_layer(vec):
    runner = TorchRunner(Broken().train())
    with pytest.raises(DiffcoreError, match=r"forward failed in module 'stage\.1' \(Linear\): RuntimeError: "
                                            r".*mat1 and mat2 shapes cannot be multiplied") as info:
        runner.probes(vec)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not runner.module.stage[1]._forward_hooks and not runner.module.stage[1]._forward_pre_hooks
    assert runner.module.training and runner.module.stage[1].training, "train flags restored after the error"
    with pytest.raises(DiffcoreError, match=r"forward failed in module 'stage\.1' \(Linear\)"):
        runner.run_module("stage.1", (torch.ones(1, 5),), {})
    with pytest.raises(DiffcoreError, match=r"the model's own forward \(RaisesItself\): ValueError: no luck"):
        TorchRunner(RaisesItself()).outputs(vec)


# ---------------------------------------------------------------------------------------- load_factory

MODEL_FILE = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x)

    def make():
        return Net()

    def make_with_examples():
        net = Net()
        net.example_inputs = lambda: {"x": torch.ones(1, 4)}
        return net

    def not_a_model():
        return 42

    def example_inputs():
        return {"x": torch.zeros(3, 4)}
""")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny_model_file.py"
    path.write_text(MODEL_FILE)
    return path


def test_load_factory_from_a_file(model_file):
    model, examples = load_factory(f"{model_file}:make")
    assert type(model).__name__ == "Net"
    assert examples["x"].shape == (3, 4)  # the module-level example_inputs()
    model, examples = load_factory(f"{model_file}:make_with_examples")
    assert examples["x"].shape == (1, 4)  # the model's own attribute wins
    runner = TorchRunner(model, example_inputs=examples)
    assert runner.input_specs()[0].shape == (1, 4)


def test_load_factory_from_a_package(tmp_path, monkeypatch):
    package = tmp_path / "diffcore_tiny_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(MODEL_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    model, examples = load_factory("diffcore_tiny_pkg.models:make")
    assert type(model).__name__ == "Net" and set(examples) == {"x"}


def test_load_factory_errors(model_file, tmp_path):
    with pytest.raises(DiffcoreError, match=r"must be 'path/to/file\.py:factory'"):
        load_factory("no_colon_here")
    with pytest.raises(DiffcoreError, match=r"model file '.*missing\.py' does not exist"):
        load_factory(f"{tmp_path}/missing.py:make")
    with pytest.raises(DiffcoreError, match=r"cannot import module 'diffcore_no_such_pkg_xyz\.models': No module"):
        load_factory("diffcore_no_such_pkg_xyz.models:make")
    with pytest.raises(DiffcoreError, match=r"has no callable 'build'; its callables: 'Net', "
                                            r"'example_inputs', 'make', 'make_with_examples', 'not_a_model'"):
        load_factory(f"{model_file}:build")
    with pytest.raises(DiffcoreError, match=r"returned int, not a torch\.nn\.Module"):
        load_factory(f"{model_file}:not_a_model")
    bad = tmp_path / "bad_syntax.py"
    bad.write_text("def make(:\n")
    with pytest.raises(DiffcoreError, match=r"bad_syntax\.py' failed to import: SyntaxError"):
        load_factory(f"{bad}:make")


# ------------------------------------------------------------------------------------------------- GPU

@pytest.mark.gpu
def test_cuda_runner_keeps_captures_on_the_gpu(transformer, tokens):
    ref = TorchRunner(transformer)
    test = TorchRunner(transformer, dtype="float16", device="cuda")
    assert next(transformer.parameters()).is_cuda is False
    got = test.capture(tokens, ["blocks.0.attn.0", "output"])
    assert all(t.is_cuda and t.dtype == torch.float16 for t in got.values())
    args, kwargs = ref.capture_inputs(tokens, ["blocks.0.attn"])["blocks.0.attn"]  # on the CPU
    local = test.run_module("blocks.0.attn", args, kwargs)["blocks.0.attn.0"]
    assert local.is_cuda and local.dtype == torch.float16
    amp = TorchRunner(transformer, autocast="float16", device="cuda")
    assert {p.key: p.dtype for p in amp.probes(tokens)}["head"] == "float16"
