"""torch vs ONNX local errors: the reference's value of everything that enters a module's ONNX scope.

An exporter rarely cuts a torch module's scope exactly at the module's arguments. In a post-norm encoder
(``x = LayerNorm(x + Attention(x))``) the LayerNorm's scope reads the residual Add, a value no torch module
outputs; an attention scope reads a mask computed in the parent's forward; a head reads ``x[:, 0]``, sliced
outside it. Each value entering the scope gets the reference's value of the same tensor, tried in order:

1. a model input: the reference's input;
2. a value paired with a torch probe (or the same tensor across an inserted Cast): the reference's capture;
3. one of the module's own arguments of the same kind and shape, the one nearest the test's value of the
   entry (and near enough to be the same tensor): the residual sum a LayerNorm normalizes, the slice a head
   reads, the mask. An argument that is an earlier module's output passed on as it is has a paired value of
   its own and is never taken here: an entry of its shape is then something else (``2 * x`` hoisted out of
   the module as a common subexpression, where the module was given ``x``);
4. a float value computed from paired values: recomputed by the test's own nodes from the reference's
   values of the nearest paired values upstream (teacher forcing), which is what the module computes from
   its arguments when the exporter moved part of it out of its scope;
5. anything else (shape arithmetic, integer indices, a mask computed from the inputs in the top-level
   forward: nothing compared lies upstream): the test's own value.

Floating values are rounded to the dtype the scope reads them in, and the module's arguments behind them are
replaced by the same rounded values, so both sides compute on identical numbers.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ScopeFeeder", "ScopeInputs"]

# An argument is taken for an unpaired entry only if the test's value of the entry is within this relative L2
# distance of it: beyond, the entry is another tensor of the same shape (e.g. ``2 * x`` where the module
# was given ``x``), or the test has already failed by far more than any bug the local error could point at.
SAME_TENSOR_LIMIT = 0.5


@dataclass
class ScopeInputs:
    """What one module call and its ONNX scope are run on."""

    feeds: dict                 # entry value name -> NumPy array, in the dtype the scope reads it
    args: tuple                 # the module's arguments, those behind an entry replaced by its rounded value
    kwargs: dict
    rounded: bool = False       # whether rounding changed an argument (else the module's run is its capture)


def _torch():
    return sys.modules["torch"]


class ScopeFeeder:
    """Resolves the entries of the ONNX scopes of a batch of module calls (see the module docstring).

    Args:
        ref, test: the torch runner and the ONNX runner.
        to_ref: {test value name: reference probe key} for the paired values (and their Cast aliases).
        ref_feed, test_feed: the prepared model inputs of each side.
    """

    def __init__(self, ref, test, to_ref: Mapping, ref_feed: Mapping, test_feed: Mapping):  # noqa: PLR0913
        self.ref, self.test, self.to_ref = ref, test, to_ref
        self.ref_feed, self.test_feed = ref_feed, test_feed
        self.ref_values: dict = {}
        self.test_values: dict = {}
        self._frontiers: dict = {}

    def frontier(self, name: str) -> list:
        """The paired values nearest upstream of ``name`` (through shape reads not counted)."""
        if name not in self._frontiers:
            self._frontiers[name] = self.test.graph.upstream_sources(name, self.to_ref)
        return self._frontiers[name]

    def prefetch(self, scopes: Iterable[str]) -> None:
        """Capture what the entries of ``scopes`` need, in one run per side: the reference's values of the
        paired entries and of the paired values behind the others, the test's values of the others (to pick
        arguments, or to be used as they are)."""
        ref_keys, test_names = set(), set()
        for scope in scopes:
            for name in self.test.graph.scope_entries(scope):
                if name in self.ref_feed:
                    continue
                if name in self.to_ref:
                    ref_keys.add(self.to_ref[name])
                else:
                    test_names.add(name)
                    ref_keys.update(self.to_ref[m] for m in self.frontier(name))
        self.ref_values = self.ref.capture(self.ref_feed, ref_keys) if ref_keys else {}
        self.test_values = self.test.capture(self.test_feed, test_names) if test_names else {}

    def inputs(self, scope: str, args, kwargs, passed_on=frozenset()) -> ScopeInputs | str:
        """The feeds of ``scope`` and the module's arguments to run on, or why they cannot be had.

        Args:
            passed_on: ids of the arguments that are an earlier module's output passed on as it is
                (``TorchRunner.capture_inputs(sources=...)``): such a tensor has its own paired ONNX value,
                so an unpaired entry is never it (a common subexpression the exporter hoisted out of the
                module reads like one, shape and all).
        """
        values, behind = {}, {}
        free = _distinct(flat_tensors((args, kwargs)))
        pending = []
        for name in self.test.graph.scope_entries(scope):
            value = self._reference_value(name)
            if value is None:
                pending.append(name)
                continue
            values[name] = value
            behind[name] = _take(free, lambda a, v=value: _equal(a, v))
        for name in pending:
            test_value = self.test_values[name]
            arg = _nearest([a for a in free if id(a) not in passed_on], test_value)
            if arg is not None:
                values[name] = behind[name] = _take(free, lambda a, hit=arg: a is hit)
            elif _is_float(test_value) and self.frontier(name):
                values[name] = self._recomputed(name)
            else:
                values[name] = test_value
        return self._rounded(values, behind, args, kwargs)

    def _reference_value(self, name: str):
        if name in self.ref_feed:
            return self.ref_feed[name]
        if name in self.to_ref:
            return _in_shape(self.ref_values[self.to_ref[name]], self.test.graph.type_of(name).shape)
        return None

    def _recomputed(self, name: str):
        """``name`` computed by the test's own nodes from the reference's values of the paired values it is
        computed from: the "reference" version of what the exporter moved out of the module."""
        feeds = {m: _numpy(self.ref_values[self.to_ref[m]]) for m in self.frontier(name)}
        return self.test.teacher_forced(self.test_feed, feeds, [name])[name]

    def _rounded(self, values, behind, args, kwargs):
        """Round each float entry to the dtype the scope reads; its argument becomes that rounded value."""
        feeds, replace = {}, {}
        for name, value in values.items():
            dtype = self.test.graph.type_of(name).dtype
            if not _is_torch(value):
                feeds[name] = value
                continue
            rounded, target = value, getattr(_torch(), dtype or "", None)
            if value.is_floating_point() and target is not None and target.is_floating_point \
                    and target != value.dtype:
                rounded = value.to(target)
                if bool((value.isfinite() & ~rounded.isfinite()).any()):
                    return f"the reference's value of {name!r} overflows {dtype} when rounded"
                if behind.get(name) is not None:
                    replace[id(behind[name])] = rounded.to(value.dtype)
            feeds[name] = _numpy(rounded)
        args, kwargs = _replaced((args, kwargs), replace)
        return ScopeInputs(feeds, args, kwargs, rounded=bool(replace))


# ---- argument matching ---------------------------------------------------------------------------------
def flat_tensors(value):
    """The tensors in ``value`` (a tensor, or tuples / lists / dicts of them), depth first."""
    if hasattr(value, "is_floating_point"):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from flat_tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from flat_tensors(v)


def _distinct(tensors) -> list:
    """Tensors with repeats of the same object dropped (``attn(h, h, h)`` gives one argument)."""
    seen, out = set(), []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _take(free: list, accept):
    """Remove from ``free`` and return the first tensor ``accept`` is true for, or None."""
    for k, tensor in enumerate(free):
        if accept(tensor):
            return free.pop(k)
    return None


def _equal(arg, value) -> bool:
    return (_is_torch(value) and tuple(arg.shape) == tuple(value.shape) and arg.dtype == value.dtype
            and arg.device == value.device and bool(_torch().equal(arg, value)))


def _kind(dtype: str) -> str:
    return "float" if "float" in dtype else "bool" if dtype == "bool" else "int"


def _nearest(candidates: list, test_value):
    """The candidate of the test value's kind and shape nearest to it, or None when even the nearest is
    not plausibly the same tensor (relative L2 distance over ``SAME_TENSOR_LIMIT``; integers: any mismatch)."""
    target = np.asarray(test_value)
    fits = [a for a in candidates
            if tuple(a.shape) == target.shape and _kind(_dtype_name(a)) == _kind(str(target.dtype))]
    scored = [(_distance(_numpy(a), target), k) for k, a in enumerate(fits)]
    best = min(scored, default=None)
    limit = SAME_TENSOR_LIMIT if _kind(str(target.dtype)) == "float" else 0
    return fits[best[1]] if best is not None and best[0] <= limit else None


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    if _kind(str(b.dtype)) != "float":
        return float(np.count_nonzero(a != b))
    a, b = a.astype(np.float64), b.astype(np.float64)
    distance = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))
    return distance if np.isfinite(distance) else np.inf


def _replaced(value, replace: dict):
    """``value`` (tensors in tuples/lists/dicts) with tensors whose id is in ``replace`` swapped."""
    if hasattr(value, "is_floating_point"):
        return replace.get(id(value), value)
    if isinstance(value, (tuple, list)):
        return type(value)(_replaced(v, replace) for v in value)
    if isinstance(value, dict):
        return {k: _replaced(v, replace) for k, v in value.items()}
    return value


# ---- values --------------------------------------------------------------------------------------------
def _in_shape(value, shape):
    """``value`` viewed in the ONNX value's static ``shape`` where that is known and differs (the matcher
    pairs values of equal size across a reshape)."""
    if shape is None or None in shape or tuple(value.shape) == tuple(shape) or value.numel() != math.prod(shape):
        return value
    return value.reshape(shape)


def _is_torch(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def _is_float(value) -> bool:
    return value.is_floating_point() if _is_torch(value) else _kind(str(np.asarray(value).dtype)) == "float"


def _dtype_name(value) -> str:
    return str(value.dtype).replace("torch.", "")


def _numpy(tensor) -> np.ndarray:
    """A host NumPy array of a torch tensor (bfloat16, which NumPy lacks, goes through float32 exactly)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == _torch().bfloat16:
        tensor = tensor.float()
    return tensor.numpy()
