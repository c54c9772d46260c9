"""The ONNX Runtime side of a comparison: probes from the graph, captures by exposing values as outputs.

How values are captured (segments.py): a run computes a *segment*, the nodes the requested values need,
with those values (and the cut values later nodes will read) as its graph outputs. Segments start from the
inputs and from the cut values earlier segments left, so capturing a graph chunk by chunk costs about one
forward pass and memory holds one chunk. Exposing an intermediate stops ORT from fusing across it, so the
model outputs computed that way are compared with an uninstrumented run's and any difference is reported in
``warnings``.

Variants are cheap: the model is held as a weightless *skeleton* plus its large initializers serialized
once; a variant is the skeleton edited and serialized, followed by those bytes (protobuf merges the two
messages, appending the initializers). Past 32 MiB of weights the initializers go once to an external-data
file in a temporary folder instead, and variants are small files beside it.

Local errors: ``teacher_forced`` runs a segment whose chosen node inputs read new graph inputs carrying
reference values (rounded by Cast nodes inside the graph);
``run_scope`` runs the subgraph of one torch module's scope on given entry values.

On CUDA (``CUDAExecutionProvider``) inputs and outputs go through IOBinding and captured values stay on the
device, handed out zero-copy as torch tensors (DLPack), or as CuPy arrays / OrtValues without torch.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..._deps import require
from ...arrays import c_contiguous
from ...errors import DiffcoreError, format_choices
from ..base import InputSpec, Probe, Runner
from .binding import _run_bound
from .changes import ModelChanges
from .convert import convert_float16
from .edits import _check_shape, _input_specs, _known, _set_dims, _Spec, _trim, _value_info
from .forcing import LocalRuns
from .fusion import OPTIMIZED_FILE, deployed_value_names, save_options
from .fusion import fused_away as _absent_from
from .graph import GraphIndex, ValueType, read_types
from .loading import CPU, _bound_device, _check_providers, _load_model, _provider_names
from .segments import SegmentRuns
from .shapes import fold_constants, foldable, run_types, shape_variant, unknown_values, with_constants
from .store import _ModelStore
from .values import ORT_TYPES, _digest, _kind_of, _np_dtype, _to_numpy

__all__ = ["OnnxRunner"]

_ORT_NODE = re.compile(r"Name:\s*'([^']*)'")


class OnnxRunner(ModelChanges, LocalRuns, SegmentRuns, Runner):
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
    # Tensors one chunk of the probe run (shapes static inference could not give) may hold at once.
    probe_budget_mb = 256

    def __init__(self, model, *, providers=None, float16=False, keep_io_types=True, name=None):
        require("onnxruntime", "running ONNX models")
        proto, label = _load_model(model)
        self._conversion: list = []  # findings of diffcore's float16 conversion (clamps, repairs)
        self._converted, self._label = bool(float16), label
        self._path = str(model) if isinstance(model, (str, Path)) and not float16 else None
        if float16:
            proto, self._conversion = convert_float16(proto, keep_io_types)
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
        self._folded: dict = {}  # small integer values computed from constants, for shape inference
        self._shape_cache: OrderedDict = OrderedDict()
        self._run_shapes_cache: OrderedDict = OrderedDict()  # input digest -> {value: ValueType} from a run
        self._sessions: OrderedDict = OrderedDict()
        self._plain_session = None
        self._plain: OrderedDict = OrderedDict()  # uninstrumented outputs of the last inputs, by digest
        self._instrumentation_change = None  # (largest |diff| on an output, its name)
        self._disabled = None  # ORT optimizers disabled for this model (decided on the first session)
        self._fused = None  # fused_away(), computed on first use
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
            self._folded = self._fold_constants(types)
            if self._folded:
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
        with_constants(model, self._folded)
        for info in model.graph.input:
            if input_shapes and info.name in input_shapes:
                _set_dims(info, input_shapes[info.name])
        try:
            model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                      data_prop=True)
        except Exception as exc:  # inference is a convenience: types may still come from ORT below
            self._warn(f"ONNX shape inference failed on {self.name} ({exc}); some shapes are unknown")
        return read_types(model.graph, self._store.skeleton.graph.initializer)

    def _fold_constants(self, types: dict) -> dict:
        """{name: value} of the small integer values computed from the model's own constants (shapes.py)."""
        graph = self._store.skeleton.graph
        constants = {t.name for t in graph.initializer} - {v.name for v in graph.input}
        ids, outputs = foldable(graph.node, constants, types)
        return fold_constants(self._run_constant_nodes, ids, outputs)

    def _run_constant_nodes(self, ids: list, outputs: list) -> dict:
        """Run the nodes ``ids`` of the skeleton (which read constants alone) once, unoptimized, on CPU."""
        ort = require("onnxruntime")
        variant = self._store.variant()
        nodes = [type(variant.graph.node[i])() for i in ids]
        for node, i in zip(nodes, ids):
            node.CopyFrom(variant.graph.node[i])  # detached: the field is cleared below
        for name in ("node", "input", "output", "value_info"):
            variant.graph.ClearField(name)
        variant.graph.node.extend(nodes)
        variant.graph.output.extend(_value_info(name, None) for name in outputs)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(self._store.source(variant), options, providers=[CPU])
        return dict(zip(outputs, session.run(outputs, {})))

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
            session = ort.InferenceSession(self._store.source(variant), options, providers=[CPU])
        except Exception as exc:
            self._warn(f"could not learn the types of {len(unknown)} values of {self.name}: {exc}")
            return
        for out in session.get_outputs():
            if out.name in unknown and out.type in ORT_TYPES:
                dims = tuple(d if isinstance(d, int) else (d or None) for d in out.shape)
                graph.types[out.name] = ValueType(ORT_TYPES[out.type], dims)

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
            self._note_cast(spec, array, cast)
            array = cast
        _check_shape(self.name, spec, array.shape)
        return c_contiguous(array)

    # -- probes

    def probes(self, inputs: Mapping) -> list[Probe]:
        """Every floating-point value a node computes from the inputs, in topological order.

        Constants, weights and values computed from them alone (Identity of a weight) are left out, and so
        are non-float values (shape arithmetic) other than model outputs, which are probed whatever their
        dtype. Shapes come from shape inference run with the shapes of ``inputs``, and where it leaves them
        unknown from a probe run on ``inputs`` that keeps only shapes and dtypes (``meta["shape_from"] ==
        "run"``); ``module`` is the innermost torch module whose scope the value leaves, and
        ``meta["modules"]`` all of them (outermost last). ``meta["fused"]`` names a node a graph rewriter
        fused, ``meta["bias_folded_into"]`` the fused node that adds the bias of the bare MatMul producing
        the value.
        """
        graph = self.graph
        feed = self.prepare_inputs(inputs) if inputs else None
        types = self._types_for(feed) if feed else graph.types
        from_run = self._run_shapes(feed, types) if feed else {}
        types = {**types, **from_run}
        probes: list = []
        for i, node in enumerate(graph.nodes):
            for out in node.output:
                vtype = types.get(out) or graph.type_of(out)
                # model outputs of every dtype are compared (integers and bools exactly): token ids,
                # ArgMax indices and masks are results, not shape arithmetic
                if out and out not in graph.static and (vtype.is_float or graph.output_index(out) is not None):
                    probes.append(self._probe(graph, i, node, out, vtype, len(probes)))
                    if out in from_run:
                        probes[-1].meta["shape_from"] = "run"
        return probes

    def _run_shapes(self, feed: Mapping, types: Mapping) -> dict:
        """{value: ValueType} from a probe run on ``feed`` for the values whose shape (or element type)
        static inference left unknown (contrib ops, run-time pads, loops); cached per input content."""
        graph = self.graph
        names = unknown_values(graph, types)
        if not names:
            return {}
        key = _digest(feed)
        if key not in self._run_shapes_cache:
            self._run_shapes_cache[key] = self._probe_run(feed, names, types)
            _trim(self._run_shapes_cache, 2)
        found = self._run_shapes_cache[key]
        return {name: ValueType(t.elem_type or (types.get(name) or graph.type_of(name)).elem_type, t.dims)
                for name, t in found.items()}

    def _probe_run(self, feed: Mapping, names: list, types: Mapping) -> dict:
        """{value: ValueType} of ``names`` on ``feed``: shapes from one shape run where the element type is
        known, the values themselves (chunked, within ``probe_budget_mb``) where it is not (shapes.py)."""
        graph = self.graph
        typed = [n for n in names if (types.get(n) or graph.type_of(n)).elem_type is not None]
        untyped = [n for n in names if n not in set(typed)]
        found = run_types(self.capture, feed, untyped, self.probe_budget_mb << 20) if untyped else {}
        if typed:
            variant = self._store.variant()
            outputs = shape_variant(variant, typed)
            session = self._new_session(variant, arena=False, unoptimized_fallback=True)
            values = self._run(session, feed, outputs)
            del session  # one run: its weights and buffers are not kept
            found.update((name, ValueType(None, tuple(int(d) for d in _to_numpy(values[out]))))
                         for name, out in zip(typed, outputs))
        return found

    @staticmethod
    def _probe(graph: GraphIndex, i: int, node, out: str, vtype: ValueType, order: int) -> Probe:
        modules = graph.modules_left(out)
        # graph/slot: an ONNX value even where its node has no name; slot matches renamed outputs by node
        chain = graph.chains[i] or ()
        meta = {"scope": graph.raw_scope[i], "modules": modules, "graph": True,
                "slot": list(node.output).index(out), "in_module": chain[-1] if chain else None}
        if node.op_type == "Cast" and node.input:
            meta["cast_of"] = node.input[0]
        if i in graph.fused:
            meta["fused"] = f"{node.op_type} {node.name!r}" if node.name else node.op_type
        folded = graph.bias_folded_into(out)
        if folded is not None:
            meta["bias_folded_into"] = f"{folded.op_type} {folded.name!r}" if folded.name else folded.op_type
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
        session = self._new_session(build(), arena=False, unoptimized_fallback=True)
        self._sessions[key] = session
        return session

    def _new_session(self, variant, arena: bool = True, save_to: str | None = None,
                     unoptimized_fallback: bool = False):
        """A session with diffcore's options for ``variant`` (a ModelProto, or a model file's path);
        ``save_to``: a folder ORT writes its optimized graph into.

        ``unoptimized_fallback`` (instrumented sessions only, never the deployed one): where ORT's graph
        optimizers fail on a part of the graph cut out for capture, run that part unoptimized, with a
        warning. Seen with ORT 1.32 on MiniLM rewritten by ORT's transformer optimizer: a segment failed
        with "AddInitializedOrtValue Attempt to replace the existing tensor" at every optimization level
        while the whole model loads.
        """
        ort = require("onnxruntime")
        options = self._session_options(arena, save_to)
        source = variant if isinstance(variant, str) else self._store.source(variant)
        try:
            session = self._load(source, options)
        except DiffcoreError as exc:
            if not unoptimized_fallback:
                raise
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = self._load(source, options)
            self._warn(f"ONNX Runtime's graph optimizers failed on a part of {self.name} cut out for capture "
                       f"({str(exc).splitlines()[0][:160]}); such parts were captured with optimizations "
                       "disabled (the same ops, unfused); the model outputs still come from the deployed "
                       "session")
        return session

    def _deployed_model(self):
        """What the deployed (plain) session loads: the model file itself where the runner was given one
        and did not convert it (ORT reads it as a user's session would, with no serialized copy of the
        weights made for it), else the whole model as a variant."""
        return self._path if self._path is not None else self._store.variant()

    def _session_options(self, arena: bool, save_to: str | None):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if save_to is not None:
            save_options(options, save_to)
        options.log_severity_level = 3  # unused-initializer notices from extracted scopes are expected
        # The arena keeps a run's peak activations allocated after it returns: right for the plain session
        # that runs again and again, a waste for an instrumented one that exposes hundreds of values once.
        options.enable_cpu_mem_arena = arena
        # ORT's idle intra-op threads spin for more work by default, taking the cores from the statistics
        # kernels that run between two ORT runs of a comparison.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def _load(self, source, options):
        ort = require("onnxruntime")
        try:
            session = ort.InferenceSession(source, options, providers=self.providers,
                                           disabled_optimizers=self._disabled_optimizers())
        except Exception as exc:
            raise self._ort_error(exc, "could not load") from exc
        lost = [p for p in _provider_names(self.providers) if p not in session.get_providers()]
        if lost:
            raise DiffcoreError(f"ONNX Runtime could not start {format_choices(lost)} for {self.name} and fell "
                                f"back to {format_choices(session.get_providers())}: check the CUDA/cuDNN "
                                f"libraries onnxruntime-gpu needs")
        return session

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
        message = str(exc).strip() + _unregistered_op_hint(str(exc))
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
                self._plain_session = self._new_session(self._deployed_model())
            self._plain[key] = self._run(self._plain_session, feed, list(self.graph.outputs))
            _trim(self._plain, 2)
        self._plain.move_to_end(key)
        return self._plain[key]

    def fused_away(self) -> set[str]:
        """Values of the graph that the deployed session (the plain one: same providers, optimization level
        and disabled optimizers) does not compute: ORT fused or folded them away. Findings on such values
        were seen only because exposing them disabled the fusion. Empty, with a warning, when ORT cannot
        write its optimized graph (some providers cannot)."""
        if self._fused is None:
            self._fused = set()
            folder = tempfile.mkdtemp(prefix="deployed-", dir=self._tempdir())
            try:
                # the deployed session is the plain one: built here once, writing its graph, and kept
                session = self._new_session(self._deployed_model(), save_to=folder)
                if self._plain_session is None:
                    self._plain_session = session
                deployed = deployed_value_names(str(Path(folder) / OPTIMIZED_FILE))
            except Exception as exc:  # knowing the fusions refines findings; it is not needed for them
                self._warn(f"could not read the graph ONNX Runtime deploys for {self.name} ({exc}): findings "
                           "are not checked against its fusions")
                return self._fused
            finally:
                shutil.rmtree(folder, ignore_errors=True)  # a copy of the weights: not kept on disk
            self._fused = _absent_from((out for node in self.graph.nodes for out in node.output), deployed)
        return self._fused

    def _check_keys(self, keys) -> list:
        keys = list(dict.fromkeys(keys))
        graph = self.graph
        bad = [k for k in keys if k not in graph.producer and k not in graph.inputs]
        if bad:
            valid = [p.key for p in self.probes({})]
            raise DiffcoreError(f"{self.name} has no value {format_choices(bad)}; values that can be "
                                f"captured include {format_choices(valid)}")
        return keys

    def close(self) -> None:
        """Drop sessions and cached outputs; remove temporary files."""
        self._sessions.clear()
        self._plain_session = None
        self._plain.clear()
        self._reset_cuts()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _unregistered_op_hint(message: str) -> str:
    """What to do when the graph uses an op ONNX Runtime has no kernel for at the model's opset."""
    if "No Op registered for Erfc" in message:
        return (" (Erfc is no ONNX operator: tf2onnx writes Keras 3's exact GELU with it at every opset; convert "
                "with gelu(approximate=True), or replace the node by 1 - Erf(x))")
    if "No Op registered for" in message:
        return " (the exporter wrote an op that is not in the model's opset: export with another opset or op)"
    return ""
