"""ONNX Runtime: nnport's reference backend, and the template a vendor copies.

What a backend plugin needs, in order:

1. a ``Backend`` subclass with ``name``/``vendor``/``priority``;
2. ``probe()`` that finds the SDK without importing it;
3. ``devices()``, ``capabilities()``, ``compile()``, ``allocate()``, ``execute()``,
   importing the SDK inside the methods;
4. runtime errors translated into nnport errors (``UnsupportedModel``,
   ``CompileError``, ``InputError``, ``ExecutionError``);
5. a ``nnport_register_backends`` hook implementation at module level.

Devices come from ``onnxruntime.get_available_providers()``: ``onnxruntime:cpu``
always, ``onnxruntime:cuda:0``/``tensorrt:0``/``dml:0``/``coreml``/... where the
installed build has those execution providers.  Ids are built from
``self.name`` (``<backend name>:<local id>``, which the core checks), so a
vendor backend that subclasses this one with ``name = "acme"`` lists
``acme:cpu``, never the reference's own ``onnxruntime:cpu``.  An accelerator session lists
the CPU provider after its own, as ONNX Runtime recommends, so nodes the
accelerator lacks still run; which providers the session really got is kept in
``compiled.info["providers"]``.

State the hot path needs lives in a typed object, ``compiled.native`` (an
``OrtNative``: the session, its output names, the bound run function), never in
``compiled.info``: ``info`` is for diagnostics a user reads, and every key a
backend puts there is listed in ``specs/backend-contract.md``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnport import hookimpl
from nnport.backend import Backend
from nnport.compiled import CompiledModel, feed_problems
from nnport.errors import (
    CompileError,
    ExecutionError,
    InputError,
    NnportError,
    UnsupportedModel,
    UnsupportedPrecision,
)
from nnport.model import Model
from nnport.types import Binding, Capabilities, CompileOptions, Device

log = logging.getLogger("nnport")

# provider -> (device id suffix, kind, display name)
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "TensorrtExecutionProvider": ("tensorrt:0", "gpu", "TensorRT execution provider"),
    "CUDAExecutionProvider": ("cuda:0", "gpu", "CUDA execution provider"),
    "ROCMExecutionProvider": ("rocm:0", "gpu", "ROCm execution provider"),
    "MIGraphXExecutionProvider": ("migraphx:0", "gpu", "MIGraphX execution provider"),
    "DmlExecutionProvider": ("dml:0", "gpu", "DirectML execution provider"),
    "CoreMLExecutionProvider": ("coreml", "npu", "CoreML execution provider"),
    "QNNExecutionProvider": ("qnn", "npu", "Qualcomm QNN execution provider"),
    "OpenVINOExecutionProvider": ("openvino", "cpu", "OpenVINO execution provider"),
    "CPUExecutionProvider": ("cpu", "cpu", "CPU execution provider"),
}

PRECISIONS = ("fp32", "fp16", "int8")
"""fp16 and int8 run a converted ONNX model (``nnport.compress``); fp32 runs the model as given."""

OPT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OrtNative:
    """What ``compiled.native`` holds for ONNX Runtime: the session and what each run needs.

    ``native_run`` is the session's native run (``session._sess.run(names, feeds,
    run_options)``) where the installed ONNX Runtime has it, else None.  nnport has
    already validated the feeds, so calling it skips ORT's Python-side
    re-validation (~1.3 us of a ~7 us MLP call) and its print-and-retry EP
    fallback, which nnport reports through selection instead of doing silently.
    """

    __slots__ = ("session", "output_names", "native_run")

    def __init__(self, session: Any) -> None:
        self.session = session
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        inner = getattr(session, "_sess", None)
        self.native_run: Callable[[list[str], Mapping[str, np.ndarray], Any], list[np.ndarray]] | None = (
            inner.run if inner is not None and hasattr(inner, "run") else None
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{output name: array}`` for ``feeds`` (already validated by nnport)."""
        names = self.output_names
        if self.native_run is not None:
            return dict(zip(names, self.native_run(names, feeds, None)))
        return dict(zip(names, self.session.run(names, feeds)))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    vendor = "Microsoft"
    priority = 100
    description = "ONNX Runtime, the reference backend"

    @classmethod
    def probe(cls) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "the onnxruntime package is not installed (pip install 'nnport[onnxruntime]')"
        return None

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    def devices(self) -> list[Device]:
        import onnxruntime as ort

        found = []
        for provider in ort.get_available_providers():
            if provider not in PROVIDERS:
                continue
            suffix, kind, label = PROVIDERS[provider]
            name = platform.processor() or platform.machine() if kind == "cpu" else label
            found.append(
                Device(
                    id=f"{self.name}:{suffix}",  # ids from self.name: a subclass gets ids of its own
                    backend=self.name,
                    kind=kind,
                    name=name or label,
                    properties={"provider": provider, "device": ort.get_device()},
                )
            )
        return found

    def capabilities(self, device: Device) -> Capabilities:
        return Capabilities(
            precisions=PRECISIONS,
            dtypes=("float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"),
            opset_min=7,
            opset_max=_max_opset(),
            dynamic_shapes=True,
            model_formats=("onnx",),
            intermediates=True,
        )

    # -- compile -------------------------------------------------------------------

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        import onnxruntime as ort

        if model.format != "onnx":
            raise UnsupportedModel(
                f"ONNX Runtime reads ONNX models only, not {model.format}", backend=self.name, device=device.id
            )
        if options.precision not in PRECISIONS:
            raise UnsupportedPrecision(
                f"precision {options.precision!r} is not supported; supported: {list(PRECISIONS)}",
                backend=self.name,
                device=device.id,
            )
        source_model = self._converted(model, device, options) if options.precision != "fp32" else model
        provider = device.properties["provider"]
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        level_name = str(options.extra.get("graph_optimization_level", "all"))
        if level_name not in OPT_LEVELS:
            raise CompileError(
                f"graph_optimization_level must be one of {list(OPT_LEVELS)}, got {level_name!r}", backend=self.name
            )
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[level_name])
        if options.hint == "throughput":
            so.execution_mode = ort.ExecutionMode.ORT_PARALLEL

        session = None
        cache_hit = False
        cached = self._cache_path(source_model, device, options) if options.cache_dir else None
        if cached is not None and cached.exists():
            # The cached file is already optimized for this host and provider.
            level = so.graph_optimization_level
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                session = ort.InferenceSession(str(cached), sess_options=so, providers=providers)
                cache_hit = True
            except Exception as exc:  # truncated or corrupt (a killed write, a full disk): compile again
                log.info("onnxruntime: cached session file %s is unusable (%s); recompiling", cached, exc)
                cached.unlink(missing_ok=True)
                so.graph_optimization_level = level
        if session is None:
            if cached is not None and level_name != "disabled":
                cached.parent.mkdir(parents=True, exist_ok=True)
                so.optimized_model_filepath = str(cached.with_suffix(".tmp.onnx"))
            try:
                session = ort.InferenceSession(source_model.serialized(), sess_options=so, providers=providers)
            except Exception as exc:
                raise _compile_error(exc, self.name, device.id) from exc
            if cached is not None and so.optimized_model_filepath:
                tmp = Path(so.optimized_model_filepath)
                if tmp.exists():
                    os.replace(tmp, cached)
        compiled = CompiledModel(self, model, device, options, native=OrtNative(session))
        if source_model is not model:
            compiled.info["compressed_model"] = source_model
            compiled.info["compression"] = source_model.metadata.get(
                "compression", {"precision": options.precision, "source": "model"}
            )
        compiled.cache_hit = cache_hit if options.cache_dir else None
        compiled.info["providers"] = session.get_providers()
        return compiled

    def _converted(self, model: Model, device: Device, options: CompileOptions) -> Model:
        """The fp16 / int8 ONNX model to run for ``options.precision`` (cached in ``cache_dir``).

        int8 is static QDQ quantization calibrated on ``options.calibration``,
        or dynamic quantization with ``extra={"int8_method": "dynamic"}``
        (``extra={"int8_activations": "int8"}`` for symmetric activations); fp16
        converts the graph keeping fp32 inputs and outputs.  A model already
        at the requested precision runs as it is.  The converted model is
        cached by source hash, precision, method and a digest of the
        calibration samples, so a second compile skips calibration.
        """
        from nnport import compress
        from nnport.calibration import calibration_feeds, fingerprint
        from nnport.model import load

        if compress.compressed_precision(model) == options.precision:
            return model
        method = str(options.extra.get("int8_method", "static"))
        activations = str(options.extra.get("int8_activations", "uint8"))
        feeds = None
        key_parts = [model.hash, options.precision, ort_version(), activations, compress.RECIPE]
        if options.precision == "int8":
            if method not in compress.METHODS:
                raise CompileError(
                    f"int8_method must be one of {list(compress.METHODS)}, got {method!r}",
                    backend=self.name,
                    device=device.id,
                )
            key_parts.append(method)
            if method == "static":
                feeds = calibration_feeds(options.calibration, model.inputs)
                key_parts.append(fingerprint(feeds))
        cached = None
        if options.cache_dir:
            digest = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:24]
            cached = (
                Path(options.cache_dir)
                / "onnxruntime"
                / "converted"
                / f"{model.name}-{options.precision}-{digest}.onnx"
            )
            if cached.exists():
                try:
                    converted = load(cached)
                except NnportError as exc:  # truncated or corrupt: convert again
                    log.info("onnxruntime: cached converted model %s is unusable (%s); converting again", cached, exc)
                    cached.unlink(missing_ok=True)
                else:
                    object.__setattr__(converted, "name", f"{model.name}-{options.precision}")
                    converted.metadata["compression"] = {
                        "precision": options.precision,
                        "method": method,
                        "cached": True,
                    }
                    return converted
        converted = compress.quantize(model, options.precision, feeds, method, activations=activations)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_bytes(converted.serialized())
            os.replace(tmp, cached)
        return converted

    def _cache_path(self, model: Model, device: Device, options: CompileOptions) -> Path:
        import onnxruntime as ort

        key = hashlib.sha256(
            "|".join(
                [model.hash, options.key(), device.id, ort.__version__, platform.machine(), platform.processor()]
            ).encode()
        ).hexdigest()[:24]
        return Path(options.cache_dir or ".") / "onnxruntime" / f"{model.name}-{key}.onnx"

    # -- run -------------------------------------------------------------------------

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        native: OrtNative = compiled.native
        try:
            binding.outputs = native.run(binding.inputs)
        except Exception as exc:
            raise _run_error(exc, compiled, binding.inputs) from exc

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        native: OrtNative = compiled.native
        names, native_run = native.output_names, native.native_run  # OrtNative.run, inlined: the hot path
        try:
            if native_run is not None:
                return dict(zip(names, native_run(names, feeds, None)))
            return dict(zip(names, native.session.run(names, feeds)))
        except Exception as exc:
            raise _run_error(exc, compiled, feeds) from exc

    # -- optional: intermediate tensors (the fast path of nnport debug) -------------

    def intermediates(
        self,
        model: Model,
        device: Device,
        options: CompileOptions,
        tensors: Sequence[str],
        feeds: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray] | None:
        """Every requested tensor a node of the main graph computes, as extra graph outputs of one session.

        ONNX Runtime keeps a tensor that is a graph output, so fusions that
        would consume it do not happen here: ``nnport debug`` confirms a finding
        on the cut graph.  fp32 only (None otherwise).
        """
        import onnx
        import onnxruntime as ort

        if model.format != "onnx" or options.precision != "fp32":
            return None
        proto = onnx.ModelProto()
        proto.CopyFrom(model.proto)
        produced = {o for node in proto.graph.node for o in node.output if o}
        present = {o.name for o in proto.graph.output}
        wanted = [t for t in dict.fromkeys(tensors) if t in produced]
        proto.graph.output.extend(onnx.ValueInfoProto(name=t) for t in wanted if t not in present)
        provider = device.properties["provider"]
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if options.threads:
            so.intra_op_num_threads = options.threads
        level_name = str(options.extra.get("graph_optimization_level", "all"))
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS.get(level_name, "ORT_ENABLE_ALL"))
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(proto.SerializeToString(), sess_options=so, providers=providers)
        except Exception as exc:
            raise _compile_error(exc, self.name, device.id) from exc
        try:
            values = session.run(wanted, dict(feeds))
        except Exception as exc:
            raise ExecutionError(f"ONNX Runtime failed on device {device.id}: {str(exc).strip()}") from exc
        return dict(zip(wanted, values))


def _compile_error(exc: Exception, backend: str, device: str) -> CompileError:
    text = str(exc).strip()
    low = text.lower()
    if (
        "not_implemented" in low
        or "could not find an implementation" in low
        or "not a registered function/op" in low
        or "unrecognized attribute" in low
        or "opset" in low
        and "not supported" in low
    ):
        return UnsupportedModel(f"ONNX Runtime cannot run this model: {text}", backend=backend, device=device)
    return CompileError(f"ONNX Runtime could not create a session: {text}", backend=backend, device=device)


def _run_error(exc: Exception, compiled: CompiledModel, feeds: Mapping[str, Any]) -> Exception:
    text = str(exc).strip()
    if "INVALID_ARGUMENT" in text or "invalid" in text.lower() and "input" in text.lower():
        return InputError(feed_problems(compiled.inputs, feeds) + f" (ONNX Runtime: {text})")
    return ExecutionError(f"ONNX Runtime failed on device {compiled.device.id}: {text}")


def ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def _max_opset() -> int | None:
    try:
        import onnx

        return onnx.defs.onnx_opset_version()
    except Exception:  # pragma: no cover - onnx is a base dependency
        return None


@hookimpl
def nnport_register_backends(register: Callable[[type[Backend]], None]) -> None:
    register(OnnxRuntimeBackend)
