"""Recorded traces: one side's captured tensors saved to a file and replayed later as a Runner.

A trace file is ONE ``.npz`` archive readable with ``np.load(path, allow_pickle=False)``:

* ``r00000``, ``r00001``, … the recorded probes' arrays in execution order; ``i00000``, … the inputs;
* ``__meta__``: UTF-8 JSON as a uint8 array, schema ``diffcore.trace/1``: description, environment manifest,
  creation time, and for every array its probe metadata, logical dtype, stored dtype, shape and sha256.

NumPy has no bfloat16, so bfloat16 arrays are stored as their uint16 bit patterns with ``dtype: "bfloat16"``
in the metadata; loading restores torch.bfloat16 tensors when torch is importable, else ml_dtypes.bfloat16
arrays, else the uint16 bits with ``TraceRecord.bfloat16_bits`` (or ``Trace.bfloat16_bits_inputs``) set.
GPU tensors are copied to the host when recorded: a trace holds host data only.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..arrays import array_sha256, host_array, host_values
from ..errors import DiffcoreError, format_choices
from ..files import check_target, check_written, parse_json, read_npz, validating_writes, write_npz
from ..inputs import native_order
from ..schemas import validate
from .base import InputSpec, Probe, Runner

__all__ = ["Trace", "TraceRecord", "TraceRunner", "record", "SCHEMA"]

SCHEMA = "diffcore.trace/1"
META_KEY = "__meta__"


@dataclass
class TraceRecord:
    """One recorded probe: its metadata and its array (NumPy; a CPU torch tensor for bfloat16).

    ``bfloat16_bits`` is True when ``array`` holds bfloat16 as uint16 bit patterns (no torch or ml_dtypes
    to restore it with)."""

    probe: Probe
    array: object
    bfloat16_bits: bool = False


# ------------------------------------------------------------------------------------ host conversion

def _restore(stored: np.ndarray, dtype: str):
    """(the in-memory array for ``stored``, whether it is still raw bfloat16 bits)."""
    if dtype != "bfloat16":
        return stored, False
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        torch = None
    if torch is not None:
        return torch.from_numpy(np.ascontiguousarray(stored).view(np.int16).copy()).view(torch.bfloat16), False
    try:
        ml_dtypes = importlib.import_module("ml_dtypes")
    except ImportError:
        return stored, True
    return stored.view(ml_dtypes.bfloat16), False


def _host_copy(value):
    """An independent host copy of ``value`` as a trace keeps it in memory."""
    stored, dtype = host_array(value, "record")
    array, _ = _restore(np.array(stored, copy=True), dtype)
    return array


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)  # metadata is for people and matching: an unexpected object is kept as its text


# ----------------------------------------------------------------------------------------------- Trace

@dataclass
class Trace:
    """Captured tensors of one run, in execution order, with what they were computed from.

    Attributes:
        records: the probes with their arrays, in execution order.
        inputs: {input name: array} the run was fed.
        description: what ran (kind, runner, model spec, dtype, ...).
        environment: ``diffcore.env.collect()`` at record time.
        created: ISO 8601 UTC timestamp.
        bfloat16_bits_inputs: names of inputs held as raw bfloat16 bits (see module docstring).
    """

    records: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)
    description: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    created: str = ""
    bfloat16_bits_inputs: set = field(default_factory=set)

    def add(self, probe: Probe, array) -> None:
        """Append a record (the array is kept as given: pass host data)."""
        self.records.append(TraceRecord(probe, array))

    def keys(self) -> list:
        return [r.probe.key for r in self.records]

    def probes(self) -> list:
        return [r.probe for r in self.records]

    def record_for(self, key: str) -> TraceRecord:
        """The record of probe ``key``. Raises DiffcoreError listing the recorded keys."""
        for rec in self.records:
            if rec.probe.key == key:
                return rec
        raise DiffcoreError(f"trace has no probe {key!r}; recorded: {format_choices(self.keys())}")

    def __getitem__(self, key: str):
        return self.record_for(key).array

    def __contains__(self, key) -> bool:
        return any(r.probe.key == key for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------------------------------ saving

    def save(self, path, *, force: bool = False) -> str:
        """Write the trace to ``path`` as one ``.npz`` (no pickle), through a temporary file in the same
        directory that is then linked or renamed into place.

        Raises:
            DiffcoreError: ``path`` exists and ``force`` is False, or its directory does not exist.
        """
        path = os.fspath(path)
        check_target(path, force, "trace")
        arrays, meta = self._payload()
        text = json.dumps(meta, default=_json_default)
        if validating_writes():  # the test suite checks every trace's metadata against trace.json
            check_written(json.loads(text), "trace metadata")
        arrays[META_KEY] = np.frombuffer(text.encode("utf-8"), np.uint8)
        return write_npz(path, arrays, force=force, what="trace")

    def _payload(self) -> tuple[dict, dict]:
        arrays, records, inputs = {}, [], []
        for i, rec in enumerate(self.records):
            name = f"r{i:05d}"
            entry = _store(arrays, name, rec.array, rec.bfloat16_bits)
            probe = asdict(rec.probe)
            probe.update(entry)  # dtype and shape as stored, which is what load checks
            records.append(probe)
        for i, (input_name, value) in enumerate(self.inputs.items()):
            entry = _store(arrays, f"i{i:05d}", value, input_name in self.bfloat16_bits_inputs)
            inputs.append({"name": input_name, **entry})
        meta = {"schema": SCHEMA, "created": self.created, "description": self.description,
                "environment": self.environment, "records": records, "inputs": inputs}
        return arrays, meta

    # ----------------------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, path) -> "Trace":
        """Read a trace written by ``save``, checking every array against its sha256.

        Raises:
            DiffcoreError: the file is missing, not an npz, has no or invalid metadata, another schema, or an
                array whose bytes, dtype or shape differ from the metadata (truncated or edited file).
        """
        path = os.fspath(path)
        return cls._from_npz(read_npz(path, "trace"), path)

    @classmethod
    def _from_npz(cls, npz, path: str) -> "Trace":
        meta = _read_meta(npz, path)
        trace = cls(description=meta.get("description") or {}, environment=meta.get("environment") or {},
                    created=meta.get("created") or "")
        try:
            for entry in meta["records"]:
                array, bits = _read_array(npz, entry, path, f"probe {entry['key']!r}")
                trace.records.append(TraceRecord(_probe(entry), array, bits))
            for entry in meta["inputs"]:
                array, bits = _read_array(npz, entry, path, f"input {entry['name']!r}")
                trace.inputs[entry["name"]] = array
                if bits:
                    trace.bfloat16_bits_inputs.add(entry["name"])
        except (KeyError, TypeError) as exc:
            raise DiffcoreError(f"trace file {path!r} has invalid metadata: missing or malformed {exc}") from exc
        return trace


def _store(arrays: dict, name: str, value, raw_bits: bool) -> dict:
    """Put ``value``'s host array into ``arrays[name]``; return its metadata entry."""
    stored, dtype = (np.asarray(value), "bfloat16") if raw_bits else host_array(value, "record")
    arrays[name] = stored
    return {"array": name, "dtype": dtype, "stored": stored.dtype.str, "shape": list(stored.shape),
            "sha256": array_sha256(stored)}


def _probe(entry: dict) -> Probe:
    return Probe(key=entry["key"], order=entry["order"], shape=tuple(entry["shape"]), dtype=entry["dtype"],
                 module=entry.get("module"), op_type=entry.get("op_type"), node=entry.get("node"),
                 output_index=entry.get("output_index"), meta=entry.get("meta") or {})


def _read_meta(npz, path: str) -> dict:
    if META_KEY not in npz:
        raise DiffcoreError(f"trace file {path!r} has no diffcore metadata (entry {META_KEY!r}); "
                            "is it a diffcore trace?")
    raw = npz[META_KEY]
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"expected 1-D uint8, got {raw.dtype} {raw.shape}")
        text = raw.tobytes().decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DiffcoreError(f"trace file {path!r} has invalid metadata: {exc}") from None
    meta = parse_json(text, f"trace file {path!r} has invalid metadata:")
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        got = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
        raise DiffcoreError(f"trace file {path!r} has schema {got!r}, expected {SCHEMA!r} "
                            "(written by another diffcore version?)")
    validate(meta, "trace", f"trace file {path!r} has invalid metadata:")
    return meta


def _check_logical_dtype(entry: dict, stored: np.dtype, path: str, what: str) -> None:
    """The metadata's dtype must be what the stored array holds: bfloat16 is stored as uint16 bit patterns,
    every other dtype as itself. A float32 array relabelled bfloat16 would be judged under bfloat16's
    tolerances (and its bytes reread as twice as many bfloat16 values)."""
    logical = entry["dtype"]
    expected = np.dtype(np.uint16) if logical == "bfloat16" else np.dtype(logical)
    if stored.newbyteorder("=") != expected:
        raise DiffcoreError(f"trace file {path!r}: {what} is labelled {logical} in the metadata but stored as "
                            f"{stored}: the metadata was edited")


def _read_array(npz, entry: dict, path: str, what: str):
    name = entry["array"]
    if name not in npz:
        raise DiffcoreError(f"trace file {path!r} lacks the array of {what} (entry {name!r})")
    arr = npz[name]
    _check_logical_dtype(entry, arr.dtype, path, what)
    if arr.dtype.str != entry["stored"] or list(arr.shape) != list(entry["shape"]):
        raise DiffcoreError(f"trace file {path!r}: {what} is {arr.dtype} {arr.shape}, its metadata says "
                            f"{entry['stored']} {tuple(entry['shape'])}: the file was edited")
    if array_sha256(arr) != entry["sha256"]:
        raise DiffcoreError(f"trace file {path!r}: {what} fails its sha256 check: the file was truncated "
                            "or edited")
    return _restore(native_order(arr), entry["dtype"])


# ------------------------------------------------------------------------------------------- recording

def record(runner: Runner, inputs: Mapping, *, keys: Collection[str] | None = None,
           description: Mapping | None = None, chunk_bytes: int | None = None) -> Trace:
    """Capture the probes of any Runner (all, or ``keys``) plus its model outputs into a host-side Trace.

    Args:
        runner: the side to record.
        inputs: {input name: array}, stored in the trace as given.
        keys: probe keys to keep (the model outputs are always kept).
        description: merged into the trace's description (e.g. ``{"model": "net.py:make"}``).
        chunk_bytes: capture in several runs of at most about this many bytes each, bounding device memory
            (the trace itself holds everything on the host); None captures in one run.

    Raises:
        DiffcoreError: a key that is no probe of ``runner`` (the message lists the probes).
    """
    probes = runner.probes(inputs)
    chosen = _choose(probes, keys, runner)
    arrays = {}
    for chunk in _chunks(chosen, chunk_bytes):
        captured = runner.capture(inputs, [p.key for p in chunk])
        arrays.update({key: _host_copy(value) for key, value in captured.items()})
    trace = Trace(inputs={name: _host_copy(value) for name, value in inputs.items()},
                  description=_describe(runner, description), environment=_environment(),
                  created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    for probe in chosen:
        array = arrays[probe.key]
        stored, dtype = host_array(array, "record")
        trace.add(replace(probe, shape=tuple(stored.shape), dtype=dtype, meta=dict(probe.meta)), array)
    return trace


def _choose(probes: list, keys, runner: Runner) -> list:
    if keys is None:
        return list(probes)
    wanted = set(keys)
    unknown = sorted(wanted - {p.key for p in probes})
    if unknown:
        raise DiffcoreError(f"{runner.description or runner.kind} has no probe {format_choices(unknown)}; "
                            f"probes: {format_choices([p.key for p in probes])}")
    return [p for p in probes if p.key in wanted or p.is_output]


def _nbytes(probe: Probe) -> int:
    if probe.shape is None or probe.dtype is None:
        return 0
    itemsize = 2 if probe.dtype == "bfloat16" else np.dtype(probe.dtype).itemsize
    return int(np.prod(probe.shape, dtype=np.int64)) * itemsize


def _chunks(probes: list, limit: int | None):
    if limit is None:
        yield probes
        return
    chunk, size = [], 0
    for probe in probes:
        nbytes = _nbytes(probe)
        if chunk and size + nbytes > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(probe)
        size += nbytes
    if chunk:
        yield chunk


def _describe(runner: Runner, extra: Mapping | None) -> dict:
    info = {"kind": runner.kind, "runner": runner.description}
    for attr in ("dtype", "autocast", "device", "name"):
        value = getattr(runner, attr, None)
        if value is not None:
            info[attr] = str(value)
    info.update(extra or {})
    return info


def _environment() -> dict:
    from ..env import collect  # late: env reads package metadata, only needed when recording

    return collect()


# ------------------------------------------------------------------------------------------- replaying

class TraceRunner(Runner):
    """Replays a recorded Trace as one side of a comparison.

    Args:
        trace: a Trace, or the path of a trace file (loaded with ``Trace.load``).

    Attributes:
        warnings: messages for the user, e.g. live inputs that differ from the recorded ones.
    """

    kind = "trace"

    def __init__(self, trace, *, name: str | None = None):
        self.path = None
        if not isinstance(trace, Trace):
            self.path = os.fspath(trace)
            trace = Trace.load(self.path)
        self.trace = trace
        self.dtype = trace.description.get("dtype")  # the recorded model's dtype, where the recorder knew it
        self.name = name or self.path or "trace"
        self.warnings: list[str] = []
        recorded = trace.description.get("runner") or trace.description.get("kind") or "unknown runner"
        self.description = f"trace {self.name} (recorded from {recorded})"

    def input_specs(self) -> list[InputSpec]:
        """The recorded inputs' names, dtypes and shapes."""
        specs = []
        for name, value in self.trace.inputs.items():
            stored, dtype = host_array(value, "record")
            specs.append(InputSpec(name, dtype, tuple(stored.shape)))
        return specs

    def prepare_inputs(self, inputs: Mapping | None) -> dict:
        """Check ``inputs`` have the recorded names and shapes; return the recorded inputs (what the trace's
        tensors were computed from). Inputs whose values differ add a message to ``warnings``. None means the
        recorded inputs.

        Raises:
            DiffcoreError: a name or shape that differs from the recorded inputs.
        """
        if inputs is None:
            return dict(self.trace.inputs)
        names = list(self.trace.inputs)
        unknown = [n for n in inputs if n not in self.trace.inputs]
        missing = [n for n in names if n not in inputs]
        if unknown or missing:
            problem = "; ".join(filter(None, [f"unknown input(s) {format_choices(unknown)}" if unknown else "",
                                              f"missing input(s) {format_choices(missing)}" if missing else ""]))
            raise DiffcoreError(f"{problem}: {self.name} was recorded with inputs {format_choices(names)}")
        for name in names:
            self._check_input(name, inputs[name])
        return dict(self.trace.inputs)

    def _check_input(self, name: str, value) -> None:
        given, recorded = host_values(value)[0], host_values(self.trace.inputs[name])[0]
        if given.shape != recorded.shape:
            raise DiffcoreError(f"input {name!r} has shape {given.shape}, but {self.name} was recorded with "
                                f"shape {recorded.shape}")
        if recorded.dtype.kind == "f":
            # In the recorded dtype: a float64 input fed to a float32 model is rounded the same way.
            given = given.astype(recorded.dtype, copy=False)
        else:  # integers, bools: in float64, so 1.5 given for a recorded 1 is not truncated into a match
            given, recorded = given.astype(np.float64), recorded.astype(np.float64)
        differ = ~((given == recorded) | (np.isnan(given) & np.isnan(recorded)))
        count = int(np.count_nonzero(differ))
        if count:
            self._warn(name, given, recorded, differ, count)

    def _warn(self, name, given, recorded, differ, count) -> None:
        worst = float(np.max(np.abs(given[differ].astype(np.float64) - recorded[differ].astype(np.float64))))
        message = (f"input {name!r} differs from the one {self.name} was recorded with ({count} of "
                   f"{recorded.size} values, max |diff| {worst:.3g}): its tensors come from the recorded inputs")
        if message not in self.warnings:
            self.warnings.append(message)

    def probes(self, inputs: Mapping | None = None) -> list[Probe]:
        """The recorded probes in execution order (copies: callers may annotate them)."""
        self.prepare_inputs(inputs)
        probes = [replace(r.probe, meta=dict(r.probe.meta)) for r in self.trace.records]
        return sorted(probes, key=lambda p: p.order)

    def capture(self, inputs: Mapping | None, keys: Collection[str]) -> dict:
        """The recorded arrays of ``keys``.

        Raises:
            DiffcoreError: a key that was not recorded (the message lists the recorded keys).
        """
        self.prepare_inputs(inputs)
        index = {r.probe.key: r.array for r in self.trace.records}
        missing = sorted(k for k in set(keys) if k not in index)
        if missing:
            raise DiffcoreError(f"{self.name} has no recorded probe {format_choices(missing)}; recorded: "
                                f"{format_choices(self.trace.keys())}")
        return {key: index[key] for key in keys}

    def outputs(self, inputs: Mapping | None = None) -> dict:
        """The recorded model outputs {key: array}, in output order."""
        self.prepare_inputs(inputs)
        records = sorted((r for r in self.trace.records if r.probe.is_output), key=lambda r: r.probe.output_index)
        return {r.probe.key: r.array for r in records}
