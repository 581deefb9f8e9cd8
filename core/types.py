"""Value types of the nnport contract: devices, tensor specs, options, capabilities.

They are frozen dataclasses so that they can be hashed into cache keys, compared
in tests and shared between threads without copies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

KINDS = ("npu", "gpu", "cpu")
"""Device kinds, in the order ``device="auto"`` prefers them."""

PRECISIONS = ("fp32", "fp16", "int8")
HINTS = ("latency", "throughput")

Dim = int | str | None
"""A dimension: a fixed size, a symbolic name (``"batch"``) or unknown (None)."""


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class Device:
    """One place a model can run: ``openvino:CPU``, ``ncnn:vulkan:0``, ``tensorrt:cuda:0``.

    A backend lists every device it knows, usable or not; an unusable one has
    ``available=False`` and ``reason`` says why (no driver, no Vulkan device), so
    that ``nnport devices`` can show it instead of hiding it.
    """

    id: str
    backend: str
    kind: str
    name: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    available: bool = True
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"device kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "properties", _frozen_mapping(self.properties))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "backend": self.backend,
            "kind": self.kind,
            "name": self.name,
            "available": self.available,
            "reason": self.reason,
            "properties": {k: _jsonable(v) for k, v in self.properties.items()},
        }


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and numpy dtype of one model input or output."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)

    def concrete_shape(self, overrides: Mapping[str, int] | None = None, default: int = 1) -> tuple[int, ...]:
        """The shape with symbolic dims replaced by ``overrides[name]`` or ``default``."""
        overrides = overrides or {}
        return tuple(d if isinstance(d, int) else int(overrides.get(d, default)) if d else default for d in self.shape)

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d == s for d, s in zip(self.shape, shape))

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": str(self.dtype)}


@dataclass(frozen=True)
class CompileOptions:
    """How to compile: precision, cache, threads, latency/throughput hint, extras.

    ``extra`` carries backend-specific settings (``{"graph_optimization_level":
    "basic"}`` for ONNX Runtime); a backend ignores keys it does not know.
    ``calibration`` is data for int8 (a directory, an iterable of feed dicts, or
    ``"random"``); it is not part of the cache key's identity beyond its repr.
    ``shapes`` fixes symbolic input dims (``{"images": (1, 3, 640, 640)}``)
    before any backend sees the model (see ``nnport.shapes``); a model compiled
    with it takes feeds of exactly those shapes.
    """

    precision: str = "fp32"
    cache_dir: str | None = None
    threads: int | None = None
    hint: str = "latency"
    calibration: Any = field(default=None, compare=False, hash=False)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.hint not in HINTS:
            raise ValueError(f"hint must be one of {HINTS}, got {self.hint!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", str(self.cache_dir))
        object.__setattr__(self, "extra", _frozen_mapping(self.extra))
        from .shapes import normalize

        object.__setattr__(self, "shapes", normalize(self.shapes))

    def key(self) -> str:
        """A stable digest of everything that changes the compiled artefact (cache keys)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("cache_dir", "calibration")}
        data["extra"] = dict(sorted(self.extra.items()))
        data["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        if not data["shapes"]:
            del data["shapes"]  # keys of options without shapes stay what they were
        text = json.dumps(data, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> CompileOptions:
        from dataclasses import replace

        return replace(self, **changes)


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares it supports on one device."""

    precisions: tuple[str, ...] = ("fp32",)
    dtypes: tuple[str, ...] = ("float32",)
    opset_min: int | None = None
    opset_max: int | None = None
    dynamic_shapes: bool = False
    model_formats: tuple[str, ...] = ("onnx",)
    notes: tuple[str, ...] = ()
    intermediates: bool = False
    """The backend implements ``Backend.intermediates`` (the fast path of ``nnport debug``)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


class Binding:
    """Pre-allocated buffers for one compiled model (the result of ``allocate``).

    ``inputs`` maps input names to arrays the backend reads; ``outputs`` is
    filled by ``execute``.  ``native`` is the backend's own handle (an OpenVINO
    infer request, an ONNX Runtime IOBinding, CUDA buffers) so that repeated
    executions reuse it instead of rebuilding it.
    """

    __slots__ = ("inputs", "outputs", "native", "extra")

    def __init__(
        self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | None = None, native: Any = None
    ) -> None:
        self.inputs = inputs
        self.outputs: dict[str, np.ndarray] = outputs if outputs is not None else {}
        self.native = native
        self.extra: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Binding(inputs={list(self.inputs)}, outputs={list(self.outputs)})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
