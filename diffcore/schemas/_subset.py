"""A validator for the subset of JSON Schema diffcore's schemas use, for when ``jsonschema`` is missing.

Keywords: type, const, enum, required, properties, additionalProperties, propertyNames, items, maxItems,
pattern, minLength, maxLength, minimum, allOf, anyOf, $ref (local ``#/$defs/...``). Errors carry
``message`` and ``absolute_path`` like jsonschema's, so ``schemas.validate`` reports either the same way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_TYPES = {"object": dict, "array": list, "string": str, "null": type(None), "boolean": bool}


@dataclass
class SchemaError:
    message: str
    absolute_path: list = field(default_factory=list)


def _is_type(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


class SubsetValidator:
    """``iter_errors(document)`` over the keywords above."""

    def __init__(self, schema: dict):
        self.schema = schema

    def _resolve(self, ref: str) -> dict:
        node = self.schema
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node

    def iter_errors(self, value, schema=None, path=()):
        schema = self.schema if schema is None else schema
        if "$ref" in schema:
            yield from self.iter_errors(value, self._resolve(schema["$ref"]), path)
        yield from self._scalar_errors(value, schema, list(path))
        for sub in schema.get("allOf", []):
            yield from self.iter_errors(value, sub, path)
        if "anyOf" in schema and not any(not list(self.iter_errors(value, s, path)) for s in schema["anyOf"]):
            yield SchemaError(f"{_short(value)} is not valid under any of the given schemas", list(path))
        if isinstance(value, dict):
            yield from self._object_errors(value, schema, path)
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                yield from self.iter_errors(item, schema["items"], path + (i,))

    def _scalar_errors(self, value, schema, path):
        types = schema.get("type")
        if types is not None:
            names = types if isinstance(types, list) else [types]
            if not any(_is_type(value, n) for n in names):
                yield SchemaError(f"{_short(value)} is not of type {', '.join(map(repr, names))}", path)
                return
        if "const" in schema and value != schema["const"]:
            yield SchemaError(f"{schema['const']!r} was expected", path)
        if "enum" in schema and value not in schema["enum"]:
            yield SchemaError(f"{_short(value)} is not one of {schema['enum']!r}", path)
        if isinstance(value, str):
            if "pattern" in schema and not re.search(schema["pattern"], value):
                yield SchemaError(f"{_short(value)} does not match {schema['pattern']!r}", path)
            if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
                yield SchemaError(f"{_short(value)} has the wrong length", path)
        if _is_type(value, "number") and "minimum" in schema and value < schema["minimum"]:
            yield SchemaError(f"{value!r} is less than the minimum of {schema['minimum']!r}", path)
        if isinstance(value, list) and len(value) > schema.get("maxItems", len(value)):
            yield SchemaError(f"{_short(value)} is too long", path)

    def _object_errors(self, value: dict, schema, path):
        for name in schema.get("required", []):
            if name not in value:
                yield SchemaError(f"{name!r} is a required property", list(path))
        properties = schema.get("properties", {})
        for key, item in value.items():
            if "propertyNames" in schema:
                yield from self.iter_errors(key, schema["propertyNames"], path)
            if key in properties:
                yield from self.iter_errors(item, properties[key], path + (key,))
            elif isinstance(schema.get("additionalProperties"), dict):
                yield from self.iter_errors(item, schema["additionalProperties"], path + (key,))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
