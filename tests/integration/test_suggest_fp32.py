"""``suggest_fp32`` / ``--suggest-fp32``: the float32 set contains the culprit, is minimal, and really passes.

Every claim is checked by an independent run here: the set is applied by this file's own code (a module's
forward wrapped in casts, or onnxconverter-common's node_block_list run in a plain ONNX Runtime session) and
the outputs compared with NumPy against the float32 model: finite, relative L2 error under 5 %.
"""
import copy
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

import diffcore
from tests.helpers import one_error_line, run_cli
from tests.integration import fp32_models as fm
from tests.integration.models import export

BAND = 0.05  # the comparison's 5 % band on an output
FAST = {"backend": "numpy"}

# model factory, the module where the planted failure is born
TORCH_CASES = {
    "ffn_overflow": "blocks.1.mix.up",
    "naive_softmax": "special",
    "one_pass_layernorm": "special",
    "rmsnorm_no_upcast": "special",
}


# ---- independent application and checks ---------------------------------------------------------------
def _float32_forward(module, low, autocast: bool):
    """``module``'s forward on float32 inputs; its output cast back to ``low`` (cast) or, under autocast,
    computed with autocast disabled."""
    forward = module.forward

    def run(*args):
        args = [a.float() for a in args]
        if autocast:
            with torch.autocast("cpu", enabled=False):
                return forward(*args)
        return forward(*args).to(low)

    return run


def _torch_outputs(model, units, *, dtype="float16", autocast=False) -> np.ndarray:
    """``model`` run with ``units`` in float32: a half copy with those modules' forward cast to float32
    (cast), or those modules' forward outside autocast (autocast)."""
    low = getattr(torch, dtype)
    work = copy.deepcopy(model)
    if not autocast:
        work.to(low)
    for name in units:
        module = work.get_submodule(name)
        if not autocast:  # float32 weights straight from the original, not their float16 rounding
            module.float().load_state_dict(model.get_submodule(name).state_dict())
        module.forward = _float32_forward(module, low, autocast)
    x = fm.inputs()["x"]
    with torch.no_grad():
        if autocast:
            with torch.autocast("cpu", dtype=low):
                out = work(x)
        else:
            out = work(x.to(low))
    return out.float().numpy()


def _reference(model) -> np.ndarray:
    with torch.no_grad():
        return model(fm.inputs()["x"]).numpy()


def _within_band(ref: np.ndarray, out: np.ndarray) -> bool:
    if not np.isfinite(out).all():
        return False
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref)) < BAND


def _contains_culprit(units, culprit: str) -> bool:
    """The culprit itself, or a module enclosing it (the float32 island around an overflow)."""
    return any(culprit == u or culprit.startswith((u + ".", u + "/")) for u in units)


def _onnx_outputs(path, units) -> np.ndarray:
    import onnx
    import onnxruntime as ort
    from onnxconverter_common import float16

    converted = float16.convert_float_to_float16(onnx.load(path), keep_io_types=True,
                                                 node_block_list=list(units))
    session = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": fm.inputs()["x"].numpy()})[0]


@pytest.fixture(scope="module")
def onnx_ffn(tmp_path_factory):
    model = fm.ffn_overflow()
    path = export(model, fm.inputs(), tmp_path_factory.mktemp("fp32") / "ffn.onnx", dynamo=False)
    return model, path


# ---- torch cast -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_float16_cast_suggestion_holds_the_culprit_is_minimal_and_passes_when_applied(case):
    model = getattr(fm, case)()
    ref = _reference(model)
    assert not _within_band(ref, _torch_outputs(model, [])), "the planted failure must fail in float16"
    s = diffcore.suggest_fp32(model, model, fm.inputs(), test_dtype="float16", **FAST)
    assert s.status == "found" and s.minimal
    assert _contains_culprit(s.units, TORCH_CASES[case]), s.units
    assert _within_band(ref, _torch_outputs(model, s.units))
    for unit in s.units:  # minimal: dropping any member fails again
        assert not _within_band(ref, _torch_outputs(model, [u for u in s.units if u != unit]))
    assert s.before[0].new_nonfinite or s.before[0].rel_l2 > BAND
    assert s.after[0].new_nonfinite == 0 and s.after[0].rel_l2 < BAND
    assert 1 <= s.runs <= s.max_runs == 12


def test_the_snippet_applies_the_set_with_keep_in_float32():
    model = fm.ffn_overflow()
    s = diffcore.suggest_fp32(model, model, fm.inputs(), test_dtype="float16", **FAST)
    scope = {"model": model}
    exec(s.code, scope)  # noqa: S102 - the snippet the user is told to paste
    with torch.no_grad():
        out = scope["mixed"](fm.inputs()["x"]).float().numpy()
    assert _within_band(_reference(model), out)
    assert next(scope["mixed"].get_submodule(s.units[0]).parameters()).dtype == torch.float32
    assert next(scope["mixed"].head.parameters()).dtype == torch.float16
    island, original = scope["mixed"].get_submodule(s.units[0]), model.get_submodule(s.units[0])
    assert torch.equal(island.up.weight, original.up.weight)  # float32 weights, not a float16 round trip


# ---- torch autocast ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["ffn_overflow", "naive_softmax", "rmsnorm_no_upcast"])
def test_float16_autocast_suggestion_excludes_the_culprit_from_autocast(case):
    model = getattr(fm, case)()
    ref = _reference(model)
    assert not _within_band(ref, _torch_outputs(model, [], autocast=True))
    s = diffcore.suggest_fp32(model, model, fm.inputs(), test_autocast="float16", **FAST)
    assert s.status == "found" and s.minimal and s.kind == "torch autocast"
    assert _contains_culprit(s.units, TORCH_CASES[case])
    assert _within_band(ref, _torch_outputs(model, s.units, autocast=True))
    assert "exclude_from_autocast(model, " in s.code


def test_bfloat16_autocast_cancellation_in_a_one_pass_layernorm_is_fixed_by_that_norm():
    model = fm.offset_layernorm()
    ref = _reference(model)
    assert not _within_band(ref, _torch_outputs(model, [], dtype="bfloat16", autocast=True))
    s = diffcore.suggest_fp32(model, model, fm.inputs(), test_autocast="bfloat16", **FAST)
    assert s.status == "found" and s.units == ["special"] and s.dtype == "bfloat16"
    assert _within_band(ref, _torch_outputs(model, s.units, dtype="bfloat16", autocast=True))


# ---- ONNX float16 (onnxconverter-common) ---------------------------------------------------------------------
def test_onnx_float16_suggestion_is_a_node_block_list_that_passes_when_converted_again(onnx_ffn):
    model, path = onnx_ffn
    ref = _reference(model)
    assert not _within_band(ref, _onnx_outputs(path, []))
    s = diffcore.suggest_fp32(path, path, {"x": fm.inputs()["x"].numpy()}, test_dtype="float16", **FAST)
    assert s.status == "found" and s.minimal and s.kind == "onnx float16"
    assert _contains_culprit(s.units, "/blocks.1/mix/up/MatMul"), s.units
    assert _within_band(ref, _onnx_outputs(path, s.units))
    for unit in s.units:
        assert not _within_band(ref, _onnx_outputs(path, [u for u in s.units if u != unit]))
    assert "node_block_list=[" in s.code and repr(s.units[0]) in s.code


@pytest.mark.parametrize("case", ["naive_softmax", "one_pass_layernorm", "rmsnorm_no_upcast"])
def test_onnx_runtime_cpu_runs_float16_elementwise_overflows_in_float32_so_nothing_is_suggested(case, tmp_path):
    """ONNX Runtime's CPU provider has no float16 Exp/Pow/Mul/ReduceMean kernels: it casts those nodes to
    float32 and drops the casts between them, so the overflow shows only on a probed intermediate value;
    the outputs are right, and the suggestion says so instead of inventing a set."""
    model = getattr(fm, case)()
    path = export(model, fm.inputs(), tmp_path / "m.onnx", dynamo=False)
    assert _within_band(_reference(model), _onnx_outputs(path, []))
    s = diffcore.suggest_fp32(path, path, {"x": fm.inputs()["x"].numpy()}, test_dtype="float16", **FAST)
    assert s.status == "not needed" and s.units == [] and s.runs == 0
    assert re.search(r"every output is within tolerance", s.message)


# ---- clean models, budget, errors, report method ------------------------------------------------------------
def test_a_clean_model_gets_no_suggestion_in_torch_and_onnx(tmp_path):
    model = fm.clean()
    s = diffcore.suggest_fp32(model, model, fm.inputs(), test_dtype="float16", **FAST)
    assert s.status == "not needed" and not s.units and s.runs == 0
    assert "no suggestion needed" in s.to_text()
    path = export(model, fm.inputs(), tmp_path / "clean.onnx", dynamo=False)
    s = diffcore.suggest_fp32(path, path, {"x": fm.inputs()["x"].numpy()}, test_dtype="float16", **FAST)
    assert s.status == "not needed"


def test_a_spent_budget_says_no_set_was_found_and_shows_the_best_one_tried(onnx_ffn):
    _, path = onnx_ffn
    s = diffcore.suggest_fp32(path, path, {"x": fm.inputs()["x"].numpy()}, test_dtype="float16", max_runs=1,
                              **FAST)
    assert s.status == "not found" and s.runs == 1 and s.units
    assert re.search(r"budget of 1 runs was spent", s.message)
    assert re.search(r"NO set within 1 runs passes; the best set tried", s.to_text())


def test_report_suggest_fp32_reuses_the_report_it_is_called_on():
    model = fm.naive_softmax()
    report = diffcore.compare(model, model, fm.inputs(), test_dtype="float16", **FAST)
    s = report.suggest_fp32(model, model, fm.inputs(), test_dtype="float16", **FAST)
    assert s.units == ["special"] and s.runs == 1  # one run: the proof; the failing one was the report


def test_a_float32_test_model_is_refused_with_a_clear_message():
    model = fm.naive_softmax()
    with pytest.raises(diffcore.DiffcoreError, match=r"does not run in float16 or bfloat16"):
        diffcore.suggest_fp32(model, model, fm.inputs(), **FAST)


# ---- CLI ------------------------------------------------------------------------------------------------------
def test_cli_prints_the_suggestion_after_the_report_and_keeps_exit_1(onnx_ffn, capsys, tmp_path):
    _, path = onnx_ffn
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=fm.inputs()["x"].numpy())
    code, out, _ = run_cli(capsys, "compare", path, path, "--test-dtype", "float16", "--inputs", inputs,
                           "--backend", "numpy", "--suggest-fp32")
    assert code == 1
    report, _, suggestion = out.partition("What to keep in float32 (onnx float16, float16)")
    assert "FAIL" in report and suggestion
    assert "/blocks.1/mix/up/MatMul" in suggestion and "node_block_list=" in suggestion
    assert re.search(r"model runs: \d+ of at most 12", suggestion)


def test_cli_suggest_fp32_on_onnx_without_float16_exits_2_with_one_line(onnx_ffn, capsys):
    _, path = onnx_ffn
    code, _, err = run_cli(capsys, "compare", path, path, "--suggest-fp32")
    assert code == 2
    assert re.search(r"--suggest-fp32 with an ONNX TEST needs --test-dtype float16", one_error_line(err))


def _fan_out_model():
    """y = h*1e-3 + h/1e3 with h = x @ W past 65504: h feeds two nodes."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 4], [3e4] * 16)
    c = helper.make_tensor("c", TensorProto.FLOAT, [], [1e3])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Div", ["h", "c"], ["a"], name="div1"),
             helper.make_node("Div", ["h", "c"], ["b"], name="div2"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "fan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_join_float32_islands_keeps_a_fanned_out_float32_value_out_of_float16():
    import onnxruntime as ort
    from onnxconverter_common import float16

    x = np.ones((2, 4), np.float32)
    blocked = ["mm", "div1", "div2"]

    def run(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    plain = float16.convert_float_to_float16(_fan_out_model(), keep_io_types=True, node_block_list=blocked)
    assert not np.isfinite(run(plain)).all()  # h = 1.2e5 goes through float16 between two float32 nodes
    assert diffcore.precision.join_float32_islands(plain) == 2
    np.testing.assert_allclose(run(plain), np.full((2, 4), 240.0), rtol=1e-3)


def test_cli_suggests_a_torch_module_for_a_factory_cast_to_float16(capsys, tmp_path):
    factory = tmp_path / "softmax_model.py"
    factory.write_text("from tests.integration import fp32_models as fm\n\n"
                       "def build():\n    return fm.naive_softmax()\n\n"
                       "def example_inputs():\n    return fm.inputs()\n")
    spec = f"{factory}:build"
    code, out, _ = run_cli(capsys, "compare", spec, spec, "--test-dtype", "float16", "--backend", "numpy",
                           "--suggest-fp32")
    assert code == 1
    suggestion = out.partition("What to keep in float32 (torch cast, float16)")[2]
    assert re.search(r"1 in float32 bring every output within tolerance \(minimal", suggestion)
    assert "keep_in_float32(model, ['special'], dtype=\"float16\")" in suggestion


def test_the_fixed_mixed_precision_model_passes_a_comparison_of_its_own():
    """A float32 island's children are re-run for local errors on inputs in the dtype they compute in
    (float32), not the model's float16: the fixed model passes instead of failing on its own island."""
    from diffcore.precision import keep_in_float32

    model = fm.ffn_overflow()
    s = diffcore.suggest_fp32(model, model, fm.inputs(), test_dtype="float16", **FAST)
    mixed = keep_in_float32(model, s.units, dtype="float16")
    report = diffcore.compare(model, mixed, fm.inputs())
    assert report.verdict == "pass", report.summary
    island = [r for r in report.layers if r.name.startswith(s.units[0] + ".")]
    assert island and all(r.local_rel_l2 is not None and r.local_rel_l2 < 1e-6 for r in island)
