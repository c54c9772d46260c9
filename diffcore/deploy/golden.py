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
from dataclasses import dataclass


from .. import env
from ..arrays import array_sha256, c_contiguous, host_values
from ..errors import DiffcoreError, format_choices
from ..files import read_json, read_npz, sha256_file, write_json, write_npz
from .artifacts import declared_artifacts, fingerprint, tokenize
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
        arrays[key] = c_contiguous(array)
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


def _text_inputs(runner, artifacts, texts) -> dict | None:
    """The golden texts as the model's inputs (padded to the longest), through the tokenizer.json
    artifact; None without texts or such a tokenizer."""
    tokenizer = next((a.path for a in artifacts if os.path.basename(a.path) == "tokenizer.json"), None)
    if not texts or tokenizer is None:
        return None
    from ..texts import fitted, text_batch

    return fitted(text_batch(texts, tokenizer), {s.name for s in runner.input_specs()})


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
        data = _inputs_for(runner, inputs if inputs is not None else _text_inputs(runner, declared, texts))
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
# (golden_check.py: kept in its own module; re-exported here, where callers have always found it)
from .golden_check import GoldenResult, OutputCheck, check_golden  # noqa: E402
