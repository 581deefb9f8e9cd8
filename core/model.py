"""Loading and validating models: ``nnport.load``.

A ``Model`` is an ONNX model that has been parsed, checked and hashed once, so
that every backend, the compile caches and the conformance suite see the same
bytes and the same input/output specs.  Native formats (OpenVINO IR ``.xml``,
ncnn ``.param``) are carried as files with their specs given by the user; only
the backends that read them accept them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .types import TensorSpec

NATIVE_FORMATS = {".xml": "openvino-ir", ".param": "ncnn", ".tflite": "tflite"}
"""Suffix -> ``Model.format`` of the formats read natively (not ONNX).  A ``.tflite``
model's specs come from the LiteRT interpreter (``nnport._tflite``, imported only then)."""


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded, validated model.

    ``proto`` is the ``onnx.ModelProto`` (external data already loaded) for
    ``format == "onnx"``; ``path`` is where it came from, if anywhere; ``hash``
    is the sha256 of its serialized bytes (of the native files for other
    formats), which keys every compile cache.
    """

    format: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    hash: str
    proto: Any = None
    path: Path | None = None
    name: str = "model"
    opset: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def serialized(self) -> bytes:
        """The ONNX bytes (cached): what ONNX-consuming runtimes are given."""
        if self.format != "onnx":
            raise ModelLoadError(f"model {self.name!r} is in {self.format} format, not ONNX")
        cached: bytes | None = self.metadata.get("_bytes")
        if cached is None:
            cached = self.proto.SerializeToString()
            self.metadata["_bytes"] = cached
        return cached

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def operators(self) -> set[str]:
        """Operator types used by the main graph (for capability checks and reports)."""
        if self.proto is None:
            return set()
        return {n.op_type for n in self.proto.graph.node}

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self.inputs)
        return f"<Model {self.name!r} {self.format} ({ins}) hash={self.hash[:12]}>"


def load(
    source: Any,
    *,
    inputs: Sequence[TensorSpec] | None = None,
    outputs: Sequence[TensorSpec] | None = None,
    check: bool = True,
) -> Model:
    """Load a model from a path, ONNX bytes, an ``onnx.ModelProto`` or a ``Model``.

    Raises ``ModelLoadError`` naming the problem for a missing file, bytes that
    are not ONNX, a graph ``onnx.checker`` rejects, or external data whose
    location escapes the model's directory (a path-traversal guard).
    ``inputs``/``outputs`` are required for native formats that carry no specs.
    """
    if isinstance(source, Model):
        return source
    import onnx

    if isinstance(source, onnx.ModelProto):
        return _from_proto(source, path=None, check=check)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_proto(_parse(bytes(source), "<bytes>"), path=None, check=check)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ModelLoadError(f"model file not found: {str(path)!r}")
        if path.is_dir():
            raise ModelLoadError(f"expected a model file, got a directory: {str(path)!r}")
        fmt = NATIVE_FORMATS.get(path.suffix.lower())
        if fmt == "tflite":
            from ._tflite import load_tflite

            loaded: Model = load_tflite(path, inputs, outputs)
            return loaded
        if fmt is not None:
            return _native(path, fmt, inputs, outputs)
        proto = _parse(path.read_bytes(), str(path))
        _load_external_data(proto, path.parent)
        return _from_proto(proto, path=path, check=check)
    raise ModelLoadError(
        f"cannot load a model from {type(source).__name__}: expected a path, ONNX bytes, onnx.ModelProto "
        "or nnport.Model"
    )


def _parse(data: bytes, where: str) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise ModelLoadError(f"{where} is empty: expected a serialized ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{where} is not a valid ONNX model (truncated or corrupt?): {exc}") from exc
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelLoadError(f"{where} is not a valid ONNX model: it has no graph or no opset_import")
    return proto


def _load_external_data(proto: Any, base_dir: Path) -> None:
    """Load external tensor data, refusing any location outside ``base_dir``."""
    from onnx import external_data_helper as edh

    base = base_dir.resolve()
    for tensor in edh._get_all_tensors(proto):
        if not edh.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if os.path.isabs(location) or os.path.commonpath([base, target]) != str(base):
            raise ModelLoadError(
                f"external data location {location!r} of tensor {tensor.name!r} escapes the model "
                f"directory {str(base)!r}"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"external data file {location!r} of tensor {tensor.name!r} not found in {str(base)!r}"
            )
    try:
        edh.load_external_data_for_model(proto, str(base))
    except Exception as exc:  # onnx raises plain errors here
        raise ModelLoadError(f"cannot load external data: {exc}") from exc


def _from_proto(proto: Any, *, path: Path | None, check: bool) -> Model:
    import onnx

    if check:
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise ModelLoadError(f"model fails onnx.checker: {first}") from exc
        except ValueError as exc:  # e.g. > 2 GB protos
            raise ModelLoadError(f"model cannot be checked: {exc}") from exc
    data = proto.SerializeToString()
    initializers = {i.name for i in proto.graph.initializer}
    inputs = tuple(_spec(v) for v in proto.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in proto.graph.output)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    name = path.stem if path else (proto.graph.name or "model")
    model = Model(
        format="onnx",
        inputs=inputs,
        outputs=outputs,
        hash=hashlib.sha256(data).hexdigest(),
        proto=proto,
        path=path,
        name=name,
        opset=opset,
    )
    model.metadata["_bytes"] = data
    return model


def drop_initializer_inputs(proto: Any) -> bool:
    """Remove graph inputs that are initializers (IR < 4 style), in place; True if any were.

    Old exporters list every weight as a graph input too.  Converters (pnnx)
    and quantizers then treat weights as overridable inputs, so tools that
    rewrite a model call this on their copy first.
    """
    initializers = {i.name for i in proto.graph.initializer}
    if not any(v.name in initializers for v in proto.graph.input):
        return False
    keep = [v for v in proto.graph.input if v.name not in initializers]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    proto.ir_version = max(proto.ir_version, 4)
    return True


UNKNOWN_DIM_NAMES = frozenset({"?", "-1", "unknown", "None"})
"""dim_param values exporters write for "unknown" (Paddle2ONNX writes "?" on several axes).
They name no shared symbol: read as independent unknown dims, never as one dim that must agree."""


def _spec(value_info: Any) -> TensorSpec:
    from onnx import helper

    t = value_info.type
    if not t.HasField("tensor_type"):
        raise ModelLoadError(
            f"input/output {value_info.name!r} is not a tensor (sequence and map types are not supported)"
        )
    elem = t.tensor_type.elem_type
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    except Exception as exc:
        raise ModelLoadError(f"{value_info.name!r} has an element type ({elem}) numpy cannot represent") from exc
    dims: list[int | str | None] = []
    if t.tensor_type.HasField("shape"):
        for d in t.tensor_type.shape.dim:
            if (
                d.HasField("dim_value") and d.dim_value >= 0
            ):  # 0 is a fixed, zero-size dim (as runtimes read it), not "unknown"
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param and d.dim_param not in UNKNOWN_DIM_NAMES:
                dims.append(d.dim_param)
            else:
                dims.append(None)
    return TensorSpec(value_info.name, tuple(dims), dtype)


def _native(path: Path, fmt: str, inputs: Sequence[TensorSpec] | None, outputs: Sequence[TensorSpec] | None) -> Model:
    companion = path.with_suffix(".bin")
    if not companion.exists():
        raise ModelLoadError(f"{fmt} model {str(path)!r} needs its weights file {str(companion)!r}")
    digest = hashlib.sha256()
    for part in (path, companion):
        digest.update(part.read_bytes())
    if fmt == "ncnn" and (not inputs or not outputs):
        raise ModelLoadError(
            "an ncnn .param model carries no tensor specs: pass inputs=[TensorSpec...] and outputs=[...]"
        )
    return Model(
        format=fmt,
        inputs=tuple(inputs or ()),
        outputs=tuple(outputs or ()),
        hash=digest.hexdigest(),
        path=path,
        name=path.stem,
    )
