"""Google LiteRT (TensorFlow Lite): ``.tflite`` models natively, ONNX through onnx2tf.

LiteRT is the most deployed edge runtime (Android, Coral, microcontrollers);
its Python package is ``ai-edge-litert`` (``tflite-runtime`` has had no
release since 2023).  What this plugin does, each point observed with
ai-edge-litert 2.3.0 before it was written:

* **Models.** A ``.tflite`` file is loaded by ``nnport.load`` (format
  ``tflite``; specs read by the interpreter, see ``nnport._tflite``) and runs
  as it is.  An ONNX model is converted by onnx2tf, which pins TensorFlow 2.19
  and numpy 1.26 and so runs as an external tool from an environment of its
  own (``_litert_convert``: found through ``extra["litert_onnx2tf"]``,
  ``$NNPORT_ONNX2TF`` or the environment ``bash dev.sh setup litert``
  builds).  Without it, ONNX on LiteRT is ``UnsupportedModel`` saying how to
  get it, and selection falls back.  Converted models keep the ONNX model's
  input and output names and layout (inputs stay NCHW, outputs are transposed
  back when onnx2tf made them channels-last), are checked once against ONNX
  Runtime and cached on disk like ncnn's conversions.
* **Devices.** ``litert:cpu`` runs the builtin kernels with the XNNPACK
  delegate, ``threads`` honoured (LiteRT's own default is one thread; nnport's
  default, as for the other CPU backends, is every CPU this process may use).
  ``litert:gpu`` (the WebGPU/OpenCL accelerator of LiteRT's CompiledModel API)
  and ``litert:npu`` (a vendor dispatch library) are listed usable only when
  they really load: each is tried once per host in a child process and the
  verdict is cached; otherwise they are listed unavailable with what LiteRT said.
* **Reference kernels.** ``extra={"litert_op_resolver": "builtin_ref"}``
  runs TFLite's reference kernels (no XNNPACK, no optimized kernels): the
  oracle conformance uses for ``.tflite`` models (about 10x slower).
* **Guards.** float64 (LiteRT refuses it) or any other dtype than the spec is
  an ``InputError`` before the runtime is called (``CompiledModel.check_feeds``);
  ``execute`` checks ``binding.inputs`` again.  Non-contiguous arrays are
  copied by ``set_tensor``, which reads strides (checked in the tests).
  Quantised uint8/int8 inputs and outputs keep their integer dtype: users feed
  real uint8 images; scale and zero point are in ``model.metadata["quantization"]``
  and ``compiled.info["quantization"]`` (``nnport._tflite.dequantize`` applies
  them).  ``extra={"litert_float_io": True}`` instead presents float32 specs
  and quantises/dequantises at the boundary.  A custom op the runtime lacks is
  ``UnsupportedModel`` naming it, at compile.
* **Open dims** (``-1`` in a ``.tflite`` model's ``shape_signature``) are resized
  on the interpreter when a feed's shape changes (``resize_tensor_input``);
  ``shapes=`` resizes them once at compile.  ONNX models with open dims are
  converted lazily per feed shape (``nnport.specialize``), as for ncnn.
* **Threads.** An interpreter is not thread-safe: each thread gets its own
  (created on first use from the same model bytes).
* **Debug fast path.** ``LiteRtBackend.intermediates(model, device, options,
  tensors, feeds)`` (optional, for ``nnport debug``) runs an interpreter built
  with ``experimental_preserve_all_tensors=True`` and returns the requested
  tensors LiteRT has by name (``LiteRtProgram.intermediates`` gives them all).

Precisions: a ``.tflite`` model runs at the precision it was converted at
(``fp32`` is "as it is"; other precisions are refused).  ONNX: ``fp32`` and
``fp16`` are onnx2tf's float32/float16 outputs; ``int8`` is onnx2tf's
integer quantisation (float inputs and outputs, int8 inside) calibrated on
``options.calibration``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnport import hookimpl, specialize
from nnport.backend import Backend
from nnport.compiled import CompiledModel
from nnport.errors import CompileError, ExecutionError, InputError, UnsupportedModel, UnsupportedPrecision
from nnport.model import Model
from nnport.specialize import open_axes
from nnport.types import Binding, Capabilities, CompileOptions, Device, TensorSpec

from . import _litert_convert as convert_

OP_RESOLVERS = {
    "auto": "AUTO",
    "builtin": "BUILTIN",
    "builtin_ref": "BUILTIN_REF",
    "builtin_without_default_delegates": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
}
REFERENCE_RESOLVER = "builtin_ref"
INSTALL = "pip install 'nnport[litert]'"
NATIVE_PRECISION_REASON = "a .tflite model runs at the precision it was converted at; precision 'fp32' runs it as it is"


class LiteRtBackend(Backend):
    name = "litert"
    vendor = "Google"
    priority = 10
    description = "Google LiteRT (TensorFlow Lite): .tflite natively, ONNX through onnx2tf; XNNPACK on CPU"

    @classmethod
    def probe(cls) -> str | None:
        if importlib.util.find_spec("ai_edge_litert") is None:
            return f"the ai-edge-litert package is not installed ({INSTALL})"
        return None

    def versions(self) -> dict[str, str]:
        import importlib.metadata

        found = {"ai-edge-litert": importlib.metadata.version("ai-edge-litert")}
        exe = convert_.onnx2tf_executable()
        if exe is not None:
            found["onnx2tf"] = convert_.onnx2tf_version(exe)
        return found

    def devices(self) -> list[Device]:
        cpus = _cpu_count()
        found = [
            Device(
                id=f"{self.name}:cpu",
                backend=self.name,
                kind="cpu",
                name=platform.processor() or platform.machine() or "CPU",
                properties={"delegate": "XNNPACK", "threads_default": cpus},
            )
        ]
        for kind in ("gpu", "npu"):
            why = accelerator_problem(kind)
            found.append(
                Device(
                    id=f"{self.name}:{kind}",
                    backend=self.name,
                    kind=kind,
                    name=f"LiteRT {kind.upper()} accelerator",
                    properties={"accelerator": kind.upper()},
                    available=why is None,
                    reason=why,
                )
            )
        return found

    def capabilities(self, device: Device) -> Capabilities:
        converter = convert_.onnx2tf_executable()
        return Capabilities(
            precisions=("fp32", "fp16", "int8") if converter else ("fp32",),
            dtypes=("float32", "float16", "uint8", "int8", "int16", "int32", "int64", "bool"),
            dynamic_shapes=True,
            model_formats=("tflite", "onnx") if converter else ("tflite",),
            intermediates=True,
            notes=(
                "a .tflite model runs at its own precision (quantised uint8/int8 I/O fed as integers)",
                "ONNX through onnx2tf in its own environment"
                + ("" if converter else f" (not found: {convert_.missing_reason()})"),
            ),
        )

    # -- compile -------------------------------------------------------------------

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        where = {"backend": self.name, "device": device.id}
        if not device.available:
            raise UnsupportedModel(f"{device.id} is unavailable: {device.reason}", **where)
        resolver = str(options.extra.get("litert_op_resolver", "auto")).lower()
        if resolver not in OP_RESOLVERS:
            raise CompileError(
                f"extra litert_op_resolver must be one of {list(OP_RESOLVERS)}, got {resolver!r}", **where
            )
        if model.format == "tflite":
            if options.precision != "fp32":
                raise UnsupportedPrecision(
                    f"precision {options.precision!r} is not supported: {NATIVE_PRECISION_REASON}", **where
                )
            if model.path is None:
                raise UnsupportedModel("a .tflite model needs its file path", **where)
            return self._program(model, device, options, model.path.read_bytes(), resolver, None, where)
        if model.format != "onnx":
            raise UnsupportedModel(
                f"LiteRT runs .tflite models, and ONNX models converted by onnx2tf; not {model.format}", **where
            )
        if options.precision not in ("fp32", "fp16", "int8"):
            raise UnsupportedPrecision(
                f"precision {options.precision!r} is not supported; supported: ['fp32', 'fp16', 'int8']", **where
            )
        exe = convert_.onnx2tf_executable(options.extra.get("litert_onnx2tf"))
        if exe is None and options.precision != "fp32":  # capabilities() lists fp32 only without the converter
            raise UnsupportedPrecision(
                f"precision {options.precision!r} is not supported here: ONNX models reach LiteRT through onnx2tf, "
                f"which was not found ({convert_.missing_reason()}); supported: ['fp32'] (.tflite models "
                "at their own precision)",
                **where,
            )
        if exe is None:
            raise UnsupportedModel(
                "ONNX models run on LiteRT after conversion by onnx2tf, which was not found: "
                f"{convert_.missing_reason()}",
                **where,
            )
        convert_.check_convertible(model, where)
        axes = open_axes(model)
        if axes:  # onnx2tf converts best at static shapes: convert at the shapes of the feeds, on first use
            why = "onnx2tf converts at static shapes here; open dims are fixed from each new feed shape"
            return specialize.lazily(self, model, device, options, axes, why)
        cache_root = Path(options.cache_dir) / "litert" if options.cache_dir else convert_.default_cache_root()
        try:
            conversion = convert_.convert(
                model,
                exe=exe,
                precision=options.precision,
                cache_root=cache_root,
                calibration=options.calibration,
                verify=bool(options.extra.get("litert_verify", True)),
                timeout_s=float(options.extra.get("litert_onnx2tf_timeout_s", 900)),
            )
        except CompileError as exc:  # raised without a location: add it
            raise type(exc)(str(exc), **where) from exc
        data = Path(conversion.tflite).read_bytes()
        compiled = self._program(model, device, options, data, resolver, conversion, where)
        compiled.cache_hit = conversion.cache_hit
        compiled.info.update(
            {
                "tflite": conversion.tflite,
                "onnx2tf_version": conversion.onnx2tf_version,
                "onnx2tf_seconds": conversion.seconds,
                "verified": conversion.verified,
                "output_transposes": {o.name: o.perm for o in conversion.outputs if o.perm},
            }
        )
        return compiled

    def _program(
        self,
        model: Model,
        device: Device,
        options: CompileOptions,
        data: bytes,
        resolver: str,
        conversion: Any,
        where: dict,
    ) -> CompiledModel:
        threads = options.threads or _cpu_count()
        float_io = bool(options.extra.get("litert_float_io", False))
        try:
            program = LiteRtProgram(
                data,
                model,
                resolver=resolver,
                threads=threads,
                conversion=conversion,
                float_io=float_io,
                shapes=options.shapes,
            )
        except UnsupportedModel as exc:
            raise UnsupportedModel(str(exc), **where) from exc
        except InputError:
            raise
        except Exception as exc:  # a LiteRT error that is no refusal: still an nnport error, so selection goes on
            raise CompileError(
                f"LiteRT failed to prepare {model.name!r}: {type(exc).__name__}: {_short(exc)}", **where
            ) from exc
        compiled = CompiledModel(
            self, model, device, options, native=program, inputs=program.input_specs, outputs=program.output_specs
        )
        compiled.info.update(
            {
                "threads": threads,
                "op_resolver": OP_RESOLVERS[resolver],
                "delegate": "XNNPACK" if resolver in ("auto", "builtin") else None,
            }
        )
        if program.quantization:
            compiled.info["quantization"] = program.quantization
            compiled.info["float_io"] = float_io
        if program.signature is not None:
            compiled.info["signature"] = program.signature
        return compiled

    # -- run -------------------------------------------------------------------------

    def allocate(self, compiled: CompiledModel, shapes: Mapping[str, Sequence[int]] | None = None) -> Binding:
        from nnport.data import random_feeds

        return Binding(random_feeds(compiled.inputs, shapes=shapes))

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        # binding.inputs may have been edited by hand: validate again (never hand LiteRT a float64)
        compiled.check_feeds(binding.inputs)
        binding.outputs = compiled.native.run(binding.inputs)

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # CompiledModel.run validated names, dtypes, ranks and fixed dims
        return compiled.native.run(feeds)

    # -- debug (optional capability) -----------------------------------------------------

    def intermediates(
        self,
        model: Model,
        device: Device,
        options: CompileOptions,
        tensors: Sequence[str],
        feeds: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray] | None:
        """The fast path of ``nnport debug``: one run exposing every tensor an operator computed.

        The interpreter is built with ``experimental_preserve_all_tensors=True``
        (more memory, the same kernels), so no graph is cut and recompiled.
        Returns the requested ``tensors`` found by LiteRT tensor name, plus the
        model's outputs by their own names; a name LiteRT does not have is left
        out (the caller cuts the graph there).  For an ONNX model converted by
        onnx2tf most inner names are TensorFlow's, so little beyond the outputs matches.
        """
        compiled = self.compile(model, device, options)
        native = compiled.native
        if isinstance(native, specialize.Specializations):
            compiled = native.for_feeds(feeds)
            native = compiled.native
        compiled.check_feeds(feeds)
        found = native.intermediates(feeds)
        wanted = set(tensors)
        exposed = {name: value for name, value in found.items() if name in wanted}
        if wanted & {spec.name for spec in compiled.outputs}:
            exposed.update({k: v for k, v in native.run(feeds).items() if k in wanted})
        return exposed


# -- the loaded model and one inference ------------------------------------------------------------


class _Port:
    """One input or output: its name for the user, the interpreter tensor index, how values cross."""

    __slots__ = ("name", "index", "perm", "quant", "dtype")

    def __init__(
        self, name: str, index: int, perm: tuple[int, ...] | None = None, quant: dict | None = None, dtype: Any = None
    ) -> None:
        self.name = name
        self.index = index
        self.perm = perm
        self.quant = quant
        self.dtype = dtype


class LiteRtProgram:
    """A LiteRT model ready to run: one interpreter per thread, ports mapped to tensor indices.

    ``run`` is the hot path: ``set_tensor`` per input (it copies, reading
    strides), ``invoke``, ``get_tensor`` per output (a copy the caller owns).
    Feeds were validated by the caller (``CompiledModel.check_feeds``).
    """

    def __init__(
        self,
        data: bytes,
        model: Model,
        *,
        resolver: str,
        threads: int,
        conversion: Any = None,
        float_io: bool = False,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        self.data = data
        self.model_name = model.name
        self.resolver = resolver
        self.threads = threads
        self._tls = threading.local()
        self._lock = threading.Lock()
        interpreter = self._new_interpreter()
        self.signature: str | None = None
        in_ports, out_ports, in_specs, out_specs = self._ports(interpreter, model, conversion)
        self.quantization = {p.name: p.quant for p in (*in_ports, *out_ports) if p.quant}
        self.float_io = float_io and bool(self.quantization)
        if self.float_io:  # present float32 specs; quantise/dequantise at the boundary
            in_specs = [TensorSpec(s.name, s.shape, np.dtype(np.float32)) for s in in_specs]
            out_specs = [
                TensorSpec(s.name, s.shape, np.dtype(np.float32)) if s.name in self.quantization else s
                for s in out_specs
            ]
        self._in = tuple(in_ports)
        self._out = tuple(out_ports)
        if shapes:
            in_specs = self._fix_shapes(interpreter, in_specs, shapes)
        self.dynamic = any(s.is_dynamic for s in in_specs)
        self.input_specs = tuple(in_specs)
        self.output_specs = tuple(out_specs)
        try:
            interpreter.allocate_tensors()
        except Exception as exc:  # an unresolved custom op, a kernel that cannot prepare
            raise UnsupportedModel(f"LiteRT cannot prepare {model.name!r}: {_short(exc)}") from exc
        self._tls.interpreter = interpreter
        self._tls.shapes = self._current_shapes(interpreter)
        self._plain = not self.float_io and not any(p.perm for p in self._out) and not self.dynamic

    # -- building ----------------------------------------------------------------------

    def _new_interpreter(self, *, preserve_all: bool = False) -> Any:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = getattr(OpResolverType, OP_RESOLVERS[self.resolver])
        kwargs: dict[str, Any] = {"model_content": self.data, "experimental_op_resolver_type": resolver}
        if self.threads:
            kwargs["num_threads"] = int(self.threads)
        if preserve_all:
            kwargs["experimental_preserve_all_tensors"] = True
        try:
            with _quiet_warnings():
                return Interpreter(**kwargs)
        except ValueError as exc:
            raise UnsupportedModel(f"LiteRT cannot load {self.model_name!r}: {_short(exc)}") from exc

    def _ports(
        self, interpreter: Any, model: Model, conversion: Any
    ) -> tuple[list[_Port], list[_Port], list[TensorSpec], list[TensorSpec]]:
        """Ports in the model's order: by signature names when the model has one signature, else by tensor names."""
        signatures = interpreter.get_signature_list()
        by_name_in = {d["name"]: d for d in interpreter.get_input_details()}
        by_name_out = {d["name"]: d for d in interpreter.get_output_details()}
        if len(signatures) == 1:
            key = next(iter(signatures))
            runner = interpreter.get_signature_runner(key)
            sig_in, sig_out = runner.get_input_details(), runner.get_output_details()
            main_in = {d["index"] for d in by_name_in.values()}
            main_out = {d["index"] for d in by_name_out.values()}
            if {d["index"] for d in sig_in.values()} == main_in and {d["index"] for d in sig_out.values()} == main_out:
                by_name_in, by_name_out = dict(sig_in), dict(sig_out)
                self.signature = key
            else:
                raise UnsupportedModel(
                    f"the signature {key!r} of {model.name!r} is not the main graph's inputs and outputs; "
                    "nnport runs the main graph"
                )
        if conversion is not None:  # ONNX names -> the converted model's names, layouts
            in_ports, in_specs = [], []
            for plan, spec in zip(conversion.inputs, model.inputs):
                d = _detail(by_name_in, plan.tensor, model.name)
                in_ports.append(_Port(spec.name, int(d["index"]), dtype=np.dtype(d["dtype"])))
                in_specs.append(spec)
            out_ports, out_specs = [], []
            for plan, spec in zip(conversion.outputs, model.outputs):
                d = _detail(by_name_out, plan.tensor, model.name)
                out_ports.append(
                    _Port(
                        spec.name,
                        int(d["index"]),
                        perm=tuple(plan.perm) if plan.perm else None,
                        dtype=np.dtype(d["dtype"]),
                    )
                )
                out_specs.append(TensorSpec(spec.name, tuple(plan.shape), np.dtype(d["dtype"])))
            return in_ports, out_ports, in_specs, out_specs
        quant = model.metadata.get("quantization", {})
        in_ports = [self._native_port(by_name_in, s, quant, model.name) for s in model.inputs]
        out_ports = [self._native_port(by_name_out, s, quant, model.name) for s in model.outputs]
        return in_ports, out_ports, list(model.inputs), list(model.outputs)

    @staticmethod
    def _native_port(details: Mapping[str, Any], spec: TensorSpec, quant: Mapping[str, Any], model_name: str) -> _Port:
        d = _detail(details, spec.name, model_name)
        if np.dtype(d["dtype"]) != spec.dtype:
            raise UnsupportedModel(f"{spec} of {model_name!r} is {np.dtype(d['dtype'])} in the .tflite file")
        q = quant.get(spec.name)
        if q is None and spec.dtype.kind in "iu":
            params = d.get("quantization_parameters") or {}
            scales = np.asarray(params.get("scales", ()))
            if scales.size:
                zero_points = np.asarray(params.get("zero_points", ()))
                q = {"scale": float(scales[0]), "zero_point": int(zero_points[0]) if zero_points.size else 0}
        return _Port(spec.name, int(d["index"]), quant=dict(q) if q else None, dtype=spec.dtype)

    def _fix_shapes(
        self, interpreter: Any, specs: list[TensorSpec], shapes: Mapping[str, tuple[int, ...]]
    ) -> list[TensorSpec]:
        fixed = []
        by_name = {p.name: p for p in self._in}
        for spec in specs:
            shape = shapes.get(spec.name)
            if shape is None:
                fixed.append(spec)
                continue
            if not spec.accepts_shape(shape):
                raise InputError(f"shapes[{spec.name!r}] = {list(shape)} does not fit {spec}")
            interpreter.resize_tensor_input(by_name[spec.name].index, list(shape), strict=True)
            fixed.append(TensorSpec(spec.name, tuple(shape), spec.dtype))
        return fixed

    def _current_shapes(self, interpreter: Any) -> tuple[tuple[int, ...], ...]:
        details = {d["index"]: d for d in interpreter.get_input_details()}
        return tuple(tuple(int(x) for x in details[p.index]["shape"]) for p in self._in)

    def _interpreter(self) -> Any:
        """This thread's interpreter (created, and allocated at the model's shapes, on first use)."""
        with self._lock:
            interpreter = self._new_interpreter()
        first = self.input_specs
        for port, spec in zip(self._in, first):
            if not spec.is_dynamic:
                interpreter.resize_tensor_input(port.index, list(spec.shape), strict=False)
        interpreter.allocate_tensors()
        self._tls.interpreter = interpreter
        self._tls.shapes = self._current_shapes(interpreter)
        return interpreter

    # -- running -------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            interpreter = self._tls.interpreter
        except AttributeError:
            interpreter = self._interpreter()
        if self._plain:
            # The wrapper's own methods, as Interpreter.set_tensor/invoke/get_tensor call them, minus
            # invoke()'s refcount check (it guards views from Interpreter.tensor(), which nnport never
            # takes): ~1 us a call.  GetTensor copies, so outputs belong to the caller.
            native = getattr(interpreter, "_interpreter", None)
            if native is None:  # another wrapper layout: the public methods
                return self._run_general(interpreter, feeds)
            set_tensor = native.SetTensor
            for port in self._in:
                set_tensor(port.index, feeds[port.name])
            native.Invoke()
            get_tensor = native.GetTensor
            return {port.name: get_tensor(port.index, 0) for port in self._out}
        return self._run_general(interpreter, feeds)

    def _run_general(self, interpreter: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.dynamic:
            shapes = tuple(tuple(feeds[p.name].shape) for p in self._in)
            if shapes != self._tls.shapes:
                for port, shape in zip(self._in, shapes):
                    interpreter.resize_tensor_input(port.index, list(shape), strict=False)
                try:
                    interpreter.allocate_tensors()
                except Exception as exc:
                    raise InputError(
                        f"LiteRT cannot run {self.model_name!r} at input shapes "
                        f"{[list(s) for s in shapes]}: {_short(exc)}"
                    ) from exc
                self._tls.shapes = shapes
        from nnport._tflite import dequantize, quantize

        for port in self._in:
            value = feeds[port.name]
            if self.float_io and port.quant:
                value = quantize(value, port.quant, port.dtype)
            try:
                interpreter.set_tensor(port.index, value)
            except ValueError as exc:
                raise InputError(f"LiteRT refused input {port.name!r} of {self.model_name!r}: {_short(exc)}") from exc
        try:
            interpreter.invoke()
        except RuntimeError as exc:
            raise ExecutionError(f"LiteRT failed to run {self.model_name!r}: {_short(exc)}") from exc
        out: dict[str, np.ndarray] = {}
        for port in self._out:
            value = interpreter.get_tensor(port.index)
            if port.perm:
                value = np.ascontiguousarray(value.transpose(port.perm))
            if self.float_io and port.quant:
                value = dequantize(value, port.quant)
            out[port.name] = value
        return out

    def intermediates(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            interpreter = self._new_interpreter(preserve_all=True)
        for port in self._in:
            interpreter.resize_tensor_input(port.index, list(np.shape(feeds[port.name])), strict=False)
        interpreter.allocate_tensors()
        from nnport._tflite import quantize

        for port in self._in:
            value = feeds[port.name]
            if self.float_io and port.quant:
                value = quantize(value, port.quant, port.dtype)
            interpreter.set_tensor(port.index, value)
        interpreter.invoke()
        produced = {int(i) for op in interpreter._get_ops_details() for i in op["outputs"] if i >= 0}
        found: dict[str, np.ndarray] = {}
        for detail in interpreter.get_tensor_details():
            if detail["index"] in produced:
                try:
                    found[detail["name"]] = interpreter.get_tensor(detail["index"])
                except ValueError:  # a tensor with no data (freed by a delegate)
                    continue
        return found


def _detail(details: Mapping[str, Any], name: str, model_name: str) -> Mapping[str, Any]:
    try:
        return details[name]
    except KeyError:
        raise UnsupportedModel(
            f"{model_name!r} has no input/output tensor {name!r}; it has {sorted(details)}"
        ) from None


# -- devices: accelerators, tried once per host in a child process ---------------------------------

ACCELERATOR_PROBE = r"""
import sys
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.hardware_accelerator import HardwareAccelerator
from nnport.plugins._litert_convert import tiny_model
kind = sys.argv[1]
model = CompiledModel.from_buffer(tiny_model(), hardware_accel=getattr(HardwareAccelerator, kind))
print("OK" if model.is_fully_accelerated() else "PARTIAL")
"""


def accelerator_problem(kind: str) -> str | None:
    """None when LiteRT's ``kind`` ("gpu"/"npu") accelerator compiles a tiny model here, else why not.

    Tried in a child process (a driver that crashes costs only the probe),
    once per host and ai-edge-litert version: the verdict is cached under
    nnport's cache root; ``$NNPORT_LITERT_PROBE=0`` skips the probe (listed
    unavailable, saying so).
    """
    if os.environ.get("NNPORT_LITERT_PROBE", "1") == "0":
        return "not probed ($NNPORT_LITERT_PROBE=0)"
    return _accelerator_verdicts().get(kind, "not probed")


@functools.lru_cache(maxsize=1)
def _accelerator_verdicts() -> dict[str, str | None]:
    import hashlib
    import importlib.metadata

    try:
        version = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    parts = [
        platform.node(),
        version,
        *(
            os.environ.get(v, "")
            for v in ("XDG_RUNTIME_DIR", "VK_ICD_FILENAMES", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")
        ),
    ]
    for folder in (
        "/dev/dri",
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
    ):  # a GPU or a driver added changes the verdict
        with contextlib.suppress(OSError):
            parts += sorted(os.listdir(folder))
    host = "|".join(parts)
    path = convert_.default_cache_root().parent / "litert-accelerators.json"
    key = hashlib.sha256(host.encode()).hexdigest()[:16]
    try:
        cached = json.loads(path.read_text())
        if key in cached:
            return cached[key]
    except (OSError, ValueError):
        cached = {}
    verdicts: dict[str, str | None] = {}
    for kind in ("GPU", "NPU"):
        verdicts[kind.lower()] = _probe_accelerator(kind)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cached[key] = verdicts
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
    return verdicts


def _probe_accelerator(kind: str) -> str | None:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", ACCELERATOR_PROBE, kind],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the {kind} accelerator probe did not finish: {exc}"
    said = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and said and said[-1] == "OK":
        return None
    if proc.returncode == 0 and said and said[-1] == "PARTIAL":
        return f"LiteRT's {kind} accelerator loads but does not run a plain ADD"
    keys = (
        ("No adapters", "WebGPU environment", "OpenCL")
        if kind == "GPU"
        else ("No compiler plugin", "dispatch", "cannot open shared object")
    )
    told = []
    for line in proc.stderr.splitlines():
        text = _LOG_PREFIX.sub("", line.strip(" └\t"))
        if text and any(k in text for k in keys) and text not in told:
            told.append(text)
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    detail = "; ".join(told[:3])[:500] if told else (lines[-1][-300:] if lines else f"exit status {proc.returncode}")
    if kind == "NPU":
        return (
            "no NPU dispatch library loads (install a vendor SDK: "
            f"ai-edge-litert-sdk-qualcomm/-mediatek/-intel/...): {detail}"
        )
    return f"LiteRT's GPU accelerator did not load: {detail}"


_LOG_PREFIX = re.compile(r"^(?:(?:INFO|WARNING|ERROR): \[[^\]]*\]\s*|E\d{4} [^\]]*\]\s*|with error: )+")


# -- helpers ---------------------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _short(exc: BaseException, limit: int = 600) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        yield


@hookimpl
def nnport_register_backends(register):
    register(LiteRtBackend)
