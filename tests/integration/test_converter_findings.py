"""What the float16 converter and diffcore change in a model is reported (diffcore/findings.py), validate
survives an ONNX Runtime crash (diffcore/deploy/loadguard.py), and lossless input casts are warned about.

Models are built and exported here; the float16 conversions are onnxconverter-common's, run by diffcore
(``test_dtype="float16"``) or by the user (the converted file as the test side).
"""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import diffcore  # noqa: E402
from diffcore import deploy  # noqa: E402
from diffcore.deploy import loadguard  # noqa: E402
from diffcore.errors import DiffcoreError  # noqa: E402
from tests.integration import models  # noqa: E402

nn = torch.nn
EXPORTERS = {"torchscript": False, "dynamo": True}
CLAMP_CAUSE = re.compile(r"float16 converter clamped constant .*\(200000 -> 10000\)")


class Scale(nn.Module):
    def forward(self, h):
        return h / 200000.0  # a divisor past the converter's 1e4 limit


class Mask(nn.Module):
    def forward(self, h, keep):
        return torch.softmax(h.masked_fill(~keep, -1e9), dim=-1)  # a mask value past -1e4


class Clamped(nn.Module):
    """Linear -> Div by 200000 -> masked softmax -> Linear: two constants the converter clamps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj, self.scale, self.mask, self.head = nn.Linear(16, 16), Scale(), Mask(), nn.Linear(16, 4)
        with torch.no_grad():
            self.head.weight[0, 0] = 1e-9  # raised to the converter's 1e-7 floor: true, but far below precision

    def forward(self, x, keep):
        return self.head(self.mask(self.scale(self.proj(x)), keep))


class CastsIds(nn.Module):
    """A float Cast of an integer input: onnxconverter-common leaves that Cast targeting float32."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 8)

    def forward(self, x, ids):
        return self.lin(x) * ids.float()


class Embeds(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.lin = nn.Embedding(50, 8), nn.Linear(8, 4)

    def forward(self, input_ids):
        return self.lin(self.emb(input_ids))


def _clamped_inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[:, 12:] = False
    return {"x": torch.randn(2, 16, generator=g) * 100, "keep": keep}


def _export(model, inputs, path, dynamo) -> str:
    return models.export(model, inputs, path, dynamo=dynamo)


@pytest.fixture(scope="module")
def clamped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clamped")
    inputs = _clamped_inputs()
    paths = {name: _export(Clamped().eval(), inputs, folder / f"clamped_{name}.onnx", dynamo)
             for name, dynamo in EXPORTERS.items()}
    return paths, {k: v.numpy() for k, v in inputs.items()}


def _user_converted(path, out) -> str:
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(float16.convert_float_to_float16(onnx.load(path), keep_io_types=True), str(out))
    return str(out)


def _clamp_findings(report) -> list:
    return [f for f in report.findings if f["kind"] == "clamped-constant" and f["tensor"]]


def _assert_div_is_the_cause(report):
    div = next(r for r in report.layers if r.op_type == "Div")
    assert div.status == "diverged", (div.status, div.cause)
    assert CLAMP_CAUSE.search(div.cause), div.cause
    assert any(CLAMP_CAUSE.search(n) for n in div.notes), div.notes
    assert report.first_divergence is not None and report.first_divergence.test_tensor == div.test_tensor
    assert not any(r.status == "carried" and "clamped" in r.cause for r in report.layers)


def _assert_clamps_reported(report):
    found = _clamp_findings(report)
    slight = [f for f in report.findings if f["kind"] == "clamped-constant" and not f["tensor"]]
    assert len(slight) == 1 and slight[0]["count"] == 1, slight
    assert re.search(r"also changed 1 value\(s\) in 1 tensor\(s\) .* by less than float16's precision of each "
                     r"tensor \(e\.g\. 1e-09 -> 1\.19209e-07", slight[0]["message"]), slight[0]["message"]
    by_before = {tuple(f["before"]): f for f in found}
    assert (200000.0, 200000.0) in by_before and by_before[200000.0, 200000.0]["after"] == [10000.0, 10000.0]
    assert (-1e9, -1e9) in by_before and by_before[-1e9, -1e9]["after"] == [-10000.0, -10000.0]
    for finding in found:
        assert finding["nodes"] and finding["values"] and finding["count"] >= 1
    data = json.loads(report.to_json())
    assert any("200000 -> 10000" in f["message"] for f in data["findings"])
    assert diffcore.DiffReport.from_json(report.to_json()).findings == data["findings"]
    text = " ".join(report.to_text(width=200).split())  # the view wraps long lines
    assert re.search(r"Findings \(\d+\)", text) and "200000 -> 10000" in text and "-1e+09 -> -10000" in text
    assert "200000 -&gt; 10000" in report.to_html() or "200000 -> 10000" in report.to_html()


# ------------------------------------------------------------------------------------------- clamps

@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_clamps_of_diffcores_float16_conversion_are_findings_and_the_div_is_the_cause(clamped, exporter):
    paths, inputs = clamped
    report = diffcore.compare(paths[exporter], paths[exporter], inputs, test_dtype="float16")
    assert not report.passed
    _assert_clamps_reported(report)
    _assert_div_is_the_cause(report)


def test_clamps_of_a_float16_file_the_user_converted_are_found_against_the_original(clamped, tmp_path):
    paths, inputs = clamped
    converted = _user_converted(paths["torchscript"], tmp_path / "user_fp16.onnx")
    report = diffcore.compare(paths["torchscript"], converted, inputs)
    _assert_clamps_reported(report)
    _assert_div_is_the_cause(report)


def test_a_float32_comparison_has_no_findings(clamped):
    paths, inputs = clamped
    report = diffcore.compare(paths["torchscript"], paths["torchscript"], inputs)
    assert report.passed and report.findings == []
    assert "Findings" not in report.to_text()


def test_the_reported_clamps_are_what_the_converter_changed_and_nothing_else(clamped, tmp_path):
    """Every float constant of the converted model equals the float16 rounding of the original except the
    values the findings name."""
    from onnx import numpy_helper

    from diffcore import findings

    paths, _ = clamped
    converted = onnx.load(_user_converted(paths["torchscript"], tmp_path / "user_fp16.onnx"))
    before, after = findings.float_constants(onnx.load(paths["torchscript"]).graph), \
        findings.float_constants(converted.graph)
    found = findings.clamps(before, after)
    named = {f["tensor"] for f in found if f["tensor"]} | {t for f in found for t in f.get("tensors", ())}
    assert len(named) == 3  # the divisor, the mask value and the tiny head weight
    for name, tensor in after.items():
        old = numpy_helper.to_array(before[name]).astype(np.float16)
        assert np.array_equal(numpy_helper.to_array(tensor), old) == (name not in named), name


# ------------------------------------------------------------------------------------------- repairs

@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_retargeted_casts_and_disabled_optimizers_are_repair_findings(tmp_path, exporter):
    inputs = {"x": torch.randn(2, 8), "ids": torch.ones(2, 8, dtype=torch.int64)}
    path = _export(CastsIds().eval(), inputs, tmp_path / "casts.onnx", EXPORTERS[exporter])
    report = diffcore.compare(path, path, {k: v.numpy() for k, v in inputs.items()}, test_dtype="float16")
    repairs = [f["message"] for f in report.findings if f["kind"] == "repair"]
    assert any(re.search(r"retargeted 1 Cast node.*onnxconverter-common#320", m) for m in repairs), repairs
    assert any(re.search(r"NchwcTransformer disabled.*onnxruntime#15494", m) for m in repairs), repairs
    assert "repair: diffcore retargeted 1 Cast" in " ".join(report.to_text().split())


def test_float16_runner_lists_its_findings_with_the_nodes_that_read_each_clamp(clamped):
    from diffcore.capture.onnx import OnnxRunner

    paths, inputs = clamped
    with OnnxRunner(paths["torchscript"], float16=True) as half:
        half.outputs(inputs)
        found = half.findings
    div = next(f for f in found if f["kind"] == "clamped-constant" and f["before"][0] == 200000.0)
    assert div["nodes"] == ["/scale/Div"] and div["values"] == ["/scale/Div_output_0"]
    assert re.fullmatch(r"the float16 converter clamped constant '.+' \(200000 -> 10000\), read by /scale/Div",
                        div["message"])


# ------------------------------------------------------------------------------------------- input casts

@pytest.fixture(scope="module")
def embeds(tmp_path_factory):
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    path = _export(Embeds().eval(), {"input_ids": ids}, tmp_path_factory.mktemp("embeds") / "embeds.onnx",
                   dynamo=False)
    return path, ids.numpy()


WIDENED = re.compile(r"input 'input_ids' was given as int32 and widened to int64 for .+; a deployed ONNX "
                     r"Runtime session rejects int32 here — cast it in your preprocessing")


def test_int32_ids_fed_to_an_int64_input_are_compared_with_a_widening_warning(embeds):
    path, ids = embeds
    report = diffcore.compare(path, path, {"input_ids": ids.astype(np.int32)})
    assert report.passed and report.outputs and report.outputs[0].rel_l2 == 0
    assert any(WIDENED.fullmatch(w) for w in report.warnings), report.warnings
    assert "widened to int64" in " ".join(report.to_text().split())
    clean = diffcore.compare(path, path, {"input_ids": ids})
    assert not any("widened" in w for w in clean.warnings)


def test_floats_fed_to_an_integer_input_are_still_refused(embeds):
    path, ids = embeds
    with pytest.raises(DiffcoreError, match=r"input 'input_ids' of .* expects int64 but was given float32: "
                                            r"floats and integers are not converted into each other"):
        diffcore.compare(path, path, {"input_ids": ids.astype(np.float32)})


def test_validate_reports_the_widening_of_inputs_it_feeds(embeds, tmp_path):
    path, ids = embeds
    np.savez(tmp_path / "ids.npz", input_ids=ids.astype(np.int32))
    result = deploy.validate(path, inputs=tmp_path / "ids.npz")
    assert any(WIDENED.fullmatch(f["message"]) for f in result.findings), result.findings
    assert "widened to int64" in " ".join(result.to_text().split())
    assert any(WIDENED.fullmatch(f["message"]) for f in result.to_dict()["findings"])


# ------------------------------------------------------------------------------------------- crashes

def test_a_real_segfault_in_the_child_is_reported_with_its_signal(embeds):
    path, _ = embeds
    crash = loadguard.load_in_child(path, code="import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert crash is not None and crash.signal == "SIGSEGV" and crash.returncode == -signal.SIGSEGV
    assert crash.words() == "killed by SIGSEGV (exit status 139)"
    assert loadguard.load_in_child(path) is None  # the real child: ONNX Runtime loads the model


# A stand-in for ORT's crash, loaded at interpreter start (sitecustomize) in the CLI's process and its
# children: any default-options session of a file whose name says "crashes" dies of a real SIGSEGV unless
# NchwcTransformer is disabled ("nchwc"), or always ("always").
SEGV_SITE = textwrap.dedent('''
    import os, signal
    MODE = os.environ.get("DIFFCORE_TEST_SEGV")
    if MODE:
        import onnxruntime as ort
        _init = ort.InferenceSession.__init__

        def _crashing(self, model, sess_options=None, providers=None, provider_options=None, **kwargs):
            level = getattr(sess_options, "graph_optimization_level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            nchwc_on = "NchwcTransformer" not in (kwargs.get("disabled_optimizers") or [])
            if isinstance(model, str) and "crashes" in model and \\
                    level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL and (MODE == "always" or nchwc_on):
                os.kill(os.getpid(), signal.SIGSEGV)
            _init(self, model, sess_options, providers, provider_options, **kwargs)

        ort.InferenceSession.__init__ = _crashing
''')


@pytest.fixture(scope="module")
def crashing(tmp_path_factory, clamped):
    folder = tmp_path_factory.mktemp("crashing")
    paths, inputs = clamped
    model = folder / "crashes_fp16.onnx"
    from diffcore.capture.onnx import to_float16

    onnx.save(to_float16(onnx.load(paths["torchscript"]), keep_io_types=True), str(model))
    np.savez(folder / "inputs.npz", **inputs)
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(SEGV_SITE)
    return {"model": str(model), "inputs": str(folder / "inputs.npz"), "site": str(folder / "site"),
            "original": paths["torchscript"]}


def _validate_cli(crashing, mode, *extra):
    env = dict(os.environ, DIFFCORE_TEST_SEGV=mode,
               PYTHONPATH=os.pathsep.join([crashing["site"], os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "diffcore", "validate", crashing["model"], "--inputs",
                           crashing["inputs"], *extra], capture_output=True, text=True, env=env, timeout=600, check=False)


def test_the_crash_stand_in_really_kills_a_default_session(crashing):
    env = dict(os.environ, DIFFCORE_TEST_SEGV="nchwc", PYTHONPATH=crashing["site"])
    done = subprocess.run([sys.executable, "-c", f"import onnxruntime as o; o.InferenceSession({crashing['model']!r})"],
                          env=env, capture_output=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGSEGV


def test_validate_reports_an_ort_crash_with_its_known_cause_and_still_checks_the_model(crashing):
    done = _validate_cli(crashing, "nchwc", "--reference", crashing["original"], "--json")
    assert done.returncode == 1, done.stderr[-2000:]
    result = json.loads(done.stdout)
    target = next(c for c in result["checks"] if c["check"] == "target hardware")
    assert target["status"] == "fail"
    assert re.search(r"ONNX Runtime crashed loading the model \(or running it once\): killed by SIGSEGV "
                     r"\(exit status 139\) in a session with default options on CPUExecutionProvider: "
                     r"NchwcTransformer on float16 graphs, microsoft/onnxruntime#15494; diffcore compares it "
                     r"with that optimizer disabled", target["detail"]), target["detail"]
    assert "disabled_optimizers=['NchwcTransformer']" in target["fix"]
    checks = {c["check"]: c for c in result["checks"]}
    assert checks["matches original"]["status"] == "fail"  # compared (with the repair): the clamped Div
    assert "clamped constant" in checks["matches original"]["detail"]
    assert checks["export: dynamic axes"]["status"] == "skip" and "crashes" in checks["export: dynamic axes"]["detail"]
    kinds = {f["kind"] for f in result["findings"]}
    assert {"clamped-constant", "repair"} <= kinds


def test_validate_reports_an_unknown_ort_crash_and_skips_what_needs_the_model(crashing):
    done = _validate_cli(crashing, "always")
    assert done.returncode == 1, done.stderr[-2000:]
    assert re.search(r"target hardware\s+FAIL\s+ONNX Runtime crashed loading the model", done.stdout), done.stdout
    assert "diffcore knows no cause" in " ".join(done.stdout.split())
    assert re.search(r"golden set\s+SKIP", done.stdout)
