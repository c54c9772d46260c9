"""Local errors: the test layer and the reference layer, both run on the reference's inputs.

Both sides receive the reference's inputs rounded to the test's input dtype, so the local error excludes
input rounding and everything upstream: it measures only what the layer computes differently. How a layer
is re-run depends on the sides:

- torch vs torch: forward pre-hooks record each module call's inputs on the reference; both runners then
  call that submodule on them.
- ONNX vs ONNX: one teacher-forced run per side and chunk, of just the chunk's nodes, in which every node
  reads the reference's value of each matched input instead of its own producer's output (rounded by Cast
  nodes inside the graph). Where no input changes under the rounding, the reference layer's local output
  is its captured value and its side is not re-run.
- torch vs ONNX: the module's scope is cut out of the ONNX graph and fed the reference's value of every
  value entering it, whether or not the exporter cut the scope at the module's arguments (a post-norm
  LayerNorm's scope reads the residual sum, an attention scope a mask computed outside; local_scope.py);
  the torch module runs on its recorded arguments, rounded alike. Costlier (a session per scope), so by
  default done everywhere only up to ``TORCH_ONNX_ALL_LIMIT`` module calls, else around the first divergence.
- recorded traces: no model to re-run; local errors are not available.
"""
from __future__ import annotations

from . import quant
from .errors import DiffcoreError
from .local_scope import ScopeFeeder, flat_tensors

NOT_COMPUTED = "local error not computed: "  # how a row's note gives the reason (the report views list them)
_OUTPUT_REASON = "a model output is compared end to end; the layer that computes it carries the local error"
# Module calls up to which torch-vs-ONNX local errors are computed for every layer by default (one ONNX Runtime
# session per scope). Past it, only around a divergence the other rules found: a bug under the 5 % band and
# the jump rule then passes. all-MiniLM-L6-v2 makes 95 calls; BERT-base about 190.
TORCH_ONNX_ALL_LIMIT = 256


def call_key(probe) -> str:
    """The module call a torch probe belongs to (``path`` or ``path#k``), recorded by the torch runner."""
    return probe.meta.get("call") or probe.module or probe.key


def _cast_floats(value, torch_dtype):
    """``value`` (tensor / tuple / list / dict of them) with floating tensors cast to ``torch_dtype``."""
    if torch_dtype is None:
        return value
    from .capture.torch_hooks import map_floats

    return map_floats(value, lambda t: t.to(torch_dtype))


def _torch_dtype(name):
    if name is None:
        return None
    import torch

    return getattr(torch, name)


def _rounded_args(args, kwargs, test_dtype, ref_dtype):
    """Inputs for (test, ref): rounded to the test's dtype, and that rounded value given back to the ref."""
    test_args, test_kwargs = _cast_floats(args, test_dtype), _cast_floats(kwargs, test_dtype)
    return (test_args, test_kwargs), (_cast_floats(test_args, ref_dtype), _cast_floats(test_kwargs, ref_dtype))


class LocalComputer:
    """Computes the local (ref layer, test layer) outputs for chunks of matched pairs."""

    def __init__(self, ref, test, match, mode: str = "auto"):
        self.ref, self.test, self.mode = ref, test, mode
        self.skipped: dict[int, str] = {}  # id(pair) -> why its local error was not computed
        self.kinds = (ref.kind, test.kind)
        self.match = match
        self.calls = {call_key(p.ref) for p in match.pairs if p.method == "module-scope"}
        self.recorded = None  # {call: (args, kwargs)} recorded already (torch vs torch), else None
        # torch vs torch, set by torch_pass.py for its pass: the SpillStore of both passes' values, and the
        # calls whose test outputs it kept (their inputs in the test pass were exactly the reference's, rounded)
        self.stored = None
        self.test_kept: set = set()

    @property
    def test_to_ref(self) -> dict:
        """The reference's key for each test value: matched ones, and the same tensor across inserted
        Casts. Derived on use: re-matching folded modules changes pairs after construction."""
        return {**self.match.aliases, **{p.test.key: p.ref.key for p in self.match.pairs}}

    @property
    def inline(self) -> bool:
        """Whether local errors are computed in the statistics pass, from that chunk's captures (torch vs
        ONNX waits for folded modules to be re-matched, which needs every row first)."""
        return self.everywhere() and self.kinds != ("torch", "onnx")

    def needed_ref_keys(self, pairs) -> set:
        """Reference values the local errors of ``pairs`` read, to capture with the chunk (ONNX vs ONNX)."""
        if self.kinds != ("onnx", "onnx"):
            return set()
        to_ref = self.test_to_ref
        return {to_ref[i] for p in pairs if p.test.key in self.test.graph.producer
                for i in self._producer_inputs(p.test.key) if i in to_ref}

    def unavailable_reason(self) -> str:
        if self.mode == "none":
            return "local errors were not requested"
        if "trace" in self.kinds:
            return "a recorded trace cannot be re-run, so local errors are not available"
        if self.kinds not in (("torch", "torch"), ("onnx", "onnx"), ("torch", "onnx")):
            return f"local errors for {self.kinds[0]} vs {self.kinds[1]} are not implemented"
        return ""

    def everywhere(self) -> bool:
        """Whether to compute local errors for every layer now (else only around the first divergence)."""
        if self.unavailable_reason():
            return False
        if self.kinds == ("torch", "onnx"):
            return self.mode == "all" or len(self.calls) <= TORCH_ONNX_ALL_LIMIT
        return True

    def compute(self, pairs, ref_feed, test_feed, ref_values=None, overflowing=frozenset()) -> dict:
        """{id(pair): (ref_local, test_local)} for the pairs it can re-run.

        Args:
            ref_values: reference values already captured (ONNX vs ONNX reads the missing ones itself).
            overflowing: test keys whose reference values overflow the test dtype (from their rows).
        """
        if not pairs or self.unavailable_reason():
            return {}
        if self.kinds == ("torch", "torch"):
            return self._torch_torch(pairs, ref_feed)
        if self.kinds == ("onnx", "onnx"):
            return self._onnx_onnx(pairs, ref_feed, test_feed, ref_values or {}, overflowing)
        return self._torch_onnx(pairs, ref_feed, test_feed)

    def _skip(self, pairs, reason: str) -> None:
        for pair in pairs:
            self.skipped[id(pair)] = NOT_COMPUTED + reason

    def missing_reason(self) -> str:
        """Why rows whose local error was never attempted have none ("" when every row was attempted)."""
        if self.unavailable_reason():
            return self.unavailable_reason()
        if not self.everywhere():
            return (f"with more than {TORCH_ONNX_ALL_LIMIT} module calls, torch vs ONNX local errors are "
                    "computed only around a divergence (local='all' computes them for every layer)")
        return ""

    def explain_missing(self, layers, outputs=()) -> None:
        """Note on every row without a local error why, where no reason was recorded when it was tried.
        Model outputs are compared on the deployed runs, end to end: their local error is their layer's."""
        missing = self.missing_reason()
        for rows, why in ((layers, missing or "the re-run did not produce this value"),
                          (outputs, missing or _OUTPUT_REASON)):
            for row in rows:
                if row.local_rel_l2 is None and not any(str(n).startswith(NOT_COMPUTED) for n in row.notes):
                    row.notes.append(NOT_COMPUTED + why)

    # ---- torch vs torch ----------------------------------------------------------------------------------
    def torch_calls(self, pairs) -> list:
        """The reference module calls whose inputs the torch-vs-torch local errors of ``pairs`` re-run."""
        return list(dict.fromkeys(call_key(p.ref) for p in pairs if p.method != "output" and p.ref.module))

    def _torch_torch(self, pairs, ref_feed) -> dict:
        by_call = {}
        for pair in pairs:
            if pair.method != "output" and pair.ref.module:
                by_call.setdefault(call_key(pair.ref), []).append(pair)
            elif pair.method == "output":
                self._skip([pair], _OUTPUT_REASON)
        # inputs recorded in the comparison's one reference pass (comparison.py), else one forward now
        recorded = self.recorded if self.recorded is not None else self.ref.capture_inputs(ref_feed,
                                                                                            list(by_call))
        test_dtype, ref_dtype = _torch_dtype(self.test.dtype), _torch_dtype(self.ref.dtype)
        out = {}
        for call, group in by_call.items():
            if call not in recorded:
                continue
            args, kwargs = recorded[call]
            # a float32 island of a float16 model reads float32: round to what this module computes in
            own = _torch_dtype(self.test.module_dtype(call)) if not self.test.autocast else test_dtype
            (t_args, t_kwargs), (r_args, r_kwargs) = _rounded_args(args, kwargs, own, ref_dtype)
            if _rounding_overflows((args, kwargs), (t_args, t_kwargs)):
                self._skip(group, f"the reference's inputs overflow {self.test.dtype} when rounded")
                continue
            try:
                test_out = self._kept_test(call, group) or self.test.run_module(call, t_args, t_kwargs)
            except DiffcoreError as exc:
                if not getattr(self.test, "torchscript", False):
                    raise
                self._skip(group, f"the TorchScript module cannot be re-run alone on these inputs: {exc}")
                continue
            ref_out = self._kept_ref(group, (args, kwargs), (r_args, r_kwargs)) or self.ref.run_module(
                call, r_args, r_kwargs)
            for pair in group:
                if pair.ref.key in ref_out and pair.test.key in test_out:
                    out[id(pair)] = (ref_out[pair.ref.key], test_out[pair.test.key])
        return out

    def rounded_for_test(self, call, args, kwargs):
        """The reference's (args, kwargs) of ``call`` rounded to what the test module computes in."""
        test_dtype = _torch_dtype(self.test.dtype)
        own = _torch_dtype(self.test.module_dtype(call)) if not self.test.autocast else test_dtype
        return _cast_floats(args, own), _cast_floats(kwargs, own)

    def _kept_ref(self, group, recorded, rounded) -> dict | None:
        """The reference's own outputs where rounding left every input as recorded: re-running the module
        on the very inputs it was called with gives them again (one subtree forward saved per call)."""
        keys = [p.ref.key for p in group]
        if self.stored is None or not _unchanged(recorded, rounded) or not all(k in self.stored for k in keys):
            return None
        return {k: self.stored.get(k) for k in keys}

    def _kept_test(self, call, group) -> dict | None:
        """The test's own outputs of ``call``, kept by its pass when its inputs there were exactly the
        reference's rounded (the local re-run would compute the same thing again)."""
        keys = {p.test.key: kept_test_key(p.test.key) for p in group}
        if self.stored is None or call not in self.test_kept or not all(k in self.stored for k in keys.values()):
            return None
        return {k: self.stored.get(kept) for k, kept in keys.items()}

    # ---- ONNX vs ONNX ------------------------------------------------------------------------------------
    def _producer_inputs(self, key: str) -> list:
        """The test values fed with reference values to run the layer that makes ``key`` on its own. A
        QOperator or dynamically quantized layer is fed before its input quantization (the float values its
        QuantizeLinear or DynamicQuantizeLinear reads), so its local error includes the rounding it computes
        with; a QDQ layer reads the DequantizeLinear outputs its upstream layers are compared at."""
        layer = quant.precisions_of(self.test).get(key)
        graph = self.test.graph
        if layer is not None and layer.kind == "QDQ":
            # its inputs are the upstream layers' dequantized values; an op ONNX Runtime runs as an integer
            # kernel reads them through their QuantizeLinear -> DequantizeLinear, or it would run in float
            inputs = graph.inputs_of[graph.producer[layer.float_output]]
            if not quant.fed_before_quantization(layer):
                return inputs
            before = {a.dequantized: a.value for a in layer.activations}
            return [before.get(name, name) for name in inputs]
        if layer is not None and layer.activations:
            return [operand.value for operand in layer.activations]
        return graph.inputs_of[graph.producer[key]]

    def _fed_names(self, pairs) -> list:
        """Test values the layers of ``pairs`` read that have a reference counterpart to feed them."""
        to_ref = self.test_to_ref
        return sorted({i for p in pairs for i in self._producer_inputs(p.test.key) if i in to_ref})

    def _onnx_onnx(self, pairs, ref_feed, test_feed, ref_values, overflowing) -> dict:
        inserted = [p for p in pairs if p.test.meta.get("cast_of") is not None and p.ref.op_type != "Cast"]
        self._skip(inserted, "the test value comes from a Cast the converter inserted; the reference has no "
                             "such layer")
        pairs = [p for p in pairs if p.test.key in self.test.graph.producer and id(p) not in self.skipped]
        if not pairs:
            return {}
        to_ref = self.test_to_ref
        fed = self._fed_names(pairs)
        missing = {to_ref[i] for i in fed} - set(ref_values)
        if missing:
            ref_values = {**ref_values, **self.ref.capture(ref_feed, missing)}
        blocked = [p for p in pairs if overflowing & set(self._producer_inputs(p.test.key))]
        self._skip(blocked, "the reference's inputs overflow the test dtype when rounded")
        pairs = [p for p in pairs if id(p) not in self.skipped]
        test_feeds = {name: ref_values[to_ref[name]] for name in fed}
        test_out = self.test.teacher_forced(test_feed, test_feeds, [p.test.key for p in pairs])
        ref_feeds = {to_ref[name]: ref_values[to_ref[name]] for name in fed}
        ref_out = self._reference_local(pairs, ref_feed, ref_feeds, self._rounding(fed, ref_values, to_ref),
                                        ref_values)
        return {id(p): (ref_out[p.ref.key], test_out[p.test.key]) for p in pairs
                if p.ref.key in ref_out and p.test.key in test_out}

    def _rounding(self, fed, ref_values, to_ref) -> dict:
        """{reference value: the test dtype it is rounded to} for the fed values that rounding changes. The
        runners round inside the graph (Cast nodes), so both layers read identical numbers without a copy."""
        rounding = {}
        for name in fed:
            dtype = self.test.graph.type_of(name).dtype
            if dtype is not None and dtype != _dtype_name(ref_values[to_ref[name]]):
                rounding[to_ref[name]] = dtype
        return rounding

    def _reference_local(self, pairs, ref_feed, feeds, rounding, captured) -> dict:  # noqa: PLR0913
        """The reference layers on their own inputs rounded to the test's dtypes. Where no input changes
        under that rounding, this is the reference's captured value: no second run."""
        keys = [p.ref.key for p in pairs]
        if not rounding and all(k in captured for k in keys):
            return {k: captured[k] for k in keys}
        return self.ref.teacher_forced(ref_feed, feeds, keys, rounding=rounding)

    # ---- torch vs ONNX -----------------------------------------------------------------------------------
    def _torch_onnx(self, pairs, ref_feed, test_feed) -> dict:
        by_call = self._scoped_calls(pairs)
        inputs = self._scope_inputs(by_call, ref_feed, test_feed) if by_call else {}
        # Where no argument was rounded, the torch module re-run on its own arguments is its captured output.
        plain = {p.ref.key for call, run in inputs.items() if not run.rounded for p in by_call[call]}
        captured = self.ref.capture(ref_feed, plain) if plain else {}
        ran = self._run_scopes(inputs)
        out = {}
        # by_call and inputs are keyed by torch module call; the ONNX graph by scope (match.scope_of)
        for call, run in inputs.items():
            try:
                out.update(self._run_scope(call, by_call[call], run, captured, ran.get(call)))
            except DiffcoreError as exc:  # one scope ONNX Runtime cannot run alone must not end the comparison
                self._skip(by_call[call], f"running the module's ONNX scope alone failed: {exc}")
        return out

    def _run_scopes(self, inputs) -> dict:
        """{module call: its scope's exits} from one ONNX Runtime session for all the scopes of a chunk; {}
        where that fails (each scope then runs alone, so that only the failing one is skipped)."""
        if len(inputs) < 2 or not hasattr(self.test, "run_scopes"):
            return {}
        try:
            ran = self.test.run_scopes({self.match.scope_of(call): run.feeds for call, run in inputs.items()})
        except DiffcoreError:
            return {}
        return {call: ran[self.match.scope_of(call)] for call in inputs if self.match.scope_of(call) in ran}

    def _scoped_calls(self, pairs) -> dict:
        """{module call: its module-scope pairs} for the calls with an ONNX scope of their own."""
        by_call = {}
        for pair in pairs:
            if pair.method == "module-scope":
                by_call.setdefault(call_key(pair.ref), []).append(pair)
            else:
                self._skip([pair], _OUTPUT_REASON if pair.method == "output" else
                           "only values paired with a torch module's scope can be re-run alone")
        return {call: group for call, group in by_call.items() if self._has_scope(call, group)}

    def _scope_inputs(self, by_call, ref_feed, test_feed) -> dict:
        """{module call: ScopeInputs} for the calls whose scope entries could all be given reference values
        (local_scope.py); the others are skipped with the reason."""
        passed_on: dict = {}
        recorded = self.ref.capture_inputs(ref_feed, list(by_call), sources=passed_on)
        feeder = ScopeFeeder(self.ref, self.test, self.test_to_ref, ref_feed, test_feed)
        feeder.prefetch([self.match.scope_of(call) for call in by_call])
        inputs = {}
        for call, group in by_call.items():
            try:
                run = feeder.inputs(self.match.scope_of(call), *recorded.pop(call), passed_on=passed_on.get(call, {}))
            except DiffcoreError as exc:
                run = f"computing the values that enter the module's ONNX scope failed: {exc}"
            if isinstance(run, str):
                self._skip(group, run)
            else:
                inputs[call] = run
        return inputs

    def _has_scope(self, call, group) -> bool:
        """Whether the ONNX graph has a scope for this module call that the paired values leave."""
        graph, scope = self.test.graph, self.match.scope_of(call)
        if scope not in graph.module_nodes:
            self._skip(group, "the ONNX graph has no scope of its own for this module call (the exporter "
                              "folded it into a neighbour)")
            return False
        exits = set(graph.scope_exits(scope))
        self._skip([p for p in group if p.test.key not in exits],
                   "the paired ONNX value does not leave this module's scope")
        return any(p.test.key in exits for p in group)

    def _run_scope(self, call, group, inputs, captured, exits=None) -> dict:  # noqa: PLR0913
        """The module's ONNX scope fed the reference's value of every value entering it (local_scope.py), and
        the torch module on the same (rounded) arguments; ``exits``: the scope's outputs if already run."""
        exits = exits if exits is not None else self.test.run_scope(self.match.scope_of(call), inputs.feeds)
        ref_out = captured if not inputs.rounded else self.ref.run_module(call, inputs.args, inputs.kwargs)
        return {id(p): (ref_out[p.ref.key], exits[p.test.key]) for p in group
                if p.ref.key in ref_out and p.test.key in exits}


def kept_test_key(test_key: str) -> str:
    """Where the torch pass keeps a test output that is its own local output (``LocalComputer._kept_test``)."""
    return "\0test-local:" + test_key


def _unchanged(original, rounded) -> bool:
    """Whether rounding returned every tensor of ``original`` itself (no dtype change anywhere)."""
    a, b = list(flat_tensors(original)), list(flat_tensors(rounded))
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def same_inputs(a, b) -> bool:
    """Whether two module calls' (args, kwargs) hold bitwise-equal tensors and equal other values."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_inputs(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_inputs(a[k], b[k]) for k in a)
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 (a value without a plain equality is not known to be the same)
        return False


def _dtype_name(value) -> str:
    """The dtype name of a NumPy array or a torch tensor (``float32``, ``bfloat16``)."""
    return str(value.dtype).replace("torch.", "")


def _rounding_overflows(original, rounded) -> bool:
    """True when rounding made a finite input non-finite (e.g. 1e5 cast to float16)."""
    for a, b in zip(flat_tensors(original), flat_tensors(rounded)):
        if a.is_floating_point() and bool((a.isfinite() & ~b.isfinite()).any()):
            return True
    return False

