"""The model held as a weightless skeleton plus its large initializers, serialized once.

Variants (segments, teacher-forced runs, scopes) are the skeleton edited and serialized, followed by the
bytes of the weights their nodes read: protobuf merges the two messages, appending the initializers. Past
32 MiB of weights the initializers go once to an external-data file instead.
"""
from __future__ import annotations

from pathlib import Path

from ..._deps import require
from .graph import node_inputs

_LARGE_TENSOR = 1024  # bytes: smaller initializers (shape constants) stay in the skeleton
# Weights past this go to an external-data file (protobuf stops at 2 GiB anyway): held inline, they are one
# more copy of the weights in memory for the runner's life and a joined blob per session built; written once,
# sessions read them from the file (160 MiB less peak memory comparing two 77 MB models, no slower).
_INLINE_LIMIT = 32 << 20


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
        # the skeleton's own copies: a reference into ``model`` would keep the whole of it (weights included)
        # alive, protobuf's sub-messages sharing their parent's arena
        self._small = {t.name: t for t in self.skeleton.graph.initializer}
        self._counter = 0
        self._external = None
        if sum(_tensor_nbytes(t) for t in large) <= _INLINE_LIMIT:
            self._inline = self._inline_fields(model.graph.initializer)
        else:
            self._external = {**self._small, **self._write_external(large)}

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

    def large_tensor(self, name: str):
        """The full TensorProto of a large initializer held apart from the skeleton; None for other names."""
        onnx = require("onnx")
        if self._external is None:
            held = self._inline.get(name)
            return None if held is None else onnx.GraphProto.FromString(held).initializer[0]
        ref = self._external.get(name)
        if ref is None:
            return None
        tensor = onnx.TensorProto()
        tensor.CopyFrom(ref)
        from onnx.external_data_helper import load_external_data_for_tensor

        load_external_data_for_tensor(tensor, self._tempdir())
        return tensor

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
        # Every initializer goes after the graph in the model's own order: ORT's optimizers can fail on a
        # reordered initializer list ("Attempt to replace the existing tensor", seen with ORT 1.32 on a
        # model saved by its transformer optimizer), so the skeleton's small ones are moved there too.
        own = [t for t in variant.graph.initializer if t.name not in self._small]
        del variant.graph.initializer[:]
        variant.graph.initializer.extend(own)
        used = [name for name in self.initializer_names if name in read and name in held]
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
