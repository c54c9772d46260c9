"""The ONNX Runtime side of a comparison: probes from the graph, captures by exposing values as outputs.

How values are captured: a run computes a *segment*, the nodes the requested values need, with those
values (and the cut values later nodes will read) as its graph outputs. Segments start from the inputs and
from the cut values earlier segments left, so capturing a graph chunk by chunk costs about one forward pass
and memory holds one chunk. Exposing an intermediate stops ORT from fusing across it, so the model outputs
computed that way are compared with an uninstrumented run's and any difference is reported in ``warnings``.

Variants are cheap: the model is held as a weightless *skeleton* plus its large initializers serialized
once; a variant is the skeleton edited and serialized, followed by those bytes (protobuf merges the two
messages, appending the initializers). Past ~1.5 GiB of weights the initializers go once to an external-data
file in a temporary folder instead, and variants are small files beside it.

Local errors: ``teacher_forced`` runs a segment whose chosen node inputs read new graph inputs carrying
reference values (rounded by Cast nodes inside the graph);
``run_scope`` runs the subgraph of one torch module's scope on given entry values.

On CUDA (``CUDAExecutionProvider``) inputs and outputs go through IOBinding and captured values stay on the
device, handed out zero-copy as torch tensors (DLPack), or as CuPy arrays / OrtValues without torch.
"""
from __future__ import annotations

import hashlib
import re
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from .._deps import require
from ..errors import DiffcoreError, format_choices
from .base import InputSpec, Probe, Runner
from .onnx_graph import FLOAT_DTYPES, GraphIndex, ValueType, node_inputs, read_types

__all__ = ["OnnxRunner"]

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_LARGE_TENSOR = 1024  # bytes: smaller initializers (shape constants) stay in the skeleton
_INLINE_LIMIT = 1536 << 20  # weights past this go to an external-data file: protobuf stops at 2 GiB
_ORT_NODE = re.compile(r"Name:\s*'([^']*)'")
_ORT_TYPES = {
    "tensor(float)": 1, "tensor(uint8)": 2, "tensor(int8)": 3, "tensor(uint16)": 4, "tensor(int16)": 5,
    "tensor(int32)": 6, "tensor(int64)": 7, "tensor(string)": 8, "tensor(bool)": 9, "tensor(float16)": 10,
    "tensor(double)": 11, "tensor(uint32)": 12, "tensor(uint64)": 13, "tensor(bfloat16)": 16,
}
_ELEM_OF_DTYPE = {"float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
                  "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13, "bfloat16": 16}


# ------------------------------------------------------------------------------------------ loading


def _load_model(model):
    """(ModelProto, label) from a path or a ModelProto; DiffcoreError for a missing or unparsable file."""
    onnx = require("onnx", "loading ONNX models")
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # we edit it (fp16 conversion); the caller's proto stays untouched
        return copy, model.graph.name or "ModelProto"
    if not isinstance(model, (str, Path)):
        raise DiffcoreError(f"an ONNX model is a path to a .onnx file or an onnx.ModelProto, "
                            f"not {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise DiffcoreError(f"ONNX model file {what}: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise DiffcoreError(f"{path} could not be parsed as ONNX: {exc}") from exc
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        # protobuf accepts many byte strings as a (nearly empty) message: insist on an ONNX model's parts
        raise DiffcoreError(f"{path} could not be parsed as ONNX: no graph, IR version or opset in it")
    return proto, str(path)


def to_float16(model, keep_io_types: bool):
    """``model`` (an onnx.ModelProto) with float weights and computation in float16: the conversion
    diffcore compares against for ``test_dtype="float16"`` (onnxconverter-common, with its Cast targets
    repaired so ONNX Runtime loads the result)."""
    float16 = require("onnxconverter_common.float16", "converting a model to float16")
    try:
        converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    except Exception as exc:
        raise DiffcoreError(f"converting the ONNX model to float16 failed: {exc}") from exc
    _retarget_float_casts(converted.graph)
    return converted


def _retarget_float_casts(graph) -> None:
    """Make ``Cast(to=float)`` nodes whose output the converter declared float16 cast to float16.

    onnxconverter-common rewrites value types but not Cast targets, which leaves a model ONNX Runtime
    refuses to load (microsoft/onnxconverter-common#320); its own inserted Casts to float keep float outputs.
    """
    half = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == 10}
    for node in graph.node:
        if node.op_type == "Cast" and node.output and node.output[0] in half:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == 1:
                    attr.i = 10
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _retarget_float_casts(sub)


def _check_providers(providers) -> list:
    """Providers as given (names or (name, options)); DiffcoreError naming the available ones."""
    ort = require("onnxruntime", "running ONNX models")
    providers = list(providers) if providers else [_CPU]
    available = ort.get_available_providers()
    for entry in providers:
        name = entry[0] if isinstance(entry, tuple) else entry
        if name not in available:
            raise DiffcoreError(f"ONNX Runtime execution provider {name!r} is not available here; "
                                f"available: {format_choices(available)}")
    return providers


def _provider_names(providers) -> list:
    return [p[0] if isinstance(p, tuple) else p for p in providers]


def _bound_device(providers) -> tuple | None:
    """("cuda", id) when the first provider is CUDA's: outputs then stay on that device; else None."""
    first = providers[0]
    name, options = (first if isinstance(first, tuple) else (first, {}))
    return ("cuda", int(options.get("device_id", 0))) if name == _CUDA else None


# -------------------------------------------------------------------------------- skeleton + weights


def _tensor_nbytes(tensor) -> int:
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return tensor.ByteSize()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


class _ModelStore:
    """The model as a weightless skeleton and its large initializers, serialized once.

    ``source(variant)`` gives what ``InferenceSession`` loads for an edited copy of the skeleton: bytes
    (the variant, then the weights its nodes read: protobuf appends repeated fields when messages are
    concatenated) or, for models too large for one protobuf message, the path of a small variant file
    beside a shared external-data file. A segment of the graph carries only its own weights, so loading
    many segments parses the weights about once in all.
    """

    def __init__(self, model, tempdir):
        onnx = require("onnx")
        self._tempdir = tempdir  # a callable giving the runner's temporary folder (made on first use)
        self.initializer_names = [t.name for t in model.graph.initializer]
        large = [t for t in model.graph.initializer if _tensor_nbytes(t) > _LARGE_TENSOR and t.data_type != 8]
        large_names = {t.name for t in large}
        self.large_inputs = [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in large]
        self.skeleton = _copy_except(model, onnx.ModelProto(), skip="graph")
        self.skeleton.graph.CopyFrom(_copy_except(model.graph, onnx.GraphProto(), skip="initializer"))
        self.skeleton.graph.initializer.extend(t for t in model.graph.initializer if t.name not in large_names)
        self._counter = 0
        self._external = None
        if sum(_tensor_nbytes(t) for t in large) <= _INLINE_LIMIT:
            self._inline = self._inline_fields(large)
        else:
            self._external = self._write_external(large)

    @staticmethod
    def _inline_fields(tensors) -> dict:
        """{name: the tensor as a serialized ``initializer`` field of a GraphProto}."""
        onnx = require("onnx")
        number = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
        return {t.name: _field(number, t.SerializeToString()) for t in tensors}

    def _write_external(self, tensors) -> dict:
        """Write the tensors once to weights.bin; return {name: a TensorProto that refers to it}."""
        onnx = require("onnx")
        refs, offset = {}, 0
        with open(Path(self._tempdir()) / "weights.bin", "wb") as out:
            for tensor in tensors:
                data = tensor.raw_data if tensor.HasField("raw_data") else \
                    onnx.numpy_helper.to_array(tensor).tobytes()
                out.write(data)
                ref = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
                ref.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (("location", "weights.bin"), ("offset", offset), ("length", len(data))):
                    ref.external_data.add(key=key, value=str(value))
                refs[tensor.name] = ref
                offset += len(data)
        return refs

    def variant(self):
        """A fresh, editable copy of the skeleton (small: no large weights)."""
        onnx = require("onnx")
        copy = onnx.ModelProto()
        copy.CopyFrom(self.skeleton)
        return copy

    def inference_model(self):
        """The skeleton with the large initializers declared as inputs, for shape inference."""
        model = self.variant()
        declared = {v.name for v in model.graph.input}
        model.graph.input.extend(v for v in self.large_inputs if v.name not in declared)
        return model

    def source(self, variant):
        """What InferenceSession should load for ``variant``: bytes, or a path for external weights."""
        held = self._inline if self._external is None else self._external
        read = {name for node in variant.graph.node for name in node_inputs(node)}
        used = [name for name in held if name in read]
        if self._external is None:
            onnx = require("onnx")
            graph = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
            return variant.SerializeToString() + _field(graph, b"".join(held[name] for name in used))
        variant.graph.initializer.extend(held[name] for name in used)
        self._counter += 1
        path = Path(self._tempdir()) / f"variant_{self._counter}.onnx"
        path.write_bytes(variant.SerializeToString())
        return str(path)


def _repeated(desc) -> bool:
    # protobuf 5+ has is_repeated; older versions only the label
    return desc.is_repeated if hasattr(desc, "is_repeated") else desc.label == desc.LABEL_REPEATED


def _copy_except(source, target, skip: str):
    """Copy every field of protobuf message ``source`` into ``target`` except ``skip`` (weights stay put)."""
    for desc, value in source.ListFields():
        if desc.name == skip:
            continue
        if _repeated(desc):
            getattr(target, desc.name).extend(value)
        elif desc.message_type is not None:
            getattr(target, desc.name).CopyFrom(value)
        else:
            setattr(target, desc.name, value)
    return target


# ----------------------------------------------------------------------------------------- arrays


def _framework(value) -> str:
    if isinstance(value, np.ndarray):
        return "numpy"
    return type(value).__module__.split(".")[0]


def _np_dtype(name: str):
    if name == "bfloat16":
        return require("ml_dtypes", "bfloat16 arrays").bfloat16
    return np.dtype(name)


def _dtype_of(value) -> str:
    """The dtype name of a NumPy, torch or CuPy array."""
    if _framework(value) == "torch":
        return str(value.dtype).replace("torch.", "")
    return np.dtype(value.dtype).name


def _to_numpy(value) -> np.ndarray:
    """A host NumPy array from NumPy, torch (CPU or CUDA), CuPy, an OrtValue or anything array-like."""
    kind = _framework(value)
    if kind == "torch":
        return value.detach().cpu().numpy()
    if kind == "cupy":
        return value.get()
    if kind == "onnxruntime":
        return value.numpy()
    return np.asarray(value)


def _cast(value, dtype: str):
    """``value`` in ``dtype``, staying in its framework (and on its device)."""
    if _dtype_of(value) == dtype:
        return value
    if _framework(value) == "torch":
        return value.to(getattr(sys.modules["torch"], dtype))
    return value.astype(_np_dtype(dtype))


def _elem_type(value) -> int | None:
    """The ONNX element type of an array's dtype (None for an OrtValue, whose type the graph gives)."""
    try:
        return _ELEM_OF_DTYPE.get(_dtype_of(value))
    except TypeError:
        return None


def _kind_of(dtype: str | None) -> str:
    if dtype in FLOAT_DTYPES:
        return "float"
    if dtype == "bool":
        return "bool"
    return "int" if dtype and ("int" in dtype) else str(dtype)


def _digest(feed: Mapping) -> str:
    """A content hash of a host feed, to reuse uninstrumented outputs for the same inputs."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(feed):
        array = np.ascontiguousarray(feed[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.view(np.uint8).reshape(-1) if array.size else b"")
    return h.hexdigest()


def _bitwise_equal(a, b) -> bool:
    if _framework(a) == "torch":
        torch = sys.modules["torch"]
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return bool(torch.equal(a.contiguous().view(ints), b.contiguous().view(ints)))
    a, b = _to_numpy(a), _to_numpy(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _max_abs_diff(a, b) -> float:
    """max |a - b| in float64, NaN where only one side is NaN counting as inf."""
    a, b = _to_numpy(a).astype(np.float64), _to_numpy(b).astype(np.float64)
    if a.shape != b.shape:
        return float("inf")
    diff = np.abs(a - b)
    both_nan = np.isnan(a) & np.isnan(b)
    diff[both_nan] = 0.0
    diff[np.isnan(diff)] = np.inf
    return float(diff.max()) if diff.size else 0.0


# ------------------------------------------------------------------------------------ CUDA (IOBinding)


def _bind_input(binding, name: str, value) -> None:
    """Bind a host array by copy, or device memory (torch / CuPy / OrtValue) without one."""
    kind = _framework(value)
    if kind == "numpy":
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    elif kind == "onnxruntime":
        binding.bind_ortvalue_input(name, value)
    elif kind == "torch":
        value = value.contiguous()
        device = "cuda" if value.is_cuda else "cpu"
        index = value.device.index if value.is_cuda else 0
        binding.bind_input(name, device, index, _ELEM_OF_DTYPE[_dtype_of(value)], tuple(value.shape),
                           value.data_ptr())
    elif kind == "cupy":
        value = value if value.flags.c_contiguous else value.copy()
        binding.bind_input(name, "cuda", value.device.id, value.dtype, tuple(value.shape), value.data.ptr)
    else:
        binding.bind_cpu_input(name, np.ascontiguousarray(_to_numpy(value)))


def _sync_torch_inputs(feed: Mapping) -> None:
    """ORT reads bound torch memory on its own stream: finish torch's pending writes first."""
    torch = sys.modules.get("torch")
    if torch is not None and any(_framework(v) == "torch" and v.is_cuda for v in feed.values()):
        torch.cuda.current_stream().synchronize()


def _from_ortvalue(value, device_id: int):
    """A device OrtValue as a torch CUDA tensor (zero-copy through DLPack), else a CuPy array, else as is.

    The DLPack capsule holds its own reference to ORT's buffer, so the tensor outlives the OrtValue.
    """
    if value.device_name().lower() == "cpu":
        return value.numpy()
    source = value if hasattr(value, "__dlpack__") else getattr(value, "_ortvalue", value)
    torch = _optional("torch")
    if torch is not None and torch.cuda.is_available():
        if hasattr(source, "__dlpack__"):
            return torch.from_dlpack(source)
        if hasattr(source, "to_dlpack"):
            return torch.utils.dlpack.from_dlpack(source.to_dlpack())
        # an onnxruntime without DLPack (before 1.21): one copy through the host, still handed out on GPU
        return torch.from_numpy(value.numpy()).to(f"cuda:{device_id}")
    cupy = _optional("cupy")
    if cupy is not None and hasattr(source, "__dlpack__"):
        return cupy.from_dlpack(source)
    return value


def _optional(module: str):
    try:
        return require(module)
    except ImportError:
        return None


def _run_bound(session, feed: Mapping, names: list, device: tuple) -> list:
    """One run with inputs bound where they live and outputs allocated on ``device`` ("cuda", id)."""
    binding = session.io_binding()
    for name, value in feed.items():
        _bind_input(binding, name, value)
    for name in names:
        binding.bind_output(name, *device)
    _sync_torch_inputs(feed)
    session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    return [_from_ortvalue(v, device[1]) for v in binding.get_outputs()]


# ----------------------------------------------------------------------------------------- runner


class OnnxRunner(Runner):
    """Runs an ONNX model with ONNX Runtime and captures any of its values.

    Args:
        model: path of a ``.onnx`` file (external data is read from beside it) or an ``onnx.ModelProto``.
        providers: ONNX Runtime execution providers (names or ``(name, options)``); default CPU.
        float16: convert the model to float16 first (onnxconverter-common) — diffcore's way to make a
            "converted" test model.
        keep_io_types: with ``float16``, keep float32 model inputs and outputs (Casts are inserted).
        name: a short name for reports; default the file name.

    Raises:
        DiffcoreError: the file is missing or not ONNX, a provider is unavailable, conversion failed.
    """

    kind = "onnx"
    # Instrumented sessions hold the weights and, with ORT's CPU arena, their peak activations; a comparison
    # captures each chunk's key set once, so keeping more than a couple only holds memory.
    max_cached_sessions = 2

    def __init__(self, model, *, providers=None, float16=False, keep_io_types=True, name=None):
        require("onnxruntime", "running ONNX models")
        proto, label = _load_model(model)
        if float16:
            proto = to_float16(proto, keep_io_types)
        self.providers = _check_providers(providers)
        self.name = name or (Path(label).name if isinstance(model, (str, Path)) else label)
        fp16 = f", float16 (keep_io_types={keep_io_types})" if float16 else ""
        self.description = f"ONNX {label} on {', '.join(_provider_names(self.providers))}{fp16}"
        self.warnings: list = []
        self._bound = _bound_device(self.providers)  # IOBinding target, or None for plain runs
        self._tmp = None
        self._specs = _input_specs(proto.graph)
        self._store = _ModelStore(proto, self._tempdir)
        del proto
        self._graph = None
        self._shape_cache: OrderedDict = OrderedDict()
        self._sessions: OrderedDict = OrderedDict()
        self._plain_session = None
        self._plain: OrderedDict = OrderedDict()  # uninstrumented outputs of the last inputs, by digest
        self._instrumentation_change = None  # (largest |diff| on an output, its name)
        self._reset_cuts()

    def __repr__(self) -> str:
        return f"OnnxRunner({self.description})"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- graph

    def _tempdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="diffcore-onnx-")
        return self._tmp.name

    @property
    def graph(self) -> GraphIndex:
        """The analysed graph (built on first use: shape inference and scope analysis)."""
        if self._graph is None:
            types = self._infer_types(None)
            self._graph = GraphIndex(self._store.skeleton, self._store.initializer_names, types, self.name)
            self._fill_unknown_types(self._graph)
        return self._graph

    def _infer_types(self, input_shapes) -> dict:
        """ONNX shape inference on the skeleton, with graph inputs fixed to ``input_shapes`` if given."""
        onnx = require("onnx")
        model = self._store.inference_model()
        # Annotations can be stale (onnxconverter-common leaves float16 value_info on Casts to float):
        # infer from the nodes alone, as ORT does.
        model.graph.ClearField("value_info")
        for info in model.graph.input:
            if input_shapes and info.name in input_shapes:
                _set_dims(info, input_shapes[info.name])
        try:
            model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                      data_prop=True)
        except Exception as exc:  # inference is a convenience: types may still come from ORT below
            self._warn(f"ONNX shape inference failed on {self.name} ({exc}); some shapes are unknown")
        return read_types(model.graph, self._store.skeleton.graph.initializer)

    def _fill_unknown_types(self, graph: GraphIndex) -> None:
        """Ask ORT for element types ONNX inference could not give (contrib ops such as com.microsoft)."""
        unknown = {out for node in graph.nodes for out in node.output
                   if out and out not in graph.static and graph.type_of(out).elem_type is None}
        if not unknown:
            return
        ort = require("onnxruntime")
        variant = self._store.variant()
        variant.graph.output.extend(_value_info(name, None) for name in unknown)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(self._store.source(variant), options, providers=[_CPU])
        except Exception as exc:
            self._warn(f"could not learn the types of {len(unknown)} values of {self.name}: {exc}")
            return
        for out in session.get_outputs():
            if out.name in unknown and out.type in _ORT_TYPES:
                dims = tuple(d if isinstance(d, int) else (d or None) for d in out.shape)
                graph.types[out.name] = ValueType(_ORT_TYPES[out.type], dims)

    def _types_for(self, feed: Mapping) -> dict:
        """Types with shapes made concrete by the given inputs' shapes (cached per shape signature)."""
        shapes = {name: tuple(np.shape(value)) for name, value in feed.items()}
        key = tuple(sorted(shapes.items()))
        if key not in self._shape_cache:
            self._shape_cache[key] = {**self.graph.types, **_known(self._infer_types(shapes))}
            _trim(self._shape_cache, 4)
        return self._shape_cache[key]

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # -- inputs

    def input_specs(self) -> list[InputSpec]:
        """The graph inputs that are not initializers, with dtype names and shapes (None: dynamic)."""
        return [InputSpec(s.name, s.dtype, s.shape) for s in self._specs]

    def prepare_inputs(self, inputs: Mapping) -> dict:
        """Check names, dtypes and fixed dimensions; cast float inputs to the model's float dtype.

        Raises:
            DiffcoreError: an unknown or missing input (the expected names are listed), integers given for
                a float input or the reverse, or a shape that contradicts the model's fixed dimensions.
        """
        expected = [s.name for s in self._specs]
        unknown = [n for n in inputs if n not in expected]
        missing = [n for n in expected if n not in inputs]
        if unknown or missing:
            parts = ([f"unknown {format_choices(unknown)}"] if unknown else []) + \
                    ([f"missing {format_choices(missing)}"] if missing else [])
            raise DiffcoreError(f"inputs of {self.name} do not match: {'; '.join(parts)}; "
                                f"expected inputs: {format_choices(expected)}")
        return {s.name: self._prepare_one(s, inputs[s.name]) for s in self._specs}

    def _prepare_one(self, spec: "_Spec", value) -> np.ndarray:
        array = _to_numpy(value)
        given = array.dtype.name
        if given != spec.dtype:
            if _kind_of(given) != _kind_of(spec.dtype) or _kind_of(given) not in ("float", "int"):
                raise DiffcoreError(f"input {spec.name!r} of {self.name} expects {spec.dtype} but was given "
                                    f"{given}: floats and integers are not converted into each other")
            cast = array.astype(_np_dtype(spec.dtype))
            if _kind_of(given) == "int" and not np.array_equal(cast, array):
                raise DiffcoreError(f"input {spec.name!r} of {self.name} expects {spec.dtype}; the given "
                                    f"{given} values do not fit in it")
            array = cast
        _check_shape(self.name, spec, array.shape)
        return np.ascontiguousarray(array)

    # -- probes

    def probes(self, inputs: Mapping) -> list[Probe]:
        """Every floating-point value a node computes from the inputs, in topological order.

        Constants, weights and values computed from them alone (Identity of a weight) are left out, and so
        are non-float values (shape arithmetic). Shapes come from shape inference run with the shapes of
        ``inputs``; ``module`` is the innermost torch module whose scope the value leaves, and
        ``meta["modules"]`` all of them (outermost last).
        """
        graph = self.graph
        types = self._types_for(self.prepare_inputs(inputs)) if inputs else graph.types
        probes: list = []
        for i, node in enumerate(graph.nodes):
            for out in node.output:
                vtype = types.get(out) or graph.type_of(out)
                if out and out not in graph.static and vtype.is_float:
                    probes.append(self._probe(graph, i, node, out, vtype, len(probes)))
        return probes

    @staticmethod
    def _probe(graph: GraphIndex, i: int, node, out: str, vtype: ValueType, order: int) -> Probe:
        modules = graph.modules_left(out)
        # graph/slot: an ONNX value even where its node has no name; slot matches renamed outputs by node
        chain = graph.chains[i] or ()
        meta = {"scope": graph.raw_scope[i], "modules": modules, "graph": True,
                "slot": list(node.output).index(out), "in_module": chain[-1] if chain else None}
        if node.op_type == "Cast" and node.input:
            meta["cast_of"] = node.input[0]
        return Probe(key=out, order=order, shape=vtype.shape, dtype=vtype.dtype,
                     module=modules[0] if modules else None, op_type=node.op_type, node=node.name or None,
                     output_index=graph.output_index(out), meta=meta)

    # -- running

    def _session(self, key, build):
        """A cached InferenceSession for the variant ``build()`` makes (LRU, ``max_cached_sessions``)."""
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        _trim(self._sessions, self.max_cached_sessions - 1)  # release before building the next one
        session = self._new_session(build(), arena=False)
        self._sessions[key] = session
        return session

    def _new_session(self, variant, arena: bool = True):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # unused-initializer notices from extracted scopes are expected
        # The arena keeps a run's peak activations allocated after it returns: right for the plain session
        # that runs again and again, a waste for an instrumented one that exposes hundreds of values once.
        options.enable_cpu_mem_arena = arena
        # ORT's idle intra-op threads spin for more work by default, taking the cores from the statistics
        # kernels that run between two ORT runs of a comparison.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(self._store.source(variant), options, providers=self.providers,
                                           disabled_optimizers=self._disabled_optimizers())
        except Exception as exc:
            raise self._ort_error(exc, "could not load") from exc
        lost = [p for p in _provider_names(self.providers) if p not in session.get_providers()]
        if lost:
            raise DiffcoreError(f"ONNX Runtime could not start {format_choices(lost)} for {self.name} and fell "
                                f"back to {format_choices(session.get_providers())}: check the CUDA/cuDNN "
                                f"libraries onnxruntime-gpu needs")
        return session

    def _disabled_optimizers(self) -> list:
        """ORT's NCHWc layout pass crashes the process on some float16 graphs on the CPU provider
        (microsoft/onnxruntime#15494; seen with ORT 1.32 on a converted TorchScript attention model). It
        only re-lays out float32 convolutions, so float16 models lose nothing by skipping it."""
        on_cpu = _provider_names(self.providers)[0] == _CPU
        half = any(t.elem_type == 10 for t in self.graph.types.values())
        return ["NchwcTransformer"] if on_cpu and half else []

    def _run(self, session, feed: Mapping, names: list) -> dict:
        """Run once and return {name: value} (device tensors on CUDA, NumPy arrays otherwise)."""
        try:
            if self._bound is not None:
                values = _run_bound(session, feed, names, self._bound)
            else:
                values = session.run(names, {k: _to_numpy(v) for k, v in feed.items()})
        except DiffcoreError:
            raise
        except Exception as exc:
            raise self._ort_error(exc, "failed running") from exc
        return dict(zip(names, values))

    def _ort_error(self, exc: Exception, doing: str) -> DiffcoreError:
        """A DiffcoreError naming the failing node and its op type when ORT's message names one."""
        message = str(exc).strip()
        found = _ORT_NODE.search(message)
        if found:
            node = self.graph.node_by_name.get(found.group(1))
            op = f" ({node.op_type})" if node is not None else ""
            return DiffcoreError(f"ONNX Runtime {doing} {self.name} at node {found.group(1)!r}{op}: {message}")
        return DiffcoreError(f"ONNX Runtime {doing} {self.name}: {message}")

    def outputs(self, inputs: Mapping) -> dict:
        """The uninstrumented model outputs {output name: value} (cached for the last few inputs)."""
        return dict(self._plain_outputs(self.prepare_inputs(inputs)))

    def _plain_outputs(self, feed: Mapping) -> dict:
        key = _digest(feed)
        if key not in self._plain:
            if self._plain_session is None:  # kept apart from the LRU: every new input needs it
                self._plain_session = self._new_session(self._store.variant())
            self._plain[key] = self._run(self._plain_session, feed, list(self.graph.outputs))
            _trim(self._plain, 2)
        self._plain.move_to_end(key)
        return self._plain[key]

    def capture(self, inputs: Mapping, keys: Collection[str]) -> dict:
        """Compute ``keys`` (exposed as outputs of the part of the graph they need); return {key: value}.

        Runs are segments: a run computes only the nodes its keys need, starting from the inputs and from
        the values earlier runs on the same inputs left for later nodes (the cut values, held until every
        reader has run). Capturing a graph chunk by chunk therefore costs about one forward pass in all.
        Graph outputs are the uninstrumented run's. When a segment reaches near the end of the graph it
        also computes the model outputs, and any difference from the uninstrumented run (ORT fusions
        disabled by the exposed values) is reported in ``warnings``.

        Raises:
            DiffcoreError: an unknown key, bad inputs, or ONNX Runtime failing (naming the node).
        """
        feed = self.prepare_inputs(inputs)
        keys = self._check_keys(keys)
        inner = [k for k in keys if k not in feed and k not in self.graph.outputs]
        cuts = self._cuts_for(feed)
        values = {k: cuts[k] for k in inner if k in cuts}
        todo = [k for k in inner if k not in values]
        if todo:
            values.update(self._run_segment(feed, cuts, todo))
        plain = self._plain_outputs(feed) if len(values) < len(keys) else {}
        return {k: feed[k] if k in feed else values[k] if k in values else plain[k] for k in keys}

    def _cuts_for(self, feed: Mapping) -> dict:
        """The cut values held for these inputs (emptied when the inputs change)."""
        digest = _digest(feed)
        if digest != self._cuts_digest:
            self._reset_cuts(digest)
        return self._cuts

    def _reset_cuts(self, digest: str | None = None) -> None:
        self._cuts: dict = {}  # values earlier segments computed that later nodes read (for _cuts_digest)
        self._executed: set = set()  # nodes run in a segment for those inputs
        self._cuts_digest = digest

    def _run_segment(self, feed: Mapping, cuts: dict, todo: list) -> dict:
        """Run the nodes ``todo`` needs from ``feed`` and ``cuts``; keep the new cut values in ``cuts``."""
        graph = self.graph
        available = set(feed) | set(cuts)
        ids = graph.needed_nodes(todo, available)
        made = available | {out for i in ids for out in graph.nodes[i].output}
        to_outputs = set(graph.needed_nodes(graph.outputs, made)) - set(ids)
        # the instrumentation check comes with the segment that nearly reaches the outputs anyway
        check = len(to_outputs) <= len(ids) // 4 + 8
        if check:
            ids = sorted(set(ids) | to_outputs)
        new_cuts = [v for v in graph.cut_values(ids) if v not in cuts]
        names = list(dict.fromkeys(todo + (graph.outputs if check else []) + new_cuts))
        run_feed = {n: feed[n] if n in feed else cuts[n] for n in graph.segment_entries(ids)}
        session = self._session(("segment", tuple(ids), tuple(names)),
                                lambda: self._segment_variant(ids, run_feed, names))
        values = self._run(session, run_feed, names)
        self._executed.update(ids)
        cuts.update((v, values[v]) for v in new_cuts)
        self._release_cuts(cuts)
        if check:
            self._check_instrumentation(feed, values)
        return {k: values[k] for k in todo}

    def _release_cuts(self, cuts: dict) -> None:
        """Drop cut values every reader of which has run: memory stays at what the rest of the graph needs
        (a later capture of earlier values recomputes them from the inputs)."""
        graph = self.graph
        for name in [n for n in cuts if all(c in self._executed for c in graph.consumers.get(n, ()))]:
            del cuts[name]

    def _segment_variant(self, ids: list, feed: Mapping, outputs: list, casts=(), rename=None):
        """A model of the nodes ``ids`` alone (after the ``casts`` nodes), whose graph inputs are ``feed``'s
        names and whose outputs are ``outputs``; node inputs named in ``rename`` read the new name."""
        graph = self.graph
        variant = self._store.variant()
        for field in ("node", "input", "output", "value_info"):
            variant.graph.ClearField(field)
        variant.graph.input.extend(_value_info(n, _elem_type(v) or graph.type_of(n).elem_type)
                                   for n, v in feed.items())
        variant.graph.node.extend(casts)
        for i in ids:
            node = variant.graph.node.add()
            node.CopyFrom(graph.nodes[i])
            if rename:
                _rename_inputs(node, rename)
        variant.graph.output.extend(_value_info(n, None) for n in outputs)
        return variant

    def _check_keys(self, keys) -> list:
        keys = list(dict.fromkeys(keys))
        graph = self.graph
        bad = [k for k in keys if k not in graph.producer and k not in graph.inputs]
        if bad:
            valid = [p.key for p in self.probes({})]
            raise DiffcoreError(f"{self.name} has no value {format_choices(bad)}; values that can be "
                                f"captured include {format_choices(valid)}")
        return keys

    def _check_instrumentation(self, feed: Mapping, values: Mapping) -> None:
        """Warn when exposing intermediates changed the final outputs (ORT fused differently); one warning
        per runner, keeping the largest change seen over all captures."""
        plain = self._plain_outputs(feed)
        changed = [(_max_abs_diff(values[name], plain[name]), name) for name in plain
                   if not _bitwise_equal(values[name], plain[name])]
        if not changed:
            return
        worst, name = max(changed)
        if self._instrumentation_change is not None and self._instrumentation_change[0] >= worst:
            return
        old = self._instrumentation_message()
        self._instrumentation_change = (worst, name)
        if old in self.warnings:
            self.warnings.remove(old)
        self.warnings.append(self._instrumentation_message())

    def _instrumentation_message(self) -> str:
        if self._instrumentation_change is None:
            return ""
        worst, name = self._instrumentation_change
        return (f"exposing intermediate values of {self.name} as outputs changed its outputs by up to "
                f"{worst:.3g} (max |diff| on {name!r}) against an uninstrumented run: exposed values disable "
                f"ONNX Runtime fusions{self._half_note()}, so captured values come from a slightly different "
                f"computation")

    def _half_note(self) -> str:
        if not any(t.elem_type == 10 for t in self.graph.types.values()):
            return ""
        return (" and are stored in their declared float16 (ORT's CPU provider otherwise keeps some float16 "
                "values in float32 between the ops it runs in float32)")

    # -- local errors

    def teacher_forced(self, inputs: Mapping, feeds: Mapping, keys: Collection[str],
                       rounding: Mapping | None = None) -> dict:
        """Run with every node input named in ``feeds`` reading the fed value instead; return ``keys``.

        Each node then computes on the fed (reference) inputs: the test layer run on the reference's
        inputs. Only the nodes ``keys`` need are run, back to the fed values and the inputs. A fed value
        is converted inside the graph (Cast nodes, which round to nearest even as NumPy and torch do): first
        to ``rounding[name]`` where given, then to the value's dtype in this model.

        Raises:
            DiffcoreError: an unknown fed value or key, or a fed value of the wrong kind (int for float).
        """
        feed = self.prepare_inputs(inputs)
        keys = self._check_keys(keys)
        rounding = rounding or {}
        for name, value in feeds.items():
            self._check_feed(name, value)
        graph = self.graph
        wanted = [k for k in keys if k not in feed]
        ids = graph.needed_nodes(wanted, set(feed) | set(feeds))
        read = [n for n in dict.fromkeys(n for i in ids for n in graph.inputs_of[i]) if n in feeds]
        chains = {n: self._cast_chain(n, _dtype_of(feeds[n]), rounding.get(n)) for n in read}
        run_feed = {entry: feeds[n] for n, (entry, _, _) in chains.items()}
        run_feed.update((n, feed[n]) for n in graph.segment_entries(ids) if n in feed and n not in feeds)
        rename = {n: read_as for n, (_, read_as, _) in chains.items()}
        casts = [node for _, _, nodes in chains.values() for node in nodes]
        signature = tuple((n, _dtype_of(feeds[n]), rounding.get(n)) for n in read)
        session = self._session(("teacher", tuple(ids), signature, tuple(wanted)),
                                lambda: self._segment_variant(ids, run_feed, wanted, casts, rename))
        values = self._run(session, run_feed, wanted) if wanted else {}
        return {k: values[k] if k in values else self._as_read(k, feeds, rounding) if k in feeds else feed[k]
                for k in keys}

    def _cast_chain(self, name: str, given: str, rounding: str | None) -> tuple:
        """(graph input, the name its readers read, Cast nodes between): a fed value of dtype ``given``
        taken through ``rounding`` to ``name``'s dtype here."""
        onnx = require("onnx")
        alias = _alias(name, self.graph)
        steps = [rounding] if rounding and rounding != given else []
        want = self.graph.type_of(name).dtype or given
        if want != (steps[-1] if steps else given):
            steps.append(want)
        nodes, source = [], alias
        for k, dtype in enumerate(steps):
            target = f"{alias}::{dtype}{k}"
            nodes.append(onnx.helper.make_node("Cast", [source], [target], to=_ELEM_OF_DTYPE[dtype],
                                               name=f"{target}::cast"))
            source = target
        return alias, source, nodes

    def _as_read(self, name: str, feeds: Mapping, rounding: Mapping):
        """A fed graph input as this model reads it (rounded, then in its dtype), for keys that name it."""
        value = feeds[name]
        if rounding.get(name):
            value = _cast(value, rounding[name])
        return _cast(value, self.graph.type_of(name).dtype or _dtype_of(value))

    def _check_feed(self, name: str, value) -> tuple:
        """(dtype here, dtype given) of a value fed in place of ``name``; DiffcoreError if it cannot be."""
        graph = self.graph
        if not graph.is_value(name) or name in graph.static:
            raise DiffcoreError(f"cannot feed {name!r}: it is not a value {self.name} computes; values include "
                                f"{format_choices([p.key for p in self.probes({})])}")
        want, given = graph.type_of(name).dtype, _dtype_of(value)
        if want is not None and want != given and _kind_of(want) != _kind_of(given):
            raise DiffcoreError(f"value {name!r} of {self.name} is {want} but the fed value is {given}")
        return want, given

    def _cast_feed(self, name: str, value):
        want, given = self._check_feed(name, value)
        return value if want is None or want == given else _cast(value, want)

    def scope_entries(self, module: str) -> list:
        """(value name, shape, dtype) of the values that enter torch module ``module``'s scope from outside,
        weights and constants excluded, in the order their first reader appears.

        Raises:
            DiffcoreError: no such module scope (the scopes found are listed).
        """
        graph = self.graph
        return [(name, graph.type_of(name).shape, graph.type_of(name).dtype)
                for name in graph.scope_entries(module)]

    def scope_exits(self, module: str) -> list:
        """Names of the values computed inside ``module``'s scope and used outside it (or model outputs)."""
        return self.graph.scope_exits(module)

    def run_scope(self, module: str, feeds: Mapping) -> dict:
        """Run only ``module``'s scope on ``feeds`` {entry value name: value}; return {exit name: value}.

        Raises:
            DiffcoreError: unknown module, feeds that do not name exactly the scope's entries, bad dtypes.
        """
        graph = self.graph
        entries = graph.scope_entries(module)
        unknown = [n for n in feeds if n not in entries]
        missing = [n for n in entries if n not in feeds]
        if unknown or missing:
            raise DiffcoreError(f"feeds for scope {module!r} of {self.name} do not match its entries "
                                f"(unknown: {format_choices(unknown)}; missing: {format_choices(missing)}); "
                                f"entries: {format_choices(entries)}")
        fed = {name: self._cast_feed(name, feeds[name]) for name in entries}
        exits = graph.scope_exits(module)
        session = self._session(("scope", module), lambda: self._scope_model(module, fed, exits))
        return self._run(session, fed, exits)

    def _scope_model(self, module: str, fed: Mapping, exits: list):
        inside = self.graph.check_module(module)
        ids = sorted(set(inside) | set(self.graph.static_closure(inside)))
        return self._segment_variant(ids, fed, exits)

    def close(self) -> None:
        """Drop sessions and cached outputs; remove temporary files."""
        self._sessions.clear()
        self._plain_session = None
        self._plain.clear()
        self._reset_cuts()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# --------------------------------------------------------------------------------------- helpers


class _Spec(InputSpec):
    """An InputSpec that also keeps symbolic dimension names, for error messages."""

    def __init__(self, name, dtype, shape, dims):
        super().__init__(name, dtype, shape)
        self.dims = dims


def _input_specs(graph) -> list:
    initializers = {t.name for t in graph.initializer}
    types = read_types(graph)
    specs = []
    for info in graph.input:
        if info.name not in initializers:
            vtype = types[info.name]
            specs.append(_Spec(info.name, vtype.dtype or "unknown", vtype.shape, vtype.dims))
    return specs


def _format_dims(dims) -> str:
    shown = [str(d) if d is not None else "?" for d in dims]
    return "(" + ", ".join(shown) + ("," if len(shown) == 1 else "") + ")"


def _check_shape(model: str, spec: _Spec, shape: tuple) -> None:
    """DiffcoreError when the rank or a fixed dimension of ``spec`` contradicts ``shape``."""
    if spec.dims is None:
        return
    wrong_rank = len(spec.dims) != len(shape)
    fixed = [k for k, d in enumerate(spec.dims) if isinstance(d, int) and not wrong_rank and d != shape[k]]
    if wrong_rank or fixed:
        why = (f"rank {len(shape)} instead of {len(spec.dims)}" if wrong_rank else
               f"dimension {fixed[0]} is fixed to {spec.dims[fixed[0]]} in the model (re-export it with a "
               f"dynamic axis to change it)")
        raise DiffcoreError(f"input {spec.name!r} of {model} expects shape {_format_dims(spec.dims)} but was "
                            f"given shape {_format_dims(shape)}: {why}")


def _set_dims(info, shape) -> None:
    """Overwrite a graph input's dims with concrete ``shape`` (for shape inference only)."""
    tensor = info.type.tensor_type
    tensor.ClearField("shape")
    for size in shape:
        tensor.shape.dim.add().dim_value = int(size)


def _value_info(name: str, elem_type: int | None):
    """A ValueInfo with at most the element type. Extra outputs are left untyped: ORT accepts that and
    infers the type itself, which no stale annotation in the model can contradict."""
    onnx = require("onnx")
    info = onnx.ValueInfoProto(name=name)
    if elem_type:
        info.type.tensor_type.elem_type = elem_type
    return info


def _alias(name: str, graph: GraphIndex) -> str:
    alias = f"{name}::diffcore_fed"
    while graph.is_value(alias):
        alias += "_"
    return alias


def _rename_inputs(node, alias: Mapping, shadowed: frozenset = frozenset()) -> None:
    """Point inputs named in ``alias`` at their aliases, in subgraphs too unless redefined there."""
    for k, name in enumerate(node.input):
        if name in alias and name not in shadowed:
            node.input[k] = alias[name]
    for attr in node.attribute:
        for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner = shadowed | {v.name for v in graph.input} | {t.name for t in graph.initializer}
            for sub in graph.node:
                _rename_inputs(sub, alias, inner)
                inner = inner | set(sub.output)


def _known(types: Mapping) -> dict:
    return {name: t for name, t in types.items() if t.elem_type is not None}


def _trim(cache: OrderedDict, size: int) -> None:
    while len(cache) > size:
        cache.popitem(last=False)
