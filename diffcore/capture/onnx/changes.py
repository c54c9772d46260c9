"""What is changed in an ONNX model before diffcore runs it, as findings (diffcore/findings.py): the constants
a float16 conversion clamped, the Casts diffcore retargets, the ONNX Runtime optimizers it disables, and the
inputs it casts to the model's dtypes (a warning: a deployed session refuses them).

``ModelChanges`` is a mixin of ``OnnxRunner`` (runner.py): it reads the runner's ``graph``, ``_store``,
``providers``, ``name``, ``_conversion`` (the conversion's findings) and ``_disabled``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._deps import require
from ...findings import REPAIR, clamps, float_constants, with_readers
from .loading import CPU, _provider_names
from .values import _kind_of

NCHWC = "NchwcTransformer"
NCHWC_CRASH = ("its NCHWc layout pass crashes the process on some float16 graphs on the CPU provider "
               "(microsoft/onnxruntime#15494)")


class ModelChanges:
    """Findings and repairs of an ONNX runner (see the module docstring)."""

    def _who(self) -> str:
        """'test' (model.onnx): the runner's name and, where it differs, the model's file name."""
        label = Path(getattr(self, "_label", "") or self.name).name
        return repr(self.name) + (f" ({label})" if label and label != self.name else "")

    def _disabled_optimizers(self) -> list:
        """ORT's NCHWc layout pass crashes the process on some float16 graphs on the CPU provider
        (microsoft/onnxruntime#15494; seen with ORT 1.32 on a converted TorchScript attention model). It
        only re-lays out float32 convolutions, so float16 models lose nothing by skipping it. Reported as a
        repair finding: a deployed session with default options still runs it."""
        if self._disabled is None:
            on_cpu = _provider_names(self.providers)[0] == CPU
            half = any(t.elem_type == 10 for t in self.graph.types.values())
            self._disabled = [NCHWC] if on_cpu and half else []
        return self._disabled

    def disable_optimizers(self, names) -> None:
        """Run every later session with these ONNX Runtime optimizers disabled too (validate does this when
        a default session crashed in a child process and these names avoid the crash); reported in
        ``findings``."""
        self._disabled = list(dict.fromkeys([*self._disabled_optimizers(), *names]))

    # -- findings

    @property
    def findings(self) -> list[dict]:
        """What was changed in this model before it ran (diffcore/findings.py): the constants diffcore's
        float16 conversion clamped, the Casts it retargeted, and the ONNX Runtime optimizers disabled."""
        found = [with_readers(f, self.graph) for f in self._conversion]
        if self._disabled:
            found.append({"kind": REPAIR, "tensor": None, "nodes": [], "values": [],
                          "message": f"diffcore ran {self._who()} with ONNX Runtime's {', '.join(self._disabled)} "
                                     f"disabled: {NCHWC_CRASH}; a session with default options runs it"})
        return found

    def clamps_against(self, original) -> list[dict]:
        """Clamp findings of this float16 model against ``original``, the float32 OnnxRunner it was
        converted from (constants matched by name): what a converter the user ran changed."""
        if not isinstance(original, ModelChanges) or self._converted:
            return []  # diffcore's own conversion reported its clamps already (``findings``)
        found = clamps(original._float_constants(), self._float_constants(), original._store.large_tensor,
                       self._store.large_tensor)
        return [with_readers(f, self.graph) for f in found]

    def _float_constants(self) -> dict:
        """{name: TensorProto} of the float constants; large weights as stubs (``_store.large_tensor``)."""
        onnx = require("onnx")
        found = float_constants(self._store.skeleton.graph)
        for info in self._store.large_inputs:
            tensor = info.type.tensor_type
            if tensor.elem_type in (1, 10):
                found[info.name] = onnx.TensorProto(name=info.name, data_type=tensor.elem_type,
                                                    dims=[d.dim_value for d in tensor.shape.dim])
        return found

    def _note_cast(self, spec, array: np.ndarray, cast: np.ndarray) -> None:
        """Warn of a lossless cast of an input (int32 -> int64, float16 -> float32): diffcore runs it, a
        deployed ORT session refuses the feed. Rounding floats to a narrower model dtype (float32 inputs
        of a float16 model) is how comparisons feed both sides the same values, and stays silent."""
        given, wider = array.dtype.name, cast.dtype.itemsize > array.dtype.itemsize
        if not wider and _kind_of(given) == "float":
            return
        how = "widened" if wider else "narrowed (the values fit)"
        self._warn(f"input {spec.name!r} was given as {given} and {how} to {spec.dtype} for {self._who()}; "
                   f"a deployed ONNX Runtime session rejects {given} here — cast it in your preprocessing")
