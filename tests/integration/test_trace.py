"""Recorded traces: the .npz file format (no pickle, hashes, no silent overwrite) and TraceRunner."""
import json
import os
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffcore.capture import trace as trace_mod  # noqa: E402
from diffcore.capture.base import Probe  # noqa: E402
from diffcore.capture.torch_runner import TorchRunner  # noqa: E402
from diffcore.capture.trace import SCHEMA, Trace, TraceRunner, record  # noqa: E402
from diffcore.errors import DiffcoreError  # noqa: E402

from .test_torch_runner import TinyTransformer  # noqa: E402


def _mixed_trace() -> Trace:
    rng = np.random.default_rng(0)
    trace = Trace(inputs={"x": rng.standard_normal((2, 3)).astype(np.float32)},
                  description={"kind": "test"}, environment={"schema": "diffcore.env/1"}, created="now")
    arrays = {
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f16": rng.standard_normal((4,)).astype(np.float16),
        "bf16": torch.randn(3, 2).to(torch.bfloat16),
        "i64": np.arange(6, dtype=np.int64).reshape(3, 2),
        "scalar": np.float32(3.5).reshape(()),
    }
    for i, (key, array) in enumerate(arrays.items()):
        trace.add(Probe(key, i, tuple(array.shape), None, module=f"m.{key}", op_type="Op",
                        output_index=0 if key == "scalar" else None, meta={"call": key}), array)
    return trace


def _assert_same(got, want):
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want)
    else:
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)


# ----------------------------------------------------------------------------------------- the file

def test_save_load_round_trip_keeps_dtypes_values_and_metadata(tmp_path):
    trace = _mixed_trace()
    path = trace.save(tmp_path / "t.npz")
    loaded = Trace.load(path)
    assert loaded.keys() == trace.keys()
    for rec, want in zip(loaded.records, trace.records):
        _assert_same(rec.array, want.array)
        assert rec.probe.module == want.probe.module and rec.probe.meta == {"call": want.probe.key}
        assert rec.probe.shape == tuple(want.array.shape) and rec.probe.order == want.probe.order
    assert [r.probe.dtype for r in loaded.records] == ["float32", "float16", "bfloat16", "int64", "float32"]
    assert loaded.records[-1].probe.output_index == 0 and loaded.records[-1].probe.shape == ()
    _assert_same(loaded.inputs["x"], trace.inputs["x"])
    assert (loaded.description, loaded.environment, loaded.created) == ({"kind": "test"},
                                                                         {"schema": "diffcore.env/1"}, "now")


def test_file_is_plain_npz_without_pickle(tmp_path):
    path = _mixed_trace().save(tmp_path / "t.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    assert meta["schema"] == SCHEMA
    assert all(a.dtype != object for a in arrays.values())
    bf16 = next(r for r in meta["records"] if r["key"] == "bf16")
    assert bf16["dtype"] == "bfloat16" and arrays[bf16["array"]].dtype == np.uint16
    assert len(bf16["sha256"]) == 64


def test_bfloat16_without_torch_or_ml_dtypes_stays_uint16_bits(tmp_path, monkeypatch):
    path = _mixed_trace().save(tmp_path / "t.npz")
    real_import = trace_mod.importlib.import_module

    def no_frameworks(name, *args):
        if name in ("torch", "ml_dtypes"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(trace_mod.importlib, "import_module", no_frameworks)
    rec = Trace.load(path).record_for("bf16")
    assert rec.bfloat16_bits and rec.array.dtype == np.uint16 and rec.probe.dtype == "bfloat16"


def test_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "t.npz"
    path.write_bytes(b"precious")
    with pytest.raises(DiffcoreError, match=r"t\.npz already exists; pass --force \(force=True\)"):
        _mixed_trace().save(path)
    assert path.read_bytes() == b"precious"
    _mixed_trace().save(path, force=True)
    assert Trace.load(path).keys() == _mixed_trace().keys()
    assert sorted(os.listdir(tmp_path)) == ["t.npz"], "no temporary file left behind"


def test_truncated_file_is_detected(tmp_path):
    path = _mixed_trace().save(tmp_path / "t.npz")
    data = open(path, "rb").read()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DiffcoreError, match=r"cannot read trace file .*cut\.npz \(damaged"):
        Trace.load(cut)


def _rewrite(path, change):
    """Re-save ``path``'s entries after ``change(arrays)``: an edit the zip checksums cannot catch."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    os.unlink(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_edited_array_fails_its_hash(tmp_path):
    path = _mixed_trace().save(tmp_path / "t.npz")
    _rewrite(path, lambda a: a["r00000"].__setitem__((0, 0), 123.0))
    with pytest.raises(DiffcoreError, match=r"t\.npz': probe 'f32' fails its sha256 check"):
        Trace.load(path)


def test_edited_bytes_inside_the_zip_are_detected(tmp_path):
    path = _mixed_trace().save(tmp_path / "t.npz")
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("r00003.npy")
    data = bytearray(open(path, "rb").read())
    data[info.header_offset + 30 + len(info.filename) + info.file_size - 1] ^= 0xFF  # last data byte
    open(path, "wb").write(bytes(data))
    with pytest.raises(DiffcoreError, match=r"t\.npz.*(damaged|sha256)"):
        Trace.load(path)


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(DiffcoreError, match=r"trace file not found: .*nope\.npz"):
        Trace.load(tmp_path / "nope.npz")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(DiffcoreError, match=r"text\.npz is not an \.npz archive"):
        Trace.load(text)
    plain = tmp_path / "plain.npz"
    with open(plain, "wb") as f:
        np.savez(f, a=np.zeros(3))
    with pytest.raises(DiffcoreError, match=r"plain\.npz' has no diffcore metadata"):
        Trace.load(plain)
    path = _mixed_trace().save(tmp_path / "t.npz")

    def other_schema(arrays):
        meta = json.loads(arrays["__meta__"].tobytes())
        meta["schema"] = "diffcore.trace/99"
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    _rewrite(path, other_schema)
    with pytest.raises(DiffcoreError, match=r"schema 'diffcore\.trace/99', expected 'diffcore\.trace/1'"):
        Trace.load(path)
    _rewrite(path, lambda a: a.__setitem__("__meta__", np.frombuffer(b"{not json", np.uint8)))
    with pytest.raises(DiffcoreError, match=r"has invalid metadata"):
        Trace.load(path)


# ------------------------------------------------------------------------------ record and replay

@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    torch.manual_seed(0)
    runner = TorchRunner(TinyTransformer(), dtype="bfloat16")
    inputs = {"tokens": np.random.default_rng(0).integers(0, 32, size=(2, 6))}
    path = tmp_path_factory.mktemp("trace") / "ref.npz"
    record(runner, inputs, description={"model": "tests:TinyTransformer"}).save(path)
    return runner, inputs, path


def test_trace_runner_replays_a_torch_runner(recorded):
    runner, inputs, path = recorded
    replay = TraceRunner(path)
    live = runner.probes(inputs)
    assert [(p.key, p.shape, p.dtype, p.module, p.output_index) for p in replay.probes(inputs)] == \
           [(p.key, p.shape, p.dtype, p.module, p.output_index) for p in live]
    keys = ["blocks.0.attn.0", "blocks.1.mlp", "output"]
    want = runner.capture(inputs, keys)
    got = replay.capture(inputs, keys)
    for key in keys:
        assert got[key].dtype == torch.bfloat16 and torch.equal(got[key], want[key]), key
    assert list(replay.outputs(inputs)) == ["output"]
    assert replay.warnings == []
    spec = replay.input_specs()[0]
    assert (spec.name, spec.dtype, spec.shape) == ("tokens", "int64", (2, 6))
    assert replay.trace.description["model"] == "tests:TinyTransformer"
    assert replay.trace.description["dtype"] == "bfloat16"
    assert replay.trace.environment["schema"] == "diffcore.env/1"


def test_trace_runner_warns_when_live_inputs_differ(recorded):
    _, inputs, path = recorded
    replay = TraceRunner(path)
    changed = {"tokens": inputs["tokens"].copy()}
    changed["tokens"][0, 0] = (changed["tokens"][0, 0] + 1) % 32
    replay.capture(changed, ["output"])
    replay.outputs(changed)
    assert len(replay.warnings) == 1
    assert "input 'tokens' differs" in replay.warnings[0] and "1 of 12 values" in replay.warnings[0]


def test_trace_runner_input_and_key_errors(recorded):
    _, inputs, path = recorded
    replay = TraceRunner(path)
    with pytest.raises(DiffcoreError, match=r"missing input\(s\) 'tokens'.*recorded with inputs 'tokens'"):
        replay.probes({"ids": inputs["tokens"]})
    with pytest.raises(DiffcoreError, match=r"input 'tokens' has shape \(1, 6\).*shape \(2, 6\)"):
        replay.probes({"tokens": inputs["tokens"][:1]})
    with pytest.raises(DiffcoreError, match=r"no recorded probe 'blocks\.9'; recorded: 'embed', "):
        replay.capture(inputs, ["blocks.9"])


def test_record_selected_keys_keeps_outputs(recorded):
    runner, inputs, _ = recorded
    trace = record(runner, inputs, keys=["blocks.0.ln"], chunk_bytes=1)
    assert trace.keys() == ["blocks.0.ln", "output"]
    with pytest.raises(DiffcoreError, match=r"has no probe 'nope'; probes: 'embed'"):
        record(runner, inputs, keys=["nope"])


@pytest.mark.gpu
def test_recording_a_gpu_model_gives_a_host_trace(tmp_path):
    torch.manual_seed(0)
    runner = TorchRunner(TinyTransformer(), dtype="bfloat16", device="cuda")
    inputs = {"tokens": torch.randint(0, 32, (2, 6), device="cuda")}
    assert runner.capture(inputs, ["head"])["head"].is_cuda  # capture keeps data on the GPU
    trace = record(runner, inputs)
    assert all(not getattr(r.array, "is_cuda", False) for r in trace.records)
    loaded = Trace.load(trace.save(tmp_path / "gpu.npz"))
    assert torch.equal(loaded["output"], runner.capture(inputs, ["output"])["output"].cpu())
    assert isinstance(loaded.inputs["tokens"], np.ndarray)
