"""OnnxRunner on tiny models exported at test time by both torch exporters (TorchScript and dynamo).

Each model is exported once per module (the dynamo exporter takes seconds); runners are cheap.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the dynamo exporter needs it

from torch import nn  # noqa: E402

from diffcore.capture.onnx import store as onnx_store  # noqa: E402
from diffcore.capture.onnx import OnnxRunner  # noqa: E402
from diffcore.demo import Block  # noqa: E402
from diffcore.errors import DiffcoreError  # noqa: E402

EXPORTERS = ["torchscript", "dynamo"]
D, SEQ, BATCH = 16, 5, 2


# ------------------------------------------------------------------------------------------- models


class TinyTransformer(nn.Module):
    def __init__(self, d=D):
        super().__init__()
        self.blocks = nn.ModuleList([Block(d, heads=2), Block(d, heads=2)])
        self.head = nn.Linear(d, 8)

    def forward(self, x, mask):
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x)


class TinyCNN(nn.Module):
    """BatchNorm, nn.Upsample, and one ReLU module called twice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.relu = nn.ReLU()
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.relu(self.stem(x))
        z = self.relu(self.down(y))
        return self.head(self.up(z) + y)


def _causal_mask(seq=SEQ):
    return np.triu(np.full((seq, seq), -np.inf, np.float32), 1)


def _transformer_inputs(seq=SEQ, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((BATCH, seq, D)).astype(np.float32), "mask": _causal_mask(seq)}


def _export(model, args, path, exporter, names, dynamic_axes=None, dynamic_shapes=None):
    """Export with ``exporter``; TorchScript takes ``dynamic_axes``, dynamo ``dynamic_shapes``."""
    kwargs = {"dynamo": exporter == "dynamo", "input_names": names, "output_names": ["y"]}
    if exporter == "torchscript" and dynamic_axes:
        kwargs["dynamic_axes"] = dynamic_axes
    if exporter == "dynamo" and dynamic_shapes:
        kwargs["dynamic_shapes"] = dynamic_shapes
    torch.onnx.export(model, args, str(path), **kwargs)
    return path


@pytest.fixture(scope="module")
def transformer_model():
    torch.manual_seed(0)
    return TinyTransformer().eval()


@pytest.fixture(scope="module", params=EXPORTERS)
def transformer_path(request, tmp_path_factory, transformer_model):
    """TorchScript: dynamic sequence axis; dynamo: fixed shapes."""
    inputs = _transformer_inputs()
    args = (torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["mask"]))
    path = tmp_path_factory.mktemp(request.param) / "transformer.onnx"
    axes = {"x": {1: "seq"}, "mask": {0: "seq", 1: "seq"}}
    return _export(transformer_model, args, path, request.param, ["x", "mask"], dynamic_axes=axes)


@pytest.fixture(scope="module")
def fixed_path(tmp_path_factory, transformer_model):
    """A TorchScript export without dynamic axes: every dimension fixed."""
    inputs = _transformer_inputs()
    args = (torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["mask"]))
    path = tmp_path_factory.mktemp("fixed") / "fixed.onnx"
    return _export(transformer_model, args, path, "torchscript", ["x", "mask"])


@pytest.fixture(scope="module", params=EXPORTERS)
def cnn_path(request, tmp_path_factory):
    torch.manual_seed(1)
    model = TinyCNN().eval()
    with torch.no_grad():
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp(request.param) / "cnn.onnx"
    return _export(model, (torch.randn(2, 3, 16, 16),), path, request.param, ["x"],
                   dynamic_axes={"x": {0: "batch"}}, dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))


@pytest.fixture(scope="module")
def runner(transformer_path):
    with OnnxRunner(transformer_path) as r:
        yield r


@pytest.fixture
def inputs():
    return _transformer_inputs()


def _plain_ort(path, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


def _module_probe(probes, module):
    found = [p for p in probes if p.module == module]
    assert found, f"no probe for module {module}: {[p.module for p in probes]}"
    return found[-1]


# --------------------------------------------------------------------------------------------- probes


def test_probes_carry_module_paths_from_both_exporters(runner, inputs):
    probes = runner.probes(inputs)
    modules = {p.module for p in probes}
    assert {"blocks.0.ln", "blocks.0.mlp.0", "blocks.1.ln2", "head"} <= modules
    assert any("blocks.1" in p.meta["modules"] for p in probes)
    mlp_out = _module_probe(probes, "blocks.0.mlp.2")
    assert mlp_out.meta["modules"] == ["blocks.0.mlp.2", "blocks.0.mlp"]  # innermost first, outermost last
    block_out = [p for p in probes if p.module == "blocks.0"]
    assert block_out and block_out[-1].shape == (BATCH, SEQ, D)


def test_probes_are_float_values_in_topological_order(runner, inputs):
    probes = runner.probes(inputs)
    assert [p.order for p in probes] == list(range(len(probes)))
    assert {p.dtype for p in probes} == {"float32"}
    assert probes[-1].key == "y" and probes[-1].output_index == 0 and probes[-1].is_output
    assert all(p.meta["scope"] is not None for p in probes)


def test_probes_skip_weights_constants_and_shape_arithmetic(transformer_path, runner, inputs):
    model = onnx.load(str(transformer_path))
    weights = {t.name for t in model.graph.initializer}
    constants = {out for n in model.graph.node if n.op_type == "Constant" for out in n.output}
    weight_copies = {n.output[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in weights}
    keys = {p.key for p in runner.probes(inputs)}
    assert not keys & (weights | constants | weight_copies)
    assert not {p.op_type for p in runner.probes(inputs)} & {"Shape", "Constant"}


def test_probe_shapes_follow_the_given_inputs(cnn_path):
    with OnnxRunner(cnn_path) as r:
        assert r.input_specs()[0].shape == (None, 3, 16, 16)
        for batch in (1, 3):
            probes = r.probes({"x": np.zeros((batch, 3, 16, 16), np.float32)})
            assert _module_probe(probes, "relu#1").shape == (batch, 8, 8, 8)
            assert _module_probe(probes, "head").shape == (batch, 4, 16, 16)


def test_input_specs_show_dynamic_dims_as_none(transformer_path):
    with OnnxRunner(transformer_path) as r:
        specs = {s.name: s for s in r.input_specs()}
    assert specs["x"].dtype == "float32" and specs["x"].shape[0] == BATCH and specs["x"].shape[2] == D
    assert specs["mask"].dtype == "float32" and len(specs["mask"].shape) == 2


def test_repeated_calls_of_one_module_are_numbered(cnn_path):
    with OnnxRunner(cnn_path) as r:
        probes = r.probes({"x": np.zeros((2, 3, 16, 16), np.float32)})
    modules = [p.module for p in probes]
    assert modules.index("relu") < modules.index("relu#1")
    assert {"down", "up", "head"} <= set(modules)
    assert any("stem" in p.meta["modules"] for p in probes)


# -------------------------------------------------------------------------------------------- capture


def test_capture_of_outputs_equals_a_plain_ort_run(transformer_path, runner, inputs):
    keys = [p.key for p in runner.probes(inputs)]
    captured = runner.capture(inputs, keys)
    assert set(captured) == set(keys)
    want = _plain_ort(transformer_path, inputs)["y"]
    np.testing.assert_array_equal(runner.outputs(inputs)["y"], want)
    np.testing.assert_allclose(captured["y"], want, rtol=1e-5, atol=1e-6)


def test_capture_of_intermediates_matches_the_reference_evaluator(transformer_path, runner, inputs):
    from onnx.reference import ReferenceEvaluator

    probes = runner.probes(inputs)
    keys = [_module_probe(probes, m).key for m in ("blocks.0.ln", "blocks.0.mlp.1", "blocks.0", "blocks.1")]
    captured = runner.capture(inputs, keys)
    oracle = ReferenceEvaluator(str(transformer_path)).run(None, inputs, intermediate=True)
    for key in keys:
        assert captured[key].dtype == np.float32
        np.testing.assert_allclose(captured[key], oracle[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_capture_in_chunks_equals_capture_at_once(runner, inputs):
    keys = [p.key for p in runner.probes(inputs)][:-1]
    at_once = runner.capture(inputs, keys)
    half = len(keys) // 2
    chunked = {**runner.capture(inputs, keys[:half]), **runner.capture(inputs, keys[half:])}
    for key in keys:
        np.testing.assert_allclose(chunked[key], at_once[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_capture_chunk_by_chunk_runs_each_node_once(transformer_path, inputs, monkeypatch):
    with OnnxRunner(transformer_path) as r:
        keys = [p.key for p in r.probes(inputs) if p.key not in r.graph.outputs]
        at_once = r.capture(inputs, keys)
    with OnnxRunner(transformer_path) as r:
        runs = []
        build = r._segment_variant
        monkeypatch.setattr(r, "_segment_variant", lambda ids, *a, **k: runs.append(ids) or build(ids, *a, **k))
        quarter = -(-len(keys) // 4)
        chunked = {}
        for k in range(4):
            chunked.update(r.capture(inputs, keys[k * quarter:(k + 1) * quarter]))
        assert len(runs) == 4
        executed = [i for ids in runs for i in ids if r.graph.nodes[i].op_type != "Constant"]
        assert len(executed) == len(set(executed)), "a node ran in two segments"
        held = [n for n in r._cuts]
        assert not held, f"cut values still held after every reader ran: {held}"
    for key in keys:  # a segment boundary can change which kernels ORT fuses: float32 rounding apart
        np.testing.assert_allclose(chunked[key], at_once[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_segment_carries_only_its_own_weights(transformer_path, inputs):
    with OnnxRunner(transformer_path) as r:
        graph = r.graph
        first = _module_probe(r.probes(inputs), "blocks.0.ln").key
        ids = graph.needed_nodes([first], set(inputs))
        segment = r._store.source(r._segment_variant(ids, r.prepare_inputs(inputs), [first]))
        whole = r._store.source(r._store.variant())
    assert isinstance(segment, bytes) and len(segment) < len(whole) / 4


def test_instrumented_sessions_are_few(transformer_path, inputs):
    with OnnxRunner(transformer_path) as r:
        keys = [p.key for p in r.probes(inputs)]
        for k in range(8):
            r.capture(inputs, keys[k::8])
        assert len(r._sessions) <= r.max_cached_sessions


def test_changed_outputs_under_instrumentation_are_warned(transformer_path, inputs, monkeypatch):
    with OnnxRunner(transformer_path) as r:
        plain = r.outputs(inputs)
        monkeypatch.setattr(r, "_plain_outputs", lambda feed: {"y": plain["y"] + 0.25})
        last_inner = [p.key for p in r.probes(inputs) if p.key not in r.graph.outputs][-1]
        r.capture(inputs, [last_inner])  # a segment that reaches the outputs computes them too
        assert len(r.warnings) == 1
        assert "changed its outputs by up to 0.25" in r.warnings[0] and "fusions" in r.warnings[0]


def test_unknown_capture_key_is_named(runner, inputs):
    with pytest.raises(DiffcoreError, match=r"has no value 'no_such_value'; values that can be captured"):
        runner.capture(inputs, ["no_such_value"])


# ---------------------------------------------------------------------------------------- local error


def test_teacher_forced_with_own_values_reproduces_capture(runner, inputs):
    keys = [p.key for p in runner.probes(inputs)]
    captured = runner.capture(inputs, keys)
    forced = runner.teacher_forced(inputs, captured, keys)
    for key in keys:
        np.testing.assert_allclose(forced[key], captured[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_teacher_forced_nodes_read_the_fed_values(runner, inputs):
    probes = runner.probes(inputs)
    block0, ln1 = _module_probe(probes, "blocks.0").key, _module_probe(probes, "blocks.1.ln").key
    captured = runner.capture(inputs, [block0])
    fed = np.random.default_rng(3).standard_normal(captured[block0].shape).astype(np.float32)
    forced = runner.teacher_forced(inputs, {block0: fed}, [block0, ln1])
    mean, var = fed.mean(-1, keepdims=True), fed.var(-1, keepdims=True)
    np.testing.assert_allclose(forced[ln1], (fed - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(forced[block0], captured[block0])  # its producer still ran as before


@pytest.mark.parametrize("rounding", ["float16", "bfloat16"])
def test_teacher_forced_rounds_fed_values_inside_the_graph(runner, inputs, rounding):
    """Rounding through Cast nodes gives what rounding the value on the host (NumPy / torch) gives."""
    probes = runner.probes(inputs)
    block0, ln1 = _module_probe(probes, "blocks.0").key, _module_probe(probes, "blocks.1.ln").key
    rng = np.random.default_rng(5)
    shape = runner.capture(inputs, [block0])[block0].shape
    fed = (rng.standard_normal(shape) * 1e3).astype(np.float32)
    fed.flat[:4] = [7e4, -7e4, 1e-6, np.nan]  # overflows float16, a float16 subnormal, NaN
    host = torch.from_numpy(fed).to(getattr(torch, rounding)).float().numpy()
    in_graph = runner.teacher_forced(inputs, {block0: fed}, [ln1], rounding={block0: rounding})
    on_host = runner.teacher_forced(inputs, {block0: host}, [ln1])
    np.testing.assert_array_equal(in_graph[ln1], on_host[ln1])


def test_float16_model_fed_float32_rounds_like_numpy(transformer_path, runner, inputs):
    with OnnxRunner(transformer_path, float16=True, keep_io_types=True) as half:
        probes = half.probes(inputs)
        block0, ln1 = _module_probe(probes, "blocks.0").key, _module_probe(probes, "blocks.1.ln").key
        ref_block0 = _module_probe(runner.probes(inputs), "blocks.0").key
        fed = runner.capture(inputs, [ref_block0])[ref_block0] * 3
        in_graph = half.teacher_forced(inputs, {block0: fed}, [ln1])
        on_host = half.teacher_forced(inputs, {block0: fed.astype(np.float16)}, [ln1])
    assert in_graph[ln1].dtype == np.float16
    np.testing.assert_array_equal(in_graph[ln1], on_host[ln1])


def test_scope_entries_and_exits_of_a_sequential(runner, inputs):
    probes = runner.probes(inputs)
    entries = runner.scope_entries("blocks.0.mlp")
    assert [name for name, _, _ in entries] == [_module_probe(probes, "blocks.0.ln2").key]
    assert entries[0][2] == "float32" and entries[0][1][-1] == D
    assert runner.scope_exits("blocks.0.mlp") == [_module_probe(probes, "blocks.0.mlp.2").key]


def test_run_scope_reproduces_the_captured_exit(runner, inputs):
    entries = [name for name, _, _ in runner.scope_entries("blocks.0")]
    exits = runner.scope_exits("blocks.0")
    captured = runner.capture(inputs, [n for n in entries + exits if n not in inputs])
    result = runner.run_scope("blocks.0", {n: inputs[n] if n in inputs else captured[n] for n in entries})
    assert set(result) == set(exits)
    block_out = _module_probe(runner.probes(inputs), "blocks.0").key
    np.testing.assert_allclose(result[block_out], captured[block_out], rtol=1e-5, atol=1e-6)


def test_run_scope_names_missing_entries(runner):
    with pytest.raises(DiffcoreError, match=r"feeds for scope 'blocks.0' .* missing: .*entries: "):
        runner.run_scope("blocks.0", {})


def test_unknown_scope_lists_the_scopes_found(runner):
    with pytest.raises(DiffcoreError, match=r"no module scope 'blocks\.9' in .*scopes found: .*'blocks\.0'"):
        runner.scope_entries("blocks.9")


# ------------------------------------------------------------------------------------------- float16


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_float16_conversion_runs_close_to_float32(transformer_path, runner, inputs, keep_io_types):
    with OnnxRunner(transformer_path, float16=True, keep_io_types=keep_io_types) as half:
        io_dtype = "float32" if keep_io_types else "float16"
        assert {s.dtype for s in half.input_specs()} == {io_dtype}
        assert half.prepare_inputs(inputs)["x"].dtype == np.dtype(io_dtype)
        out = half.outputs(inputs)["y"]
        assert out.dtype == np.dtype(io_dtype)
        np.testing.assert_allclose(out.astype(np.float32), runner.outputs(inputs)["y"], atol=3e-2)
        probes = half.probes(inputs)
        assert "float16" in {p.dtype for p in probes}
        assert "fp16" in half.description or "float16" in half.description


def test_float16_casts_record_what_they_cast(transformer_path, inputs):
    with OnnxRunner(transformer_path, float16=True, keep_io_types=True) as half:
        casts = [p for p in half.probes(inputs) if p.op_type == "Cast"]
    assert any(p.meta["cast_of"] == "x" for p in casts)
    assert all(p.meta["cast_of"] for p in casts)


def test_float16_model_is_fed_and_forced_with_float32_values(transformer_path, runner, inputs):
    with OnnxRunner(transformer_path, float16=True, keep_io_types=False) as half:
        keys = [_module_probe(half.probes(inputs), m).key for m in ("blocks.0", "blocks.1.ln")]
        reference = runner.capture(inputs, [_module_probe(runner.probes(inputs), "blocks.0").key])
        fed = {keys[0]: next(iter(reference.values()))}  # float32, cast to the model's float16
        forced = half.teacher_forced(inputs, fed, keys)
        assert forced[keys[1]].dtype == np.float16
        entries = [n for n, _, _ in half.scope_entries("blocks.1")]
        assert keys[0] in entries


def test_a_model_proto_given_is_not_modified(transformer_path, inputs):
    proto = onnx.load(str(transformer_path))
    before = proto.SerializeToString()
    with OnnxRunner(proto, float16=True) as half:
        half.outputs(inputs)
    assert proto.SerializeToString() == before


# ----------------------------------------------------------------------------------- large models


def test_external_weights_path_gives_the_same_values(transformer_path, runner, inputs, monkeypatch):
    """Past the inline limit weights go once to a temporary external-data file; nothing is written beside
    the user's model, and close() removes the temporary folder."""
    monkeypatch.setattr(onnx_store, "_INLINE_LIMIT", 0)
    beside = sorted(p.name for p in transformer_path.parent.iterdir())
    r = OnnxRunner(transformer_path)
    keys = [p.key for p in r.probes(inputs)]
    got, want = r.capture(inputs, keys), runner.capture(inputs, keys)
    for key in keys:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    tempdir = r._tmp.name
    r.close()
    import os

    assert not os.path.exists(tempdir)
    assert sorted(p.name for p in transformer_path.parent.iterdir()) == beside


# --------------------------------------------------------------------------------------------- errors


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DiffcoreError, match=r"ONNX model file not found: .*nope\.onnx"):
        OnnxRunner(tmp_path / "nope.onnx")


@pytest.mark.parametrize("content", [b"\x08\x96\x01\xff\xff\x12garbage", b"this is not onnx\n", b""])
def test_corrupt_file_is_not_parsed_as_onnx(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(DiffcoreError, match=r"broken\.onnx could not be parsed as ONNX"):
        OnnxRunner(path)


def test_unknown_provider_lists_the_available_ones(transformer_path):
    with pytest.raises(DiffcoreError, match=r"provider 'NoSuchExecutionProvider' is not available here; "
                                            r"available: .*'CPUExecutionProvider'"):
        OnnxRunner(transformer_path, providers=["NoSuchExecutionProvider"])


def test_wrong_input_names_list_the_expected_ones(runner, inputs):
    with pytest.raises(DiffcoreError, match=r"unknown 'tokens'; missing 'mask'; expected inputs: 'x', 'mask'"):
        runner.prepare_inputs({"x": inputs["x"], "tokens": inputs["mask"]})


def test_fixed_shape_export_names_input_expected_and_given_shape(fixed_path):
    with OnnxRunner(fixed_path) as r:
        with pytest.raises(DiffcoreError, match=r"input 'x' of fixed\.onnx expects shape \(2, 5, 16\) but was "
                                                r"given shape \(2, 7, 16\): dimension 1 is fixed to 5"):
            r.prepare_inputs(_transformer_inputs(seq=7))


def test_shape_error_shows_dynamic_dims_by_symbol(transformer_path):
    with OnnxRunner(transformer_path) as r:
        symbol = next(s for s in r._specs if s.name == "x").dims[1]
        if not isinstance(symbol, str):
            pytest.skip("this export has a fixed sequence length")
        bad = {"x": np.zeros((BATCH, SEQ, D + 1), np.float32), "mask": _causal_mask()}
        with pytest.raises(DiffcoreError, match=rf"expects shape \(2, {symbol}, 16\) but was given shape "
                                                r"\(2, 5, 17\)"):
            r.prepare_inputs(bad)


def test_rank_mismatch_is_named(runner, inputs):
    with pytest.raises(DiffcoreError, match=r"input 'x' of .* but was given shape \(2, 5\): rank 2 instead of 3"):
        runner.prepare_inputs({**inputs, "x": inputs["x"][..., 0]})


def test_integers_for_a_float_input_are_refused(runner, inputs):
    with pytest.raises(DiffcoreError, match=r"input 'x' of .* expects float32 but was given int64"):
        runner.prepare_inputs({**inputs, "x": inputs["x"].astype(np.int64)})


def test_float64_inputs_are_cast_to_the_model_dtype(runner, inputs):
    feed = runner.prepare_inputs({**inputs, "x": inputs["x"].astype(np.float64)})
    assert feed["x"].dtype == np.float32


def test_ort_failure_names_the_node_and_op(transformer_path):
    with OnnxRunner(transformer_path) as r:
        if r.input_specs()[1].shape[0] is not None:
            pytest.skip("this export has a fixed mask shape")
        bad = {"x": np.zeros((BATCH, SEQ, D), np.float32), "mask": _causal_mask(SEQ + 1)}
        with pytest.raises(DiffcoreError, match=r"ONNX Runtime failed running .* at node '/blocks\.0/[^']+' "
                                                r"\((Add|MatMul|Softmax|Reshape)\)"):
            r.outputs(bad)


# ------------------------------------------------------------------------------------------------ GPU


def test_iobinding_path_gives_the_same_values_on_the_host(transformer_path, runner, inputs):
    """The CUDA code path (IOBinding, inputs bound from torch memory) exercised with host buffers."""
    with OnnxRunner(transformer_path) as bound:
        bound._bound = ("cpu", 0)
        keys = [p.key for p in bound.probes(inputs)]
        got, want = bound.capture(inputs, keys), runner.capture(inputs, keys)
        for key in keys:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        fed = {k: torch.from_numpy(v) for k, v in want.items()}
        forced = bound.teacher_forced(inputs, fed, keys)
        for key in keys:
            np.testing.assert_allclose(forced[key], want[key], rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.gpu
def test_cuda_capture_stays_on_the_device(transformer_path, runner, inputs):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    with OnnxRunner(transformer_path, providers=["CUDAExecutionProvider"]) as gpu:
        keys = [p.key for p in gpu.probes(inputs)]
        captured = gpu.capture(inputs, keys)
        assert all(isinstance(v, torch.Tensor) and v.is_cuda for v in captured.values())
        on_cpu = runner.capture(inputs, keys)
        for key in keys:
            np.testing.assert_allclose(captured[key].cpu().numpy(), on_cpu[key], rtol=1e-3, atol=1e-3)
        forced = gpu.teacher_forced(inputs, captured, keys)
        assert all(v.is_cuda for v in forced.values())
        entries = [n for n, _, _ in gpu.scope_entries("blocks.0")]
        feeds = {n: torch.from_numpy(inputs[n]).cuda() if n in inputs else captured[n] for n in entries}
        exits = gpu.run_scope("blocks.0", feeds)
        block_out = _module_probe(gpu.probes(inputs), "blocks.0").key
        torch.testing.assert_close(exits[block_out], captured[block_out], rtol=1e-4, atol=1e-4)


def _if_model():
    """x -> Relu -> a; If(cond) reads a from the outer scope (a + 1 or a - 1) -> b; b * 2 -> y."""
    from onnx import TensorProto as T
    from onnx import helper

    one = helper.make_tensor("one", T.FLOAT, [], [1.0])
    branch = {name: helper.make_graph([helper.make_node(op, ["a", "one"], [f"{name}_out"])], name, [],
                                      [helper.make_tensor_value_info(f"{name}_out", T.FLOAT, None)])
              for name, op in (("then", "Add"), ("else", "Sub"))}
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("If", ["cond"], ["b"], name="if", then_branch=branch["then"],
                              else_branch=branch["else"]),
             helper.make_node("Mul", ["b", "two"], ["y"], name="mul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [3]),
                                           helper.make_tensor_value_info("cond", T.BOOL, [])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [3])],
                              initializer=[one, helper.make_tensor("two", T.FLOAT, [], [2.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_segments_follow_values_read_inside_subgraphs():
    feed = {"x": np.array([-1.0, 0.5, 2.0], np.float32), "cond": np.array(True)}
    with OnnxRunner(_if_model()) as r:
        graph = r.graph
        relu, branch = graph.producer["a"], graph.producer["b"]
        assert graph.cut_values([relu]) == ["a"]  # read inside the If's branch: a later segment needs it
        assert graph.needed_nodes(["b"], {"x", "cond", "a"}) == [branch]
        assert graph.segment_entries([branch]) == ["cond", "a"]
        captured = r.capture(feed, ["a", "b"])
        forced = r.teacher_forced(feed, {"a": np.array([10.0, 20.0, 30.0], np.float32)}, ["b"])
    np.testing.assert_array_equal(captured["a"], [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(captured["b"], [1.0, 1.5, 3.0])
    np.testing.assert_array_equal(forced["b"], [11.0, 21.0, 31.0])  # the branch read the fed value


@pytest.mark.parametrize("external", [False, True])
def test_sessions_see_the_initializers_in_the_models_own_order(transformer_path, monkeypatch, external):
    """ORT's optimizers can fail on a reordered initializer list (a model saved by its transformer optimizer
    failed to load with "Attempt to replace the existing tensor" once the small initializers came first):
    what a session loads lists them in the original order, inline or external."""
    onnx = pytest.importorskip("onnx")
    if external:
        monkeypatch.setattr(onnx_store, "_INLINE_LIMIT", 0)
    r = OnnxRunner(transformer_path)
    try:
        source = r._store.source(r._store.variant())
        loaded = onnx.load(source, load_external_data=False) if isinstance(source, str) else \
            onnx.load_from_string(source)
        want = [t.name for t in onnx.load(str(transformer_path), load_external_data=False).graph.initializer]
        got = [t.name for t in loaded.graph.initializer]
        assert got == [n for n in want if n in set(got)]
        assert len(got) >= len(want) - 5  # all but constants no node reads
    finally:
        r.close()


def test_a_segment_ort_cannot_optimize_is_captured_unoptimized_with_a_warning(transformer_path, runner, inputs,
                                                                                monkeypatch):
    """ORT's optimizers can fail on a cut-out part of a graph whose whole loads (seen on MiniLM rewritten by
    ORT's transformer optimizer); such a capture session is rebuilt unoptimized, never the deployed one."""
    import onnxruntime as ort

    from diffcore.errors import DiffcoreError

    r = OnnxRunner(transformer_path)
    real_load = OnnxRunner._load
    refused = []

    def picky_load(self, source, options):
        unoptimized = options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if not options.enable_cpu_mem_arena and not unoptimized:  # an instrumented session, optimized
            refused.append(1)
            raise DiffcoreError("ONNX Runtime could not load: Attempt to replace the existing tensor")
        return real_load(self, source, options)

    monkeypatch.setattr(OnnxRunner, "_load", picky_load)
    keys = [p.key for p in r.probes(inputs)][:20]
    got, want = r.capture(inputs, keys), runner.capture(inputs, keys)
    for key in keys:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert refused and any("optimizations disabled" in w for w in r.warnings)
    r.close()
