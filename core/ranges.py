"""Value ranges of joined tensors: where one quantisation scale cannot serve every part.

A YOLOv8 detector ends in ``Concat(boxes, scores)``: box coordinates in pixels
(0-640) and class scores in 0-1 joined into one output.  An int8 quantizer gives
a tensor one scale, here 640/255 = 2.5, so every score rounds to zero while the
boxes still agree: cosine 0.00 on the scores, 0.999 on the boxes, and a
whole-output cosine of 0.999 that hides it.  Detectors, segmenters and
multi-task heads commonly join mixed-range tensors just before their outputs.

This module finds such joins from calibration statistics and says which part of
each output came from where, for the compressors (``nnport.compress``, the
OpenVINO plugin's NNCF int8) and for the compression report:

* ``find_mixed_ranges`` runs the fp32 model on the calibration inputs with the
  parts of every ``Concat`` (its inputs) and ``Split`` (its outputs) exposed as
  extra outputs, and flags a join whose widest part spans more than
  ``MIXED_RANGE_RATIO`` times its narrowest one (the narrowest part then gets
  fewer than 255/16 = 16 of the 8-bit levels).  A flagged join and everything
  after it up to the outputs (its *tail*) is to stay in float, unless that tail
  holds more than ``FLOAT_TAIL_WEIGHT_SHARE`` of the model's weights (a
  mid-network join: keeping it float would keep most of the model float).  Then
  only the join itself stays float: its consumers still quantize the joined
  tensor with one scale (reported), but no quantizer unifies the scales of the
  join's inputs, which NNCF does for a quantized Concat and which would carry
  the damage upstream into every other consumer of those inputs.
* ``output_segments`` gives, per graph output made by a ``Concat`` (directly or
  through ``Identity``/``Transpose``), the slice each part occupies, so that
  accuracy is reported per part (boxes vs scores) and not only per output.

Both run the ONNX model through a *runner*: by default ONNX Runtime on CPU;
a backend passes its own (the OpenVINO plugin runs OpenVINO) so that nothing
here needs a particular runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIXED_RANGE_RATIO = 16.0
"""A join is mixed-range when its widest part is this many times wider than its narrowest."""

FLOAT_TAIL_WEIGHT_SHARE = 0.05
"""A flagged join is kept float only if its tail holds at most this share of the model's weights."""

JOIN_OPS = frozenset({"Concat"})
SPLIT_OPS = frozenset({"Split"})
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention", "Einsum"})
PASS_THROUGH = frozenset({"Identity", "Transpose"})
"""Ops between a Concat and a graph output through which output segments are still traced."""

Runner = Callable[[bytes, Sequence[Mapping[str, np.ndarray]]], list[dict[str, np.ndarray]]]
"""Runs a serialized ONNX model on feeds; returns one ``{output name: array}`` per feed."""


@dataclass(frozen=True)
class Part:
    """One part of a join: the tensor, its observed range and its extent along the join axis."""

    tensor: str
    low: float
    high: float
    extent: int | None = None

    @property
    def width(self) -> float:
        """The range a quantizer must cover for this part (zero included, as ONNX Runtime and NNCF do)."""
        return max(self.high, 0.0) - min(self.low, 0.0)


@dataclass(frozen=True)
class MixedRange:
    """A Concat/Split whose parts span ranges too far apart for one int8 scale.

    ``tail`` names the nodes after it up to the outputs; ``head`` (a Split
    only) the nodes making its input, back to the first weighted op, since a
    quantizer quantizes their output as one tensor; ``kept_float`` says
    whether the compressor keeps the join float, ``tail_float`` whether its
    tail (and head) too; ``reason`` says why (in words a report can print).
    """

    node: str
    op_type: str
    parts: tuple[Part, ...]
    ratio: float
    tail: tuple[str, ...]
    kept_float: bool
    reason: str
    tail_float: bool = False
    head: tuple[str, ...] = ()

    @property
    def float_nodes(self) -> tuple[str, ...]:
        """Node names to keep float: the join, and its tail (and a Split's head) where those are kept float too."""
        if not self.kept_float:
            return ()
        return (*self.head, self.node, *self.tail) if self.tail_float else (self.node,)

    def why(self, name: str) -> str:
        """Why node ``name`` (one of ``float_nodes``) stays float."""
        if name == self.node:
            return self.reason
        where = "makes the input of" if name in self.head else "comes after"
        return f"{where} mixed-range {self.op_type} {self.node!r}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "ratio": self.ratio,
            "parts": [{"tensor": p.tensor, "low": p.low, "high": p.high, "extent": p.extent} for p in self.parts],
            "tail": list(self.tail),
            "head": list(self.head),
            "kept_float": self.kept_float,
            "tail_float": self.tail_float,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Segment:
    """The slice ``[start:stop]`` along ``axis`` of graph output ``output`` that part ``source`` fills."""

    output: str
    axis: int
    start: int
    stop: int
    source: str

    @property
    def label(self) -> str:
        """``[:,0:4]``: the slice in numpy notation."""
        return "[" + ":," * self.axis + f"{self.start}:{self.stop}]"

    def take(self, array: np.ndarray) -> np.ndarray:
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(self.start, self.stop)
        return array[tuple(index)]


# -- running a model with intermediates exposed -------------------------------------------------


def onnxruntime_runner(model: bytes, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The default runner: ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    return [dict(zip(names, session.run(None, {k: v for k, v in f.items() if k in inputs}))) for f in feeds]


def with_outputs(proto: Any, tensors: Iterable[str]) -> Any:
    """A copy of ``proto`` that also outputs ``tensors`` (untyped: runtimes infer the type)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    present = {o.name for o in copy.graph.output}
    for name in dict.fromkeys(tensors):
        if name and name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
    return copy


def _float_tensors(proto: Any) -> set[str] | None:
    """Names of tensors known (from shape inference) to be float32; None where inference fails."""
    import onnx
    from onnx import TensorProto

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:
        return None
    known = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    found = {v.name for v in known if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    found |= {i.name for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT}
    return found


def _axis(node: Any, rank: int) -> int:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return axis + rank if axis < 0 else axis


def _part_names(node: Any) -> list[str]:
    return list(node.input) if node.op_type in JOIN_OPS else list(node.output)


# -- detection ---------------------------------------------------------------------------------


def part_ranges(
    proto: Any, feeds: Sequence[Mapping[str, np.ndarray]], runner: Runner | None = None
) -> dict[str, tuple[Any, tuple[Part, ...]]]:
    """``{node name: (node, parts)}`` for every float Concat/Split with two or more parts, ranges over ``feeds``."""
    from onnx import numpy_helper

    joins = [
        n for n in proto.graph.node if n.op_type in JOIN_OPS | SPLIT_OPS and len([p for p in _part_names(n) if p]) >= 2
    ]
    if not joins or not feeds:
        return {}
    floats = _float_tensors(proto)
    constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    wanted = [p for n in joins for p in _part_names(n) if p and p not in constants and (floats is None or p in floats)]
    if not wanted:
        return {}
    runner = runner or onnxruntime_runner
    results = runner(with_outputs(proto, wanted).SerializeToString(), list(feeds))
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    shape: dict[str, tuple[int, ...]] = {}
    for result in results:
        for name in wanted:
            value = result.get(name)
            if value is None or value.dtype.kind != "f" or value.size == 0:
                continue
            finite = value[np.isfinite(value)]
            if finite.size:
                low[name] = min(low.get(name, np.inf), float(finite.min()))
                high[name] = max(high.get(name, -np.inf), float(finite.max()))
            shape[name] = value.shape
    for name, value in constants.items():
        if value.dtype.kind == "f" and value.size:
            low[name], high[name], shape[name] = float(value.min()), float(value.max()), value.shape
    found: dict[str, tuple[Any, tuple[Part, ...]]] = {}
    for node in joins:
        names = [p for p in _part_names(node) if p]
        if not all(n in low for n in names):
            continue  # integer (shape) tensors, or parts the runner did not return
        axis = _axis(node, len(shape[names[0]]))
        parts = tuple(Part(n, low[n], high[n], int(shape[n][axis]) if axis < len(shape[n]) else None) for n in names)
        found[node.name or node.output[0]] = (node, parts)
    return found


def find_mixed_ranges(
    proto: Any,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    ratio: float = MIXED_RANGE_RATIO,
    runner: Runner | None = None,
    max_tail_share: float = FLOAT_TAIL_WEIGHT_SHARE,
    keep_float: bool = True,
) -> list[MixedRange]:
    """The Concat/Split nodes of ``proto`` whose parts' ranges differ by more than ``ratio`` on ``feeds``.

    ``proto`` is the fp32 model the quantizer will see (node names must match
    what the quantizer's exclusion list names); ``feeds`` the calibration inputs.
    Parts that are constant zero (width 0) do not count.  ``keep_float=False``
    (the caller's opt-out) reports the joins found with ``kept_float`` False.
    """
    found = []
    consumers = _consumers(proto)
    producers = {o: n for n in proto.graph.node for o in n.output}
    constants = {i.name for i in proto.graph.initializer} | {
        o for n in proto.graph.node if n.op_type == "Constant" for o in n.output
    }
    weights = _weight_sizes(proto)
    total = sum(weights.values()) or 1
    for key, (node, parts) in part_ranges(proto, feeds, runner).items():
        widths = [p.width for p in parts if p.width > 0]
        if len(widths) < 2:
            continue
        spread = max(widths) / min(widths)
        if spread <= ratio:
            continue
        tail = _tail(node, consumers)
        head = _head(node, producers, constants) if node.op_type in SPLIT_OPS else []
        share = sum(weights.get(n.name, 0) for n in head + tail) / total
        narrow = min((p for p in parts if p.width > 0), key=lambda p: p.width)
        wide = max(parts, key=lambda p: p.width)
        levels = 255.0 * narrow.width / wide.width
        what = (
            f"{node.op_type} parts span ranges {spread:.0f}x apart: {narrow.tensor!r} [{narrow.low:.3g}, "
            f"{narrow.high:.3g}] vs "
            f"{wide.tensor!r} [{wide.low:.3g}, {wide.high:.3g}]; one 8-bit scale would leave the narrow "
            f"part ~{levels:.1f} levels"
        )
        tail_float = keep_float and share <= max_tail_share
        if not keep_float:
            reason = what + "; quantized anyway (keeping mixed-range joins float was turned off)"
        elif tail_float:
            before = (
                f" and the {len(head)} node(s) making its input (a quantized output would carry one scale)"
                if head
                else ""
            )
            reason = what + (
                f"; kept float with the {len(tail)} node(s) after it{before}" if tail or head else "; kept float"
            )
        else:
            reason = what + (
                f"; the join kept float, but the {len(head) + len(tail)} node(s) around it hold "
                f"{100 * share:.0f}% of the weights and stay int8, "
                "so they still see the joined tensor on one scale (exclude them by name to keep them float)"
            )
        names = tuple(n.name or n.output[0] for n in tail)
        found.append(
            MixedRange(
                key,
                node.op_type,
                parts,
                spread,
                names,
                keep_float,
                reason,
                tail_float,
                tuple(n.name or n.output[0] for n in head),
            )
        )
    return found


def _consumers(proto: Any) -> dict[str, list[Any]]:
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _head(node: Any, producers: Mapping[str, Any], constants: set[str]) -> list[Any]:
    """The nodes making a Split's input, back to the first weighted op or the first op joining two tensors.

    Quantizers quantize such a node's output as one tensor (ONNX Runtime's QDQ
    Conv, Mul, Add...), which is where a Split's parts lose their own ranges.
    """
    head: list[Any] = []
    tensor = node.input[0] if node.input else ""
    while tensor in producers:
        producer = producers[tensor]
        if any(producer is seen for seen in head):
            break
        head.append(producer)
        data = [i for i in producer.input if i and i not in constants]
        if producer.op_type in WEIGHTED_OPS or len(data) != 1:
            break
        tensor = data[0]
    return head


def _tail(node: Any, consumers: Mapping[str, list[Any]]) -> list[Any]:
    """Every node downstream of ``node``, in graph order of discovery."""
    seen: dict[int, Any] = {}
    stack = list(node.output)
    while stack:
        for user in consumers.get(stack.pop(), ()):
            if id(user) not in seen:
                seen[id(user)] = user
                stack.extend(user.output)
    return list(seen.values())


def _weight_sizes(proto: Any) -> dict[str, int]:
    """Weight elements (initializers) consumed by each weighted node, by node name."""
    sizes = {i.name: int(np.prod(i.dims)) for i in proto.graph.initializer}
    return {n.name: sum(sizes.get(i, 0) for i in n.input) for n in proto.graph.node if n.op_type in WEIGHTED_OPS}


# -- output segments ---------------------------------------------------------------------------


def output_segments(
    proto: Any, feed: Mapping[str, np.ndarray], runner: Runner | None = None
) -> dict[str, list[Segment]]:
    """Per graph output made by a Concat (through Identity/Transpose), the slice of each part.

    Extents come from running ``proto`` once on ``feed`` with the Concat's
    inputs exposed (symbolic dims resolved).  Outputs not made by a Concat are
    absent.
    """
    producer = {o: n for n in proto.graph.node for o in n.output}
    # output -> (concat node, permutations from concat axes to output axes)
    traced: dict[str, tuple[Any, list[list[int]]]] = {}
    for output in proto.graph.output:
        node = producer.get(output.name)
        perms: list[list[int]] = []
        while node is not None and node.op_type in PASS_THROUGH:
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                if perm is None:
                    node = None
                    break
                perms.append(perm)
            node = producer.get(node.input[0])
        if node is not None and node.op_type in JOIN_OPS and len(node.input) >= 2:
            traced[output.name] = (node, list(reversed(perms)))
    if not traced:
        return {}
    wanted = [i for node, _ in traced.values() for i in node.input]
    runner = runner or onnxruntime_runner
    (values,) = runner(with_outputs(proto, wanted).SerializeToString(), [feed])
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    segments: dict[str, list[Segment]] = {}
    for output, (node, perms) in traced.items():
        maybe = [values.get(i, constants.get(i)) for i in node.input]
        arrays = [a for a in maybe if a is not None]
        if len(arrays) != len(maybe):
            continue
        axis = _axis(node, arrays[0].ndim)
        out_axis = axis
        for perm in perms:  # perms in application order: each Transpose moves the axis
            out_axis = list(perm).index(out_axis)
        start = 0
        found = []
        for name, array in zip(node.input, arrays):
            size = int(array.shape[axis])
            found.append(Segment(output, out_axis, start, start + size, name))
            start += size
        segments[output] = found
    return segments
