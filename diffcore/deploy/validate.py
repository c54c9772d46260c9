"""``validate``: is a converted model ready to ship? One checklist of pass / fail / skipped-with-a-reason.

The checks, in order: the model matches its original within tolerance; its preprocessing artifacts are
present and the versions it was validated with (and tokenize the golden texts to the recorded ids); it
loads and runs on the target hardware; it reproduces the golden outputs here; and, for an ONNX model, the
export checks (opset, dynamic axes, signature). A check that cannot run here is skipped with the reason,
never passed.

An ONNX model is first loaded (and run once) in a child process (loadguard.py): an ONNX Runtime crash fails
"target hardware" with the signal and, where diffcore knows it, the cause; the checks then run with the
known workaround, or are skipped. What diffcore or a converter changed in the model, and inputs cast to
the model's dtypes, are listed as findings (diffcore/findings.py).
"""
from __future__ import annotations

import datetime
import os

from .. import env
from .._deps import require
from ..errors import DiffcoreError, format_choices
from .artifacts import check_artifacts, check_tokens, declared_artifacts
from .checklist import FAIL, PASS, ChecklistResult, CheckRow, failed, passed, skipped
from .export_checks import CHECK_AXES, check_export
from .golden import GoldenIntegrityError, check_golden, load_golden
from .loadguard import diagnose

__all__ = ["validate", "CHECKS"]

CHECK_CONVERSION, CHECK_TARGET, CHECK_GOLDEN = "matches original", "target hardware", "golden set"
CHECKS = (CHECK_CONVERSION, "artifacts", "tokenizer", CHECK_TARGET, CHECK_GOLDEN)
_CPU, _CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
_GPU_PROVIDERS = (_CUDA, "TensorrtExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider")


def _is_onnx(model) -> bool:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model).endswith(".onnx")
    return type(model).__module__.split(".")[0] == "onnx"


def _spec_name(model) -> str:
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__


def _provider_names(providers) -> list:
    return [p[0] if isinstance(p, (tuple, list)) else p for p in providers or [_CPU]]


def _onnx_providers(device: str, providers):
    """``--device cuda[:N]`` for an ONNX model means the CUDA provider on that device."""
    if providers or not device.startswith("cuda"):
        return providers
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return [(_CUDA, {"device_id": index})]


# ------------------------------------------------------------------------------------------ target

def _hardware(manifest: dict, wants_gpu: bool, device: str) -> str:
    gpu = manifest.get("gpu") or {}
    devices = gpu.get("devices") or []
    if wants_gpu and devices:
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        g = devices[min(index, len(devices) - 1)]
        return (f"{g.get('name')} (compute capability {g.get('compute_capability')}, "
                f"{g.get('memory_total_mib')} MiB, driver {gpu.get('driver')})")
    cpu = manifest.get("cpu") or {}
    return f"CPU {cpu.get('model') or '?'} ({cpu.get('logical_cores')} cores)"


def _unavailable(model, device: str, providers) -> str:
    """Why the requested device/providers cannot run here ('' when they can)."""
    if _is_onnx(model):
        ort = require("onnxruntime", "running ONNX models")
        available = ort.get_available_providers()
        missing = [p for p in _provider_names(providers) if p not in available]
        if missing:
            return (f"{format_choices(missing)} not available here (onnxruntime {ort.__version__} offers "
                    f"{format_choices(available)})")
        return ""
    if device.startswith("cuda"):
        torch = require("torch", "running torch models")
        if not torch.cuda.is_available():
            return f"device {device} asked for, but torch {torch.__version__} sees no CUDA GPU here"
    return ""


def _target_gpu_missing(manifest: dict, target_gpu: str | None) -> str:
    """"" when no target GPU was named or one whose name contains it is here (nvidia-smi / NVML, via the
    environment manifest); else the failure's detail."""
    if not target_gpu:
        return ""
    names = [g.get("name", "") for g in (manifest.get("gpu") or {}).get("devices") or []]
    if any(target_gpu.lower() in n.lower() for n in names):
        return ""
    return f"no GPU named {target_gpu} here: found {', '.join(names) or 'none'}"


def _nonfinite(outputs: dict) -> str:
    import numpy as np

    from ..arrays import host_values

    for name, value in outputs.items():
        array = host_values(value)[0]
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            return f"output {name!r} has {bad} NaN/Inf value(s)"
    return ""


class _Target:
    """Opens and runs the model on the requested device/providers; the runner is reused by later checks."""

    def __init__(self, model, device, providers, target_gpu, sample, manifest):
        self.model, self.device, self.providers = model, device, providers
        self.target_gpu, self.sample, self.manifest = target_gpu, sample, manifest
        self.runner = None
        self.crashed = False  # a default ONNX Runtime session of the model crashed (in a child process)

    def check(self) -> CheckRow:
        """The target-hardware row; naming a target GPU that is not here fails it (never a skip or a pass:
        the model was not run where it will ship)."""
        row = self._check()
        missing = _target_gpu_missing(self.manifest, self.target_gpu)
        if missing and row.status != FAIL:
            ran = f"; the model {'ran' if row.status == PASS else 'was checked'} on {self._where()} instead"
            return failed(CHECK_TARGET, missing + ran, f"run 'diffcore validate --target-gpu "
                          f"{self.target_gpu}' on a machine with that GPU", **row.data)
        return row

    def _check(self) -> CheckRow:
        reason = _unavailable(self.model, self.device, self.providers)
        if reason:
            return skipped(CHECK_TARGET, reason, "run 'diffcore validate' on the target machine (with "
                           "onnxruntime-gpu / a CUDA build of torch there)")
        from ..spec import open_runner

        try:
            self.runner = open_runner(self.model, role="model", device=self.device, providers=self.providers)
            if self.sample is None:
                self.sample = _fallback_inputs(self.runner)
            crash = self._guard()
            if crash is not None and self.runner is None:
                return crash
            if self.sample is None:
                return crash or skipped(CHECK_TARGET, f"not run on {self._where()}: no inputs to run the model "
                                        "on", "give --inputs FILE.npz or a readable --golden DIR")
            outputs = self.runner.outputs(self.sample)
        except DiffcoreError as exc:
            self.close()
            return failed(CHECK_TARGET, f"the model does not load or run on {self._where()}: {exc}",
                          "fix the error named (missing operator or provider libraries, inputs that do not fit)")
        if crash is not None:
            return crash
        bad = _nonfinite(outputs)
        if bad:
            return failed(CHECK_TARGET, f"runs on {self._where()}, but {bad}",
                          "find where NaN/Inf appear: diffcore compare REF MODEL --inputs ...")
        return passed(CHECK_TARGET, f"loads and runs on {self._where()}: {self.runner.description}",
                      hardware=self._where())

    def _guard(self) -> CheckRow | None:
        """Load (and run once) the model with default session options in a child process first: a native
        ONNX Runtime crash there is this check's failure, not the death of validate. When an optimizer
        diffcore knows avoids the crash, the runner disables it and the other checks still run; otherwise
        the runner is closed (None)."""
        path = _onnx_path(self.model)
        if path is None or self.runner is None or not hasattr(self.runner, "disable_optimizers"):
            return None
        crash, avoid, cause = diagnose(path, self.providers, self._child_feed())
        if crash is None:
            return None
        self.crashed = True
        where = f"in a session with default options on {', '.join(_provider_names(self.providers))}"
        detail = f"ONNX Runtime crashed loading the model (or running it once): {crash.words()} {where}"
        data = {"crash": crash.words(), "signal": crash.signal or None, "disabled_optimizers": avoid}
        if avoid:
            self.runner.disable_optimizers(avoid)
            return failed(CHECK_TARGET, f"{detail}: {cause}; diffcore compares it with "
                          f"{'that optimizer' if len(avoid) == 1 else 'those optimizers'} disabled",
                          f"deploy with it disabled (onnxruntime.InferenceSession(path, options, providers=..., "
                          f"disabled_optimizers={avoid!r})) or with an onnxruntime release without the bug",
                          **data)
        self.close()
        return failed(CHECK_TARGET, f"{detail}; diffcore knows no cause for it, so the checks that run the "
                      "model are skipped", "reproduce it with onnxruntime alone; lower "
                      "SessionOptions.graph_optimization_level to find an optimizer at fault, and report it "
                      "to microsoft/onnxruntime", **data)

    def _child_feed(self):
        """The sample as the runner feeds it (names and dtypes checked), or None."""
        if self.sample is None:
            return None
        try:
            return self.runner.prepare_inputs(self.sample)
        except DiffcoreError:
            return None  # the in-process run reports the problem

    def close(self) -> None:
        if self.runner is not None and self.runner is not self.model:
            self.runner.close()
        self.runner = None

    def _wants_gpu(self) -> bool:
        return self.device.startswith("cuda") or any(p in _GPU_PROVIDERS
                                                     for p in _provider_names(self.providers))

    def _where(self) -> str:
        return _hardware(self.manifest, self._wants_gpu(), self.device)


def _onnx_path(model) -> str | None:
    """The .onnx file a child process can load (a ModelProto is not guarded: it may exceed 2 GiB)."""
    if isinstance(model, (str, os.PathLike)) and _is_onnx(model) and os.path.isfile(model):
        return os.fspath(model)
    return None


def _fallback_inputs(runner):
    """The model's example inputs, or inputs synthesized from static shapes; None when neither exists."""
    from ..inputs import resolve_inputs

    try:
        data, _ = resolve_inputs(None, runner, runner)
    except DiffcoreError:
        return None
    return data


# ------------------------------------------------------------------------------------------ other rows

def _conversion_row(reference, runner, sample, atol, rtol) -> CheckRow:
    from ..comparison import compare

    if reference is None:
        return skipped(CHECK_CONVERSION, "no original model given", "give the original with --reference "
                       "(a torch factory file.py:factory, or the source .onnx)")
    if runner is None:
        return skipped(CHECK_CONVERSION, "the model cannot run here (see 'target hardware')",
                       "make the model run here (see 'target hardware'), or validate on the target machine")
    report = compare(reference, runner, sample, atol=atol, rtol=rtol)
    worst = max((o.rel_l2 for o in report.outputs), default=0.0)
    data = {"verdict": report.verdict, "summary": report.summary, "layers": len(report.layers),
            "outputs_worst_rel_l2": worst, "findings": report.findings,
            "first_divergence": None if report.first_divergence is None else report.first_divergence.name}
    if report.passed:
        return passed(CHECK_CONVERSION, f"matches the original, {reference.description}: outputs worst rel L2 "
                      f"{worst * 100:.3g} %, {len(report.layers)} layers compared, no divergence", **data)
    return failed(CHECK_CONVERSION, f"differs from the original, {reference.description}: {report.summary}",
                  "see the layer table of 'diffcore compare REF MODEL --inputs ...' and fix the layer it "
                  "names (or give --atol/--rtol if this drift is expected)", **data)


def _golden_row(golden, golden_error, runner, model, atol, rtol) -> CheckRow:
    if golden is None and golden_error is None:
        return skipped(CHECK_GOLDEN, "no golden set given", "record one on the reference machine with "
                       "'diffcore golden record MODEL --inputs X.npz --out DIR' and pass --golden DIR")
    if golden_error is not None:
        return failed(CHECK_GOLDEN, str(golden_error), "restore the golden directory, or re-record it")
    if runner is None:
        return skipped(CHECK_GOLDEN, "the model cannot run here (see 'target hardware')",
                       "run 'diffcore validate' on the target machine")
    result = check_golden(model, golden, atol=atol, rtol=rtol, runner=runner, verify_artifacts=False)
    data = result.to_dict()
    data.pop("environment", None)  # the checklist carries the manifest once
    if result.passed:
        return passed(CHECK_GOLDEN, result.summary(), **data)
    return failed(CHECK_GOLDEN, result.summary(), "the outputs here drift from the golden beyond tolerance: "
                  "check the numerics-relevant environment differences and the per-layer report "
                  "(diffcore golden check MODEL DIR); widen --atol/--rtol only if the drift is expected on "
                  "this hardware", **data)


def _load(golden):
    """(Golden or None, the integrity error or None); other errors (no such directory) propagate."""
    if golden is None:
        return None, None
    try:
        return load_golden(golden), None
    except GoldenIntegrityError as exc:
        return None, exc


def _sample(golden, inputs):
    if golden is not None:
        return dict(golden.inputs)
    if isinstance(inputs, (str, os.PathLike)):
        from ..files import read_npz

        return read_npz(inputs, "inputs")
    return dict(inputs) if inputs is not None else None


def _preflight(model, reference, atol, rtol) -> None:
    from ..spec import check_spec

    if (atol is None) != (rtol is None):
        raise DiffcoreError("give atol and rtol together, or neither")
    for spec, role in ((model, "MODEL"), (reference, "REFERENCE")):
        if isinstance(spec, (str, os.PathLike)):
            check_spec(os.fspath(spec), role)


# ------------------------------------------------------------------------------------------ validate

def validate(model, *, reference=None, golden=None, inputs=None, artifacts=None, device: str = "cpu",
             providers=None, target_gpu: str | None = None, atol=None, rtol=None,
             target_opset: int | None = None, dynamic_axes=None, strict: bool = False) -> ChecklistResult:
    """Run the deployment checklist on ``model``.

    Args:
        model: the converted model spec (a .onnx path, a trace, file.py:factory, a torch module, ...).
        reference: the original model spec; without it "matches original" is skipped.
        golden: a golden directory (``record_golden``); without it the golden and tokenizer checks are skipped.
        inputs: sample inputs ({name: array} or .npz) when there is no golden.
        artifacts: files that travel with the model (default: ``<model stem>.artifacts.json`` beside it).
        device, providers: the target to run on (``device="cuda"`` means the CUDA provider for ONNX models).
        target_gpu: a substring of the target GPU's name; the target check fails on machines without it.
        atol, rtol: tolerance for the comparisons (both or neither).
        target_opset: the highest opset the target runtime supports.
        dynamic_axes: {input: [axis, ...]} that must be dynamic (default: batch/sequence axes guessed).
        strict: a skipped check fails the checklist (``--strict``).

    Returns:
        ChecklistResult: truthy when no check failed; ``rows`` in checklist order; ``to_dict()`` for JSON.

    Raises:
        DiffcoreError: a model file that does not exist, an original that cannot be loaded, a golden
            directory that does not exist, bad arguments. (A broken golden is a failed check instead.)
    """
    _preflight(model, reference, atol, rtol)
    if _is_onnx(model):
        _quiet_onnxruntime()
        providers = _onnx_providers(device, providers)
    loaded, golden_error = _load(golden)
    declared = declared_artifacts(model, artifacts)
    manifest = env.collect()
    target = _Target(model, device, providers, target_gpu, _sample(loaded, inputs), manifest)
    ref_runner = _open_reference(reference, device)
    try:
        rows = _rows(model, target, ref_runner, loaded, golden_error, declared, atol, rtol, target_opset,
                     dynamic_axes)
        findings = _findings(target.runner, rows)
    finally:
        target.close()
        if ref_runner is not None and ref_runner is not reference:
            ref_runner.close()
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return ChecklistResult(rows, _spec_name(model), manifest, created, findings=findings, strict=strict)


def _quiet_onnxruntime() -> None:
    """Keep ONNX Runtime's own coloured log off stderr: a failed check says what went wrong in its row, and
    the checks provoke errors on purpose (growing dynamic axes). Only its fatal messages remain."""
    try:
        import onnxruntime
    except ImportError:
        return
    onnxruntime.set_default_logger_severity(3)


def _findings(runner, rows) -> list:
    """What diffcore or a converter changed (the model's runner, the comparison with the original) and the
    runner's warnings (inputs cast to the model's dtypes), one entry per message."""
    found = list(getattr(runner, "findings", []))
    for row in rows:
        found += row.data.get("findings") or []
    found += [{"kind": "warning", "message": w} for w in getattr(runner, "warnings", [])]
    return list({f["message"]: f for f in found}.values())


def _open_reference(reference, device):
    if reference is None:
        return None
    from ..spec import open_runner

    return open_runner(reference, role="ref", device=device)


def _rows(model, target, ref_runner, golden, golden_error, declared, atol, rtol, target_opset,  # noqa: PLR0913
          dynamic_axes) -> list:
    target_row = target.check()
    runner = target.runner  # None when the model could not be opened and run here
    rows = [_guarded(CHECK_CONVERSION, _conversion_row, ref_runner, runner, target.sample, atol, rtol),
            _guarded("artifacts", check_artifacts, declared, None if golden is None else golden.artifacts or [])]
    if golden_error is not None:
        rows.append(skipped("tokenizer", "the golden set cannot be read (see 'golden set')",
                            "restore the golden directory, or re-record it"))
    elif golden is None:
        rows.append(skipped("tokenizer", "no golden set given (the golden holds the texts and token ids)",
                            "record the golden with --texts FILE and a tokenizer artifact declared"))
    else:
        rows.append(_guarded("tokenizer", check_tokens, declared, golden.texts, golden.tokens))
    rows.append(target_row)
    rows.append(_guarded(CHECK_GOLDEN, _golden_row, golden, golden_error, runner, model, atol, rtol))
    if _is_onnx(model):
        rows += _export_rows(model, target, ref_runner, golden, target_opset, dynamic_axes)
    return rows


def _export_rows(model, target, ref_runner, golden, target_opset, dynamic_axes) -> list:
    if not isinstance(model, (str, os.PathLike)):
        return [skipped("export", "the export checks need the model as a .onnx file",
                        "save the model (onnx.save) and validate the file")]
    providers = target.providers if target.runner is not None else None
    # the dynamic-axes check runs a default session in this process: one that crashes would end validate
    sample = None if target.crashed else target.sample
    rows = check_export(model, sample=sample, reference=ref_runner, golden=None if target.crashed else golden,
                        target_opset=target_opset, dynamic_axes=dynamic_axes, providers=providers)
    if target.crashed:
        rows = [skipped(CHECK_AXES, "not run: a default ONNX Runtime session crashes on this model (see "
                        "'target hardware')", "fix the crash first") if r.check == CHECK_AXES else r
                for r in rows]
    return rows


def _guarded(name: str, fn, *args) -> CheckRow:
    """``fn(*args)``, a user error becoming this check's failure (the other checks still run)."""
    try:
        return fn(*args)
    except DiffcoreError as exc:
        return failed(name, str(exc), "fix the problem named and run the check again")
