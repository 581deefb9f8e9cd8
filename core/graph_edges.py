"""Graph edge cases nnport answers itself: outputs no runtime needs to compute.

Real exports contain outputs that are not computed at all: an output that *is*
an input (directly, or through operators that fold away in inference:
``Identity``, ``Dropout``, ``Reshape`` to the same shape, ``Cast`` to the same
type), an output that is a constant (an initializer, a ``Constant`` node, a
tensor whose static shape has a zero-size dim), one tensor listed as two
outputs (the same name twice, or an ``Identity`` alias), and inputs that no
node uses.  Runtimes handle these badly, and silently:

* OpenVINO's ONNX frontend renames the ``Parameter`` behind ``x -> Dropout ->
  Identity -> y`` to ``d`` (the Dropout's output), so an adapter matching inputs
  by name never bound ``x`` and ``run`` returned uninitialised memory; it also
  drops unused inputs, which shifts positions;
* pnnx (ncnn's converter) segfaults on a graph whose output is its input,
  drops constant outputs (``out0`` for outputs ``[y, c]``) and duplicate ones.

The answer is known without any runtime: the feed, the constant, or another
output's value.  So ``plan(model)`` finds such outputs once, at compile, and
``compile(backend, model, device, options)`` (what the core ``nnport_compile``
default calls) hands the backend a *runtime model* that only computes the rest
(served outputs removed from the graph outputs, nodes nothing needs pruned,
unused inputs dropped) and returns a ``CompiledModel`` whose ``ServingBackend``
proxy copies the served values in beside the runtime's outputs, in the ONNX
output order.  Every backend, a vendor's included, gets this without code of
its own.  A model with none of these cases is handed to the backend untouched,
and its ``run`` has no extra step at all (``plan`` returns None).

A plugin that replaces ``nnport_compile`` (a compile cache) should call
``nnport.graph_edges.compile`` where it would call ``backend.compile``; the
backends themselves still refuse (or, for OpenVINO, map by port) what they
cannot answer exactly when given such a graph directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import Backend
from .compiled import CompiledModel
from .errors import UnsupportedPrecision
from .types import Binding, Capabilities, CompileOptions, Device, TensorSpec

if TYPE_CHECKING:
    from .measuring import Measurement, MeasureSettings
    from .model import Model

RUNTIME, INPUT, CONSTANT, ALIAS = "runtime", "input", "constant", "alias"
"""Where one output's value comes from: the runtime, a feed, a constant, another output."""

FOLDING_OPS = frozenset({"Identity", "Dropout", "Reshape", "Cast"})
"""Operators that are the identity in inference under the conditions ``_passes_through`` checks."""

_NO_PLAN = "none"
_MEMO = "_graph_edges"


@dataclass(frozen=True)
class Served:
    """One model output and where its value comes from.

    ``ref`` is the runtime output name (``RUNTIME``), the input name
    (``INPUT``), or the output it repeats (``ALIAS``); ``value`` holds the
    array of a ``CONSTANT``.  ``why`` says what nnport found (reported in
    ``compiled.info["graph_edges"]``).
    """

    name: str
    kind: str
    ref: str
    value: np.ndarray | None = field(default=None, repr=False, compare=False)
    why: str = ""


@dataclass(frozen=True)
class EdgePlan:
    """What nnport answers itself for one model, and the model the runtime gets.

    ``runtime`` is None when every output is served (no runtime call at all);
    ``runtime_inputs`` are the inputs the runtime model keeps (in model order);
    ``dropped_inputs`` the ones no remaining node uses.
    """

    outputs: tuple[Served, ...]
    runtime: Model | None
    runtime_inputs: tuple[str, ...]
    dropped_inputs: tuple[str, ...]

    @property
    def served(self) -> tuple[Served, ...]:
        return tuple(s for s in self.outputs if s.kind != RUNTIME)

    def report(self) -> dict[str, Any]:
        """What ``compiled.info["graph_edges"]`` shows."""
        return {
            "served_by_nnport": {s.name: s.why for s in self.served},
            "dropped_inputs": list(self.dropped_inputs),
            "runtime_outputs": [s.ref for s in self.outputs if s.kind == RUNTIME],
            "runtime_called": self.runtime is not None,
        }


# -- finding the edge cases -------------------------------------------------------------------


def plan(model: Model) -> EdgePlan | None:
    """The edge plan of an ONNX ``model``, or None when it has no edge case (memoised on the model).

    None is the common case: the backend then compiles ``model`` itself.
    """
    memo = model.metadata.get(_MEMO)
    if memo is None:
        memo = _analyse(model) if model.format == "onnx" and model.proto is not None else None
        model.metadata[_MEMO] = _NO_PLAN if memo is None else memo
    return memo if isinstance(memo, EdgePlan) else None


def unused_inputs(model: Model) -> tuple[str, ...]:
    """Inputs of an ONNX ``model`` that no node (subgraphs included) and no output uses."""
    if model.format != "onnx" or model.proto is None:
        return ()
    graph = model.proto.graph
    used = _names_used(graph.node) | {o.name for o in graph.output}
    return tuple(s.name for s in model.inputs if s.name not in used)


def _analyse(model: Model) -> EdgePlan | None:
    graph = model.proto.graph
    inputs = {s.name: s for s in model.inputs}
    initializers = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output if out}
    resolver = _Resolver(inputs, initializers, producer, model.opset or 0)
    zero_sized = _zero_sized_outputs(model)

    served: list[Served] = []
    for spec in model.outputs:
        if any(s.name == spec.name for s in served):  # the same name listed again
            served.append(Served(spec.name, ALIAS, spec.name, why="listed again among the outputs"))
            continue
        kind, base, value, via = resolver.resolve(spec.name)
        through = f" through {' -> '.join(via)}" if via else ""
        if kind == INPUT and inputs[base].dtype == spec.dtype:
            served.append(Served(spec.name, INPUT, base, why=f"the input {base!r}{through}"))
        elif kind == CONSTANT and value is not None and value.dtype == spec.dtype and _fits(spec, value.shape):
            origin = "initializer" if base in initializers else "Constant node"
            served.append(Served(spec.name, CONSTANT, base, value, why=f"the constant {base!r} ({origin}){through}"))
        elif spec.name in zero_sized:
            shape = zero_sized[spec.name]
            served.append(
                Served(
                    spec.name,
                    CONSTANT,
                    spec.name,
                    np.zeros(shape, spec.dtype),
                    why=f"always empty: static shape {list(shape)}",
                )
            )
        else:
            served.append(Served(spec.name, RUNTIME, spec.name))
    # Outputs that are the same computed tensor (an Identity alias): the runtime computes one.
    groups: dict[str, list[int]] = {}
    for index, spec in enumerate(model.outputs):
        if served[index].kind == RUNTIME:
            kind, base, _, _ = resolver.resolve(spec.name)
            groups.setdefault(base, []).append(index)
    for base, members in groups.items():
        if len(members) < 2:
            continue
        keep = next((i for i in members if model.outputs[i].name == base), members[0])
        for i in members:
            if i != keep and model.outputs[i].dtype == model.outputs[keep].dtype:
                name = model.outputs[i].name
                served[i] = Served(
                    name, ALIAS, model.outputs[keep].name, why=f"the same tensor as output {model.outputs[keep].name!r}"
                )

    runtime_outputs = [s.name for s in served if s.kind == RUNTIME]
    unused = unused_inputs(model)
    if len(runtime_outputs) == len(model.outputs) and not unused:
        return None
    runtime, kept_inputs = _runtime_model(model, runtime_outputs) if runtime_outputs else (None, ())
    dropped = tuple(s.name for s in model.inputs if s.name not in kept_inputs)
    return EdgePlan(tuple(served), runtime, tuple(kept_inputs), dropped)


class _Resolver:
    """Follows a tensor back through folding operators to an input, a constant, or a computed tensor."""

    def __init__(
        self, inputs: Mapping[str, TensorSpec], initializers: Mapping[str, Any], producer: Mapping[str, Any], opset: int
    ) -> None:
        self.inputs = inputs
        self.initializers = initializers
        self.producer = producer
        self.opset = opset
        self._memo: dict[str, tuple[str, str, np.ndarray | None, tuple[str, ...]]] = {}

    def resolve(self, name: str, depth: int = 0) -> tuple[str, str, np.ndarray | None, tuple[str, ...]]:
        """(kind, base tensor, constant value or None, folded ops) of tensor ``name``.

        kind is ``INPUT``, ``CONSTANT`` or ``"computed"``; ``base`` is the input,
        the constant, or the first tensor (from the output) that a real operator computes.
        """
        found = self._memo.get(name)
        if found is None:
            found = self._resolve(name, depth)
            self._memo[name] = found
        return found

    def _resolve(self, name: str, depth: int) -> tuple[str, str, np.ndarray | None, tuple[str, ...]]:
        if name in self.inputs:
            return INPUT, name, None, ()
        if name in self.initializers:
            return CONSTANT, name, _initializer(self.initializers[name]), ()
        node = self.producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx") or depth > 10_000:
            return "computed", name, None, ()
        if node.op_type == "Constant":
            value = _constant_value(node)
            return (CONSTANT, name, value, ()) if value is not None else ("computed", name, None, ())
        if node.op_type not in FOLDING_OPS or not node.input or node.output[0] != name:
            return "computed", name, None, ()
        kind, base, value, via = self.resolve(node.input[0], depth + 1)
        if kind == INPUT:
            dtype, shape = self.inputs[base].dtype, self.inputs[base].shape
        elif kind == CONSTANT and value is not None:
            dtype, shape = value.dtype, value.shape
        else:  # computed: only what passes through whatever the dtype and shape (an alias of that tensor)
            dtype, shape = None, None
        if not self._passes_through(node, dtype, shape):
            return "computed", name, None, ()
        return kind, base, value, (*via, node.op_type)

    def _passes_through(self, node: Any, dtype: np.dtype | None, shape: Sequence[Any] | None) -> bool:
        """Whether ``node`` returns its first input unchanged, given that input's dtype and shape (None: unknown)."""
        from onnx import helper

        op = node.op_type
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if op == "Identity":
            return True
        if op == "Dropout":
            if self.opset < 7 and attrs.get("is_test", 0) != 1:
                return False  # before opset 7 Dropout drops unless is_test=1
            if len(node.input) >= 3 and node.input[2]:
                kind, _, value, _ = self.resolve(node.input[2])
                return kind == CONSTANT and value is not None and value.size == 1 and not bool(value.reshape(()))
            return True  # no training_mode: inference, the identity
        if dtype is None or shape is None:
            return False
        if op == "Cast":
            try:
                return np.dtype(helper.tensor_dtype_to_np_dtype(int(attrs.get("to", 0)))) == dtype
            except Exception:
                return False
        if op == "Reshape":
            if len(node.input) < 2:
                return False
            kind, _, target, _ = self.resolve(node.input[1])
            if kind != CONSTANT or target is None or target.ndim != 1:
                return False
            return _same_shape_after_reshape(list(shape), [int(t) for t in target], bool(attrs.get("allowzero", 0)))
        return False


def _same_shape_after_reshape(shape: list[Any], target: list[int], allowzero: bool) -> bool:
    """Whether Reshape to ``target`` provably leaves ``shape`` (ints or symbols) as it is."""
    if len(shape) != len(target):
        return False
    infer = 0
    for dim, want in zip(shape, target):
        if want == 0 and not allowzero:
            continue  # copies the input dim
        if want == -1:
            infer += 1
            continue
        if not isinstance(dim, int) or dim != want:
            return False
    if infer == 0:
        return True
    # one -1 with every other dim unchanged infers the remaining dim, unless the tensor is empty
    return infer == 1 and all(isinstance(d, int) and d > 0 or not isinstance(d, int) for d in shape) and 0 not in shape


def _zero_sized_outputs(model: Model) -> dict[str, tuple[int, ...]]:
    """Outputs whose static shape has a zero-size dim: always empty, whatever the feeds.

    Only outputs that declare a 0 dim are considered, and ONNX shape inference
    must agree on the whole static shape (cheap for the usual model: no output
    declares a 0, and inference never runs).
    """
    declared = [
        o
        for o in model.proto.graph.output
        if o.type.HasField("tensor_type")
        and any(d.HasField("dim_value") and d.dim_value == 0 for d in o.type.tensor_type.shape.dim)
    ]
    if not declared:
        return {}
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model.proto, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        return {}
    known = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    found: dict[str, tuple[int, ...]] = {}
    for out in declared:
        value = known.get(out.name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shape = tuple(int(d.dim_value) for d in dims)
            want = out.type.tensor_type.shape.dim
            agrees = len(want) == len(shape) and all(
                not w.HasField("dim_value") or w.dim_value == s for w, s in zip(want, shape)
            )
            if 0 in shape and agrees:
                found[out.name] = shape
    return found


def _fits(spec: TensorSpec, shape: Sequence[int]) -> bool:
    return not spec.shape or spec.accepts_shape(shape)


def _initializer(tensor: Any) -> np.ndarray | None:
    from onnx import numpy_helper

    try:
        return np.asarray(numpy_helper.to_array(tensor))
    except Exception:
        return None


def _constant_value(node: Any) -> np.ndarray | None:
    """The value of a ``Constant`` node (tensor, float(s) or int(s) attribute), else None."""
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return np.asarray(numpy_helper.to_array(attr.t))
        if attr.name == "value_float":
            return np.asarray(attr.f, np.float32)
        if attr.name == "value_floats":
            return np.asarray(list(attr.floats), np.float32)
        if attr.name == "value_int":
            return np.asarray(attr.i, np.int64)
        if attr.name == "value_ints":
            return np.asarray(list(attr.ints), np.int64)
    return None


def _names_used(nodes: Sequence[Any]) -> set[str]:
    """Every tensor name the nodes read, including names their subgraphs read from outer scopes."""
    used: set[str] = set()
    for node in nodes:
        used.update(n for n in node.input if n)
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                used |= _names_used(sub.node) | {o.name for o in sub.output}
    return used


def _runtime_model(model: Model, outputs: Sequence[str]) -> tuple[Model, tuple[str, ...]]:
    """``model`` computing only ``outputs`` (each once): other outputs, dead nodes and unused inputs removed."""
    import onnx

    from .model import load

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    wanted = list(dict.fromkeys(outputs))
    by_name = {o.name: o for o in graph.output}
    kept_outputs = [by_name[n] for n in wanted]
    needed = set(wanted)
    kept_nodes = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output if o):
            kept_nodes.append(node)
            needed |= _names_used([node])
    kept_nodes.reverse()
    produced = {o for n in kept_nodes for o in n.output}
    kept_inputs = tuple(v.name for v in graph.input if v.name in needed)
    _replace(graph.output, kept_outputs)
    _replace(graph.node, kept_nodes)
    _replace(graph.input, [v for v in graph.input if v.name in needed])
    _replace(graph.initializer, [t for t in graph.initializer if t.name in needed])
    _replace(graph.sparse_initializer, [t for t in graph.sparse_initializer if t.values.name in needed])
    _replace(graph.value_info, [v for v in graph.value_info if v.name in needed or v.name in produced])
    runtime = load(proto, check=False)
    runtime = dataclasses.replace(runtime, name=model.name)
    runtime.metadata[_MEMO] = _NO_PLAN  # nothing left to serve: the backend's own compile may ask again
    runtime.metadata.update({k: v for k, v in model.metadata.items() if not k.startswith("_")})
    runtime.metadata["source_hash"] = model.hash
    initializers = {t.name for t in model.proto.graph.initializer}
    return runtime, tuple(n for n in kept_inputs if n not in initializers)


def _replace(field_: Any, items: Sequence[Any]) -> None:
    copies = [type(i)() for i in items]
    for copy, item in zip(copies, items):
        copy.CopyFrom(item)
    del field_[:]
    field_.extend(copies)


# -- compiling and running -------------------------------------------------------------------------


def compile(backend: Backend, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
    """``backend.compile(model, ...)``, with the outputs ``plan(model)`` finds served by nnport.

    A model without edge cases is compiled as it is.  Otherwise the backend
    compiles the runtime model (nothing, when every output is served: then
    only the precision is checked against the backend's capabilities) and the
    result is a ``CompiledModel`` of ``model`` whose backend is a ``ServingBackend``.
    """
    edges = plan(model)
    if edges is None:
        return backend.compile(model, device, options)
    inner = None
    if edges.runtime is not None:
        inner = backend.compile(edges.runtime, device, _runtime_options(options, edges))
    else:
        precisions = backend.capabilities(device).precisions
        if precisions and options.precision not in precisions:
            raise UnsupportedPrecision(
                f"precision {options.precision!r} is not supported; supported: {list(precisions)}",
                backend=backend.name,
                device=device.id,
            )
    return _serving(backend, model, device, options, edges, inner)


def _runtime_options(options: CompileOptions, edges: EdgePlan) -> CompileOptions:
    """``options`` with calibration samples and shapes cut to the runtime model's inputs."""
    if not edges.dropped_inputs:
        return options
    keep = set(edges.runtime_inputs)
    changes: dict[str, Any] = {}
    calibration = options.calibration
    if isinstance(calibration, Mapping):
        changes["calibration"] = {k: v for k, v in calibration.items() if k in keep or k.startswith("__")}
    elif isinstance(calibration, (list, tuple)):
        changes["calibration"] = [
            {k: v for k, v in s.items() if k in keep or k.startswith("__")} if isinstance(s, Mapping) else s
            for s in calibration
        ]
    shapes = getattr(options, "shapes", None)
    if shapes and any(k not in keep for k in shapes):
        changes["shapes"] = {k: v for k, v in shapes.items() if k in keep}
    return options.replace(**changes) if changes else options


def _serving(
    backend: Backend,
    model: Model,
    device: Device,
    options: CompileOptions,
    edges: EdgePlan,
    inner: CompiledModel | None,
) -> CompiledModel:
    inner_in = {s.name: s for s in inner.inputs} if inner is not None else {}
    inner_out = {s.name: s for s in inner.outputs} if inner is not None else {}
    by_input = {s.name: s for s in model.inputs}
    inputs = tuple(inner_in.get(s.name, s) for s in model.inputs)
    outputs: list[TensorSpec] = []
    for spec, source in zip(model.outputs, edges.outputs):
        if source.kind == RUNTIME or source.kind == ALIAS:
            found = inner_out.get(source.ref)
            outputs.append(TensorSpec(spec.name, found.shape, found.dtype) if found is not None else spec)
        elif source.kind == INPUT:
            outputs.append(TensorSpec(spec.name, inner_in.get(source.ref, by_input[source.ref]).shape, spec.dtype))
        else:
            outputs.append(TensorSpec(spec.name, source.value.shape, source.value.dtype))  # type: ignore[union-attr]
    native = ServedOutputs(inner, edges)
    compiled = CompiledModel(
        ServingBackend(backend), model, device, options, native=native, inputs=inputs, outputs=outputs
    )
    if inner is not None:
        compiled.info.update(inner.info)
        compiled.cache_hit = inner.cache_hit
    compiled.info["graph_edges"] = edges.report()
    return compiled


class ServedOutputs:
    """``compiled.native`` of a served model: the runtime's compiled model and how to complete its outputs.

    ``inner`` is the backend's ``CompiledModel`` of the runtime model (None
    when nothing is left to compute).  Served arrays are copies: every output
    belongs to the caller, as a runtime's outputs do.
    """

    def __init__(self, inner: CompiledModel | None, edges: EdgePlan) -> None:
        self.inner = inner
        self.edges = edges
        self.runtime_inputs = edges.runtime_inputs
        self.subset = bool(edges.dropped_inputs)
        self.steps = tuple((s.name, s.kind, s.ref, s.value) for s in edges.outputs)

    def runtime_feeds(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """The feeds the runtime model takes (the caller's mapping when no input was dropped)."""
        if not self.subset:
            return feeds
        return {name: feeds[name] for name in self.runtime_inputs}

    def complete(self, feeds: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every model output in ONNX order: the runtime's, then feeds, constants and aliases copied in."""
        out: dict[str, np.ndarray] = {}
        for name, kind, ref, value in self.steps:
            if kind == RUNTIME:
                out[name] = got[ref]
            elif kind == INPUT:
                out[name] = np.array(feeds[ref], copy=True)
            elif kind == CONSTANT:
                out[name] = value.copy()  # type: ignore[union-attr]
            elif name not in out:  # ALIAS of another name (the same name again is already there)
                out[name] = np.array(got[ref], copy=True)
        return out


class ServingBackend(Backend):
    """The backend of a served model: runs the runtime model with the real backend, then adds the served outputs.

    Like ``nnport.specialize.SpecializingBackend`` it stands in for the real
    backend (same name), so ``run``, hooks, ``allocate`` and ``measure`` keep
    their contract; ``measure`` times the runtime model (served outputs cost a
    copy), or this backend's ``execute`` when nothing is left to compute.
    """

    def __init__(self, real: Backend) -> None:
        self.real = real
        self.name = real.name  # type: ignore[misc]  # instance attribute over the ClassVar: it is the real backend's
        self.vendor = real.vendor  # type: ignore[misc]
        self.priority = real.priority  # type: ignore[misc]

    def devices(self) -> list[Device]:
        return self.real.devices()

    def capabilities(self, device: Device) -> Capabilities:
        return self.real.capabilities(device)

    def versions(self) -> dict[str, str]:
        return self.real.versions()

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        return compile(self.real, model, device, options)

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        served: ServedOutputs = compiled.native
        inner = served.inner
        if inner is None:
            return served.complete(feeds, {})
        return served.complete(feeds, inner.backend.run(inner, served.runtime_feeds(feeds)))

    def allocate(self, compiled: CompiledModel, shapes: Mapping[str, Sequence[int]] | None = None) -> Binding:
        from .data import random_feeds

        served: ServedOutputs = compiled.native
        feeds = random_feeds(compiled.inputs, shapes=shapes)
        inner = served.inner
        if inner is None:
            return Binding(feeds)
        kept = served.runtime_inputs
        inner_binding = inner.backend.allocate(inner, {k: tuple(feeds[k].shape) for k in kept})
        feeds.update(inner_binding.inputs)  # the arrays the runtime's buffers were made for
        return Binding(feeds, native=inner_binding)

    def _sync(self, compiled: CompiledModel, binding: Binding) -> tuple[CompiledModel | None, Binding | None]:
        served: ServedOutputs = compiled.native
        inner = served.inner
        if inner is None:
            return None, None
        inner_binding: Binding = binding.native
        inner_binding.inputs = dict(served.runtime_feeds(binding.inputs))  # edits to binding.inputs reach the runtime
        return inner, inner_binding

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        served: ServedOutputs = compiled.native
        inner, inner_binding = self._sync(compiled, binding)
        if inner is None or inner_binding is None:
            binding.outputs = served.complete(binding.inputs, {})
            return
        inner.backend.execute(inner, inner_binding)
        binding.outputs = served.complete(binding.inputs, inner_binding.outputs)

    def measure(self, compiled: CompiledModel, binding: Binding, settings: MeasureSettings) -> Measurement:
        inner, inner_binding = self._sync(compiled, binding)
        if inner is None or inner_binding is None:
            from .measuring import default_measure

            return default_measure(self, compiled, binding, settings)
        return inner.backend.measure(inner, inner_binding, settings)

    def __repr__(self) -> str:
        return f"<serving {self.real!r}>"
