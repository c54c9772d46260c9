"""torch vs torch runs each side's forward once for all layers and local errors, whatever the memory budget:
values past the budget spill to a temporary file (capture/spill.py) and give the very same rows."""
import pytest

torch = pytest.importorskip("torch")

import diffcore  # noqa: E402
from diffcore.capture.spill import SpillStore  # noqa: E402
from tests.integration import models  # noqa: E402


def _count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


def _rows(report):
    return [{k: v for k, v in row.to_dict().items()} for row in report.layers + report.outputs]


@pytest.mark.parametrize("budget_mb", [1, 4096])
def test_each_side_runs_its_whole_forward_three_times_whatever_the_budget(budget_mb):
    """Probes (shapes), one captured pass (statistics, recorded local-error inputs, the input errors the
    error amplification needs, hook check) and the plain run the outputs are judged on: never once per
    chunk."""
    ref = models.stack(n_layers=6)
    test = models.with_tanh_gelu(ref, block=2)
    ref_calls, test_calls = _count_forwards(ref), _count_forwards(test)
    report = diffcore.compare(ref, test, models.stack_inputs(), memory_budget_mb=budget_mb)
    assert report.first_divergence.name == "blocks.2.mlp.1", report.summary
    assert all(r.local_rel_l2 is not None for r in report.layers if r.module)
    assert (len(ref_calls), len(test_calls)) == (3, 3)


def test_a_budget_too_small_for_any_value_spills_and_gives_identical_rows():
    stack, inputs = models.stack(), models.stack_inputs()
    tight = diffcore.compare(stack, stack, inputs, test_dtype="float16", memory_budget_mb=1)
    roomy = diffcore.compare(stack, stack, inputs, test_dtype="float16", memory_budget_mb=4096)
    assert tight.passed and len(tight.layers) > 20
    assert _rows(tight) == _rows(roomy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64])
def test_spilled_values_read_back_bit_for_bit(dtype):
    values = {"plain": (torch.randn(3, 5) * 100).to(dtype), "scalar": torch.tensor(7).to(dtype),
              "empty": torch.zeros(0, 4, dtype=dtype), "strided": (torch.randn(6, 4) * 9).to(dtype).t()}
    with SpillStore(0) as store:
        for key, value in values.items():
            store.put(key, value)
        assert store.spilled_bytes == sum(v.numel() * v.element_size() for v in values.values())
        for key, value in values.items():
            got = store.get(key)
            assert got.dtype == value.dtype and got.shape == value.shape and torch.equal(got, value)


def test_recorded_inputs_reuse_a_stored_output_unless_changed_in_place():
    out = torch.randn(4)
    with SpillStore(1 << 20) as store:
        store.put("a", out)
        store.put_call("b", (out, out), {})
        used = store.used
        out.mul_(2)  # an in-place op after the output was stored: the next call's input is another value
        store.put_call("c", (out,), {"x": 1})
        assert store.used == used + out.numel() * out.element_size()
        args, _ = store.calls()["b"]
        assert args[0] is args[1]  # one tensor passed twice stays one tensor
        assert torch.equal(args[0], out / 2)
        args, kwargs = store.calls()["c"]
        assert torch.equal(args[0], out) and kwargs == {"x": 1}
        args[0].zero_()  # a module re-run in place changes a copy, not the store
        assert torch.equal(store.calls()["c"][0][0], out)


def test_a_statistics_error_in_the_test_hooks_is_raised_as_itself_not_as_a_forward_failure(monkeypatch):
    from diffcore import comparison

    def broken(*args, **kwargs):
        raise diffcore.DiffcoreError("statistics backend exploded")

    monkeypatch.setattr(comparison, "drift_many", broken)
    with pytest.raises(diffcore.DiffcoreError, match=r"^statistics backend exploded$"):
        diffcore.compare(models.stack(), models.stack(), models.stack_inputs())


def test_inference_mode_tensors_without_a_version_counter_are_copied_not_referenced():
    with torch.inference_mode():
        out = torch.randn(4)
    with SpillStore(1 << 20) as store:
        store.put("a", out)
        store.put_call("b", (out,), {})
        assert store.used == 2 * out.numel() * out.element_size()
        assert torch.equal(store.calls()["b"][0][0], out)


def _run_modules(monkeypatch, runner):
    calls = []
    original = runner.run_module

    def counted(self, key, *args, **kwargs):
        calls.append(key)
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(runner, "run_module", counted)
    return calls


@pytest.mark.parametrize("test_dtype", [None, "float16", "bfloat16"])
def test_local_errors_reusing_the_passes_outputs_equal_the_per_call_re_runs(monkeypatch, test_dtype):
    """A module re-run on the inputs it already saw gives the outputs it gave: the reference's where rounding
    leaves its inputs as recorded, the test's where its own inputs were the reference's rounded. The rows
    (local errors included) are the ones re-running every call gives, with fewer re-runs."""
    from diffcore.capture.torch_runner import TorchRunner
    from diffcore.local import LocalComputer

    ref = models.stack(n_layers=4)
    test = models.with_tanh_gelu(ref, block=2)
    inputs = models.stack_inputs()
    reused_calls = _run_modules(monkeypatch, TorchRunner)
    reused = diffcore.compare(ref, test, inputs, test_dtype=test_dtype)
    monkeypatch.setattr(LocalComputer, "_kept_ref", lambda self, *a: None)
    monkeypatch.setattr(LocalComputer, "_kept_test", lambda self, *a: None)
    n_reused = len(reused_calls)
    rerun = diffcore.compare(ref, test, inputs, test_dtype=test_dtype)
    assert sum(r.local_rel_l2 is not None for r in reused.layers) > 20
    assert _rows(reused) == _rows(rerun)
    n_rerun = len(reused_calls) - n_reused
    # float32: no reference re-run at all; rounded sides: at least the test's first calls are not re-run
    assert n_reused <= (n_rerun / 2 if test_dtype is None else n_rerun - 1), (n_reused, n_rerun)
