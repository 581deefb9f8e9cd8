"""OpenVINO (Intel): every OpenVINO device, with fp32 pinned and the model cache.

Devices are the entries of ``ov.Core().available_devices`` (``openvino:CPU``,
``openvino:GPU.0``, ``openvino:NPU``: the exact OpenVINO names after the colon).
OpenVINO's own ``AUTO``/``MULTI``/``HETERO`` are not nnport devices: nnport's
selection does their job.  A plugin that OpenVINO ships but cannot open (the GPU
plugin without ``libOpenCL``) is listed as unavailable with OpenVINO's reason.

Why each compile setting is what it is:

* ``precision="fp32"`` pins ``INFERENCE_PRECISION_HINT=f32``.  OpenVINO's CPU
  default is bf16 on CPUs with AMX or AVX512-BF16 and f16 on GPUs, which
  silently breaks fp32 parity with the reference.
* ``fp16`` sets the f16 hint only where the device lists ``FP16`` in
  ``OPTIMIZATION_CAPABILITIES``; elsewhere it is refused, naming what is supported.
* ``int8`` is NNCF post-training quantization of the OpenVINO model on
  ``options.calibration`` (see ``nnport.calibration``); the layers NNCF leaves in
  float stay pinned to f32.  With ``cache_dir`` the quantized model is kept as IR,
  keyed by model hash and calibration fingerprint, so a second compile skips NNCF.
  Recurrent cells (LSTM/GRU/RNN sequences) stay float (``FLOAT_IN_INT8``), and a
  model NNCF fails on is retried once with its constant subgraphs folded.
  A model that is already quantized (ONNX Q/DQ, QLinear*, integer ops; IR with
  FakeQuantize) is compiled as it is at any precision: OpenVINO runs its
  quantization nodes in int8 itself, and NNCF on top would round twice.
  ``compiled.info["int8"]`` says which happened.
* ``WORKAROUNDS``: settings added for known OpenVINO defects, listed with the
  reason in ``compiled.info["workarounds"]`` (Snippets off for quantized MLPs).
* ``hint`` -> ``PERFORMANCE_HINT``, ``threads`` -> ``INFERENCE_NUM_THREADS``,
  ``cache_dir`` -> ``CACHE_DIR`` (``<cache_dir>/openvino``), each set only where
  the device supports the property.  ``extra["openvino_config"]`` is passed to
  ``compile_model`` as is (it wins over the mapped settings).

Running: one ``InferRequest`` per calling thread (an ``InferRequest`` is not
thread safe, an OpenVINO ``CompiledModel`` is), inputs wrapped zero-copy, outputs
copied so that the caller owns them, keyed by the ONNX output names in ONNX order
and cast to the ONNX dtypes.  ``compiled.native`` is an ``OpenVinoNative`` whose
``compiled_model`` is the ``openvino.CompiledModel``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnport import hookimpl, progress, specialize
from nnport.backend import Backend
from nnport.compiled import CompiledModel, feed_problems
from nnport.errors import (
    CompileError,
    DeviceNotFound,
    ExecutionError,
    InputError,
    UnsupportedModel,
    UnsupportedPrecision,
)
from nnport.model import Model
from nnport.shapes import fix_axes
from nnport.specialize import open_axes
from nnport.types import Binding, Capabilities, CompileOptions, Device, TensorSpec

KIND_BY_PREFIX = {"CPU": "cpu", "GPU": "gpu", "NPU": "npu", "GNA": "npu", "VPU": "npu", "MYRIAD": "npu", "HDDL": "npu"}
PLUGIN_FAMILIES = ("CPU", "GPU", "NPU")
"""Plugins probed for a reason when OpenVINO lists none of their devices."""

LAZY_PROBE_DIMS = (64, 256, 512, 640)
"""Sizes tried for open non-leading dims when checking that a refused dynamic graph converts once static.
Several, because some graphs convert only at plausible sizes (silero-vad's op15 export: 256 and 512, not 64)."""
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
PRECISION_CAPABILITY = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
PRECISION_HINT = {"fp32": "f32", "fp16": "f16", "int8": "f32"}
PERFORMANCE_HINT = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


class OpenVinoBackend(Backend):
    name = "openvino"
    vendor = "Intel"
    priority = 80
    description = "Intel OpenVINO: CPU, Intel GPUs and NPUs"

    def __init__(self) -> None:
        self._core: Any = None
        self._lock = threading.Lock()
        self._supported: dict[str, frozenset[str]] = {}

    @classmethod
    def probe(cls) -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return "the openvino package is not installed (pip install 'nnport[openvino]')"
        return None

    def versions(self) -> dict[str, str]:
        import openvino as ov

        found = {"openvino": ov.get_version()}
        if importlib.util.find_spec("nncf") is not None:
            from importlib.metadata import version

            found["nncf"] = version("nncf")
        return found

    def core(self) -> Any:
        """The backend's one ``openvino.Core`` (created on first use; it is thread safe)."""
        if self._core is None:
            with self._lock:
                if self._core is None:
                    import openvino as ov

                    self._core = ov.Core()
        return self._core

    # -- devices -------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        core = self.core()
        found: list[Device] = []
        listed = [d for d in core.available_devices if d.split(".")[0] not in VIRTUAL_DEVICES]
        for ov_name in listed:
            try:
                props = self._device_properties(ov_name)
            except Exception as exc:  # listed but cannot be opened: show it with the reason
                found.append(_unavailable(ov_name, f"OpenVINO lists {ov_name} but cannot open it: {_ov_message(exc)}"))
                continue
            found.append(
                Device(
                    id=f"openvino:{ov_name}",
                    backend=self.name,
                    kind=_kind(ov_name),
                    name=props["full_name"],
                    properties=props,
                )
            )
        families = {d.split(".")[0] for d in listed}
        for family in PLUGIN_FAMILIES:
            if family in families:
                continue
            try:
                core.get_property(family, "AVAILABLE_DEVICES")
            except Exception as exc:  # the plugin exists but cannot load (no driver, no libOpenCL)
                found.append(_unavailable(family, f"OpenVINO's {family} plugin cannot be used: {_ov_message(exc)}"))
        return found

    def _device_properties(self, ov_name: str) -> dict[str, Any]:
        core = self.core()
        supported = self._supported_properties(ov_name)

        def prop(key: str, default: Any = None) -> Any:
            return core.get_property(ov_name, key) if key in supported else default

        caps = tuple(str(c) for c in prop("OPTIMIZATION_CAPABILITIES", ()))
        return {
            "ov_device": ov_name,
            "full_name": str(prop("FULL_DEVICE_NAME", ov_name)),
            "optimization_capabilities": caps,
            "device_type": str(prop("DEVICE_TYPE", "")).replace("Type.", "").lower(),
            "architecture": str(prop("DEVICE_ARCHITECTURE", "")),
        }

    def _supported_properties(self, ov_name: str) -> frozenset[str]:
        supported = self._supported.get(ov_name)
        if supported is None:
            supported = frozenset(self.core().get_property(ov_name, "SUPPORTED_PROPERTIES"))
            self._supported[ov_name] = supported
        return supported

    def capabilities(self, device: Device) -> Capabilities:
        caps = set(device.properties.get("optimization_capabilities", ()))
        precisions = tuple(
            p for p in ("fp32", "fp16", "int8") if PRECISION_CAPABILITY[p] in caps and (p != "int8" or _has_nncf())
        )
        kind = device.kind
        return Capabilities(
            precisions=precisions,
            dtypes=DTYPES,
            opset_min=7,
            opset_max=None,
            dynamic_shapes=kind != "npu",
            model_formats=("onnx", "openvino-ir"),
            notes=("int8 is NNCF post-training quantization and needs calibration data",)
            if "int8" in precisions
            else (),
            intermediates=True,
        )

    # -- compile ---------------------------------------------------------------------------

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        """Compile as given; where OpenVINO refuses a graph only because dims are open, specialise lazily.

        Some real exports (a Conv whose input rank comes out of a Reshape of a
        computed shape) do not convert while their input dims are symbolic and
        convert once they are static.  Such a model is read once at a probe shape
        (batch-like leading dims 1, other open dims each of ``LAZY_PROBE_DIMS`` in turn): if one
        converts, the refusal was about shapes, and the model is compiled per feed
        shape on first use (``nnport.specialize``); if not, the original refusal
        stands, so selection falls back at compile time as before.
        """
        try:
            return self._compile_as_given(model, device, options)
        except UnsupportedModel as exc:
            axes = open_axes(model) if model.format == "onnx" else ()
            if not axes:
                raise
            for size in LAZY_PROBE_DIMS:
                try:
                    _check_ranks(self._read(fix_axes(model, probe_sizes(model, axes, size)), device), device, self.name)
                    break
                except UnsupportedModel:
                    continue
            else:
                raise exc from None
            why = (
                f"OpenVINO cannot convert the graph while dims are open ({exc}); it is compiled at each new feed shape"
            )
            return specialize.lazily(self, model, device, options, axes, why)

    def _compile_as_given(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        ov_name = self._ov_device(device)
        read_by = "nnport"
        compiled_model = None
        source = _model_file(model, options)
        if source is not None:
            config = self._config(ov_name, device, options)
            try:  # OpenVINO reads the file itself: a cache hit then never reads the model
                compiled_model = self.core().compile_model(str(source), ov_name, config)
                read_by = f"openvino ({source})"
            except Exception:  # diagnosed again on the in-memory model, with the usual messages
                compiled_model = None
        quantization: dict[str, Any] | None = None
        prequantized: list[str] = []
        workarounds: dict[str, Any] = {}
        if compiled_model is not None:
            _check_ranks(compiled_model, device, self.name)
        else:
            ov_model = self._read(model, device)
            _check_ranks(ov_model, device, self.name)
            prequantized = _quantized_ops(model, ov_model)
            config = self._config(ov_name, device, options, needs_nncf=not prequantized)
            if options.precision == "int8" and prequantized:
                # OpenVINO's low-precision transformations run Q/DQ (FakeQuantize) layers in int8 as
                # they are; NNCF on top would quantize already-rounded values a second time.
                quantization = {
                    "method": "none: the model is already quantized; OpenVINO runs its quantization nodes in int8",
                    "quantized_ops": prequantized,
                }
            elif options.precision == "int8":
                ov_model, quantization = self._quantize(ov_model, model, device, options)
            workarounds = _workarounds(ov_model, ov_name, config)
            config.update(workarounds)
            try:
                compiled_model = self.core().compile_model(ov_model, ov_name, config)
            except Exception as exc:
                raise _compile_error(exc, self.name, device.id) from exc
            del ov_model  # not kept: it would double the weights in memory
        inputs, outputs, feed_index, out_index = _io(model, compiled_model, device, self.name)
        native = OpenVinoNative(compiled_model, feed_index, out_index)
        compiled = CompiledModel(self, model, device, options, native=native, inputs=inputs, outputs=outputs)
        compiled.cache_hit = _property(compiled_model, "LOADED_FROM_CACHE") if options.cache_dir else None
        compiled.info["openvino_config"] = {k: str(v) for k, v in config.items()}
        compiled.info["read_by"] = read_by
        if options.threads and "INFERENCE_NUM_THREADS" not in config:
            compiled.info["ignored"] = [f"threads={options.threads}: {ov_name} has no INFERENCE_NUM_THREADS property"]
        if quantization is not None:
            compiled.info["int8"] = quantization
        elif prequantized:
            compiled.info["quantized_model"] = (
                prequantized  # precision fp32 pins only the layers the model left in float
            )
        if workarounds:
            compiled.info["workarounds"] = {k: WORKAROUNDS[k] for k in workarounds}
        precision = _property(compiled_model, "INFERENCE_PRECISION_HINT")
        if precision is not None:
            compiled.info["inference_precision"] = str(precision).replace("<Type: '", "").rstrip("'>")
        return compiled

    def _ov_device(self, device: Device) -> str:
        ov_name = device.properties.get("ov_device") or device.id.partition(":")[2]
        available = [d for d in self.core().available_devices]
        if ov_name not in available:
            raise DeviceNotFound(
                f"unknown OpenVINO device {device.id!r}; available: "
                f"{[f'openvino:{d}' for d in available if d.split('.')[0] not in VIRTUAL_DEVICES]}"
            )
        return ov_name

    def _config(self, ov_name: str, device: Device, options: CompileOptions, needs_nncf: bool = True) -> dict[str, Any]:
        supported = self._supported_properties(ov_name)
        caps = set(device.properties.get("optimization_capabilities", ()))
        wanted = PRECISION_CAPABILITY[options.precision]
        if wanted not in caps or (options.precision == "int8" and needs_nncf and not _has_nncf()):
            have = self.capabilities(device).precisions
            why = (
                "nncf is not installed (pip install 'nnport[compress]')"
                if wanted in caps
                else f"OPTIMIZATION_CAPABILITIES is {sorted(caps)}"
            )
            raise UnsupportedPrecision(
                f"precision {options.precision!r} is not supported on {ov_name} ({why}); supported: {list(have)}",
                backend=self.name,
                device=device.id,
            )
        config: dict[str, Any] = {}
        if "INFERENCE_PRECISION_HINT" in supported:
            hint = PRECISION_HINT[options.precision]
            if hint != "f32" or "FP32" in caps:
                config["INFERENCE_PRECISION_HINT"] = hint
        if "PERFORMANCE_HINT" in supported:
            config["PERFORMANCE_HINT"] = PERFORMANCE_HINT[options.hint]
        if options.threads and "INFERENCE_NUM_THREADS" in supported:
            config["INFERENCE_NUM_THREADS"] = options.threads
        if options.cache_dir:
            cache = Path(options.cache_dir) / "openvino"
            cache.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache)
        extra = options.extra.get("openvino_config")
        if extra:
            config.update(dict(extra))
        return config

    def _read(self, model: Model, device: Device) -> Any:
        core = self.core()
        try:
            if model.format == "onnx":
                return core.read_model(model.serialized())
            if model.format == "openvino-ir" and model.path is not None:
                return core.read_model(str(model.path), str(Path(model.path).with_suffix(".bin")))
        except Exception as exc:
            raise _read_error(exc, model, self.name, device.id) from exc
        raise UnsupportedModel(
            f"OpenVINO reads ONNX and OpenVINO IR (.xml + .bin) models, not {model.format}",
            backend=self.name,
            device=device.id,
        )

    def _quantize(
        self, ov_model: Any, model: Model, device: Device, options: CompileOptions
    ) -> tuple[Any, dict[str, Any]]:
        """NNCF post-training int8 quantization; the result is kept as IR under ``cache_dir``.

        A Concat/Split of an ONNX model whose parts span ranges far apart on the
        calibration data (a detector's pixel boxes joined with its 0-1 scores;
        ``nnport.ranges``, run here on OpenVINO itself) is kept float with the
        nodes after it, through NNCF's ``IgnoredScope(names=...)``;
        ``extra={"keep_mixed_ranges_float": False}`` quantizes it anyway.
        Returns the quantized OpenVINO model and what to report about it
        (``kept_float``: name -> why, ``mixed_ranges``: the joins found).
        """
        from nnport.calibration import calibration_feeds, fingerprint

        specs = model.inputs or tuple(_spec(p) for p in ov_model.inputs)
        samples = options.extra.get("calibration_samples")
        try:
            feeds = calibration_feeds(options.calibration, specs, samples=samples)
        except InputError as exc:
            raise CompileError(f"int8 on OpenVINO: {exc}", backend=self.name, device=device.id) from exc
        import nncf
        import openvino as ov

        nncf_options = dict(options.extra.get("nncf_options", {}))
        overflow = _overflow_fix(nncf_options)  # before the cache key: the quantized IR depends on it
        keep_mixed = bool(options.extra.get("keep_mixed_ranges_float", True))
        stored: Path | None = None
        if options.cache_dir:  # what NNCF is asked below follows from these (the mixed-range check is deterministic)
            key = hashlib.sha256(
                "|".join(
                    [
                        INT8_RECIPE,
                        model.hash,
                        fingerprint(feeds),
                        repr(sorted(nncf_options.items())),
                        f"mixed={keep_mixed}",
                        ov.get_version(),
                        nncf.__version__,
                    ]
                ).encode()
            ).hexdigest()[:24]
            stored = Path(options.cache_dir) / "openvino" / "int8" / f"{model.name}-{key}.xml"
        report: dict[str, Any] = {
            "method": "nncf post-training quantization",
            "calibration_samples": len(feeds),
            "stored_ir": str(stored) if stored else None,
            **overflow,
        }
        if stored is not None and stored.exists() and stored.with_suffix(".bin").exists():
            sidecar = stored.with_suffix(".json")
            if sidecar.exists():
                with contextlib.suppress(ValueError, OSError):
                    report.update(json.loads(sidecar.read_text()))
            return self.core().read_model(str(stored)), {**report, "from_cache": True}
        kept_types = sorted({op.get_type_name() for op in ov_model.get_ops()} & FLOAT_IN_INT8)
        kept_float: dict[str, str] = {t: FLOAT_IN_INT8_REASON for t in kept_types}
        mixed, mixed_names = self._mixed_ranges(ov_model, model, feeds, report, keep_mixed)
        kept_float.update(mixed_names)
        if "ignored_scope" in nncf_options:
            report["kept_float"] = {
                "nncf_options['ignored_scope']": "given by the caller; nnport's own choices (below) not applied"
            }
            report["not_applied"] = kept_float
        elif kept_float:
            names = sorted(n for n in kept_float if n not in kept_types)
            nncf_options["ignored_scope"] = nncf.IgnoredScope(types=kept_types, names=names, validate=False)
            report["kept_float"] = kept_float
        if mixed:
            report["mixed_ranges"] = [m.to_dict() for m in mixed]
        nncf.set_log_level(40)  # errors only
        chatter = io.StringIO()  # NNCF draws rich progress bars on stdout: keep them off the caller's terminal
        step = progress.step(f"openvino: NNCF int8 quantization of {model.name!r} on {len(feeds)} sample(s)")
        try:
            with step, contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                try:
                    quantized = nncf.quantize(ov_model, nncf.Dataset(feeds), subset_size=len(feeds), **nncf_options)
                except Exception:
                    # A weight computed by a constant subgraph (inception_v1's Reshape of a 4-D
                    # initializer) trips NNCF's statistics; folded, it is a plain Constant.  Only on
                    # failure: folding also exposes weights NNCF otherwise leaves float (vgg19's tiled
                    # fc6), which costs accuracy on models that quantized fine.
                    _fold_constants(ov_model)
                    quantized = nncf.quantize(ov_model, nncf.Dataset(feeds), subset_size=len(feeds), **nncf_options)
                    report["folded_constants"] = True
        except Exception as exc:
            raise CompileError(
                f"NNCF int8 quantization failed: {type(exc).__name__}: {exc} {chatter.getvalue()[-500:]}".strip(),
                backend=self.name,
                device=device.id,
            ) from exc
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            tmp = stored.with_name(stored.stem + f".tmp{threading.get_ident()}.xml")
            ov.save_model(quantized, str(tmp), compress_to_fp16=False)
            tmp.with_suffix(".bin").replace(stored.with_suffix(".bin"))
            remembered = {
                k: report[k]
                for k in ("kept_float", "not_applied", "mixed_ranges", "mixed_ranges_error", "folded_constants")
                if k in report
            }
            tmp.with_suffix(".json").write_text(json.dumps(remembered, default=str))
            tmp.with_suffix(".json").replace(stored.with_suffix(".json"))
            tmp.replace(stored)
        return quantized, {**report, "from_cache": False}

    def _mixed_ranges(
        self,
        ov_model: Any,
        model: Model,
        feeds: Sequence[Mapping[str, np.ndarray]],
        report: dict[str, Any],
        keep_float: bool,
    ) -> tuple[list[Any], dict[str, str]]:
        """Mixed-range joins of an ONNX ``model`` on ``feeds``, and the OpenVINO op names to keep float (name -> why).

        The fp32 ONNX model runs on this OpenVINO's CPU with the joins' parts
        exposed; ONNX node names become OpenVINO op names through the tensor
        names OpenVINO keeps (an op producing a graph output is renamed after
        that output).  A model that is not ONNX, or that fails the check, is
        quantized without it (``report["mixed_ranges_error"]`` says why).
        """
        if model.format != "onnx" or model.proto is None:
            return [], {}
        from nnport import ranges

        try:
            mixed = ranges.find_mixed_ranges(model.proto, feeds, runner=self._run_onnx, keep_float=keep_float)
        except Exception as exc:
            report["mixed_ranges_error"] = f"{type(exc).__name__}: {_ov_message(exc)}"[:500]
            return [], {}
        producers = {n.name or n.output[0]: list(n.output) for n in model.proto.graph.node}
        op_by_tensor = {
            name: op
            for op in ov_model.get_ops()
            if op.get_type_name() not in ("Result", "Parameter", "Constant")
            for out in op.outputs()
            for name in out.get_names()
        }
        names: dict[str, str] = {}
        for join in mixed:
            if not join.kept_float:
                continue
            for node in join.float_nodes:
                why = join.why(node)
                for op in _ops_of(op_by_tensor, producers.get(node, ())):
                    names.setdefault(op.get_friendly_name(), why)
        return mixed, names

    def _run_onnx(self, onnx_bytes: bytes, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """``nnport.ranges`` runner: the ONNX model in fp32 on OpenVINO's CPU, outputs by tensor name."""
        core = self.core()
        ov_model = core.read_model(onnx_bytes)
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        ports = [(sorted(p.get_names()), i) for i, p in enumerate(compiled.outputs)]
        results = []
        for feed in feeds:
            request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
            arrays = [request.get_output_tensor(i).data for i in range(len(compiled.outputs))]
            results.append({name: np.array(arrays[i]) for names, i in ports for name in names})
        return results

    # -- run ---------------------------------------------------------------------------------

    def allocate(self, compiled: CompiledModel, shapes: Mapping[str, Sequence[int]] | None = None) -> Binding:
        binding = super().allocate(compiled, shapes)
        native: OpenVinoNative = compiled.native
        binding.native = _Request(native.compiled_model, len(native.feed_index))
        native.bind(binding.native, binding.inputs)
        return binding

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        native: OpenVinoNative = compiled.native
        slot: _Request = binding.native
        try:
            native.bind(slot, binding.inputs)
            result = native.infer(slot.request)
        except Exception as exc:
            raise _run_error(exc, compiled, binding.inputs) from exc
        binding.outputs = native.collect(slot.request, result)

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        native: OpenVinoNative = compiled.native
        slot = native.local
        try:
            native.bind(slot, feeds)
            result = native.infer(slot.request)
        except Exception as exc:
            raise _run_error(exc, compiled, feeds) from exc
        return native.collect(slot.request, result)

    # -- optional: intermediate tensors (the fast path of nnport debug) ---------------------

    def intermediates(
        self,
        model: Model,
        device: Device,
        options: CompileOptions,
        tensors: Sequence[str],
        feeds: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray] | None:
        """The requested tensors that OpenVINO's model still names, as extra outputs (``Model.add_outputs``) of one
        compile.

        OpenVINO's ONNX frontend keeps ONNX tensor names on the ops it creates,
        but a tensor it decomposed or folded while reading has no port of that
        name: such names are left out, and ``nnport debug`` cuts the graph there
        instead.  A marked tensor can stop a fusion the plain compile does, so
        ``nnport debug`` confirms a finding on the cut graph.  fp32 only.
        """
        if options.precision != "fp32":
            return None
        ov_name = self._ov_device(device)
        ov_model = self._read(model, device)
        _check_ranks(ov_model, device, self.name)
        ports: dict[str, Any] = {}
        for op in ov_model.get_ordered_ops():
            if op.get_type_name() in ("Parameter", "Result", "Constant"):
                continue
            for port in op.outputs():
                for name in port.get_names():
                    ports.setdefault(name, port)
        wanted = [t for t in dict.fromkeys(tensors) if t in ports]
        added = ov_model.add_outputs([ports[t] for t in wanted]) if wanted else []
        config = self._config(ov_name, device, options)
        config.update(_workarounds(ov_model, ov_name, config))
        try:
            compiled_model = self.core().compile_model(ov_model, ov_name, config)
        except Exception as exc:
            raise _compile_error(exc, self.name, device.id) from exc
        feed_index = _input_ports(
            model, model.inputs, list(compiled_model.inputs), {"backend": self.name, "device": device.id}
        )
        request = compiled_model.create_infer_request()
        try:
            request.infer({index: np.ascontiguousarray(feeds[name]) for index, name in feed_index})
        except Exception as exc:
            raise ExecutionError(f"OpenVINO failed on device {device.id}: {_ov_message(exc)}") from exc
        outputs = list(compiled_model.outputs)
        by_name = {n: i for i, port in reversed(list(enumerate(outputs))) for n in port.get_names()}
        first_added = len(outputs) - len(added)
        found: dict[str, np.ndarray] = {}
        for offset, name in enumerate(wanted):
            i = first_added + offset
            if name not in outputs[i].get_names():  # Results reordered: find the port by its name
                i = by_name.get(name, -1)
            if i >= 0:
                found[name] = np.array(request.get_output_tensor(i).data)
        return found


class OpenVinoNative:
    """What ``compiled.native`` holds: the OpenVINO objects and per-thread infer requests.

    ``feed_index`` pairs each OpenVINO input index with the nnport input name;
    ``out_index`` gives, in ONNX output order, (name, OpenVINO output index,
    dtype to cast to or None).  ``local.request`` is the calling thread's
    ``InferRequest`` (an ``InferRequest`` is not thread safe; the compiled model is).
    """

    def __init__(
        self,
        compiled_model: Any,
        feed_index: tuple[tuple[int, str], ...],
        out_index: tuple[tuple[str, int, np.dtype | None], ...],
    ) -> None:
        import openvino as ov

        self.compiled_model = compiled_model  # the read ov.Model is not kept: it would double the weights in memory
        self.feed_index = feed_index
        self.out_index = out_index
        self.outputs = len(compiled_model.outputs)
        self.Tensor = ov.Tensor
        self.infer = _infer_function()
        self.local = _ThreadRequest(compiled_model, len(feed_index))

    def bind(self, slot: _Request, feeds: Mapping[str, np.ndarray]) -> None:
        """Point ``slot``'s input tensors at ``feeds``; an array already bound zero-copy is not rewrapped.

        ``slot.held`` keeps each wrapped array alive (an ``openvino.Tensor`` made
        with ``shared_memory=True`` does not), which also makes the identity test
        safe; the shape is compared too, because ``array.shape = ...`` reshapes an
        array in place.  An array OpenVINO cannot share (not C-contiguous,
        read-only) is copied on every call, so in-place edits are never missed.
        """
        held = slot.held
        request = slot.request
        for pos, (index, name) in enumerate(self.feed_index):
            array = feeds[name]
            prev = held[pos]
            if prev is not None and prev[0] is array and prev[1] == array.shape:
                continue
            flags = array.flags
            if flags.c_contiguous and flags.writeable:
                request.set_input_tensor(index, self.Tensor(array, shared_memory=True))
                held[pos] = (array, array.shape)
            else:
                copy = np.array(array, order="C", copy=True)
                request.set_input_tensor(index, self.Tensor(copy, shared_memory=True))
                held[pos] = (None, copy)

    def collect(self, request: Any, result: Mapping[Any, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of ``request`` as caller-owned arrays in ONNX order and dtypes.

        ``result`` is what the infer call returned: views of the output tensors in
        the compiled model's output order, which saves a ``get_output_tensor(i).data``
        per output.  Where OpenVINO merged outputs (one port listed twice, so
        fewer entries) the tensors are read one by one.
        """
        if len(result) == self.outputs:
            arrays = list(result.values())
        else:
            arrays = [request.get_output_tensor(i).data for i in range(self.outputs)]
        return {name: arrays[i].copy() if cast is None else arrays[i].astype(cast) for name, i, cast in self.out_index}


class _Request:
    """An ``InferRequest`` and the arrays its input tensors currently wrap."""

    def __init__(self, compiled_model: Any, inputs: int) -> None:
        self.request = compiled_model.create_infer_request()
        self.held: list[tuple[Any, Any] | None] = [None] * inputs


class _ThreadRequest(_Request, threading.local):
    """One ``_Request`` per thread, created on the thread's first access."""


def _infer_function() -> Any:
    """A function running a request synchronously and returning its outputs as shared views.

    ``InferRequest.infer`` wraps the binding's ``infer`` in an ``OVDict`` of every
    output (about 2 us a call); nnport calls the binding's method directly where
    this OpenVINO has it and takes the plain dict it returns.
    """
    try:
        from openvino._pyopenvino import InferRequest as Raw

        raw = Raw.infer
    except (ImportError, AttributeError):  # pragma: no cover - another OpenVINO layout
        return lambda request: request.infer(share_outputs=True)

    def infer(request: Any) -> dict[Any, np.ndarray]:
        return raw(request, {}, True, True)  # no new inputs, outputs shared (collect copies them), strings decoded

    return infer


# -- model inspection --------------------------------------------------------------------------


def probe_sizes(
    model: Model, axes: Sequence[tuple[str, int]], size: int = LAZY_PROBE_DIMS[0]
) -> dict[tuple[str, int], int]:
    """Static sizes for the probe read: a symbol gets one size wherever it appears.

    1 where the symbol (or an unnamed dim) first appears on a leading axis (a
    batch), ``size`` elsewhere; silero-vad's ``batch`` is axis 0 of
    ``input`` and axis 1 of ``state``, and must be 1 in both.
    """
    specs = {s.name: s for s in model.inputs}
    by_symbol: dict[str, int] = {}
    sizes: dict[tuple[str, int], int] = {}
    for name, axis in axes:
        dim = specs[name].shape[axis]
        chosen = 1 if axis == 0 else size
        sizes[(name, axis)] = by_symbol.setdefault(dim, chosen) if isinstance(dim, str) else chosen
    return sizes


def _check_ranks(ov_model: Any, device: Device, backend: str) -> None:
    dynamic = [p.get_any_name() for p in ov_model.inputs if p.get_partial_shape().rank.is_dynamic]
    if dynamic:
        raise UnsupportedModel(
            f"input(s) {dynamic} have dynamic rank; nnport needs every input's rank (give the ONNX inputs a shape)",
            backend=backend,
            device=device.id,
        )


def _io(
    model: Model, compiled_model: Any, device: Device, backend: str
) -> tuple[
    tuple[TensorSpec, ...],
    tuple[TensorSpec, ...],
    tuple[tuple[int, str], ...],
    tuple[tuple[str, int, np.dtype | None], ...],
]:
    """Specs and the index maps between nnport names and OpenVINO ports.

    ONNX models keep their own specs; IR models (which carry none) get specs from
    OpenVINO.  Inputs are matched by port (``_input_ports``), outputs by port
    where the port carries the output's name, else by name (``_output_ports``):
    every input port is bound and every output found, or the compile is refused.
    """
    ov_inputs = list(compiled_model.inputs)
    ov_outputs = list(compiled_model.outputs)
    inputs = tuple(model.inputs) or tuple(_spec(p) for p in ov_inputs)
    outputs = tuple(model.outputs) or tuple(_spec(p) for p in ov_outputs)
    where = {"backend": backend, "device": device.id}
    feed_index = _input_ports(model, inputs, ov_inputs, where)
    out_index = _output_ports(outputs, ov_outputs, where)
    return inputs, outputs, feed_index, out_index


def _input_ports(
    model: Model, inputs: Sequence[TensorSpec], ov_inputs: Sequence[Any], where: dict[str, Any]
) -> tuple[tuple[int, str], ...]:
    """(OpenVINO input index, nnport input name) for every OpenVINO input port, matched by position.

    OpenVINO's ONNX frontend creates one Parameter per graph input, in graph
    order, but it renames a Parameter whose value passes through folded
    operators (``x -> Dropout -> Identity -> y`` gives a Parameter named ``d``)
    and drops inputs no node uses.  Matching by name then left ``x`` unbound and
    ``run`` returned uninitialised memory (issue 12).  So ports are matched by
    position, after leaving out the inputs the graph never uses when OpenVINO
    dropped them; a port whose names point at another input, a rank that
    disagrees, or counts that still differ refuse the compile instead.
    """
    from nnport.graph_edges import unused_inputs

    specs = list(inputs)
    if len(ov_inputs) < len(specs):
        unused = set(unused_inputs(model))
        specs = [s for s in specs if s.name not in unused]
    seen = [sorted(p.get_names()) for p in ov_inputs]
    if len(specs) != len(ov_inputs):
        raise CompileError(
            f"OpenVINO's compiled model has {len(ov_inputs)} input port(s) {seen} for the model's inputs "
            f"{[s.name for s in inputs]}; they cannot be matched by position",
            **where,
        )
    known = {s.name for s in inputs}
    found = []
    for index, (port, spec) in enumerate(zip(ov_inputs, specs)):
        named = [n for n in port.get_names() if n in known]
        shape = port.get_partial_shape()
        if (named and spec.name not in named) or (
            shape.rank.is_static and shape.rank.get_length() != len(spec.shape) and model.inputs
        ):
            raise CompileError(
                f"OpenVINO's input port {index} {seen[index]} ({shape}) does not match the model's input {spec}: "
                "refusing to feed it by position",
                **where,
            )
        found.append((index, spec.name))
    return tuple(found)


def _output_ports(
    outputs: Sequence[TensorSpec], ov_outputs: Sequence[Any], where: dict[str, Any]
) -> tuple[tuple[str, int, np.dtype | None], ...]:
    """(name, OpenVINO output index, dtype to cast to or None) per output, in the model's order.

    The port at the output's own position when it carries the output's name
    (one tensor listed twice has two ports of the same name), else the port
    that carries the name; an output no port names refuses the compile.
    """
    by_name = {n: i for i, p in reversed(list(enumerate(ov_outputs))) for n in p.get_names()}
    missing = []
    out_index = []
    for position, spec in enumerate(outputs):
        if position < len(ov_outputs) and spec.name in ov_outputs[position].get_names():
            i = position
        elif spec.name in by_name:
            i = by_name[spec.name]
        else:
            missing.append(spec.name)
            continue
        ov_dtype = np.dtype(ov_outputs[i].get_element_type().to_dtype())
        out_index.append((spec.name, i, None if ov_dtype == spec.dtype else spec.dtype))
    if missing:
        raise CompileError(
            f"OpenVINO's compiled model has no output(s) {missing}; it has "
            f"{[sorted(p.get_names()) for p in ov_outputs]}",
            **where,
        )
    return tuple(out_index)


WORKAROUNDS = {
    "SNIPPETS_MODE": (
        "DISABLE: OpenVINO 2025-2026's CPU Snippets tokenize a chain of small static rank-2 MatMuls into one "
        "'MLP' Subgraph when a stream has one thread (threads=1, or hint=throughput on few cores); with "
        "FakeQuantize (int8) inside, that Subgraph computes wrong results (zoo mlp: cosine 0.923 to fp32, top-1 "
        "flipped). Disabling Snippets restores the per-layer int8 kernels."
    )
}
"""OpenVINO settings nnport adds to dodge known OpenVINO defects, and why (reported in compiled.info["workarounds"])."""


def _workarounds(ov_model: Any, ov_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Settings for ``ov_model`` that avoid known OpenVINO defects; the caller's ``openvino_config`` wins.

    Only a quantized model with a MatMul on a static rank-2 input (what the MLP
    tokenizer takes) loses Snippets, so other models keep their fused kernels.
    """
    if not ov_name.startswith("CPU") or "SNIPPETS_MODE" in config:
        return {}
    quantized = mlp = False
    for op in ov_model.get_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            quantized = True
        elif kind == "MatMul":
            shape = op.get_input_partial_shape(0)
            mlp = mlp or (shape.rank.is_static and shape.rank.get_length() == 2 and shape.is_static)
        if quantized and mlp:
            return {"SNIPPETS_MODE": "DISABLE"}
    return {}


INT8_RECIPE = "nnport-openvino-int8-3"
"""Part of the stored int8 IR's key: changes whenever what nnport asks of NNCF changes."""

FLOAT_IN_INT8 = frozenset({"LSTMSequence", "GRUSequence", "RNNSequence"})
FLOAT_IN_INT8_REASON = (
    "NNCF quantizes the recurrent cell's weight and bias inputs, and OpenVINO's CPU plugin then refuses the cell "
    "('LSTMSequence ... expects Constant for port 5'); left in float (nncf_options['ignored_scope'] overrides)"
)
"""Operator types NNCF leaves in float by default, and why."""


def _ops_of(op_by_tensor: Mapping[str, Any], tensors: Sequence[str]) -> list[Any]:
    """The OpenVINO ops one ONNX node became: those producing its ``tensors``, and the unnamed ops before them.

    An ONNX node may become several ops (``Conv`` with a bias: a ``Convolution``
    named ``.../WithoutBiases`` and an ``Add`` that carries the output name); only
    the last carries the ONNX tensor name, the others have none.  The walk
    follows each op's first (data) input only: the side inputs of such ops are
    shape arithmetic (the bias reshape), not part of the quantized path.
    """
    found: dict[int, Any] = {}
    stack = [op_by_tensor[t] for t in tensors if t in op_by_tensor]
    while stack:
        op = stack.pop()
        if id(op) in found:
            continue
        found[id(op)] = op
        if op.get_input_size():
            source = op.input_value(0).get_node()
            if source.get_type_name() not in ("Constant", "Parameter") and not any(
                out.get_names() for out in source.outputs()
            ):
                stack.append(source)
    return list(found.values())


def _fold_constants(ov_model: Any) -> None:
    """Fold constant subgraphs in place, so that every weight NNCF sees is a Constant."""
    from openvino.passes import ConstantFolding, Manager

    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(ov_model)


SAME_FILE_PROBE = 1 << 20
"""Bytes compared at each end of a model file before OpenVINO is handed the file instead of the bytes."""


def _model_file(model: Model, options: CompileOptions) -> Path | None:
    """The ONNX file OpenVINO can read itself for ``model``, or None.

    With ``cache_dir``, ``compile_model(path)`` keys OpenVINO's cache by the file
    (its path, size and mtime, checked against the blob) instead of hashing a
    whole in-memory model, so a cache hit neither reads nor hashes the weights:
    on a resnet50 with 100 MB of initializers that is most of a warm compile.
    Used only where nnport would hand OpenVINO the same model: the file still has
    the loaded bytes (same size, same first and last MiB), no external data, and
    nothing nnport must do to the model first (int8 via NNCF, a quantized model's
    Snippets workaround).
    """
    if not options.cache_dir or model.format != "onnx" or model.path is None or options.precision == "int8":
        return None
    path = Path(model.path)
    data = model.metadata.get("_bytes")
    if path.suffix.lower() != ".onnx" or data is None or model.proto is None or _quantized_ops(model, None):
        return None
    if any(t.data_location == 1 for t in model.proto.graph.initializer):  # TensorProto.EXTERNAL
        return None
    try:
        if path.stat().st_size != len(data):
            return None
        with path.open("rb") as f:
            if f.read(SAME_FILE_PROBE) != data[:SAME_FILE_PROBE]:
                return None
            f.seek(max(0, len(data) - SAME_FILE_PROBE))
            if f.read() != data[-SAME_FILE_PROBE:]:
                return None
    except OSError:
        return None
    return path


def _quantized_ops(model: Model, ov_model: Any) -> list[str]:
    """The quantization operators ``model`` already holds ([] for a float model).

    ONNX: Q/DQ, QLinear* and integer ops (``nnport.precision``, which ``nnport.compress`` asks too);
    OpenVINO IR: its FakeQuantize layers.
    """
    if model.format == "onnx" and model.proto is not None:
        from nnport.precision import quantized_ops

        return quantized_ops(model.proto)
    return sorted({op.get_type_name() for op in ov_model.get_ops() if op.get_type_name() == "FakeQuantize"})


def _spec(port: Any) -> TensorSpec:
    shape = port.get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else None for d in shape) if shape.rank.is_static else ()
    return TensorSpec(port.get_any_name(), dims, np.dtype(port.get_element_type().to_dtype()))


def _property(compiled_model: Any, key: str) -> Any:
    try:
        return compiled_model.get_property(key)
    except Exception:
        return None


def _kind(ov_name: str) -> str:
    return KIND_BY_PREFIX.get(ov_name.split(".")[0].upper(), "cpu")


def _unavailable(ov_name: str, reason: str) -> Device:
    return Device(
        id=f"openvino:{ov_name}",
        backend=OpenVinoBackend.name,
        kind=_kind(ov_name),
        name=ov_name,
        properties={"ov_device": ov_name},
        available=False,
        reason=reason,
    )


def _has_nncf() -> bool:
    return importlib.util.find_spec("nncf") is not None


def _overflow_fix(nncf_options: dict[str, Any]) -> dict[str, str]:
    """7-bit weights in every layer (NNCF ``OverflowFix.ENABLE``) on an x86 CPU without VNNI/AMX.

    Without VNNI, x86 int8 kernels multiply u8 activations by s8 weights with
    ``vpmaddubsw``, whose int16 pair sums saturate; NNCF's default fix halves the
    weight range of the first layer only.  Measured on an AVX2-only CPU (qemu
    EPYC-Rome: no AVX-512, no VNNI) with the two-Gemm model of
    ``test_int8_weight_computed_from_an_initializer``: cosine against fp32
    0.966 with NNCF's default, 0.993 with the fix, as with VNNI (0.993 either
    way).  ONNX Runtime's int8 takes the same precaution (``reduce_range``, in
    ``nnport.compress``).  A caller's own ``advanced_parameters`` are kept.
    Sets ``nncf_options["advanced_parameters"]`` where needed; returns what to
    report (``compiled.info["int8"]["overflow_fix"]``).
    """
    from nnport import isa

    if "advanced_parameters" in nncf_options:
        return {"overflow_fix": "as nncf_options['advanced_parameters'] says"}
    if not isa.is_x86() or isa.has_int8_dot_product():
        return {"overflow_fix": f"NNCF's default (first layer only): {isa.describe()}"}
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    nncf_options["advanced_parameters"] = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
    why = "every layer (7-bit weights): no VNNI/AMX, u8*s8 pair sums would saturate int16"
    return {"overflow_fix": f"{why}; {isa.describe()}"}


# -- errors ---------------------------------------------------------------------------------------

_NOISE = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:|FrontEnd API failed with \w+:)\s*")


def _ov_message(exc: BaseException) -> str:
    """OpenVINO's message without its source-location lines, on one line."""
    lines = []
    for line in str(exc).splitlines():
        line = line.strip()
        while True:
            stripped = _NOISE.sub("", line)
            if stripped == line:
                break
            line = stripped
        if line and not line.startswith("To facilitate the conversion"):
            lines.append(line)
    return " ".join(lines) or type(exc).__name__


def unconverted_operators(text: str) -> list[str]:
    """Operator names from OpenVINO's frontend summary (``No conversion rule found for operations: A, B``)."""
    found: list[str] = []
    for pattern in (r"No conversion rule found for operations:\s*([^\n]+)", r"Conversion is failed for:\s*([^\n]+)"):
        for match in re.finditer(pattern, text):
            for op in match.group(1).split(","):
                op = op.strip()
                if op and op not in found:
                    found.append(op)
    return found


def _read_error(exc: Exception, model: Model, backend: str, device: str) -> CompileError:
    text = str(exc)
    ops = unconverted_operators(text)
    if ops:
        return UnsupportedModel(
            f"OpenVINO cannot convert operator(s) {ops} of model {model.name!r}: {_ov_message(exc)}",
            backend=backend,
            device=device,
        )
    # nnport.load already accepted the file, so what OpenVINO refuses is the model, not its bytes.
    return UnsupportedModel(
        f"OpenVINO cannot read model {model.name!r}: {_ov_message(exc)}", backend=backend, device=device
    )


def _compile_error(exc: Exception, backend: str, device: str) -> CompileError:
    message = _ov_message(exc)
    low = message.lower()
    ops = unconverted_operators(str(exc))
    if ops:
        return UnsupportedModel(f"OpenVINO cannot convert operator(s) {ops}: {message}", backend=backend, device=device)
    if "unsupported" in low or "not supported" in low or "doesn't support" in low or "cannot create" in low:
        return UnsupportedModel(f"OpenVINO cannot compile this model: {message}", backend=backend, device=device)
    return CompileError(f"OpenVINO could not compile the model: {message}", backend=backend, device=device)


def _run_error(exc: Exception, compiled: CompiledModel, feeds: Mapping[str, Any]) -> Exception:
    message = _ov_message(exc)
    low = message.lower()
    if (
        isinstance(exc, (KeyError, AttributeError))
        or "shape" in low
        or "dimension" in low
        or "input" in low
        and "precision" in low
    ):
        return InputError(feed_problems(compiled.inputs, feeds) + f" (OpenVINO: {message})")
    return ExecutionError(f"OpenVINO failed on device {compiled.device.id}: {message}")


@hookimpl
def nnport_register_backends(register):
    register(OpenVinoBackend)
