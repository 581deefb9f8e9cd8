"""The parts of the TensorRT backend that need neither TensorRT nor a GPU.

Everything here is a plain function of plain values (tensor specs, option
mappings, version strings, error tuples), so it is tested on machines without
an NVIDIA GPU, which is where nnport is mostly developed.  ``tensorrt.py``
calls these functions with what the real SDK reports; keeping the decisions
here (which reason ``probe`` gives, which shapes go into the optimization
profile, which cache file an engine lives in, how a parser error reads) means
that the code left untested on such machines is only the thin SDK glue.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nnport.errors import CompileError, ExecutionError, UnsupportedModel
from nnport.precision import model_precisions as model_precisions  # re-exported: util.model_precisions
from nnport.types import CompileOptions, TensorSpec

BACKEND = "tensorrt"

INSTALL_HINT = (
    "pip install tensorrt cuda-python (or pip install 'nnport[tensorrt]'); the tensorrt wheels on PyPI fetch "
    "TensorRT's libraries from https://pypi.nvidia.com at install time"
)

CACHE_FORMAT = "nnport-tensorrt-engine-1"
"""Bumped whenever what nnport puts into an engine changes (e.g. the default profile)."""

DEFAULT_DYNAMIC_RANGE = (1, 1, 32)
"""(min, opt, max) for a dynamic dimension the user gave no value for.

TensorRT needs a finite range for every dynamic dimension at build time.
trtexec and Polygraphy default to min = opt = max = 1; a maximum of 32 keeps
small batches working without asking, at the price of a larger engine.  The
profile actually used is kept in ``compiled.info["profile"]`` and every shape
error names it and how to widen it.
"""

PROFILE_KEYS = ("shapes", "profile", "dims")
KNOWN_EXTRA = frozenset(PROFILE_KEYS + ("workspace_mb", "builder_optimization_level"))


# -- probe -----------------------------------------------------------------------------

# CUresult codes that cuInit/cuDeviceGetCount return on machines where CUDA cannot run.
CU_RESULT_REASONS: dict[int, str] = {
    3: "the CUDA driver is not initialized (CUDA_ERROR_NOT_INITIALIZED)",
    34: "a CUDA stub library was loaded instead of the real driver (CUDA_ERROR_STUB_LIBRARY): install the "
    "NVIDIA driver",
    35: "the NVIDIA driver is too old for this CUDA driver library (CUDA_ERROR_INSUFFICIENT_DRIVER): update "
    "the NVIDIA driver",
    100: "no CUDA device was found (CUDA_ERROR_NO_DEVICE): the NVIDIA driver is installed but sees no GPU "
    "(check CUDA_VISIBLE_DEVICES, or that the container was started with GPU access)",
    101: "CUDA_VISIBLE_DEVICES names no valid device (CUDA_ERROR_INVALID_DEVICE)",
    304: "the operating system refused the CUDA driver (CUDA_ERROR_OPERATING_SYSTEM)",
    803: "the NVIDIA kernel module and the user-mode driver library (libcuda) have different versions "
    "(CUDA_ERROR_SYSTEM_DRIVER_MISMATCH): reinstall the driver or reboot",
    804: "this GPU does not support the installed forward-compatibility CUDA driver "
    "(CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE)",
    999: "the CUDA driver failed with an unknown error (CUDA_ERROR_UNKNOWN); often the nvidia kernel module is "
    "not loaded "
    "or /dev/nvidia* is not accessible",
}


def cu_result_reason(code: int, call: str = "cuInit") -> str:
    """Why CUDA cannot be used, from the CUresult a driver call returned (never 0)."""
    text = CU_RESULT_REASONS.get(int(code))
    return f"{call} failed: {text}" if text else f"{call} failed with CUresult {int(code)}"


def format_cuda_version(version: int) -> str:
    """``12040`` (what cuDriverGetVersion returns) -> ``"12.4"``."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def required_cuda_major(distributions: Mapping[str, str]) -> tuple[int | None, str]:
    """The CUDA major version the installed wheels need, and which wheel needs it.

    ``distributions`` maps installed distribution names to versions.  TensorRT's
    wheels name their CUDA major (``tensorrt-cu12``, ``tensorrt_cu13_libs``);
    cuda-python's (and cuda-bindings') major version is the CUDA major it binds.
    A driver supports every CUDA minor release of its major version, so the
    major is what has to match.
    """
    need: list[tuple[int, str]] = []
    for raw, version in distributions.items():
        name = raw.lower().replace("_", "-")
        m = re.fullmatch(r"tensorrt-cu(\d+)(?:-.*)?", name)
        if m:
            need.append((int(m.group(1)), raw))
        elif name in ("cuda-python", "cuda-bindings"):
            m = re.match(r"(\d+)\.", str(version))
            if m:
                need.append((int(m.group(1)), f"{raw} {version}"))
    if not need:
        return None, ""
    major = max(m for m, _ in need)
    return major, next(who for m, who in need if m == major)


@dataclass(frozen=True)
class DriverStatus:
    """What the CUDA driver (libcuda, loaded with ctypes) said; None where not asked."""

    library: str | None = None
    version: int | None = None
    init_result: int | None = None
    device_count: int | None = None
    error: str | None = None


def probe_reason(
    *,
    has_tensorrt: bool,
    has_cuda_python: bool = True,
    driver: DriverStatus | None = None,
    required_major: int | None = None,
    required_by: str = "",
) -> str | None:
    """``TensorRTBackend.probe()``'s verdict from what was found, in the order a user fixes it."""
    if not has_tensorrt:
        return f"the tensorrt package is not installed; it is installed from NVIDIA's package index: {INSTALL_HINT}"
    if not has_cuda_python:
        return (
            "cuda-python is not installed (pip install cuda-python): nnport's TensorRT backend uses NVIDIA's "
            "cuda-python bindings for device buffers, streams and events"
        )
    if driver is None or driver.library is None:
        detail = f" ({driver.error})" if driver is not None and driver.error else ""
        return (
            "no NVIDIA driver: the CUDA driver library (libcuda) was not found"
            f"{detail}; TensorRT needs an NVIDIA GPU and its driver"
        )
    if driver.error:
        return f"the CUDA driver library {driver.library} could not be used: {driver.error}"
    if driver.version is not None and required_major is not None and driver.version // 1000 < required_major:
        return (
            f"the NVIDIA driver is too old: it supports CUDA {format_cuda_version(driver.version)}, but "
            f"{required_by or 'the installed TensorRT'} needs CUDA {required_major}.x; update the NVIDIA driver "
            f"(or install the TensorRT/cuda-python wheels built for CUDA {driver.version // 1000})"
        )
    if driver.init_result not in (None, 0):
        return cu_result_reason(driver.init_result, "cuInit")
    if driver.device_count is not None and driver.device_count < 1:
        return "no CUDA device: the NVIDIA driver reports 0 GPUs (check CUDA_VISIBLE_DEVICES)"
    return None


# -- CUDA results (cuda-python returns (error, values...) tuples) -----------------------------


def cuda_result(result: Any, call: str) -> Any:
    """Unpack a cuda-python result tuple, raising ``ExecutionError`` naming the call on failure.

    cuda-python returns ``(cudaError_t, value...)``; the error is an enum whose
    ``value`` is the CUDA error code (0 is success).  Returns None, the one
    value, or a tuple of values.
    """
    if not isinstance(result, tuple) or not result:
        raise ExecutionError(f"CUDA {call} returned {result!r}, expected a (error, values...) tuple")
    err: Any = result[0]
    values = result[1:]
    code = int(getattr(err, "value", err))
    if code != 0:
        name = getattr(err, "name", None) or f"error {code}"
        hint = " (out of GPU memory)" if code == 2 else ""
        raise ExecutionError(f"CUDA {call} failed: {name} ({code}){hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# -- options -----------------------------------------------------------------------------------


class ProfileShapes(NamedTuple):
    """One input's optimization-profile shapes: TensorRT's (min, opt, max)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuilderSettings:
    """What ``CompileOptions`` mean for ``trt.Builder``: the one place options are mapped."""

    workspace_bytes: int | None = None
    optimization_level: int | None = None
    profile: Mapping[str, ProfileShapes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def builder_settings(options: CompileOptions, specs: Sequence[TensorSpec]) -> BuilderSettings:
    """Map ``options`` to builder settings; raise ``CompileError`` naming any bad value.

    ``extra`` keys: ``workspace_mb`` (TensorRT's WORKSPACE memory-pool limit),
    ``builder_optimization_level`` (0-5, TensorRT's default 3), and
    ``shapes``/``profile``/``dims`` for dynamic inputs (see ``derive_profile``).
    ``threads`` and ``hint`` have no TensorRT builder equivalent; they are
    noted, not silently dropped.
    """
    extra = options.extra
    workspace_bytes = None
    if "workspace_mb" in extra:
        value = extra["workspace_mb"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise CompileError(
                f"extra['workspace_mb'] must be a positive number of MiB, got {value!r}", backend=BACKEND
            )
        workspace_bytes = int(value * (1 << 20))
    level = None
    if "builder_optimization_level" in extra:
        level = extra["builder_optimization_level"]
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 5:
            raise CompileError(
                f"extra['builder_optimization_level'] must be an integer 0..5, got {level!r}", backend=BACKEND
            )
    notes = []
    if options.threads is not None:
        notes.append(f"threads={options.threads} ignored: TensorRT runs on the GPU")
    if options.hint == "throughput":
        notes.append("hint='throughput' has no TensorRT builder setting; use a larger 'opt' batch in the profile")
    return BuilderSettings(workspace_bytes, level, derive_profile(specs, extra), tuple(notes))


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise CompileError(f"{what} must be a sequence of integers, got {value!r}", backend=BACKEND)
    dims = tuple(value)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise CompileError(f"{what} must contain integers >= 1, got {list(dims)!r}", backend=BACKEND)
    return tuple(int(d) for d in dims)


def _triple(value: Any, what: str) -> ProfileShapes:
    if isinstance(value, Mapping):
        missing = [k for k in ("min", "opt", "max") if k not in value]
        unknown = [k for k in value if k not in ("min", "opt", "max")]
        if missing or unknown:
            raise CompileError(
                f"{what} must have exactly the keys 'min', 'opt', 'max'"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else ""),
                backend=BACKEND,
            )
        parts = (value["min"], value["opt"], value["max"])
    elif isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (list, tuple)) for v in value):
        parts = tuple(value)
    else:
        raise CompileError(
            f"{what} must be {{'min': shape, 'opt': shape, 'max': shape}} or [min, opt, max], got {value!r}",
            backend=BACKEND,
        )
    return ProfileShapes(*(_shape(p, f"{what}[{k!r}]") for p, k in zip(parts, ("min", "opt", "max"))))


def _dim_range(value: Any, symbol: str) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 1:
            raise CompileError(f"extra['dims'][{symbol!r}] must be >= 1, got {value!r}", backend=BACKEND)
        return (int(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3:
        lo, opt, hi = _shape(value, f"extra['dims'][{symbol!r}]")
        if not lo <= opt <= hi:
            raise CompileError(
                f"extra['dims'][{symbol!r}] must satisfy min <= opt <= max, got {list(value)}", backend=BACKEND
            )
        return lo, opt, hi
    raise CompileError(
        f"extra['dims'][{symbol!r}] must be an integer or [min, opt, max], got {value!r}", backend=BACKEND
    )


def derive_profile(specs: Sequence[TensorSpec], extra: Mapping[str, Any]) -> dict[str, ProfileShapes]:
    """The optimization profile (min/opt/max per dynamic input) from the specs and the user's shapes.

    Sources, most specific first:

    * ``extra["profile"] = {input: {"min": shape, "opt": shape, "max": shape}}``
      (or ``[min, opt, max]``): the range TensorRT will accept for that input;
    * ``extra["shapes"] = {input: shape}``: one fixed shape (min = opt = max);
    * ``extra["dims"] = {symbol: n or [min, opt, max]}``: a symbolic dimension
      (``"batch"``) for every input that uses it;
    * otherwise ``DEFAULT_DYNAMIC_RANGE`` for each dynamic dimension.

    Only dynamic inputs appear in the result (TensorRT wants a profile for
    those alone); a shape given for a static input must equal it.  Raises
    ``CompileError`` naming the input and the problem.
    """
    by_name = {s.name: s for s in specs}
    sources = {}
    for key in PROFILE_KEYS:
        value = extra.get(key) or {}
        if not isinstance(value, Mapping):
            raise CompileError(f"extra[{key!r}] must be a mapping, got {type(value).__name__}", backend=BACKEND)
        sources[key] = value
    for key in ("profile", "shapes"):
        unknown = [n for n in sources[key] if n not in by_name]
        if unknown:
            raise CompileError(
                f"extra[{key!r}] names unknown input(s) {unknown}; the model's inputs are {list(by_name)}",
                backend=BACKEND,
            )
    both = [n for n in sources["profile"] if n in sources["shapes"]]
    if both:
        raise CompileError(
            f"input(s) {both} are given in both extra['profile'] and extra['shapes']; give one", backend=BACKEND
        )
    symbols = {d for s in specs for d in s.shape if isinstance(d, str)}
    unknown = [k for k in sources["dims"] if k not in symbols]
    if unknown:
        raise CompileError(
            f"extra['dims'] names unknown dimension(s) {unknown}; the model's symbolic dimensions are "
            f"{sorted(symbols)}",
            backend=BACKEND,
        )
    dims = {k: _dim_range(v, k) for k, v in sources["dims"].items()}

    profile: dict[str, ProfileShapes] = {}
    for spec in specs:
        if spec.name in sources["profile"]:
            shapes = _triple(sources["profile"][spec.name], f"extra['profile'][{spec.name!r}]")
        elif spec.name in sources["shapes"]:
            one = _shape(sources["shapes"][spec.name], f"extra['shapes'][{spec.name!r}]")
            shapes = ProfileShapes(one, one, one)
        elif spec.is_dynamic:
            ranges = [(d, d, d) if isinstance(d, int) else dims.get(d, DEFAULT_DYNAMIC_RANGE) for d in spec.shape]
            shapes = ProfileShapes(*(tuple(r[i] for r in ranges) for i in range(3)))
        else:
            continue
        _check_profile(spec, shapes)
        if spec.is_dynamic:
            profile[spec.name] = shapes
    return profile


def _check_profile(spec: TensorSpec, shapes: ProfileShapes) -> None:
    for which, shape in zip(("min", "opt", "max"), shapes):
        if len(shape) != len(spec.shape):
            raise CompileError(
                f"the {which} shape {list(shape)} for input {spec.name!r} has rank {len(shape)}, expected rank "
                f"{len(spec.shape)} {list(spec.shape)}",
                backend=BACKEND,
            )
        for axis, (want, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int) and want != got:
                raise CompileError(
                    f"the {which} shape {list(shape)} for input {spec.name!r} has {got} at axis {axis}, "
                    f"but the model fixes it to {want} ({list(spec.shape)})",
                    backend=BACKEND,
                )
    for axis in range(len(spec.shape)):
        lo, opt, hi = (s[axis] for s in shapes)
        if not lo <= opt <= hi:
            raise CompileError(
                f"profile for input {spec.name!r} must satisfy min <= opt <= max on every axis; axis {axis} has "
                f"min {lo}, opt {opt}, max {hi}",
                backend=BACKEND,
            )


def profile_violation(name: str, shape: Sequence[int], shapes: ProfileShapes) -> str | None:
    """Why ``shape`` is outside the engine's profile for input ``name``, or None if inside."""
    if len(shape) == len(shapes.min) and all(lo <= s <= hi for s, lo, hi in zip(shape, shapes.min, shapes.max)):
        return None
    return (
        f"input {name!r} has shape {list(shape)}, outside the range the TensorRT engine was built for: "
        f"min {list(shapes.min)}, max {list(shapes.max)} (opt {list(shapes.opt)}). Compile with a wider range, e.g. "
        f"extra={{'profile': {{{name!r}: {{'min': ..., 'opt': ..., 'max': ...}}}}}} or extra={{'dims': "
        f"{{'batch': [1, 8, 64]}}}}"
    )


# -- precision -----------------------------------------------------------------------------------

# What the model carries is decided once, in nnport.precision (model_precisions, imported above), for
# nnport.compress, OpenVINO and TensorRT alike.


def precision_problem(requested: str, found: frozenset[str] | set[str]) -> str | None:
    """Why a strongly typed TensorRT build cannot give ``requested`` precision for this model, or None.

    TensorRT 11 removed the weak-typing flags (``BuilderFlag.FP16``/``INT8``)
    and INT8 calibrators, and nnport builds strongly typed on 10.x too, so the
    engine computes in the model's own types: reduced precision must already
    be in the ONNX model.  ``fp32`` is always accepted (an fp16 or Q/DQ model
    then simply runs as it is).
    """
    if requested == "fp32":
        return None
    if requested == "fp16":
        if "fp16" in found:
            return None
        return (
            "precision 'fp16' needs a model whose tensors are already float16: nnport builds TensorRT networks "
            "strongly typed (TensorRT 11 removed BuilderFlag.FP16), so TensorRT does not lower an fp32 model itself. "
            "Convert the model first with `nnport compress` (fp16), then compile the converted model"
        )
    if requested == "int8":
        if "uint8_qdq" in found:
            return (
                "precision 'int8' on TensorRT needs symmetric int8 Q/DQ (int8 zero points of 0); this model "
                "quantizes activations to asymmetric uint8, which TensorRT does not take. Quantize with "
                "`nnport compress --activations int8` (quantize(..., activations='int8'))"
            )
        if "int8" in found and "qoperator" not in found:
            return None
        if "qoperator" in found:
            return (
                "precision 'int8' needs a Q/DQ-quantized model (QuantizeLinear/DequantizeLinear); this model uses "
                "QOperator int8 ops (QLinearConv, MatMulInteger...) that TensorRT's ONNX parser does not take. "
                "Quantize the fp32 model to Q/DQ with `nnport compress` (int8)"
            )
        return (
            "precision 'int8' needs a Q/DQ-quantized model (QuantizeLinear/DequantizeLinear nodes): nnport builds "
            "TensorRT networks strongly typed (TensorRT 11 removed BuilderFlag.INT8 and INT8 calibrators), so "
            "TensorRT does not quantize an fp32 model itself. Quantize it first with `nnport compress` (int8), "
            "then compile the quantized model"
        )
    return f"unknown precision {requested!r}; expected 'fp32', 'fp16' or 'int8'"


# -- dtypes ----------------------------------------------------------------------------------

TRT_NUMPY: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
}
TRT_WITHOUT_NUMPY = ("BF16", "FP8", "INT4", "FP4", "E8M0")


def trt_dtype_name(dtype: Any) -> str:
    """``trt.DataType.HALF`` (or the string ``"DataType.HALF"``) -> ``"HALF"``."""
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype)
    return name.rsplit(".", 1)[-1].upper()


def numpy_dtype(dtype: Any, tensor: str = "") -> np.dtype:
    """The numpy dtype of a TensorRT I/O tensor type; ``UnsupportedModel`` where numpy has none."""
    name = trt_dtype_name(dtype)
    if name in TRT_NUMPY:
        return TRT_NUMPY[name]
    where = f" of I/O tensor {tensor!r}" if tensor else ""
    if name in TRT_WITHOUT_NUMPY:
        raise UnsupportedModel(
            f"TensorRT type {name}{where} has no numpy equivalent; nnport feeds and returns numpy arrays, so model "
            f"inputs and outputs must be float32, float16, int8, uint8, int32, int64 or bool",
            backend=BACKEND,
        )
    raise UnsupportedModel(f"unknown TensorRT data type {name!r}{where}", backend=BACKEND)


# -- parser errors ---------------------------------------------------------------------------------

_UNSUPPORTED_TEXT = re.compile(r"no importer registered|unsupported|not supported|not implemented", re.IGNORECASE)


def parser_error(
    issues: Sequence[Sequence[Any]],
    nodes: Sequence[tuple[str, str]] = (),
    *,
    device: str | None = None,
) -> CompileError:
    """One nnport error for the errors TensorRT's ONNX parser collected.

    ``issues`` holds one tuple per ``parser.get_error(i)``: ``(node, desc)``
    and optionally ``code`` (the ``ErrorCode`` name), ``node_name`` and
    ``operator`` as TensorRT 10 reports them.  ``node`` is the node's index in
    the graph (-1 when the error concerns no node); ``nodes`` is the graph's
    ``(name, op_type)`` list, used to name the node when TensorRT did not.
    Returns ``UnsupportedModel`` when an operator or attribute is unsupported
    (so that selection falls back), else ``CompileError``.
    """
    parts: list[str] = []
    unsupported = False
    for issue in issues:
        node, desc, code, name, op = (list(issue) + ["", "", ""])[:5]
        desc = str(desc).strip()
        code = str(code or "")
        index = int(node) if isinstance(node, (int, np.integer)) and not isinstance(node, bool) else None
        if index is not None and 0 <= index < len(nodes):
            name = name or nodes[index][0]
            op = op or nodes[index][1]
        if index is not None and index >= 0:
            where = f"node {index}"
        elif isinstance(node, str) and node:
            where = f"node {node!r}"
            name = "" if name == node else name
        else:
            where = ""
        if name:
            where += f" {name!r}"
        if op:
            where += f" ({op})"
        text = f"{where.strip()}: {desc}" if where.strip() else desc
        if code and code not in ("SUCCESS",):
            text += f" [{code}]"
        if text not in parts:
            parts.append(text)
        if code.startswith("UNSUPPORTED") or _UNSUPPORTED_TEXT.search(desc):
            unsupported = True
    if not parts:
        parts.append("the parser reported failure without an error description")
    noun = "error" if len(parts) == 1 else f"{len(parts)} errors"
    message = f"TensorRT's ONNX parser rejected the model ({noun}): " + "; ".join(parts)
    cls = UnsupportedModel if unsupported else CompileError
    return cls(message, backend=BACKEND, device=device)


# -- engine cache ----------------------------------------------------------------------------------


def engine_cache_key(
    model_hash: str, options_key: str, trt_version: str, compute_capability: str, gpu_name: str
) -> str:
    """The key of a serialized engine: everything that makes an engine invalid when it changes.

    An engine only loads on the TensorRT version that built it and is tuned for
    one GPU (compute capability, and the SM count/clocks that the name stands
    for); model bytes and options (precision, profile, workspace) change what
    is built.  ``CACHE_FORMAT`` covers nnport's own defaults.
    """
    if not model_hash or not trt_version or not compute_capability:
        raise ValueError("engine_cache_key needs the model hash, the TensorRT version and the compute capability")
    text = "|".join([CACHE_FORMAT, model_hash, options_key, trt_version, str(compute_capability), gpu_name.strip()])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def engine_cache_path(cache_dir: str | Path, model_name: str, key: str) -> Path:
    """Where the engine with ``key`` is stored: ``<cache_dir>/tensorrt/<model>-<key>.engine``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name or "model").strip("._") or "model"
    return Path(cache_dir) / BACKEND / f"{safe}-{key}.engine"


# -- measurement --------------------------------------------------------------------------------------


def summarize_stage_times(samples: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Median host-to-device, compute and device-to-host times from CUDA event samples.

    Each sample is ``(h2d_ms, compute_ms, d2h_ms)`` for one inference, read with
    ``cudaEventElapsedTime`` between events recorded on the inference stream
    (as trtexec reports its H2D Latency, GPU Compute Time and D2H Latency).
    """
    arr = np.asarray(samples, dtype=float)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != 3:
        raise ValueError(f"expected a non-empty list of (h2d_ms, compute_ms, d2h_ms) samples, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("stage times must be finite and >= 0")
    med = np.median(arr, axis=0)
    return {
        "h2d_ms": float(med[0]),
        "compute_ms": float(med[1]),
        "d2h_ms": float(med[2]),
        "gpu_total_ms": float(np.median(arr.sum(axis=1))),
        "stage_samples": int(arr.shape[0]),
        "stage_timing": "CUDA events on the inference stream (medians)",
    }
