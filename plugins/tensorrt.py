"""TensorRT (NVIDIA): ONNX -> strongly typed serialized engine, run on CUDA GPUs.

Path of a model, with the real TensorRT 10.x/11.x Python API:

* ``compile``: ``trt.Builder`` -> ``create_network`` (STRONGLY_TYPED flag on
  10.x; 11.x is always strongly typed and ignores it) -> ``trt.OnnxParser``
  (every ``parser.get_error(i)`` becomes one nnport error naming node and
  reason) -> ``create_builder_config`` (WORKSPACE pool limit, builder
  optimization level, one optimization profile for the dynamic inputs) ->
  ``build_serialized_network``.  The serialized engine is cached in
  ``options.cache_dir`` under a key of model hash, options, TensorRT version,
  compute capability and GPU name, so a warm compile is a deserialize.
* ``allocate``: one execution context, one CUDA stream, four CUDA events and
  one device buffer per I/O tensor, through NVIDIA's cuda-python bindings
  (``cuda.bindings.runtime``, or ``cuda.cudart`` in cuda-python < 12.6);
  ``context.set_tensor_address`` for every tensor.  Buffers grow only when a
  larger shape arrives; they are reused across runs and freed with the binding.
* ``execute``: ``cudaMemcpyAsync`` H2D -> ``execute_async_v3`` -> D2H ->
  ``cudaStreamSynchronize``.  ``measure`` adds the H2D, compute and D2H times
  (CUDA events) to nnport's end-to-end timing, as trtexec reports them.

Reduced precision is never requested from the builder: TensorRT 11 removed
``BuilderFlag.FP16/INT8/BF16`` and INT8 calibrators, so ``precision="fp16"``
or ``"int8"`` means the ONNX model already is fp16 or Q/DQ int8 (what
``nnport compress`` writes); a plain fp32 model raises ``UnsupportedPrecision``.

Nothing here imports tensorrt or cuda-python at module level.  ``probe()`` uses
``find_spec`` and the CUDA driver library through ctypes (``cuInit``,
``cuDeviceGetCount``: no CUDA context is created).  Decisions that need no GPU
live in ``_tensorrt_util`` and are tested everywhere; see docs/tensorrt.md for
what was verified on which machine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata
import importlib.util
import logging
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnport import hookimpl, progress
from nnport.backend import Backend
from nnport.compiled import CompiledModel
from nnport.errors import (
    BackendUnavailable,
    CompileError,
    ExecutionError,
    InputError,
    UnsupportedModel,
    UnsupportedPrecision,
)
from nnport.model import Model
from nnport.plugins import _tensorrt_util as util
from nnport.types import Binding, Capabilities, CompileOptions, Device

log = logging.getLogger("nnport")

CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


# -- the CUDA driver through ctypes (probe and device listing; no context is created) -----------


@functools.lru_cache(maxsize=1)
def _libcuda() -> tuple[Any, str | None, str | None]:
    """(library, its name, why not loaded); cached because the driver does not change."""
    candidates = [ctypes.util.find_library("cuda"), "libcuda.so.1", "libcuda.so"] if os.name != "nt" else ["nvcuda.dll"]
    errors = []
    for name in [c for c in candidates if c]:
        try:
            return ctypes.CDLL(name), name, None
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    return None, None, "; ".join(errors) or "not found by ctypes.util.find_library('cuda')"


@functools.lru_cache(maxsize=1)
def _driver_status() -> util.DriverStatus:
    """Ask the driver its version, initialise it and count devices (cached per process).

    ``cuInit`` initialises the driver but creates no context, so a process
    that only lists backends holds no GPU memory.
    """
    lib, name, why = _libcuda()
    if lib is None:
        return util.DriverStatus(error=why)
    try:
        version = ctypes.c_int(0)
        rc = lib.cuDriverGetVersion(ctypes.byref(version))
        driver_version = version.value if rc == 0 else None
        rc = lib.cuInit(0)
        if rc != 0:
            return util.DriverStatus(library=name, version=driver_version, init_result=rc)
        count = ctypes.c_int(0)
        rc = lib.cuDeviceGetCount(ctypes.byref(count))
        if rc != 0:
            return util.DriverStatus(library=name, version=driver_version, init_result=rc)
        return util.DriverStatus(library=name, version=driver_version, init_result=0, device_count=count.value)
    except AttributeError as exc:  # a library named libcuda without the driver API
        return util.DriverStatus(library=name, error=f"missing symbol: {exc}")


def _device_info(index: int) -> dict[str, Any]:
    """Name, compute capability and memory of CUDA device ``index`` (driver API, no context)."""
    lib, _, _ = _libcuda()
    dev = ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
        raise ExecutionError(f"cuDeviceGet({index}) failed")
    buf = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(buf, 256, dev)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
    total = ctypes.c_size_t(0)
    lib.cuDeviceTotalMem_v2(ctypes.byref(total), dev)
    return {
        "index": index,
        "name": buf.value.decode(errors="replace"),
        "compute_capability": f"{major.value}.{minor.value}",
        "memory_bytes": int(total.value),
    }


def _has_cuda_python() -> bool:
    try:
        return (
            importlib.util.find_spec("cuda.bindings") is not None or importlib.util.find_spec("cuda.cudart") is not None
        )
    except (ImportError, ValueError):
        return False


def _installed_distributions() -> dict[str, str]:
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or ""
        low = name.lower().replace("_", "-")
        if low.startswith("tensorrt") or low in ("cuda-python", "cuda-bindings"):
            found[name] = dist.version
    return found


# -- SDK access (imported inside functions only) ----------------------------------------------


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except Exception as exc:  # libnvinfer missing or mismatched: an import-time OSError/ImportError
        raise BackendUnavailable(util.BACKEND, f"import tensorrt failed: {type(exc).__name__}: {exc}") from exc
    return trt


def _cudart() -> Any:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (>= 12.6) or ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise BackendUnavailable(util.BACKEND, f"cuda-python is not importable: {exc}") from exc
    return runtime


_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()


def _logger(trt: Any) -> Any:
    """One process-wide TensorRT logger that keeps errors for error messages.

    TensorRT uses the first logger a process gives it, so nnport makes one and
    reuses it; it keeps the last error lines per thread.
    """
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:

            class _Logger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)
                    self.local = threading.local()

                def log(self, severity: Any, msg: str) -> None:
                    if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                        lines = getattr(self.local, "errors", None)
                        if lines is None:
                            lines = self.local.errors = []
                        lines.append(str(msg))
                        del lines[:-20]
                        log.debug("TensorRT: %s", msg)

                def take(self) -> list[str]:
                    lines = getattr(self.local, "errors", None) or []
                    self.local.errors = []
                    return lines

            _LOGGER = _Logger()
        return _LOGGER


def _with_log(text: str, trt_logger: Any) -> str:
    lines = trt_logger.take()
    return f"{text}: {' | '.join(lines[-5:])}" if lines else text


class _Engine:
    """A deserialized engine with its runtime (which must outlive it) and its I/O table."""

    def __init__(self, runtime: Any, engine: Any, io: list[tuple[str, bool, np.dtype, tuple[int, ...]]]) -> None:
        self.runtime = runtime
        self.engine = engine
        self.io = io
        self.inputs = [(n, dt) for n, is_in, dt, _ in io if is_in]
        self.outputs = [(n, dt) for n, is_in, dt, _ in io if not is_in]
        self.profile: dict[str, util.ProfileShapes] = {}


# -- the backend --------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    name = "tensorrt"
    vendor = "NVIDIA"
    priority = 100
    description = "NVIDIA TensorRT: ONNX parser -> strongly typed engine on CUDA GPUs"

    @classmethod
    def probe(cls) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return util.probe_reason(has_tensorrt=False)
        if not _has_cuda_python():
            return util.probe_reason(has_tensorrt=True, has_cuda_python=False)
        major, who = util.required_cuda_major(_installed_distributions())
        return util.probe_reason(
            has_tensorrt=True, has_cuda_python=True, driver=_driver_status(), required_major=major, required_by=who
        )

    def versions(self) -> dict[str, str]:
        trt = _import_trt()
        found = {"tensorrt": trt.__version__}
        status = _driver_status()
        if status.version:
            found["cuda_driver"] = util.format_cuda_version(status.version)
        for name, version in _installed_distributions().items():
            if name.lower().replace("_", "-") in ("cuda-python", "cuda-bindings"):
                found[name] = version
        return found

    def devices(self) -> list[Device]:
        status = _driver_status()
        found = []
        for index in range(status.device_count or 0):
            info = _device_info(index)
            found.append(
                Device(
                    id=f"tensorrt:cuda:{index}",
                    backend=self.name,
                    kind="gpu",
                    name=info["name"],
                    properties={
                        **info,
                        "cuda_driver": util.format_cuda_version(status.version) if status.version else None,
                    },
                )
            )
        return found

    def capabilities(self, device: Device) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16", "int8"),
            dtypes=("float32", "float16", "int8", "uint8", "int32", "int64", "bool"),
            dynamic_shapes=True,
            model_formats=("onnx",),
            notes=(
                "strongly typed: fp16/int8 come from the model itself (an fp16 or Q/DQ ONNX, e.g. from "
                "`nnport compress`)",
                "shapes= (CompileOptions) fixes inputs static before TensorRT sees the model; a shape "
                "range for dynamic inputs: extra={'dims': {...}} / {'profile': {...}}",
            ),
        )

    # -- compile ------------------------------------------------------------------------------

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        if model.format != "onnx":
            raise UnsupportedModel(
                f"TensorRT's ONNX parser reads ONNX models only, not {model.format}",
                backend=self.name,
                device=device.id,
            )
        problem = util.precision_problem(options.precision, util.model_precisions(model.proto))
        if problem:
            raise UnsupportedPrecision(problem, backend=self.name, device=device.id)
        settings = util.builder_settings(options, model.inputs)
        trt = _import_trt()
        rt = _cudart()
        index = int(device.properties.get("index", 0))
        util.cuda_result(rt.cudaSetDevice(index), f"cudaSetDevice({index})")
        trt_logger = _logger(trt)
        trt_logger.take()

        cache_path: Path | None = None
        engine = None
        capability = str(device.properties.get("compute_capability") or "")
        if options.cache_dir and not capability:
            log.info("nnport: device %s has no compute capability; the TensorRT engine is not cached", device.id)
        if options.cache_dir and capability:
            key = util.engine_cache_key(model.hash, options.key(), trt.__version__, capability, device.name)
            cache_path = util.engine_cache_path(options.cache_dir, model.name, key)
            if cache_path.is_file():
                engine = self._deserialize(trt, trt_logger, cache_path.read_bytes())
                if engine is None:
                    log.info("nnport: cached TensorRT engine %s did not deserialize; rebuilding it", cache_path)
        cache_hit = engine is not None
        if engine is None:
            blob = self._build(trt, trt_logger, model, device, settings)
            engine = self._deserialize(trt, trt_logger, blob)
            if engine is None:
                raise CompileError(
                    _with_log("TensorRT built an engine it could not deserialize", trt_logger),
                    backend=self.name,
                    device=device.id,
                )
            if cache_path is not None:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(blob)
                os.replace(tmp, cache_path)

        self._check_io(engine, model, device)
        compiled = CompiledModel(self, model, device, options, native=engine)
        compiled.cache_hit = cache_hit if options.cache_dir else None
        eng = engine.engine
        memory = getattr(eng, "device_memory_size_v2", None)  # 10.1+; device_memory_size was removed in 11
        if memory is None:
            memory = getattr(eng, "device_memory_size", None)
        compiled.info.update(
            tensorrt=trt.__version__,
            strongly_typed=True,
            model_precisions=sorted(util.model_precisions(model.proto)),
            profile={
                k: {"min": list(v.min), "opt": list(v.opt), "max": list(v.max)} for k, v in settings.profile.items()
            },
            io={n: {"input": is_in, "dtype": str(dt), "shape": list(shape)} for n, is_in, dt, shape in engine.io},
            device_memory_bytes=int(memory) if memory is not None else None,
            engine_cache=str(cache_path) if cache_path else None,
            notes=list(settings.notes),
        )
        engine.profile = dict(settings.profile)
        return compiled

    def _build(self, trt: Any, trt_logger: Any, model: Model, device: Device, settings: util.BuilderSettings) -> bytes:
        builder = trt.Builder(trt_logger)
        flags = 0
        strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if strongly is not None:
            flags |= 1 << int(strongly)
        elif int(trt.__version__.split(".")[0]) < 11:
            raise CompileError(
                f"TensorRT {trt.__version__} cannot build strongly typed networks; nnport needs TensorRT 10 or newer",
                backend=self.name,
                device=device.id,
            )
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, trt_logger)
        ok = parser.parse(model.serialized())
        if not ok or parser.num_errors:
            issues: list[tuple[Any, ...]] = []
            for i in range(parser.num_errors):
                err = parser.get_error(i)
                code = err.code()
                issues.append(
                    (
                        err.node(),
                        err.desc(),
                        getattr(code, "name", str(code)),
                        err.node_name() if hasattr(err, "node_name") else "",
                        err.node_operator() if hasattr(err, "node_operator") else "",
                    )
                )
            if not issues:
                issues.append((-1, _with_log("parse() returned False", trt_logger)))
            raise util.parser_error(issues, [(n.name, n.op_type) for n in model.proto.graph.node], device=device.id)

        config = builder.create_builder_config()
        if settings.workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
        if settings.optimization_level is not None:
            config.builder_optimization_level = settings.optimization_level
        dynamic = []
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if tensor.is_shape_tensor:
                raise UnsupportedModel(
                    f"input {tensor.name!r} is a shape tensor (its values set shapes); nnport's TensorRT backend "
                    "does not build profiles for shape-tensor inputs",
                    backend=self.name,
                    device=device.id,
                )
            if any(d < 0 for d in tensor.shape):
                dynamic.append(tensor.name)
        if dynamic:
            missing = [n for n in dynamic if n not in settings.profile]
            if missing:
                raise CompileError(
                    f"TensorRT sees dynamic input(s) {missing} that the ONNX specs call static; give their shapes "
                    "with shapes={name: shape} (or a range with extra={'profile': {...}})",
                    backend=self.name,
                    device=device.id,
                )
            profile = builder.create_optimization_profile()
            for name in dynamic:
                shapes = settings.profile[name]
                profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
            config.add_optimization_profile(profile)
        with progress.step(f"tensorrt: building the engine for {model.name!r} on {device.id}"):
            blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise CompileError(
                _with_log("TensorRT could not build an engine", trt_logger), backend=self.name, device=device.id
            )
        return memoryview(blob).tobytes()

    def _deserialize(self, trt: Any, trt_logger: Any, blob: bytes) -> _Engine | None:
        runtime = trt.Runtime(trt_logger)
        engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            return None
        io = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            io.append(
                (
                    name,
                    is_input,
                    util.numpy_dtype(engine.get_tensor_dtype(name), name),
                    tuple(engine.get_tensor_shape(name)),
                )
            )
        return _Engine(runtime, engine, io)

    def _check_io(self, engine: _Engine, model: Model, device: Device) -> None:
        engine_inputs = {n for n, _ in engine.inputs}
        engine_outputs = {n for n, _ in engine.outputs}
        missing = [s.name for s in model.outputs if s.name not in engine_outputs]
        if missing:
            raise UnsupportedModel(
                f"the TensorRT engine has no output(s) {missing} (engine outputs: {sorted(engine_outputs)})",
                backend=self.name,
                device=device.id,
            )
        extra = [n for n in engine_inputs if n not in model.input_names]
        if extra:
            raise UnsupportedModel(
                f"the TensorRT engine expects inputs {extra} that the model does not declare",
                backend=self.name,
                device=device.id,
            )

    # -- run ----------------------------------------------------------------------------------

    def allocate(self, compiled: CompiledModel, shapes: Mapping[str, Sequence[int]] | None = None) -> Binding:
        chosen = {name: p.opt for name, p in compiled.native.profile.items()}
        chosen.update(shapes or {})
        binding = super().allocate(compiled, chosen)
        binding.native = _Session(compiled)
        binding.native.prepare(binding.inputs)
        return binding

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        session = binding.native
        session.infer(binding.inputs)
        binding.outputs = session.outputs()

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = compiled.thread_binding().native
        session.infer(feeds)
        return {k: v.copy() for k, v in session.outputs().items()}

    def measure(self, compiled: CompiledModel, binding: Binding, settings: Any) -> Any:
        """nnport's end-to-end timing, plus H2D/compute/D2H medians from CUDA events."""
        result = super().measure(compiled, binding, settings)
        result.extra.update(
            binding.native.stage_times(binding.inputs, iterations=max(10, min(settings.min_iterations, 200)))
        )
        return result


class _Session:
    """Execution context, stream, events and device buffers of one binding (one thread)."""

    def __init__(self, compiled: CompiledModel) -> None:
        self.rt = rt = _cudart()
        self.compiled = compiled
        self.native: _Engine = compiled.native
        self.device_index = int(compiled.device.properties.get("index", 0))
        self.profile: dict[str, util.ProfileShapes] = self.native.profile
        util.cuda_result(rt.cudaSetDevice(self.device_index), f"cudaSetDevice({self.device_index})")
        self.context = self.native.engine.create_execution_context()
        if self.context is None:
            raise ExecutionError(
                f"TensorRT could not create an execution context on {compiled.device.id} (out of GPU memory?)"
            )
        self.stream = util.cuda_result(rt.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = int(self.stream)
        self.events = [util.cuda_result(rt.cudaEventCreate(), "cudaEventCreate") for _ in range(4)]
        self.ptr: dict[str, int] = {}
        self.capacity: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.host: dict[str, np.ndarray] = {}
        self.outputs_stale = True
        self.timing = False
        self.last_stage_ms: tuple[float, float, float] | None = None
        self.h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._finalizer = weakref.finalize(self, _release, rt, self.ptr, self.stream, self.events)

    def _buffer(self, name: str, nbytes: int) -> None:
        nbytes = max(int(nbytes), 1)
        if self.capacity.get(name, 0) >= nbytes:
            return
        old = self.ptr.pop(name, None)
        if old is not None:
            util.cuda_result(self.rt.cudaFree(old), "cudaFree")
        self.ptr[name] = int(util.cuda_result(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes}) for {name!r}"))
        self.capacity[name] = nbytes
        if not self.context.set_tensor_address(name, self.ptr[name]):
            raise ExecutionError(f"TensorRT refused the device address of tensor {name!r}")

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Set input shapes (when they changed), size buffers, bind addresses."""
        for name, dtype in self.native.inputs:
            shape = tuple(feeds[name].shape)
            if self.shapes.get(name) == shape:
                continue
            if name in self.profile:
                problem = util.profile_violation(name, shape, self.profile[name])
                if problem:
                    raise InputError(problem)
            self.outputs_stale = True  # set before the call: a failure half-way must not leave old output shapes
            self.shapes.pop(name, None)
            if not self.context.set_input_shape(name, shape):
                raise InputError(f"TensorRT rejected shape {list(shape)} for input {name!r}")
            self.shapes[name] = shape
            self._buffer(name, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        if not self.outputs_stale:
            return
        for name, dtype in self.native.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UnsupportedModel(
                    f"output {name!r} has a data-dependent shape {list(shape)}; nnport's TensorRT backend needs output "
                    "shapes that follow from the input shapes",
                    backend=util.BACKEND,
                    device=self.compiled.device.id,
                )
            if name not in self.host or self.host[name].shape != shape:
                self.host[name] = np.empty(shape, dtype=dtype)
            self._buffer(name, self.host[name].nbytes)
        self.outputs_stale = False

    def infer(self, feeds: Mapping[str, np.ndarray]) -> None:
        rt, stream = self.rt, self.stream
        if self.device_index:
            util.cuda_result(rt.cudaSetDevice(self.device_index), "cudaSetDevice")  # the current device is per thread
        self.prepare(feeds)
        keep = []
        ev = self.events if self.timing else None
        if ev:
            util.cuda_result(rt.cudaEventRecord(ev[0], stream), "cudaEventRecord")
        for name, dtype in self.native.inputs:
            a = feeds[name]
            if a.dtype != dtype or not a.flags.c_contiguous:
                a = np.ascontiguousarray(a, dtype=dtype)
            keep.append(a)
            if a.nbytes:
                util.cuda_result(
                    rt.cudaMemcpyAsync(self.ptr[name], a.ctypes.data, a.nbytes, self.h2d, stream),
                    f"cudaMemcpyAsync H2D {name!r}",
                )
        if ev:
            util.cuda_result(rt.cudaEventRecord(ev[1], stream), "cudaEventRecord")
        if not self.context.execute_async_v3(self.stream_handle):
            trt_logger = _LOGGER
            text = f"TensorRT execute_async_v3 failed on {self.compiled.device.id}"
            raise ExecutionError(_with_log(text, trt_logger) if trt_logger is not None else text)
        if ev:
            util.cuda_result(rt.cudaEventRecord(ev[2], stream), "cudaEventRecord")
        for name, _ in self.native.outputs:
            host = self.host[name]
            if host.nbytes:
                util.cuda_result(
                    rt.cudaMemcpyAsync(host.ctypes.data, self.ptr[name], host.nbytes, self.d2h, stream),
                    f"cudaMemcpyAsync D2H {name!r}",
                )
        if ev:
            util.cuda_result(rt.cudaEventRecord(ev[3], stream), "cudaEventRecord")
        util.cuda_result(rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        if ev:
            h2d, compute, d2h = (
                float(util.cuda_result(rt.cudaEventElapsedTime(ev[i], ev[i + 1]), "cudaEventElapsedTime"))
                for i in range(3)
            )
            self.last_stage_ms = (h2d, compute, d2h)

    def outputs(self) -> dict[str, np.ndarray]:
        """The model's outputs in its order and dtypes (host buffers reused across runs)."""
        result = {}
        for spec in self.compiled.outputs:
            a = self.host[spec.name]
            result[spec.name] = a if a.dtype == spec.dtype else a.astype(spec.dtype)
        return result

    def stage_times(self, feeds: Mapping[str, np.ndarray], iterations: int) -> dict[str, Any]:
        samples: list[tuple[float, float, float]] = []
        self.timing = True
        try:
            for _ in range(iterations):
                self.infer(feeds)
                if self.last_stage_ms is not None:
                    samples.append(self.last_stage_ms)
        finally:
            self.timing = False
        return util.summarize_stage_times(samples)


def _release(rt: Any, ptrs: dict[str, int], stream: Any, events: list[Any]) -> None:
    """Free a session's CUDA resources (weakref finalizer: never raises)."""
    try:
        for ptr in ptrs.values():
            rt.cudaFree(ptr)
        ptrs.clear()
        for event in events:
            rt.cudaEventDestroy(event)
        rt.cudaStreamDestroy(stream)
    except Exception:  # interpreter shutdown or a dead context: nothing left to free
        pass


@hookimpl
def nnport_register_backends(register):
    register(TensorRTBackend)
