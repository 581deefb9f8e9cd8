"""Cutting an ONNX graph at tensors: the sub-models that ``debug`` and ``reduce`` compile.

A ``Graph`` indexes one ONNX model's main graph once (topological node order,
producers, consumers, which tensors carry data) and builds sub-models from it:

* ``submodel(outputs, cut)``: the nodes needed to compute ``outputs``, walking
  back from them and stopping at graph inputs, initializers and the tensors of
  ``cut``.  A cut tensor becomes a graph input when it carries float data (fed
  with the reference's value) and an initializer holding the reference's value
  otherwise (an integer index, a shape), as Polygraphy's ``debug reduce``
  freezes tensors of cut-away branches.  Everything downstream of ``outputs``
  is dropped.
* Nodes with subgraphs (``If``, ``Loop``, ``Scan``) are kept whole: the names
  their bodies read from the outer scope count as the node's inputs, so a cut
  never removes what a branch needs and never cuts inside a branch.

Positions are indices into ``nodes`` (topological order).  A tensor *carries
data* when it depends on a graph input through something other than its shape:
``Shape``/``Size`` outputs (static once shapes are fixed) and constants do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
"""Operators whose outputs depend on their input's shape only, never its values."""


def subgraph_reads(node: Any) -> list[str]:
    """Outer-scope names read by the bodies of ``node``'s graph attributes (recursively)."""
    import onnx

    found: list[str] = []
    for attr in node.attribute:
        graphs = (
            [attr.g]
            if attr.type == onnx.AttributeProto.GRAPH
            else list(attr.graphs)
            if attr.type == onnx.AttributeProto.GRAPHS
            else []
        )
        for g in graphs:
            defined = (
                {i.name for i in g.input}
                | {i.name for i in g.initializer}
                | {i.values.name for i in g.sparse_initializer}
            )
            for n in g.node:
                defined.update(o for o in n.output if o)
            for n in g.node:
                for name in list(n.input) + subgraph_reads(n):
                    if name and name not in defined and name not in found:
                        found.append(name)
    return found


@dataclass(frozen=True)
class NodeInfo:
    """One node of the main graph, as reports show it."""

    index: int
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: Mapping[str, Any]


class Graph:
    """One ONNX model's main graph, indexed for cutting (see the module docstring)."""

    def __init__(self, proto: Any) -> None:
        g = proto.graph
        self.proto = proto
        self.initializers = {i.name for i in g.initializer} | {i.values.name for i in g.sparse_initializer}
        self.inputs = [i.name for i in g.input if i.name not in self.initializers]
        self.outputs = [o.name for o in g.output]
        self.nodes = _topological(list(g.node), set(self.inputs) | self.initializers)
        self.reads: list[tuple[str, ...]] = []
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            names = tuple(dict.fromkeys([n for n in node.input if n] + subgraph_reads(node)))
            self.reads.append(names)
            for name in names:
                self.consumers.setdefault(name, []).append(i)
            for out in node.output:
                if out:
                    self.producer[out] = i
        self.data: set[str] = set(self.inputs)
        for node, names in zip(self.nodes, self.reads):
            if node.op_type in SHAPE_ONLY_OPS:
                continue
            if any(n in self.data for n in names):
                self.data.update(o for o in node.output if o)
        self.names = [node.name or f"{node.op_type}_{i}" for i, node in enumerate(self.nodes)]

    def __len__(self) -> int:
        return len(self.nodes)

    def info(self, index: int) -> NodeInfo:
        import onnx

        node = self.nodes[index]
        attrs: dict[str, Any] = {}
        for attr in node.attribute:
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif isinstance(value, onnx.TensorProto):
                arr = onnx.numpy_helper.to_array(value)
                value = arr.tolist() if arr.size <= 16 else f"tensor {arr.dtype}{list(arr.shape)}"
            elif isinstance(value, onnx.GraphProto):
                value = f"graph {value.name!r} ({len(value.node)} nodes)"
            elif isinstance(value, list) and value and isinstance(value[0], onnx.GraphProto):
                value = [f"graph {v.name!r} ({len(v.node)} nodes)" for v in value]
            elif isinstance(value, list):
                value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
            attrs[attr.name] = value
        return NodeInfo(index, self.names[index], node.op_type, tuple(node.input), tuple(node.output), attrs)

    def all_tensors(self) -> list[str]:
        """Every tensor a node of the main graph produces, in topological order."""
        return [o for node in self.nodes for o in node.output if o]

    def frontier(self, index: int, among: Iterable[str]) -> list[str]:
        """Tensors of ``among`` produced at or before ``index`` that a later node (or the graph's output) still
        needs."""
        outputs = set(self.outputs)
        found = []
        for t in among:
            p = self.producer.get(t)
            if p is None or p > index:
                continue
            if t in outputs or any(c > index for c in self.consumers.get(t, ())):
                found.append(t)
        return found

    def ancestors(self, outputs: Iterable[str], cut: Iterable[str] = ()) -> list[int]:
        """Node positions needed to compute ``outputs`` when the tensors of ``cut`` are given."""
        stop = set(cut)
        seen: set[int] = set()
        stack = [t for t in outputs if t not in stop]
        visited: set[str] = set()
        while stack:
            t = stack.pop()
            if t in visited:
                continue
            visited.add(t)
            p = self.producer.get(t)
            if p is None or p in seen:
                continue
            seen.add(p)
            stack.extend(n for n in self.reads[p] if n not in stop)
        return sorted(seen)

    def boundary(self, keep: Sequence[int]) -> list[str]:
        """Tensors that nodes of ``keep`` read but that no node of ``keep`` produces (graph inputs and initializers
        excluded)."""
        kept = set(keep)
        found: list[str] = []
        for i in keep:
            for name in self.reads[i]:
                p = self.producer.get(name)
                if p is not None and p not in kept and name not in found:
                    found.append(name)
        return found

    def submodel(
        self, outputs: Sequence[str], cut: Iterable[str], values: Mapping[str, np.ndarray], *, name: str = ""
    ) -> Any:
        """The ONNX model computing ``outputs`` from the graph's inputs and the tensors of ``cut``.

        ``values`` holds the reference's value of every cut tensor and output
        (their dtypes and shapes type the new graph's inputs and outputs).  A cut
        tensor that carries float data becomes a graph input; any other one an
        initializer holding its value.  Returns an ``onnx.ModelProto``.
        """
        import onnx
        from onnx import helper, numpy_helper

        cut = [t for t in dict.fromkeys(cut)]
        keep = self.ancestors(outputs, cut)
        needed: set[str] = set(outputs)
        for i in keep:
            needed.update(self.reads[i])
        cut = [t for t in cut if t in needed]
        g = self.proto.graph
        as_input = [t for t in cut if t in self.data and np.asarray(values[t]).dtype.kind == "f"]
        frozen = [t for t in cut if t not in as_input]
        graph_inputs = [vi for vi in g.input if vi.name in needed and vi.name not in self.initializers]
        graph_inputs += [_value_info(t, values[t]) for t in as_input]
        inits = [i for i in g.initializer if i.name in needed]
        inits += [numpy_helper.from_array(np.asarray(values[t]), t) for t in frozen]
        sparse = [i for i in g.sparse_initializer if i.values.name in needed]
        declared = {o.name: o for o in g.output}
        graph_outputs = []
        for t in outputs:
            if t in values:
                graph_outputs.append(_value_info(t, values[t]))
            elif t in declared:
                graph_outputs.append(declared[t])
            else:
                graph_outputs.append(onnx.ValueInfoProto(name=t))
        io = {vi.name for vi in graph_inputs} | {vi.name for vi in graph_outputs}
        produced = {o for i in keep for o in self.nodes[i].output}
        value_info = [vi for vi in g.value_info if vi.name in produced and vi.name not in io]
        graph = helper.make_graph(
            [self.nodes[i] for i in keep],
            name or g.name or "cut",
            graph_inputs,
            graph_outputs,
            inits,
            value_info=value_info,
            sparse_initializer=sparse,
        )
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        model.graph.CopyFrom(graph)
        return model


def _value_info(name: str, value: Any) -> Any:
    from onnx import helper

    arr = np.asarray(value)
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape))


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """``nodes`` in topological order (ONNX requires it; a graph that breaks the rule is sorted, stably)."""
    have = set(available)
    ordered = True
    for node in nodes:
        if any(n and n not in have for n in list(node.input) + subgraph_reads(node)):
            ordered = False
            break
        have.update(o for o in node.output if o)
    if ordered:
        return nodes
    produced = {o for node in nodes for o in node.output if o}
    have = set(available)
    remaining = list(nodes)
    result = []
    while remaining:
        progress = False
        for node in list(remaining):
            reads = [n for n in list(node.input) + subgraph_reads(node) if n and n in produced]
            if all(n in have for n in reads):
                result.append(node)
                have.update(o for o in node.output if o)
                remaining.remove(node)
                progress = True
        if not progress:  # a cycle: keep the rest in file order; the checker reports it
            result.extend(remaining)
            break
    return result
