"""Compression: fp16 and int8 ONNX models (the graph transform).

``quantize`` turns an fp32 ONNX model into a *portable* compressed ONNX model:

* ``int8``, ``method="static"``: ONNX Runtime's pre-processing (shape inference
  and graph clean-up) then ``quantize_static`` in QDQ format, calibrated on the
  given samples: weights symmetric int8 (per channel where the opset allows),
  activations asymmetric uint8 (symmetric int8 on request, for TensorRT).  QDQ is the format every runtime reads as
  int8: ONNX Runtime
  fuses it into integer kernels, OpenVINO turns it into FakeQuantize and runs
  int8, TensorRT builds a strongly typed int8 engine from it.
* ``int8``, ``method="dynamic"``: ``quantize_dynamic`` for MatMul-heavy models
  (transformers): weights int8, activation scales computed at run time, so no
  calibration data; it yields integer operators (``MatMulInteger``) rather than
  QDQ, which ONNX Runtime and OpenVINO read but TensorRT does not.
* ``fp16``: ONNX Runtime's float16 converter with fp32 inputs and outputs kept
  at the boundary, so callers feed the same arrays.

What a compressed model costs and buys on each device (accuracy delta, size,
latency ratio) is ``nnport.compress_report``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import progress
from .calibration import calibration_feeds
from .errors import CompileError, InputError, NnportError, UnsupportedModel
from .model import Model, drop_initializer_inputs, load
from .precision import COMPRESSED_PRECISIONS, PRECISION_KEY, quantized_ops
from .precision import compressed_precision as _proto_precision

METHODS = ("static", "dynamic")
ACTIVATION_TYPES = ("int8", "uint8")
DYNAMIC_OP_TYPES = ["MatMul", "Attention", "LSTM", "Gather", "EmbedLayerNormalization"]
PER_CHANNEL_MIN_OPSET = 13
RECIPE = "nnport-compress-2"
"""Changes whenever what ``quantize`` makes of a model changes (2: mixed-range joins kept float); part of
converted-model cache keys."""


# -- detection ---------------------------------------------------------------------------


def compressed_precision(model: Any) -> str | None:
    """``"int8"`` if the model already holds quantization nodes, ``"fp16"`` if fp16 tensors, else None.

    Quantizing a quantized model would quantize its dequantized values again
    (double rounding, scales of scales), so ``quantize`` refuses such a model.
    ``model``: a ``Model``, an ``onnx.ModelProto`` or anything ``nnport.load`` takes
    (``nnport.precision.compressed_precision`` decides, on the proto).
    """
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else load(model).proto
    return None if proto is None else _proto_precision(proto)


# -- quantize ----------------------------------------------------------------------------


def quantize(
    model: Any,
    precision: str = "int8",
    calibration: Any = None,
    method: str = "static",
    *,
    per_channel: bool | None = None,
    samples: int | None = None,
    reduce_range: bool | None = None,
    exclude_nodes: Sequence[str] = (),
    activations: str = "uint8",
    keep_mixed_ranges_float: bool = True,
) -> Model:
    """Return ``model`` compressed to ``precision`` as a new ``nnport.Model`` (portable ONNX).

    ``calibration`` (int8 static only): a directory of ``.npy``/``.npz``, an
    iterable of feed dicts, or ``"random"`` (with a warning); see
    ``nnport.calibration``.  ``per_channel`` defaults to True when the model has
    Conv/Gemm/MatMul weights.  ``reduce_range`` (7-bit weights) defaults to True
    on x86 CPUs without VNNI, where the u8*s8 instruction can saturate.
    ``activations``: ``"uint8"`` (default) quantizes activations asymmetric
    unsigned, which ONNX Runtime's x86 kernels run fastest (u8*s8) and which
    keeps the full 8 bits for post-ReLU tensors; ``"int8"`` quantizes them
    symmetric signed, the only Q/DQ form TensorRT accepts (no zero points),
    at some cost in accuracy and, on ONNX Runtime CPU, in speed.

    ``keep_mixed_ranges_float`` (default True): a Concat/Split whose parts span
    ranges far apart on the calibration data (a detector's pixel boxes joined
    with its 0-1 scores) stays float with the nodes after it, because one int8
    scale would round the narrow part to nothing (``nnport.ranges``).  The
    result's ``metadata["compression"]["kept_float"]`` names every node left
    float and why; ``["mixed_ranges"]`` lists the joins found.

    Raises ``InputError`` (no or mismatched calibration data, unknown precision
    or method), ``UnsupportedModel`` (already quantized, not ONNX, nothing to
    quantize) or ``CompileError`` (the quantizer itself failed).
    """
    original = load(model)
    if precision not in COMPRESSED_PRECISIONS:
        raise InputError(f"precision must be one of {list(COMPRESSED_PRECISIONS)} for compression, got {precision!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, got {method!r}")
    if activations not in ACTIVATION_TYPES:
        raise InputError(f"activations must be one of {list(ACTIVATION_TYPES)}, got {activations!r}")
    if original.format != "onnx":
        raise UnsupportedModel(f"compression works on ONNX models; {original.name!r} is {original.format}")
    already = _proto_precision(original.proto)
    if already is not None:
        ops = quantized_ops(original.proto)
        detail = f" (operators {ops})" if already == "int8" and ops else ""
        raise UnsupportedModel(
            f"model {original.name!r} is already {already}{detail}; compress the fp32 original instead "
            "(quantizing twice rounds twice and stacks scales)"
        )
    if precision == "fp16":
        proto = _to_fp16(original)
        info: dict[str, Any] = {"precision": "fp16"}
    elif method == "dynamic":
        proto = _dynamic_int8(original, per_channel=bool(per_channel), reduce_range=bool(reduce_range))
        info = {"precision": "int8", "method": "dynamic"}
    else:
        feeds = calibration_feeds(calibration, original.inputs, samples=samples)
        if per_channel is None:
            per_channel = bool(original.operators() & {"Conv", "Gemm", "MatMul", "ConvTranspose"})
        if reduce_range is None:
            reduce_range = _needs_reduce_range()
        proto, kept_float, mixed = _static_int8(
            original,
            feeds,
            per_channel=per_channel,
            reduce_range=reduce_range,
            exclude_nodes=exclude_nodes,
            activations=activations,
            keep_mixed=keep_mixed_ranges_float,
        )
        info = {
            "precision": "int8",
            "method": "static",
            "activations": activations,
            "per_channel": per_channel,
            "reduce_range": reduce_range,
            "calibration_samples": len(feeds),
            "keep_mixed_ranges_float": keep_mixed_ranges_float,
        }
    _mark(proto, info)
    if precision == "int8" and method == "static":
        info = {**info, "kept_float": kept_float, "mixed_ranges": [m.to_dict() for m in mixed]}
    result = load(proto)
    object.__setattr__(result, "name", f"{original.name}-{precision}")
    result.metadata["compression"] = {**info, "source_hash": original.hash, "source_name": original.name}
    return result


def _mark(proto: Any, info: Mapping[str, Any]) -> None:
    props = {p.key: p for p in proto.metadata_props}
    for key, value in ((PRECISION_KEY, info["precision"]), ("nnport.compression", repr(dict(info)))):
        if key in props:
            props[key].value = str(value)
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)


def _needs_reduce_range() -> bool:
    """x86 without VNNI/AMX: ONNX Runtime advises 7-bit weights against u8*s8 saturation (``nnport.isa``)."""
    from . import isa

    return isa.is_x86() and not isa.has_int8_dot_product()


def cpu_int8_features() -> dict[str, bool]:
    """Which int8/bf16 instruction sets this CPU has (``nnport.isa``: CPUID, then /proc/cpuinfo).

    int8 speedups depend on them: VNNI (``avx512_vnni``, ``avx_vnni``) does a
    u8*s8 dot product in one instruction, AMX (``amx_int8``) in tiles; without
    them int8 kernels gain little over fp32.  Empty off x86.
    """
    from . import isa

    return isa.features() if isa.is_x86() else {}


def _prepared_proto(original: Model, opset: int | None = None) -> Any:
    """A copy of the proto, with opset raised to ``opset`` where lower, and IR-3 inputs tidied."""
    import onnx
    from onnx import version_converter

    proto = onnx.ModelProto()
    proto.CopyFrom(original.proto)
    drop_initializer_inputs(proto)  # IR < 4 weights-as-inputs would be overridable inputs to quantizers
    for i, node in enumerate(proto.graph.node):  # quantizers address nodes by name
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    current = original.opset or 0
    if opset and current < opset:
        try:
            proto = version_converter.convert_version(proto, opset)
        except Exception as exc:
            raise UnsupportedModel(
                f"cannot raise the model's opset {current} to {opset} for quantization: {exc}"
            ) from exc
        proto.ir_version = max(proto.ir_version, 7)
    return proto


def _static_int8(
    original: Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    per_channel: bool,
    reduce_range: bool,
    exclude_nodes: Sequence[str],
    activations: str,
    keep_mixed: bool = True,
) -> tuple[Any, dict[str, str], list[Any]]:
    """The QDQ model, the nodes kept float (name -> why) and the mixed-range joins found."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type information
        def __init__(self, data: Sequence[Mapping[str, np.ndarray]]) -> None:
            self._data = list(data)
            self._it = iter(self._data)

        def get_next(self) -> Mapping[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(self._data)

    proto = _prepared_proto(original, PER_CHANNEL_MIN_OPSET if per_channel else 11)
    with tempfile.TemporaryDirectory(prefix="nnport-quant-") as tmp:
        src, pre, out = (os.path.join(tmp, n) for n in ("model.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, src)
        pre = _preprocess(src, pre)
        prepared = onnx.load(pre)
        kept_float = {name: "excluded by the caller" for name in exclude_nodes}
        for name in _output_activations(prepared):
            kept_float.setdefault(name, OUTPUT_ACTIVATION_REASON)
        mixed = _mixed_ranges(prepared, feeds, keep_mixed)
        for join in mixed:
            for name in join.float_nodes:
                kept_float.setdefault(name, join.why(name))
        exclude_nodes = list(kept_float)
        try:
            with progress.step(f"onnxruntime: int8 static quantization of {original.name!r} on {len(feeds)} sample(s)"):
                quantize_static(
                    pre,
                    out,
                    _Reader(feeds),
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=exclude_nodes or None,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": activations == "int8"},
                )
        except NnportError:
            raise
        except Exception as exc:
            raise CompileError(f"ONNX Runtime static quantization failed: {type(exc).__name__}: {exc}") from exc
        result = onnx.load(out)
    if not quantized_ops(result):
        raise UnsupportedModel(
            f"static quantization found no operator to quantize in {original.name!r} (operators: "
            f"{sorted(original.operators())})"
        )
    return result, kept_float, mixed


def _mixed_ranges(proto: Any, feeds: Sequence[Mapping[str, np.ndarray]], keep_float: bool) -> list[Any]:
    """Mixed-range joins of ``proto`` on ``feeds`` (``nnport.ranges``); [] with a warning if the fp32 run fails."""
    from . import ranges

    try:
        return ranges.find_mixed_ranges(proto, feeds, keep_float=keep_float)
    except Exception as exc:  # a model ONNX Runtime cannot run with intermediates exposed: quantize as before
        warnings.warn(
            f"could not check the model's Concat/Split parts for mixed ranges ({type(exc).__name__}: "
            f"{exc}); quantizing them",
            RuntimeWarning,
            stacklevel=3,
        )
        return []


OUTPUT_ACTIVATION_REASON = "output Softmax/Sigmoid: a fixed 1/255 grid would zero small probabilities"
OUTPUT_ACTIVATIONS = {"Softmax", "LogSoftmax", "Sigmoid"}
SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity"}


def _output_activations(proto: Any) -> list[str]:
    """Softmax-like nodes that produce a graph output (maybe through reshapes): kept in float.

    ONNX Runtime quantizes a Softmax output on a fixed [0, 1] grid of 1/255:
    a 1000-class probability of 0.001 becomes 0, so every class ties and
    top-1/top-5 become meaningless.  Inside a network (attention) that grid is
    fine; at the output it destroys the result for nothing.
    """
    producer = {o: n for n in proto.graph.node for o in n.output}
    excluded: list[str] = []
    for output in proto.graph.output:
        chain = []
        node = producer.get(output.name)
        while (
            node is not None and node.op_type in SHAPE_OPS
        ):  # e.g. the Reshape the opset converter puts after Softmax-1
            chain.append(node)
            node = producer.get(node.input[0]) if node.input else None
        if node is not None and node.op_type in OUTPUT_ACTIVATIONS:
            excluded += [n.name for n in [*chain, node] if n.name]
    return excluded


def _preprocess(src: str, dst: str) -> str:
    """ONNX Runtime's quantization pre-processing (shape inference, constant folding); ``src`` if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(src, dst, skip_symbolic_shape=not _have("sympy"))
        return dst
    except Exception as exc:  # an optimisation only: quantize the unprocessed model
        warnings.warn(
            f"ONNX Runtime quantization pre-processing failed ({exc}); quantizing without it",
            RuntimeWarning,
            stacklevel=3,
        )
        return src


def _dynamic_int8(original: Model, *, per_channel: bool, reduce_range: bool) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = _prepared_proto(original, PER_CHANNEL_MIN_OPSET if per_channel else 11)
    with tempfile.TemporaryDirectory(prefix="nnport-quant-") as tmp:
        src, out = os.path.join(tmp, "model.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(proto, src)
        src = _preprocess(src, os.path.join(tmp, "pre.onnx"))
        try:
            quantize_dynamic(
                src,
                out,
                op_types_to_quantize=DYNAMIC_OP_TYPES,
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
            )
        except Exception as exc:
            raise CompileError(f"ONNX Runtime dynamic quantization failed: {type(exc).__name__}: {exc}") from exc
        result = onnx.load(out)
    if not quantized_ops(result):
        raise UnsupportedModel(
            f"dynamic quantization found nothing to quantize in {original.name!r}: it handles {DYNAMIC_OP_TYPES}, "
            f"the model has {sorted(original.operators())}; use method='static' with calibration data"
        )
    return result


def _to_fp16(original: Model) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = _prepared_proto(original)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert_float_to_float16(proto, keep_io_types=True)
    except Exception as exc:
        raise CompileError(f"fp16 conversion failed: {type(exc).__name__}: {exc}") from exc
    _topological_sort(converted.graph)
    return converted


def _topological_sort(graph: Any) -> None:
    """Order nodes so each comes after its producers (the fp16 converter appends boundary Casts last)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):  # a cycle or a missing input: keep the rest as they were
            ordered += remaining
            break
        pending = remaining
    nodes = [type(n)() for n in ordered]
    for new, old in zip(nodes, ordered):
        new.CopyFrom(old)
    del graph.node[:]
    graph.node.extend(nodes)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def save(model: Model, path: str | os.PathLike[str]) -> Path:
    """Write a (compressed) model to ``path`` as one ONNX file; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.serialized())
    return out
