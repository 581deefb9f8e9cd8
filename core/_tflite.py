"""Reading a ``.tflite`` (LiteRT) model's specs: ``nnport.load("model.tflite")``.

Called by ``nnport.model.load`` for the ``tflite`` format only; it imports
``ai_edge_litert`` here, at load time, never when nnport is imported.  The
interpreter is constructed without its default delegates and without
allocating tensors, so a model with a custom op the runtime lacks still loads
(its specs are in the file); ``litert`` refuses it at compile, naming the op.

Names: when the model has exactly one signature (TensorFlow exports, onnx2tf
output), the signature's input and output names are the model's names
(``x`` rather than ``serving_default_x:0``), in the signature's order;
otherwise the interpreter's tensor names.  A dim that the model leaves open
(``-1`` in ``shape_signature``) is unknown (None).

Quantised inputs and outputs (uint8/int8 with a scale and zero point) keep
their integer dtype in the spec, so users feed real uint8 images, and their
parameters go to ``Model.metadata["quantization"][name]``:
``{"scale": float, "zero_point": int}`` (per-tensor), plus ``"scales"``,
``"zero_points"`` and ``"axis"`` when per-channel.  ``real = (q - zero_point) * scale``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .types import TensorSpec

FORMAT = "tflite"
INSTALL_HINT = "pip install 'nnport[litert]' (the ai-edge-litert package)"


def load_tflite(path: Path, inputs: Sequence[TensorSpec] | None, outputs: Sequence[TensorSpec] | None) -> Any:
    """The ``Model`` of a ``.tflite`` file; specs from the interpreter unless both are given."""
    from .model import Model

    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelLoadError(
            f"{str(path)!r} is not a TFLite flatbuffer (no 'TFL3' identifier): truncated or not a .tflite model?"
        )
    metadata: dict[str, Any] = {}
    if inputs and outputs:
        ins, outs = tuple(inputs), tuple(outputs)
    else:
        ins, outs, metadata = read_specs(data, str(path))
    return Model(
        format=FORMAT,
        inputs=ins,
        outputs=outs,
        hash=hashlib.sha256(data).hexdigest(),
        path=path,
        name=path.stem,
        metadata=metadata,
    )


def read_specs(data: bytes, where: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, Any]]:
    """(inputs, outputs, metadata) of a TFLite flatbuffer, read by the LiteRT interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise ModelLoadError(
            f"reading the specs of the .tflite model {where} needs the LiteRT runtime: {INSTALL_HINT}; "
            "or pass inputs=[TensorSpec...] and outputs=[...]"
        ) from exc
    try:
        interpreter = Interpreter(
            model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError with its own message
        raise ModelLoadError(f"LiteRT cannot read {where}: {' '.join(str(exc).split())[:600]}") from exc
    signatures = interpreter.get_signature_list()
    metadata: dict[str, Any] = {}
    if len(signatures) == 1:
        key = next(iter(signatures))
        runner = interpreter.get_signature_runner(key)
        in_details, out_details = runner.get_input_details(), runner.get_output_details()
        in_items = [(name, in_details[name]) for name in signatures[key]["inputs"]]
        out_items = [(name, out_details[name]) for name in signatures[key]["outputs"]]
        metadata["tflite_signature"] = key
    else:
        in_items = [(d["name"], d) for d in interpreter.get_input_details()]
        out_items = [(d["name"], d) for d in interpreter.get_output_details()]
        if signatures:
            metadata["tflite_signatures"] = sorted(signatures)
    quantization: dict[str, dict[str, Any]] = {}
    ins = tuple(_spec(name, d, quantization) for name, d in in_items)
    outs = tuple(_spec(name, d, quantization) for name, d in out_items)
    if quantization:
        metadata["quantization"] = quantization
    return ins, outs, metadata


def _spec(name: str, detail: dict[str, Any], quantization: dict[str, dict[str, Any]]) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) == len(detail["shape"]) else detail["shape"]
    shape = tuple(int(d) if d >= 0 else None for d in dims)
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), dtype=np.float64)
    if scales.size:
        zero_points = np.asarray(params.get("zero_points", ()), dtype=np.int64)
        entry: dict[str, Any] = {
            "scale": float(scales[0]),
            "zero_point": int(zero_points[0]) if zero_points.size else 0,
        }
        if scales.size > 1:
            entry.update(
                scales=scales.tolist(), zero_points=zero_points.tolist(), axis=int(params.get("quantized_dimension", 0))
            )
        quantization[name] = entry
    return TensorSpec(name, shape, np.dtype(detail["dtype"]))


def dequantize(array: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Real values of a quantised tensor: ``(q - zero_point) * scale`` (per-channel along ``axis``)."""
    if "scales" in params:
        shape = [1] * array.ndim
        shape[params["axis"]] = -1
        scales = np.asarray(params["scales"], np.float32).reshape(shape)
        zero_points = np.asarray(params["zero_points"], np.float32).reshape(shape)
        real: np.ndarray = (array.astype(np.float32) - zero_points) * scales
        return real
    real = (array.astype(np.float32) - np.float32(params["zero_point"])) * np.float32(params["scale"])
    return real


def quantize(real: np.ndarray, params: dict[str, Any], dtype: Any) -> np.ndarray:
    """A quantised tensor of ``dtype`` for real values: ``round(real / scale) + zero_point``, saturated."""
    info = np.iinfo(np.dtype(dtype))
    if "scales" in params:
        shape = [1] * real.ndim
        shape[params["axis"]] = -1
        scales = np.asarray(params["scales"], np.float64).reshape(shape)
        zero_points = np.asarray(params["zero_points"], np.float64).reshape(shape)
    else:
        scales, zero_points = np.float64(params["scale"]), np.float64(params["zero_point"])
    q = np.round(np.asarray(real, np.float64) / scales) + zero_points
    return np.clip(q, info.min, info.max).astype(dtype)
