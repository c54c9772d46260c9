"""A bounded store for one torch pass's captured values: in memory up to a byte budget, past it in a temporary
file read back through a memory map.

Lets one reference forward keep every value (and every recorded module input) the comparison needs, whatever
the memory budget, instead of re-running the forward per chunk. A module input that is the very tensor an
earlier stored probe returned, unchanged since (same version counter: no in-place op touched it), is stored
as a reference to that probe: a sequential model's inputs cost nothing more than its outputs.

torch is imported inside the functions that use it, never at import of diffcore.
"""
from __future__ import annotations

import tempfile
import weakref
from collections.abc import Mapping

import numpy as np


class _Stored:
    """A placeholder for a stored tensor inside a recorded call's (args, kwargs)."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key


class SpillStore:
    """{key: tensor} kept within ``budget_bytes`` of memory; the rest spills to a temporary file.

    A context manager: the file is deleted on exit (or ``close``).
    """

    def __init__(self, budget_bytes: int):
        self.budget, self.used = int(budget_bytes), 0
        self.spilled_bytes = 0
        self._mem: dict = {}
        self._disk: dict = {}  # key -> (offset, nbytes, shape, dtype, device)
        self._file = None
        self._live: dict = {}  # id(live tensor) -> (weakref, version, key) of the probes stored
        self._calls: dict = {}  # call -> (args, kwargs) with _Stored placeholders
        self._count = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        self._mem.clear()
        self._disk.clear()
        self._calls.clear()
        self._live.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    # ---- writing -----------------------------------------------------------------------------------------
    def put(self, key: str, tensor, is_output: bool = False) -> None:
        """Keep a copy of ``tensor`` (a live value of the forward) under ``key``."""
        version = _version(tensor)
        if version is not None:
            self._live[id(tensor)] = (weakref.ref(tensor), version, key)
        self._keep(key, tensor)

    def put_call(self, call: str, args, kwargs) -> None:
        """Keep a module call's inputs (tensors copied, or referenced where a stored probe is the same)."""
        memo: dict = {}
        self._calls[call] = (self._placeholders(tuple(args), call, memo),
                             self._placeholders(dict(kwargs), call, memo))

    def _placeholders(self, value, call, memo):
        import torch

        if isinstance(value, torch.Tensor):
            if id(value) not in memo:  # one tensor passed twice stays one tensor (modules branch on aliasing)
                memo[id(value)] = (value, _Stored(self._input_key(value, call)))
            return memo[id(value)][1]
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return type(value)(*(self._placeholders(v, call, memo) for v in value))
        if isinstance(value, (tuple, list)):
            return type(value)(self._placeholders(v, call, memo) for v in value)
        if isinstance(value, dict):
            return {k: self._placeholders(v, call, memo) for k, v in value.items()}
        return value

    def _input_key(self, tensor, call) -> str:
        live = self._live.get(id(tensor))
        if live is not None and live[0]() is tensor and live[1] == _version(tensor):
            return live[2]
        self._count += 1
        key = f"\0input:{call}:{self._count}"
        self._keep(key, tensor)
        return key

    def _keep(self, key: str, tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.used + nbytes <= self.budget:
            # A clone, not a view: in-place ops later in the forward would change it.
            self._mem[key] = tensor.detach().clone()
            self.used += nbytes
        else:
            self._spill(key, tensor, nbytes)

    def _spill(self, key: str, tensor, nbytes: int) -> None:
        import torch

        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="diffcore-spill-")  # noqa: SIM115 (closed by close())
        host = tensor.detach().to("cpu").contiguous().reshape(-1)
        self._file.seek(0, 2)
        offset = self._file.tell()
        if nbytes:
            self._file.write(memoryview(host.view(torch.uint8).numpy()))
        self._disk[key] = (offset, nbytes, tuple(tensor.shape), tensor.dtype, tensor.device)
        self.spilled_bytes += nbytes

    # ---- reading -----------------------------------------------------------------------------------------
    def get(self, key: str):
        """The stored tensor (a spilled one memory-mapped and moved back to the device it came from)."""
        if key in self._mem:
            return self._mem[key]
        import torch

        offset, nbytes, shape, dtype, device = self._disk[key]
        if not nbytes:
            return torch.empty(shape, dtype=dtype, device=device)
        self._file.flush()
        raw = np.memmap(self._file, dtype=np.uint8, mode="c", offset=offset, shape=(nbytes,))
        return torch.from_numpy(raw).view(dtype).reshape(shape).to(device)

    def __contains__(self, key) -> bool:
        return key in self._mem or key in self._disk

    def calls(self) -> Mapping:
        """{call: (args, kwargs)} of the recorded module calls, tensors read back on access."""
        return _Calls(self)

    def call(self, call: str):
        memo: dict = {}
        args, kwargs = self._calls[call]
        return self._restore(args, memo), self._restore(kwargs, memo)

    def _restore(self, value, memo):
        if isinstance(value, _Stored):
            if value.key not in memo:  # a copy: a module re-run in place must not change what is stored
                stored = self.get(value.key)
                memo[value.key] = stored.clone() if value.key in self._mem else stored
            return memo[value.key]
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return type(value)(*(self._restore(v, memo) for v in value))
        if isinstance(value, (tuple, list)):
            return type(value)(self._restore(v, memo) for v in value)
        if isinstance(value, dict):
            return {k: self._restore(v, memo) for k, v in value.items()}
        return value


def _version(tensor):
    """The tensor's in-place version counter; None where it has none (inference-mode tensors)."""
    try:
        return tensor._version
    except RuntimeError:
        return None


class _Calls(Mapping):
    """A read-only view of a store's recorded calls (``LocalComputer`` reads it like ``capture_inputs``)."""

    def __init__(self, store: SpillStore):
        self._store = store

    def __getitem__(self, call):
        if call not in self._store._calls:
            raise KeyError(call)
        return self._store.call(call)

    def __contains__(self, call) -> bool:  # without reading the tensors back (Mapping's would)
        return call in self._store._calls

    def __iter__(self):
        return iter(self._store._calls)

    def __len__(self):
        return len(self._store._calls)
