"""Local-error runs of an ONNX model: teacher forcing and running one torch module's scope.

``teacher_forced`` runs a segment whose chosen node inputs read new graph inputs carrying reference values
(rounded by Cast nodes inside the graph); ``run_scope`` runs the subgraph of one torch module's scope on
given entry values, and ``run_scopes`` the scopes of many modules in one session. Mixed into OnnxRunner,
whose sessions, graph and segments it uses.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

from ..._deps import require
from ...errors import DiffcoreError, format_choices
from .edits import _alias, _value_info
from .values import ELEM_OF_DTYPE, _cast, _dtype_of, _elem_type, _kind_of


class LocalRuns:
    """Teacher-forced and scope runs (see the module docstring)."""

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
            nodes.append(onnx.helper.make_node("Cast", [source], [target], to=ELEM_OF_DTYPE[dtype],
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
        fed = self._scope_feeds(module, feeds)
        exits = self.graph.scope_exits(module)
        session = self._session(("scope", module), lambda: self._scope_model(module, fed, exits))
        return self._run(session, fed, exits)

    def run_scopes(self, feeds: Mapping) -> dict:
        """Run the scopes of several modules in one session, each on its own entries: ``feeds`` is
        {module: {entry value name: value}}; return {module: {exit name: value}}.

        Each scope's nodes are copied under a prefix of their own (scopes nest, and each reads its own
        entries), so one session and one run serve a chunk's scopes: a session per scope cost more to build
        than to run. Scopes with subgraphs (If, Loop: their bodies read outer names) run alone.

        Raises:
            DiffcoreError: as ``run_scope``, or ONNX Runtime failing on the combined graph (run the scopes
                alone to learn which one fails).
        """
        fed = {module: self._scope_feeds(module, values) for module, values in feeds.items()}
        alone = [m for m in fed if self._has_subgraphs(m)]
        out = {m: self.run_scope(m, fed[m]) for m in alone}
        batch = [m for m in fed if m not in alone]
        if not batch:
            return out
        graph = self.graph
        prefix = {m: f"scope{k}::" for k, m in enumerate(batch)}
        run_feed = {prefix[m] + name: value for m in batch for name, value in fed[m].items()}
        names = [prefix[m] + name for m in batch for name in graph.scope_exits(m)]
        session = self._session(("scopes", tuple(batch)), lambda: self._scopes_model(batch, prefix, run_feed, names))
        values = self._run(session, run_feed, names)
        out.update((m, {name: values[prefix[m] + name] for name in graph.scope_exits(m)}) for m in batch)
        return out

    def _scope_feeds(self, module: str, feeds: Mapping) -> dict:
        """``feeds`` checked against ``module``'s entries and cast to the dtypes the scope reads."""
        graph = self.graph
        entries = graph.scope_entries(module)
        unknown = [n for n in feeds if n not in entries]
        missing = [n for n in entries if n not in feeds]
        if unknown or missing:
            raise DiffcoreError(f"feeds for scope {module!r} of {self.name} do not match its entries "
                                f"(unknown: {format_choices(unknown)}; missing: {format_choices(missing)}); "
                                f"entries: {format_choices(entries)}")
        return {name: self._cast_feed(name, feeds[name]) for name in entries}

    def _scope_nodes(self, module: str) -> list:
        inside = self.graph.check_module(module)
        return sorted(set(inside) | set(self.graph.static_closure(inside)))

    def _has_subgraphs(self, module: str) -> bool:
        return any(a.g.ByteSize() or len(a.graphs) for i in self._scope_nodes(module)
                   for a in self.graph.nodes[i].attribute)

    def _scope_model(self, module: str, fed: Mapping, exits: list):
        return self._segment_variant(self._scope_nodes(module), fed, exits)

    def _scopes_model(self, modules: list, prefix: Mapping, fed: Mapping, outputs: list):
        """One model holding each module's scope with every value renamed under its prefix (weights keep
        their names: read-only, shared by the copies)."""
        graph = self.graph
        variant = self._segment_variant([], {}, [])
        variant.graph.input.extend(_value_info(n, _elem_type(v) or graph.type_of(n.split("::", 1)[1]).elem_type)
                                   for n, v in fed.items())
        for module in modules:
            for i in self._scope_nodes(module):
                node = variant.graph.node.add()
                node.CopyFrom(graph.nodes[i])
                _prefix_values(node, prefix[module], graph.initializers)
        variant.graph.output.extend(_value_info(n, None) for n in outputs)
        return variant


def _prefix_values(node, prefix: str, keep) -> None:
    """Rename a node (a copy) and the values it reads and writes under ``prefix``, except names in ``keep``."""
    if node.name:
        node.name = prefix + node.name
    for field in (node.input, node.output):
        for k, name in enumerate(field):
            if name and name not in keep:
                field[k] = prefix + name
