"""What precision an ONNX model already carries: the one place that decides it.

``nnport.compress`` refuses to quantise a quantised model, the OpenVINO plugin
pins only the layers a quantised model left in float, and the TensorRT plugin
builds a strongly typed engine in exactly the types the model carries: all three
ask these functions.  Importing this module imports nothing heavy (``onnx`` only
inside the functions), so a warm compile pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

PRECISION_KEY = "nnport.precision"
"""Metadata key written into compressed ONNX files: ``int8`` or ``fp16``."""

COMPRESSED_PRECISIONS = ("fp16", "int8")

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
"""Q/DQ quantisation: the int8 form every runtime reads (and the only one TensorRT's parser takes)."""

QOPERATOR_OPS = frozenset(
    {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
    }
)
"""Integer operators of the QOperator form (and dynamic quantisation); every ``QLinear*`` operator too."""


def is_quantized_op(op_type: str) -> bool:
    """Whether ``op_type`` marks a quantised ONNX model (Q/DQ, ``QLinear*``, integer and dynamic ops)."""
    return op_type in QDQ_OPS or op_type in QOPERATOR_OPS or op_type.startswith("QLinear")


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def quantized_ops(proto: Any) -> list[str]:
    """The quantisation operators ``proto`` holds, sorted ([] for a float model); subgraphs included."""
    return sorted({n.op_type for g in _graphs(proto.graph) for n in g.node if is_quantized_op(n.op_type)})


def compressed_precision(proto: Any) -> str | None:
    """``"int8"`` when ``proto`` holds quantisation operators, ``"fp16"`` when fp16 weights, else None.

    A model ``nnport compress`` wrote says which in its metadata (``nnport.precision``).
    """
    marked = {p.key: p.value for p in proto.metadata_props}.get(PRECISION_KEY)
    if marked in COMPRESSED_PRECISIONS:
        return str(marked)
    if quantized_ops(proto):
        return "int8"
    from onnx import TensorProto

    if any(t.data_type == TensorProto.FLOAT16 for g in _graphs(proto.graph) for t in g.initializer):
        return "fp16"
    return None


def model_precisions(proto: Any) -> frozenset[str]:
    """Reduced-precision forms ``proto`` carries: ``fp16``, ``bf16``, ``int8`` (Q/DQ, with ``uint8_qdq`` for
    asymmetric uint8 activations) and ``qoperator``; subgraphs included.

    A strongly typed TensorRT build computes in exactly these types, so this is
    how its plugin tells an fp16/int8 model (what ``nnport compress`` writes)
    from a plain fp32 one.
    """
    from onnx import TensorProto

    elem_types: set[int] = set()
    ops: set[str] = set()
    for graph in _graphs(proto.graph):
        for t in graph.initializer:
            elem_types.add(t.data_type)
        for v in list(graph.input) + list(graph.output) + list(graph.value_info):
            if v.type.HasField("tensor_type"):
                elem_types.add(v.type.tensor_type.elem_type)
        for node in graph.node:
            ops.add(node.op_type)
            for attr in node.attribute:
                if attr.name == "to" and node.op_type == "Cast":
                    elem_types.add(attr.i)
                if attr.HasField("t"):
                    elem_types.add(attr.t.data_type)
    found = set()
    if TensorProto.FLOAT16 in elem_types:
        found.add("fp16")
    if TensorProto.BFLOAT16 in elem_types:
        found.add("bf16")
    if ops & QDQ_OPS:
        found.add("int8")
        if TensorProto.UINT8 in elem_types:
            found.add("uint8_qdq")  # asymmetric uint8 activations (zero points != 0)
    if any(op in QOPERATOR_OPS or op.startswith("QLinear") for op in ops):
        found.add("qoperator")
    return frozenset(found)
