"""Golden sets: a model's inputs and expected outputs, recorded once and checked on any machine.

A golden directory holds::

    golden.json   schema diffcore.golden/1: the model, input/output names, dtypes, shapes and sha256s, the
                  environment manifest, the tolerance, the artifacts' sha256/size, golden texts and their
                  token ids, and every other file with its sha256 and size; sealed by the sha256 of its
                  own canonical JSON ("seal")
    inputs.npz    the inputs (arrays a00000, a00001, ... named in golden.json)
    outputs.npz   the expected outputs (same scheme)
    trace.npz     optional: every layer, a diffcore trace (``--traces``)

Nothing is read before its hash is verified: an edited or truncated file is reported with what to do, never
loaded. A golden is written into a temporary sibling folder and swapped in whole when complete
(golden_store.py), so an interrupted record leaves the previous golden intact; an existing golden is
replaced only with ``force``. The ``seal`` detects corruption, not forgery; a keyed seal (``hmac``) is
added and checked when a key is given (golden_store.py).
"""
from __future__ import annotations

import datetime
import hmac
import json
import os
from dataclasses import dataclass, field

import numpy as np

from .. import env
from ..arrays import array_sha256, host_values
from ..errors import DiffcoreError, format_choices
from ..files import encode_nonfinite, read_json, read_npz, sha256_file, write_json, write_npz
from .artifacts import declared_artifacts, fingerprint, tokenize
from .envdiff import env_diff
from .golden_store import canonical as _canonical
from .golden_store import hmac_of, install_folder, new_folder, prepare_folder, recover, resolve_key, seal_of

__all__ = ["Golden", "GoldenIntegrityError", "GoldenResult", "OutputCheck", "check_golden", "load_golden",
           "record_golden", "SCHEMA"]

SCHEMA = "diffcore.golden/1"
MANIFEST, INPUTS, OUTPUTS, TRACE = "golden.json", "inputs.npz", "outputs.npz", "trace.npz"
_KNOWN_FILES = (INPUTS, OUTPUTS, TRACE)
GOLDEN_FILES = (MANIFEST,) + _KNOWN_FILES


class GoldenIntegrityError(DiffcoreError):
    """A golden file is missing, truncated or edited: its hash does not match the recorded one."""


# ------------------------------------------------------------------------------------------- arrays

def _pack(values: dict, dtypes: dict | None = None) -> tuple[dict, list]:
    """({a00000: array}, [{name, array, dtype, stored, shape, sha256}]) for named values; ``dtypes`` keeps
    logical dtypes the host arrays lost (bfloat16 held as float32)."""
    arrays, entries = {}, []
    for i, (name, value) in enumerate(values.items()):
        array, dtype = host_values(value)
        dtype = (dtypes or {}).get(name, dtype)
        key = f"a{i:05d}"
        arrays[key] = np.ascontiguousarray(array)
        entries.append({"name": name, "array": key, "dtype": dtype, "stored": array.dtype.str,
                        "shape": list(array.shape), "sha256": array_sha256(array)})
    return arrays, entries


def _unpack(arrays: dict, entries: list, path: str) -> dict:
    out = {}
    for entry in entries:
        array = arrays.get(entry["array"])
        if array is None or array.dtype.str != entry["stored"] or list(array.shape) != entry["shape"] \
                or array_sha256(array) != entry["sha256"]:
            raise GoldenIntegrityError(f"golden file {path}: array {entry['name']!r} does not match its "
                                       f"recorded dtype, shape or sha256: {_RESTORE}")
        out[entry["name"]] = array
    return out


_RESTORE = ("restore the golden directory from where it is kept, or re-record it on the reference machine "
            "(diffcore golden record MODEL --inputs ... --out DIR --force)")


# ------------------------------------------------------------------------------------------- sealing

def _seal(meta: dict) -> str:
    return seal_of(meta)


# ------------------------------------------------------------------------------------------- the set

@dataclass
class Golden:
    """A golden set in memory: inputs, expected outputs, and its manifest (``meta``, golden.json).

    Attributes:
        inputs, outputs: {name: NumPy array} (bfloat16 outputs widened to float32; ``meta`` keeps the dtype).
        meta: the manifest: model, inputs/outputs entries, environment, tolerance, artifacts, texts, tokens.
        directory: where it was loaded from or saved to.
        trace: a ``diffcore.capture.trace.Trace`` of every layer, or the path of a verified trace file, or None.
    """

    inputs: dict
    outputs: dict
    meta: dict
    directory: str | None = None
    trace: object = None

    @property
    def environment(self) -> dict:
        return self.meta.get("environment") or {}

    @environment.setter
    def environment(self, value: dict) -> None:
        self.meta["environment"] = value

    @property
    def tolerance(self) -> dict:
        return self.meta.get("tolerance") or {"atol": None, "rtol": None}

    @property
    def texts(self) -> list:
        return self.meta.get("texts") or []

    @property
    def tokens(self) -> dict:
        return self.meta.get("tokens") or {}

    @property
    def artifacts(self) -> list | None:
        return self.meta.get("artifacts")

    def output_dtype(self, name: str) -> str:
        return next(e["dtype"] for e in self.meta["outputs"] if e["name"] == name)

    def save(self, directory, *, force: bool = False, key=None) -> str:
        """Write the golden set to ``directory`` (its parent must exist), replacing it as a whole.

        Everything is written into a temporary sibling folder first and swapped in only when complete, so
        an interruption leaves the previous golden intact. With a key (``key`` or $DIFFCORE_GOLDEN_KEY),
        golden.json also gets a keyed seal (HMAC-SHA256).

        Raises:
            DiffcoreError: the directory holds a golden already and ``force`` is False, holds other files,
                or cannot be written.
        """
        directory = _prepare_directory(directory, force)
        key = resolve_key(key)
        staged = new_folder(directory)
        try:
            meta = self._write_files(staged, key)
        except BaseException:
            import shutil

            shutil.rmtree(staged, ignore_errors=True)
            raise
        install_folder(staged, directory)
        self.meta, self.directory = meta, directory
        if isinstance(self.trace, str):
            self.trace = os.path.join(directory, TRACE)
        return directory

    def _write_files(self, staged: str, key) -> dict:
        meta = json.loads(_canonical(self.meta))  # a copy, JSON-normalised so the seal round-trips
        meta.pop("hmac", None)
        files = {}
        for name, values in ((INPUTS, self.inputs), (OUTPUTS, self.outputs)):
            section = name.split(".")[0]
            arrays, entries = _pack(values, {e["name"]: e["dtype"] for e in meta.get(section) or []})
            meta[section] = entries
            files[name] = _write(os.path.join(staged, name), lambda p, a=arrays: write_npz(p, a, what="golden"))
        if self.trace is not None:
            files[TRACE] = _write(os.path.join(staged, TRACE), self._save_trace)
        meta.update(schema=SCHEMA, files=files)
        meta["seal"] = _seal(meta)
        if key is not None:
            meta["hmac"] = hmac_of(meta, key)
        write_json(os.path.join(staged, MANIFEST), meta, what="golden manifest")
        return meta

    def _save_trace(self, path: str) -> None:
        from ..capture.trace import Trace

        trace = self.trace
        if not isinstance(trace, Trace):
            trace = Trace.load(trace)  # a loaded golden's trace file: verified again as it is copied
        trace.save(path)

    def summary(self) -> str:
        """Where and when it was recorded, in one line."""
        return f"recorded {self.meta.get('created', '?')} on {_machine(self.environment)}"


def _write(path: str, write) -> dict:
    write(path)
    return {"sha256": sha256_file(path), "size": os.path.getsize(path)}


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _prepare_directory(directory, force: bool) -> str:
    return prepare_folder(directory, force, _KNOWN_FILES, MANIFEST)


def _machine(manifest: dict) -> str:
    """'NVIDIA H100 80GB HBM3 (cc 9.0), torch 2.4.0, onnxruntime 1.18' or the CPU model."""
    gpus = (manifest.get("gpu") or {}).get("devices") or []
    where = ", ".join(f"{g.get('name')} (cc {g.get('compute_capability')})" for g in gpus) or \
        f"CPU {(manifest.get('cpu') or {}).get('model') or '?'}"
    packages = manifest.get("packages") or {}
    versions = [f"{p} {packages[p]}" for p in ("torch", "onnxruntime", "onnxruntime-gpu") if packages.get(p)]
    return ", ".join([where] + versions)


# ------------------------------------------------------------------------------------------- loading

def load_golden(directory, *, key=None) -> Golden:
    """Read a golden directory, verifying golden.json's seal (and its keyed seal, given a key: ``key`` or
    $DIFFCORE_GOLDEN_KEY) and every file's size and sha256 before reading it.

    Raises:
        GoldenIntegrityError: a file is missing, truncated or edited (the message says which and what to do).
        DiffcoreError: not a golden directory, or another schema.
    """
    directory = os.path.abspath(os.fspath(directory))
    manifest_path = os.path.join(directory, MANIFEST)
    recover(directory)
    if not os.path.isdir(directory):
        raise DiffcoreError(f"golden directory not found: {directory}")
    if not os.path.isfile(manifest_path):
        raise GoldenIntegrityError(f"{directory} is not a golden set: {MANIFEST} is missing ({_RESTORE})")
    try:
        meta = read_json(manifest_path, "golden manifest")
    except DiffcoreError as exc:
        raise GoldenIntegrityError(f"{exc}: {_RESTORE}") from None
    _check_manifest(meta, manifest_path)
    _check_key(meta, manifest_path, resolve_key(key))
    for name, entry in meta["files"].items():
        _verify_file(directory, name, entry)
    inputs = _unpack(read_npz(os.path.join(directory, INPUTS), "golden"), meta["inputs"], INPUTS)
    outputs = _unpack(read_npz(os.path.join(directory, OUTPUTS), "golden"), meta["outputs"], OUTPUTS)
    trace = os.path.join(directory, TRACE) if TRACE in meta["files"] else None
    return Golden(inputs, outputs, meta, directory, trace)


def _check_manifest(meta, path: str) -> None:
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        got = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
        raise DiffcoreError(f"{path} has schema {got!r}, expected {SCHEMA!r} (not a diffcore golden set, or "
                            "written by another diffcore version)")
    if meta.get("seal") != _seal(meta):
        raise GoldenIntegrityError(f"golden manifest {path} fails its seal (the sha256 of its content): it "
                                   f"was edited or truncated; {_RESTORE}")
    from ..schemas import validate

    try:
        validate(meta, "golden", f"golden manifest {path}")
    except DiffcoreError as exc:
        raise GoldenIntegrityError(f"{exc}; {_RESTORE}") from None
    files = meta.get("files")
    if not isinstance(files, dict) or INPUTS not in files or OUTPUTS not in files:
        raise GoldenIntegrityError(f"golden manifest {path} lists no {INPUTS}/{OUTPUTS}: {_RESTORE}")


def _check_key(meta: dict, path: str, key) -> None:
    if key is None:
        return
    if "hmac" not in meta:
        raise GoldenIntegrityError(f"golden manifest {path} has no keyed seal, but a key was given: it was "
                                   "recorded without a key, or its keyed seal was removed; re-record it with "
                                   "the key")
    if not hmac.compare_digest(str(meta["hmac"]), hmac_of(meta, key)):
        raise GoldenIntegrityError(f"golden manifest {path} fails its keyed seal (HMAC-SHA256): it was edited "
                                   f"or recorded with another key; {_RESTORE}")


def _verify_file(directory: str, name: str, entry: dict) -> None:
    if name not in _KNOWN_FILES:
        raise GoldenIntegrityError(f"golden manifest lists an unknown file {name!r}: {_RESTORE}")
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise GoldenIntegrityError(f"golden file {path} is missing: {_RESTORE}")
    size = os.path.getsize(path)
    digest = sha256_file(path)
    if size != entry["size"] or digest != entry["sha256"]:
        how = "truncated" if size < entry["size"] else "edited"
        raise GoldenIntegrityError(
            f"golden file {path} fails its sha256 check (recorded {entry['sha256'][:12]}..., {entry['size']} "
            f"bytes; found {digest[:12]}..., {size} bytes): it was {how}; {_RESTORE}")


# ------------------------------------------------------------------------------------------- recording

def _open(model, device, providers):
    from ..spec import open_runner

    return open_runner(model, role="model", device=device, providers=providers)


def _model_info(model, runner) -> dict:
    info = {"spec": model if isinstance(model, str) else type(model).__name__, "kind": runner.kind,
            "description": runner.description}
    info.update(_model_file(model))
    return info


def _model_file(model) -> dict:
    if not isinstance(model, (str, os.PathLike)):
        return {}
    from ..spec import spec_path

    path = spec_path(os.fspath(model))
    if path is None or not os.path.isfile(path):
        return {}
    return {"file": os.path.basename(path), "sha256": sha256_file(path), "size": os.path.getsize(path)}


def _inputs_for(runner, inputs) -> dict:
    from ..inputs import resolve_inputs

    if inputs is None and not getattr(runner, "example_inputs", None):
        raise DiffcoreError(f"no inputs for the golden set: give inputs (--inputs FILE.npz keyed by "
                            f"{format_choices([s.name for s in runner.input_specs()])})")
    data, _ = resolve_inputs(inputs, runner, runner)
    return data


def _check_pair(atol, rtol) -> None:
    if (atol is None) != (rtol is None):
        raise DiffcoreError("give atol and rtol together, or neither (then the defaults of each output's dtype "
                            "apply)")


def record_golden(model, inputs=None, out=None, *, traces: bool = False, texts=None, artifacts=None,
                  atol=None, rtol=None, device: str = "cpu", providers=None, force: bool = False,
                  key=None) -> Golden:
    """Run ``model`` on ``inputs`` and store the inputs, outputs, environment and hashes as a golden set.

    Args:
        model: a model spec (see ``diffcore.compare``).
        inputs: {name: array}, an .npz path, or None for the model's example inputs.
        out: the golden directory to write (None: keep in memory only).
        traces: also record every layer (a diffcore trace), for a per-layer check later.
        texts: golden texts; with a tokenizer artifact their token ids are recorded too.
        artifacts: files that travel with the model (paths, or one .artifacts.json); default: the
            ``<model stem>.artifacts.json`` beside the model file.
        atol, rtol: the tolerance checks use (both or neither: the defaults of each output's dtype).
        device, providers: where to run (torch device; ONNX Runtime providers).
        force: replace an existing golden at ``out``.
        key: add a keyed seal (HMAC-SHA256) with this key (default: $DIFFCORE_GOLDEN_KEY, if set).

    Returns:
        Golden (saved to ``out`` when given).

    Raises:
        DiffcoreError: a golden exists at ``out`` without ``force``, a declared artifact is missing, bad inputs.
    """
    _check_pair(atol, rtol)
    key = resolve_key(key)
    if out is not None:
        _prepare_directory(out, force)  # refuse early, before running anything
    declared = declared_artifacts(model, artifacts)
    recorded_artifacts = fingerprint(declared)
    texts = [str(t) for t in texts] if texts else []
    tokens = tokenize(declared, texts) if texts else {}
    runner = _open(model, device, providers)
    try:
        data = _inputs_for(runner, inputs)
        outputs = runner.outputs(data)
        trace = _record_trace(runner, data, model) if traces else None
        info = _model_info(model, runner)
    finally:
        runner.close()
    meta = {"schema": SCHEMA, "created": _now(), "model": info,
            "tolerance": {"atol": atol, "rtol": rtol}, "device": {"device": device, "providers": providers},
            "environment": env.collect(), "artifacts": recorded_artifacts, "texts": texts, "tokens": tokens,
            "inputs": _pack(data)[1], "outputs": _pack(outputs)[1]}
    golden = Golden({k: host_values(v)[0] for k, v in data.items()},
                    {k: host_values(v)[0] for k, v in outputs.items()},
                    meta, None, trace)
    if out is not None:
        golden.save(out, force=force, key=key)
    return golden


def _record_trace(runner, data, model):
    from ..capture.trace import record

    return record(runner, data, description={"model": model if isinstance(model, str) else type(model).__name__})


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------- checking

@dataclass
class OutputCheck:
    """One model output against its golden value."""

    name: str             # the golden's name
    live_name: str        # the model's name for it
    stats: object         # DriftStats, or None when it could not be compared
    problem: str = ""     # why it fails, in words ('' when it passes)

    @property
    def passed(self) -> bool:
        return not self.problem

    def to_dict(self) -> dict:
        stats = self.stats
        return {"name": self.name, "live_name": self.live_name, "passed": self.passed, "problem": self.problem,
                "stats": None if stats is None else {
                    k: stats.to_dict()[k] for k in ("shape", "ref_dtype", "test_dtype", "count", "max_abs",
                                                    "rel_l2", "cosine", "mismatch_count", "nan_test",
                                                    "inf_test", "tolerance")}}


@dataclass
class GoldenResult:
    """What ``check_golden`` found: truthy when every output (and every layer, with a trace) matches.

    Attributes:
        outputs: OutputCheck per golden output.
        layers: the per-layer DiffReport (recorded trace vs the model now), or None without a trace.
        environment: EnvDiff, recorded -> here, numerics-relevant first.
        notes: things worth knowing that do not fail the check (a different model file, ...).
        golden: the Golden checked against.
    """

    outputs: list
    environment: object
    golden: Golden
    model: str = ""
    layers: object = None
    notes: list = field(default_factory=list)
    here: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs) and (self.layers is None or self.layers.passed)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def summary(self) -> str:
        """One line: the verdict with the worst output and the environment differences."""
        worst = max((o for o in self.outputs if o.stats is not None), key=lambda o: o.stats.rel_l2,
                    default=None)
        failing = [o for o in self.outputs if not o.passed]
        if failing:
            text = f"{len(failing)} of {len(self.outputs)} output(s) differ from the golden: {failing[0].problem}"
        else:
            text = f"{len(self.outputs)} output(s) match the golden"
            if worst is not None:
                text += f" (worst rel L2 {_pct(worst.stats.rel_l2)} % on {worst.name!r})"
        if self.layers is not None:
            text += "; per layer: " + _layers_summary(self.layers)
        text += "; " + self.environment.summary()
        return "; ".join([text] + [f"note: {n}" for n in self.notes])

    def to_dict(self) -> dict:
        layers = None
        if self.layers is not None:
            first = self.layers.first_divergence
            layers = {"verdict": self.layers.verdict, "summary": self.layers.summary,
                      "first_divergence": None if first is None else first.name}
        return encode_nonfinite({"schema_version": "diffcore.golden-check/1", "verdict": "pass" if self.passed else "fail",
                         "model": self.model, "golden": self.golden.directory,
                         "recorded": self.golden.meta.get("created"), "outputs": [o.to_dict() for o in self.outputs],
                         "layers": layers, "environment_diff": self.environment.to_dict(), "notes": self.notes,
                         "environment": self.here})

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_json_default)

    def to_text(self) -> str:
        """Verdict, per-output table, per-layer summary, and the environment differences beside them."""
        lines = [f"Golden check of {self.model} against {self.golden.directory}",
                 f"  {self.golden.summary()}", f"  checked on {_machine(self.here)}", "",
                 f"Outputs ({len(self.outputs)}):", _outputs_table(self.outputs)]
        if self.layers is not None:
            lines += ["", "Per layer (recorded trace vs the model now): " + _layers_summary(self.layers)]
        lines += ["", "Environment differences (recorded -> here), numerics-relevant first:",
                  self.environment.to_text()]
        lines += ["", f"GOLDEN {'PASS' if self.passed else 'FAIL'}: {self.summary()}", ""]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _pct(value) -> str:
    from ..report.text import fmt_pct

    return fmt_pct(value)


def _layers_summary(report) -> str:
    if report.first_divergence is None:
        return f"{len(report.layers)} layers compared, no divergence ({report.verdict})"
    row = report.first_divergence
    return (f"first divergence at {row.name!r} (rel L2 {_pct(row.rel_l2)} %) of {len(report.layers)} layers: "
            f"{report.summary}")


def _outputs_table(outputs) -> str:
    from .._deps import require
    from ..report.text import fmt_num

    tabulate = require("tabulate", "text tables").tabulate
    cells = []
    for o in outputs:
        s = o.stats
        if s is None:
            cells.append([o.name, "-", "-", "-", "-", "-", "-", "FAIL: " + o.problem])
            continue
        cells.append([o.name, s.test_dtype, "x".join(map(str, s.shape)) or "scalar", fmt_num(s.max_abs),
                      _pct(s.rel_l2), f"{s.mismatch_count}/{s.count}",
                      f"{s.tolerance.atol:g}/{s.tolerance.rtol:g}", "PASS" if o.passed else "FAIL"])
    return tabulate(cells, headers=["output", "dtype", "shape", "max |d|", "rel L2 %", "mismatches",
                                    "atol/rtol", "status"], disable_numparse=True, tablefmt="simple")


def check_golden(model, golden, *, atol=None, rtol=None, device: str = "cpu", providers=None,
                 layers: bool = True, runner=None, key=None) -> GoldenResult:
    """Run ``model`` on the golden inputs here and compare with the golden outputs (and layers).

    Args:
        model: a model spec (see ``diffcore.compare``), or an opened Runner.
        golden: a golden directory or a loaded Golden.
        atol, rtol: override the golden's tolerance (both or neither); default: the recorded tolerance, else
            the defaults of each output's dtype.
        device, providers: where to run.
        layers: with a recorded trace, also compare every layer (``diffcore.compare(trace, model)``).
        runner: an already opened Runner of ``model`` to use (left open).
        key: verify the golden's keyed seal with this key (default: $DIFFCORE_GOLDEN_KEY, if set).

    Returns:
        GoldenResult (truthy when it passes), with the environment differences recorded -> here.

    Raises:
        GoldenIntegrityError: a golden file is missing, truncated or edited (nothing of it was read).
        DiffcoreError: the model cannot be loaded or run on the golden inputs.
    """
    _check_pair(atol, rtol)
    golden = golden if isinstance(golden, Golden) else load_golden(golden, key=key)
    if atol is None:
        atol, rtol = golden.tolerance.get("atol"), golden.tolerance.get("rtol")
    here = env.collect()
    opened = runner is None
    runner = _open(model, device, providers) if opened else runner
    try:
        live = runner.outputs(golden.inputs)
        report = _layer_report(golden, runner, atol, rtol) if layers and golden.trace is not None else None
        kind = runner.kind
    finally:
        if opened and runner is not model:
            runner.close()
    notes = []
    checks = _compare_outputs(golden, live, atol, rtol, notes)
    notes += _model_notes(golden, model, kind)
    diff = env_diff(golden.environment, here, labels=("recorded", "here"))
    spec = model if isinstance(model, str) else type(model).__name__
    return GoldenResult(checks, diff, golden, spec, report, notes, here)


def _layer_report(golden: Golden, runner, atol, rtol):
    from ..capture.trace import Trace
    from ..comparison import compare

    trace = golden.trace if isinstance(golden.trace, Trace) else Trace.load(golden.trace)
    return compare(trace, runner, None, atol=atol, rtol=rtol)


def _pairing(golden: Golden, live: dict, notes: list) -> list:
    """[(golden name, live name)]: by name, else by position when the counts agree."""
    names, live_names = list(golden.outputs), list(live)
    if set(names) <= set(live_names):
        return [(n, n) for n in names]
    if len(names) == len(live_names):
        notes.append(f"output names differ (golden {format_choices(names)}, model {format_choices(live_names)}):"
                     " compared by position")
        return list(zip(names, live_names))
    raise DiffcoreError(f"the model's outputs {format_choices(live_names)} do not match the golden's "
                        f"{format_choices(names)}: is this the model the golden was recorded from?")


def _compare_outputs(golden: Golden, live: dict, atol, rtol, notes: list) -> list:
    from ..drift import drift

    checks = []
    for name, live_name in _pairing(golden, live, notes):
        expected, (actual, dtype) = golden.outputs[name], host_values(live[live_name])
        if tuple(expected.shape) != tuple(actual.shape):
            checks.append(OutputCheck(name, live_name, None, f"{name!r} has shape {tuple(actual.shape)}, the "
                                      f"golden {tuple(expected.shape)}"))
            continue
        recorded = golden.output_dtype(name)
        if recorded != dtype:
            notes.append(f"output {name!r} is {dtype} now, {recorded} when recorded")
        test_dtype = dtype if dtype in ("float16", "bfloat16", "float32", "float64") else None
        stats = drift(expected, actual, atol=atol, rtol=rtol, test_dtype=test_dtype)
        checks.append(OutputCheck(name, live_name, stats, "" if _ok(stats) else _problem(name, stats)))
    return checks


def _ok(stats) -> bool:
    return stats.mismatch_count == 0


def _problem(name: str, stats) -> str:
    from ..report.text import fmt_num

    new_nan, new_inf = stats.nan_test - stats.nan_both, stats.inf_test - stats.inf_both
    if new_nan or new_inf:
        where = stats.first_nan_test if new_nan else stats.first_inf_test
        return (f"{name!r}: {new_nan} NaN and {new_inf} Inf value(s) where the golden has none (first at "
                f"{tuple(where) if where is not None else '?'})")
    tol = stats.tolerance
    at = "" if stats.max_abs_index is None else f" at {tuple(stats.max_abs_index)}"
    return (f"{name!r}: {stats.mismatch_count} of {stats.count} values outside atol {tol.atol:g} + rtol "
            f"{tol.rtol:g}*|golden| (max |d| {fmt_num(stats.max_abs)}{at}, rel L2 {_pct(stats.rel_l2)} %)")


def _model_notes(golden: Golden, model, kind: str) -> list:
    recorded = golden.meta.get("model") or {}
    now = _model_file(model)
    if recorded.get("sha256") and now.get("sha256") and recorded["sha256"] != now["sha256"]:
        return [f"the model file differs from the one the golden was recorded with (sha256 "
                f"{recorded['sha256'][:12]}... recorded, {now['sha256'][:12]}... now)"]
    if recorded.get("kind") and recorded["kind"] != kind:
        return [f"the golden was recorded from a {recorded['kind']} model, this is a {kind} model"]
    return []
