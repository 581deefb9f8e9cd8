"""Alibaba MNN: ONNX through MNN's converter (no telemetry), guarded inputs and outputs, fp32 parity.

MNN is one of the edge engines users port to (phones, Arm boards).  Its Python
binding is thin and has sharp edges; each guard below was observed with MNN
3.6.1 (the PyPI wheel) before it was written:

* **telemetry**: ``MNN.tools`` (the ``mnnconvert``/``mnnquant`` scripts) runs
  ``pip install`` on import and uploads machine ids.  nnport converts with the
  converter's C entry point in a guarded worker process and never imports
  ``MNN.tools`` (see ``_mnn_convert``).
* **float64** input: ``MNN.expr.const(float64 array)`` raises a bare
  ``SystemError``.  Feeds are checked against the specs before any MNN call
  (``CompiledModel.run`` does it, ``execute`` checks ``binding.inputs`` again,
  and ``MnnProgram.infer`` checks for callers beneath the core).
* **int64** input: ``const(int64 array, ..., int64)`` makes an int32 variable
  that reads the int64 bytes as int32 (silently wrong ids).  MNN's converter
  makes int64 tensors int32, so int64 (and bool) feeds are cast to int32, with
  a range check (an id beyond int32 is an ``InputError``, never another id);
  integer outputs come back int32 and are cast to the ONNX dtype.
* **outputs** are copied out: ``Var.read()`` returns a numpy array over MNN's
  own memory (``owndata`` False, no base), which the next ``forward``
  overwrites.
* **layouts**: an output that comes back in MNN's packed ``NC4HW4`` layout is
  converted to NCHW before reading; inputs are given as NCHW.
* **non-contiguous** inputs: ``MNN.expr.const`` reads numpy strides
  (transposed, stepped, reversed and Fortran-order arrays give exactly the
  contiguous values), so the hot path passes them as they are; a test holds
  MNN to it.
* **empty tensors**: ``Var.read()`` of a zero-size tensor fails inside MNN; a
  zero-size input dim is an ``InputError`` (``UnsupportedModel`` at compile
  when the model declares it).
* **threads**: a ``Module`` is not shared between threads; each thread runs its
  own ``clone()`` (weights shared).
* **wrong conversions, crashes, hangs**: a fresh conversion is run once on
  seeded inputs beside ONNX Runtime, MNN's side in a child process, because
  MNN's runtime crashes (SIGFPE in 2-D pooling, SIGSEGV on uint8 arithmetic, a
  double free) or hangs (OneHot) on some ONNX node tests.  A mismatch, crash
  or hang is ``UnsupportedModel`` (cached), so selection falls back; where the
  seeded inputs cannot decide (open dims, axes fed at run time), the first
  real run is checked the same way before any output is returned.

Devices: ``mnn:cpu``.  GPU backends (Vulkan, OpenCL, CUDA) are listed as
devices only when MNN really creates them: the PyPI wheel has none, and asking
for one silently runs on the CPU (the only sign is "Can't Find type=7 backend,
use 0 instead" on stdout), so they are listed unavailable with that message,
and a compile that sees the fallback refuses rather than report a CPU run as
a GPU run.

Precisions: fp32 (``PrecisionMode.High`` and Winograd convolution off, whose
fp32 error is ~3e-4 x scale on 5x5 kernels; ``extra={"mnn_winograd": True}``
turns it back on for speed), fp16 (``PrecisionMode.Low``,
Conv weights stored as fp16: fp16 arithmetic only where the CPU has it, which
``compiled.info["fp16_arithmetic"]`` says), int8 (weight-only: the converter's
``--weightQuantBits 8``; activations stay float, so ``calibration`` is not
used).  Shapes: MNN runs dynamic shapes itself (a module resizes to each feed), so
open dims need no specialisation, as long as MNN's dynamic model is right: it
is checked against ONNX Runtime at the first run's shapes, and where it
disagrees (an LSTM over a symbolic sequence) each feed shape gets a static
model instead (``nnport.specialize``).  ``shapes=`` reaches it as a static
model.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnport import hookimpl
from nnport.backend import Backend
from nnport.compiled import CompiledModel
from nnport.errors import CompileError, ExecutionError, InputError, UnsupportedModel, UnsupportedPrecision
from nnport.model import Model
from nnport.specialize import Specializations, open_axes
from nnport.types import Binding, Capabilities, CompileOptions, Device, TensorSpec

from ._mnn_convert import (
    CHECK_TIMEOUT_S,
    DEFERRED,
    FirstRunCheck,
    captured,
    convert,
    converter_available,
    default_cache_root,
    import_mnn,
    mnn_version,
)

PRECISIONS = ("fp32", "fp16", "int8")
WINOGRAD_MEMORY_LEVEL = 3
"""MNN's ``Interpreter::HintMode`` for the Winograd level; 0 turns Winograd convolution off."""
GPU_BACKENDS = {"vulkan": ("VULKAN", 7), "opencl": ("OPENCL", 3), "cuda": ("CUDA", 2)}
"""nnport device suffix -> (MNN backend name, MNNForwardType)."""
INT8_NOTE = (
    "int8 is weight-only (the converter's --weightQuantBits 8: Conv/MatMul/LSTM weights stored as int8 per channel, "
    "activations float); full int8 with calibration needs MNN's quantization tool, which nnport does not run"
)

_F32 = np.dtype(np.float32)
_I32 = np.dtype(np.int32)
_INT32_MIN, _INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)

# ONNX input dtype -> (how it is fed: numpy dtype MNN reads, MNN dtype name)
INPUT_DTYPES: dict[np.dtype, tuple[np.dtype, str]] = {
    np.dtype(np.float32): (_F32, "float"),
    np.dtype(np.int32): (_I32, "int"),
    np.dtype(np.int64): (_I32, "int"),  # MNN's converter makes int64 tensors int32
    np.dtype(np.bool_): (_I32, "int"),
    np.dtype(np.uint8): (np.dtype(np.uint8), "uint8"),
}
OUTPUT_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.int32, np.int64, np.bool_, np.uint8))


class MnnBackend(Backend):
    name = "mnn"
    vendor = "Alibaba"
    priority = 45
    description = (
        "Alibaba MNN (mobile/edge runtime): ONNX through MNN's converter; CPU (GPU backends where the build has them)"
    )

    _gpu_status: dict[str, str | None] | None = None

    @classmethod
    def probe(cls) -> str | None:
        if importlib.util.find_spec("MNN") is None:
            return "the MNN package is not installed (pip install 'nnport[mnn]')"
        if not converter_available():
            return (
                "MNN's converter module _tools is missing from the MNN installation (reinstall: pip install 'MNN>=3.0')"
            )
        return None

    def versions(self) -> dict[str, str]:
        return {"mnn": mnn_version()}

    def devices(self) -> list[Device]:
        threads = default_threads()
        found = [
            Device(
                id="mnn:cpu",
                backend=self.name,
                kind="cpu",
                name=cpu_name(),
                properties={"threads_default": threads, "cpu_features": cpu_features()},
            )
        ]
        for suffix, why in gpu_status().items():
            api = GPU_BACKENDS[suffix][0]
            found.append(
                Device(
                    id=f"mnn:{suffix}",
                    backend=self.name,
                    kind="gpu",
                    name=f"MNN {api}",
                    available=why is None,
                    reason=why,
                    properties={"api": api},
                )
            )
        return found

    def capabilities(self, device: Device) -> Capabilities:
        return Capabilities(
            precisions=PRECISIONS,
            dtypes=tuple(sorted(str(d) for d in INPUT_DTYPES)),
            opset_min=None,
            opset_max=None,
            dynamic_shapes=True,
            model_formats=("onnx",),
            intermediates=True,
            notes=(
                "ONNX goes through MNN's converter (guarded worker, no telemetry), checked once against ONNX Runtime",
                "open dims run as they are: an MNN module resizes to each feed shape",
                "int64/bool inputs are fed as int32 (range-checked); integer outputs are cast back",
                INT8_NOTE,
            ),
        )

    # -- compile -------------------------------------------------------------------

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        where = {"backend": self.name, "device": device.id}
        if options.precision not in PRECISIONS:
            raise UnsupportedPrecision(
                f"precision {options.precision!r} is not supported; supported: {list(PRECISIONS)}", **where
            )
        if model.format != "onnx":
            raise UnsupportedModel(f"MNN reads ONNX models (converted by MNN's converter), not {model.format}", **where)
        check_convertible(model, where)
        backend_type = None
        if device.id != "mnn:cpu":
            suffix = device.id.split(":", 1)[1]
            if suffix not in GPU_BACKENDS:
                raise CompileError(
                    f"unknown MNN device {device.id!r}; devices: mnn:cpu, "
                    + ", ".join("mnn:" + s for s in GPU_BACKENDS),
                    **where,
                )
            backend_type = GPU_BACKENDS[suffix]
        conversion = self._convert(model, options, where)
        threads = options.threads or default_threads()
        try:
            winograd = options.extra.get("mnn_winograd")
            program = MnnProgram.load(
                conversion.path,
                model,
                precision=options.precision,
                threads=threads,
                backend_type=backend_type,
                winograd=None if winograd is None else bool(winograd),
            )
        except CompileError as exc:
            raise type(exc)(str(exc), **where) from exc
        compiled = CompiledModel(
            self, model, device, options, native=program, inputs=model.inputs, outputs=model.outputs
        )
        compiled.cache_hit = conversion.cache_hit
        features = cpu_features()
        compiled.info.update(
            {
                "mnn_model": conversion.path,
                "mnn_version": conversion.mnn_version,
                "converter_seconds": round(conversion.seconds, 4),
                "converter_args": conversion.args,
                "converter_guard": conversion.guard,
                "verified": conversion.verified,
                "upgraded_opset": conversion.upgraded_opset,
                "threads": threads,
                "precision_mode": program.precision_mode,
                "winograd": program.winograd,
                "input_feeds": {p.name: p.fed_as for p in program.ins},
            }
        )
        if conversion.verified.startswith(DEFERRED):
            axes = open_axes(model)
            static = None
            if axes and options.extra.get(
                "mnn_specialize", True
            ):  # if the dynamic model disagrees: one static model per feed shape
                static = Specializations(self, model, device, options, axes)
            program.defer_check(
                FirstRunCheck(model, options.precision, conversion.verified, conversion.path), compiled.info, static
            )
        if options.precision == "fp16":
            compiled.info["fp16_arithmetic"] = (
                "yes (the CPU has fp16 arithmetic)"
                if features.get("fp16")
                else "no: this CPU has no fp16 arithmetic (MNN reports fp16:0); fp16 weights, fp32 compute"
            )
        if options.precision == "int8":
            compiled.info["int8"] = INT8_NOTE + (
                "; the calibration data given was not used" if options.calibration is not None else ""
            )
        return compiled

    def _convert(self, model: Model, options: CompileOptions, where: Mapping[str, str]) -> Any:
        cache_root = Path(options.cache_dir) / "mnn" if options.cache_dir else default_cache_root()
        try:
            return convert(
                model,
                precision=options.precision,
                cache_root=cache_root,
                extra=options.extra,
                verify=bool(options.extra.get("mnn_verify", True)),
                timeout_s=float(options.extra.get("mnn_convert_timeout_s", 600)),
                check_timeout_s=float(options.extra.get("mnn_check_timeout_s", CHECK_TIMEOUT_S)),
            )
        except CompileError as exc:  # raised without a location: add it
            raise type(exc)(str(exc), **where) from exc

    def intermediates(
        self,
        model: Model,
        device: Device,
        options: CompileOptions,
        tensors: Sequence[str],
        feeds: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray] | None:
        """The requested ONNX tensors that MNN's converted model still has, as extra module outputs of one load.

        MNN's converter keeps the ONNX names of the tensors it does not fuse
        away (124 of shufflenet's 203); the rest are left out and ``nnport
        debug`` cuts the graph there.  A fused tensor that kept its name can hold
        the fused value, so ``nnport debug`` confirms a finding on the cut graph.
        fp32 on ``mnn:cpu`` only.
        """
        if options.precision != "fp32" or device.id != "mnn:cpu":
            return None
        where = {"backend": self.name, "device": device.id}
        check_convertible(model, where)
        conversion = self._convert(model, options, where)
        mnn = import_mnn()
        with captured(1):
            present = set(mnn.expr.load_as_dict(conversion.path))
        inputs = {s.name for s in model.inputs}
        wanted = [t for t in dict.fromkeys(tensors) if t in present and t not in inputs]
        if not wanted:
            return {}
        specs = [TensorSpec(t, (), np.dtype(np.float32)) for t in wanted]  # dtypes from MNN: no cast on the way out
        probe = Model(
            format="onnx", inputs=model.inputs, outputs=tuple(specs), hash=model.hash, proto=None, name=model.name
        )
        program = MnnProgram.load(
            conversion.path,
            probe,
            precision="fp32",
            threads=options.threads or default_threads(),
            backend_type=None,
            intermediate=True,
        )
        program.outs = [(t, None) for t in wanted]
        return program.infer(dict(feeds))

    # -- run -------------------------------------------------------------------------

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        # binding.inputs may have been edited by hand: validate again (never hand MNN a float64)
        compiled.check_feeds(binding.inputs)
        binding.outputs = compiled.native.run_checked(binding.inputs)

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # CompiledModel.run validated names, dtypes, ranks and fixed dims against the specs.
        return compiled.native.run_checked(feeds)


# -- the loaded module and one inference -------------------------------------------------------------


class InputPlan:
    """How one ONNX input is fed to MNN: numpy dtype MNN reads, MNN dtype, range check for a narrowing cast."""

    __slots__ = ("name", "spec", "feed_dtype", "mnn_dtype", "narrow", "fed_as")

    def __init__(self, spec: TensorSpec, feed_dtype: np.dtype, mnn_dtype: Any) -> None:
        self.name = spec.name
        self.spec = spec
        self.feed_dtype = feed_dtype
        self.mnn_dtype = mnn_dtype
        self.narrow = spec.dtype != feed_dtype and spec.dtype.kind in "iu"  # int64 -> int32 needs a range check
        self.fed_as = str(feed_dtype) if feed_dtype == spec.dtype else f"{feed_dtype} (cast from {spec.dtype})"


class MnnProgram:
    """An MNN ``Module`` plus the plan that feeds it ONNX tensors and reads them back.

    Two entry points: ``infer`` checks dtypes and shapes itself (any caller);
    ``run_checked`` trusts feeds that ``CompiledModel.check_feeds`` accepted.
    A model with open dims whose seeded check could not decide is checked
    against ONNX Runtime on its first run (``defer_check``).
    Each thread runs its own clone of the module (MNN modules keep per-call
    state); the first thread uses the loaded module itself.
    """

    def __init__(self, module: Any, mnn: Any, model: Model, ins: list[InputPlan], precision_mode: str) -> None:
        self.module = module
        self.model = model
        self.model_name = model.name
        self.ins = ins
        self.outs: list[tuple[str, np.dtype | None]] = [(s.name, s.dtype) for s in model.outputs]
        self.precision_mode = precision_mode
        self._const = mnn.expr.const
        self._convert = mnn.expr.convert
        self._NCHW = mnn.expr.NCHW
        self._NC4HW4 = mnn.expr.NC4HW4
        self._fast = [(p.name, p.mnn_dtype) for p in ins]
        self._plain = all(not p.narrow and p.feed_dtype == p.spec.dtype for p in ins)
        self._owner = threading.get_ident()
        self._tls = threading.local()
        self._clone_lock = threading.Lock()
        self.runtime: Any = None
        self.winograd = True
        self.pending: FirstRunCheck | None = None
        self.static: Specializations | None = None
        self.info: dict[str, Any] = {}
        self.run_checked = self._run  # an instance attribute: no per-call test once nothing is pending
        self._steady = self._run

    def unrolled(self) -> None:
        """Use a closure for the common case (one static float32 input and output), when it applies.

        It binds the loaded module's ``forward`` and the MNN functions once, so
        a call is the direct MNN call plus a thread test and the output copy.
        The output's layout (NC4HW4 or not) is read on the
        first call and kept, since static shapes fix it.  Other threads take
        the general path with their own module clone.
        """
        if len(self.ins) != 1 or len(self.outs) != 1 or not self._plain:
            return
        spec, (out_name, out_dtype) = self.ins[0].spec, self.outs[0]
        if spec.is_dynamic or 0 in spec.shape or out_dtype != _F32:
            return
        forward, const, NCHW, NC4HW4, convert = (
            self.module.forward,
            self._const,
            self._NCHW,
            self._NC4HW4,
            self._convert,
        )
        name, mnn_dtype, owner, general, model_name = (
            spec.name,
            self.ins[0].mnn_dtype,
            self._owner,
            self._run,
            self.model_name,
        )
        get_ident, array = threading.get_ident, np.array

        def first(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            """The first call on the owner thread reads the output's layout: static shapes keep it."""
            if get_ident() != owner:
                return general(feeds)
            a = feeds[name]
            try:
                var = forward([const(a, a.shape, NCHW, mnn_dtype)])[0]
                packed = var.data_format == NC4HW4
                out = {out_name: array((convert(var, NCHW) if packed else var).read())}
            except Exception as exc:
                raise ExecutionError(f"MNN failed to run model {model_name!r}: {type(exc).__name__}: {exc}") from exc
            self._steady = general if packed else plain
            if self.run_checked is first:
                self.run_checked = self._steady
            return out

        def plain(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            if get_ident() != owner:
                return general(feeds)
            a = feeds[name]  # any strides: MNN.expr.const reads them (see the module docstring)
            # the output is NCHW (checked on the first call; the data_format test costs ~5% of a small model's call)
            try:
                return {
                    out_name: array(forward([const(a, a.shape, NCHW, mnn_dtype)])[0].read())
                }  # a copy: read() views memory the next call overwrites
            except Exception as exc:  # MNN raises bare SystemError/RuntimeError; no cost when nothing is raised
                raise ExecutionError(f"MNN failed to run model {model_name!r}: {type(exc).__name__}: {exc}") from exc

        one = first
        self._steady = one
        if self.pending is None:
            self.run_checked = one

    def defer_check(self, check: FirstRunCheck, info: dict[str, Any], static: Specializations | None = None) -> None:
        """Check the first run's outputs against ONNX Runtime (``info["verified"]`` gets the verdict).

        When the dynamic model disagrees and ``static`` is given, every call from
        then on runs a static model converted (and checked) at its feed shapes,
        as ``nnport.specialize`` does for backends that need static shapes:
        MNN's dynamic conversion of an LSTM over a symbolic sequence
        (silero_vad_16k_sequence) was wrong where its static one is right.
        """
        self.pending, self.info, self.static = check, info, static
        self.run_checked = self._first_run

    def _specialized(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.static is not None
        inner = self.static.for_feeds(feeds)
        return inner.native.run_checked(feeds)

    def _first_run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check = self.pending
        if check is None:
            return self._run(feeds)
        with check.lock:
            if check.error is not None:
                raise check.error
            if self.pending is None:  # another thread decided meanwhile
                return self._run(feeds)
            check.judge(feeds)  # MNN in the check worker (a crash there is a verdict), ONNX Runtime here
            self.info["verified"] = check.verdict
            if check.error is not None and self.static is not None:
                self.info["verified"] = f"{check.error}; so each feed shape gets a static model, converted and checked"
                self.info["specialized_lazily"] = (
                    "MNN's model with open dims disagreed with ONNX Runtime at the first run's shapes"
                )
                self.info["specializations"] = self.static.report
                self.pending = None
                self.run_checked = self._specialized
                return self._specialized(feeds)
            if check.error is not None:
                raise check.error
            self.pending = None
            self.run_checked = self._steady
            return self._steady(feeds)

    @classmethod
    def load(
        cls,
        path: str,
        model: Model,
        *,
        precision: str,
        threads: int,
        backend_type: tuple[str, int] | None,
        winograd: bool | None = None,
        intermediate: bool = False,
    ) -> MnnProgram:
        """Load ``path`` for ``model``'s inputs and outputs; raises ``UnsupportedModel``/``CompileError``.

        ``winograd`` (default: off for fp32, on otherwise): MNN's CPU Winograd
        convolution is off by ~3e-4 x scale for 5x5 and 7x7 kernels in fp32
        (a plain 5x5 Conv: 3.5e-4 relative with it, 2.7e-7 without), so fp32
        turns it off (runtime hint ``WINOGRAD_MEMORY_LEVEL`` = 0).
        ``intermediate``: ``model.outputs`` name inner tensors (``intermediates``), not the model's outputs.
        """
        mnn = import_mnn()
        F = mnn.expr
        try:
            with captured(1) as said:
                probe = mnn.nn.load_module_from_file(path, [], [])
        except Exception as exc:
            raise UnsupportedModel(
                f"MNN cannot load {Path(path).name}: {type(exc).__name__}: {exc} {said.text().strip()[:300]}"
            ) from exc
        if probe is None:
            raise UnsupportedModel(
                f"MNN cannot load {Path(path).name}: {' '.join(said.text().split())[:400] or 'no message'}"
            )
        info = probe.get_info()
        have_in, have_out = list(info.get("inputNames", [])), list(info.get("outputNames", []))
        missing_in = [s.name for s in model.inputs if s.name not in have_in]
        missing_out = [s.name for s in model.outputs if s.name not in have_out] if not intermediate else []
        if missing_in or missing_out:
            raise UnsupportedModel(
                f"the MNN model converted from {model.name!r} lacks ONNX "
                + " and ".join(
                    x
                    for x in (
                        f"input(s) {missing_in}" if missing_in else "",
                        f"output(s) {missing_out}" if missing_out else "",
                    )
                    if x
                )
                + f" (its inputs are {have_in}, its outputs {have_out}): MNN drops inputs the graph never reads and "
                "cannot return an input or a constant as an output; nnport.compile serves such outputs itself"
            )
        mode = {"fp16": "Low"}.get(precision, "High")
        # shape_mutable stays on even for static models: with it off, an LSTM's sequence output
        # (MNN runs LSTM/GRU as a While loop) came back wrong (0.4 x scale) while its final state was right
        shape_mutable = True
        kwargs: dict[str, Any] = {
            "precision_mode": getattr(F.PrecisionMode, mode),
            "thread_num": int(threads),
            "shape_mutable": shape_mutable,
        }
        if backend_type is not None:
            kwargs["backend"] = getattr(F.Backend, backend_type[0])
        if winograd is None:
            winograd = precision != "fp32"
        runtime, told = None, ""
        if not winograd:
            config = {
                "backend": backend_type[1] if backend_type else 0,
                "precision": mode.lower(),
                "numThread": int(threads),
            }
            with captured(1) as made:
                runtime = mnn.nn.create_runtime_manager((config,))
            told = made.text()
            runtime.set_hint(WINOGRAD_MEMORY_LEVEL, 0)
            kwargs["runtime_manager"] = runtime
        try:
            with captured(1) as said:
                module = mnn.nn.load_module_from_file(
                    path, [s.name for s in model.inputs], [s.name for s in model.outputs], **kwargs
                )
        except Exception as exc:
            raise UnsupportedModel(f"MNN cannot load {Path(path).name}: {type(exc).__name__}: {exc}") from exc
        if module is None:
            raise UnsupportedModel(
                f"MNN cannot load {Path(path).name}: {' '.join(said.text().split())[:400] or 'no message'}"
            )
        told += said.text()
        if backend_type is not None and "Can't Find type=" in told:
            raise CompileError(
                f"MNN has no {backend_type[0]} backend here and would run on the CPU instead "
                f"({' '.join(told.split())[:200]!r}): "
                "refusing to report a CPU run as a GPU run"
            )
        ins = []
        for spec in model.inputs:
            feed_dtype, mnn_name = INPUT_DTYPES[spec.dtype]
            ins.append(InputPlan(spec, feed_dtype, getattr(F, mnn_name)))
        program = cls(module, mnn, model, ins, mode)
        program.runtime = runtime  # the module's runtime lives as long as the program
        program.winograd = winograd
        if not intermediate:
            program.unrolled()
        return program

    # -- per thread ----------------------------------------------------------------------

    def _thread_module(self) -> Any:
        if threading.get_ident() == self._owner:
            module = self.module
        else:
            with self._clone_lock:
                module = self.module.clone()
        self._tls.module = module
        return module

    # -- inference -----------------------------------------------------------------------

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference for any caller: checks names, dtypes and ranks first (never hands MNN a float64)."""
        from nnport.compiled import feed_problems

        ok = isinstance(feeds, Mapping) and set(feeds) == {p.name for p in self.ins}
        if ok:
            for p in self.ins:
                a = feeds[p.name]
                if not isinstance(a, np.ndarray) or a.dtype != p.spec.dtype or not p.spec.accepts_shape(a.shape):
                    ok = False
                    break
        if not ok:
            raise InputError(feed_problems([p.spec for p in self.ins], feeds))
        return self.run_checked(feeds)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference from checked feeds (``run_checked`` is this, or ``_first_run`` while a check is pending)."""
        try:
            module = self._tls.module
        except AttributeError:
            module = self._thread_module()
        const, NCHW = self._const, self._NCHW
        if self._plain:
            args: list[Any] = []
            for name, mnn_dtype in self._fast:
                a = feeds[name]
                if not a.flags.c_contiguous or 0 in a.shape:
                    a = self._prepared(self.ins[len(args)], a)
                args.append(const(a, a.shape, NCHW, mnn_dtype))
        else:
            args = [const(a, a.shape, NCHW, p.mnn_dtype) for p in self.ins for a in (self._prepared(p, feeds[p.name]),)]
        try:
            results = module.forward(args)
        except Exception as exc:
            raise ExecutionError(f"MNN failed to run model {self.model_name!r}: {type(exc).__name__}: {exc}") from exc
        if len(results) != len(self.outs):  # MNN returns an empty list when it cannot compute (an allocation failed)
            raise ExecutionError(
                f"MNN returned {len(results)} output(s) of {len(self.outs)} for model {self.model_name!r}: "
                "it could not compute them"
            )
        out: dict[str, np.ndarray] = {}
        NC4HW4, array = self._NC4HW4, np.array
        for (name, dtype), var in zip(self.outs, results):
            if var.data_format == NC4HW4:
                var = self._convert(var, NCHW)
            try:
                value = var.read()
            except SystemError as exc:  # a zero-size output, or a shape MNN could not compute
                raise ExecutionError(
                    f"MNN could not produce output {name!r} of model {self.model_name!r} (shape {var.shape}): {exc}"
                ) from exc
            value = array(value)  # a copy: read() views MNN memory that the next forward overwrites
            if (
                dtype is not None and value.dtype is not dtype and value.dtype != dtype
            ):  # int32 -> int64/bool; dtype None: MNN's
                value = value.astype(dtype)
            out[name] = value
        return out

    def _prepared(self, plan: InputPlan, a: np.ndarray) -> np.ndarray:
        """A feed as MNN reads it: contiguous, narrowed (range-checked), no zero-size dim."""
        if 0 in a.shape:
            raise InputError(
                f"input {plan.name!r} of model {self.model_name!r} has shape {list(a.shape)}: "
                "MNN cannot run zero-size tensors"
            )
        if plan.narrow and a.size:
            low, high = int(a.min()), int(a.max())
            if low < _INT32_MIN or high > _INT32_MAX:
                raise InputError(
                    f"input {plan.name!r} of model {self.model_name!r} holds values in [{low}, {high}]: MNN computes "
                    f"{plan.spec.dtype} tensors as int32, which cannot hold them"
                )
        if a.dtype != plan.feed_dtype:
            return a.astype(plan.feed_dtype, order="C")
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)


# -- helpers ---------------------------------------------------------------------------------------


def check_convertible(model: Model, where: Mapping[str, Any]) -> None:
    """What can be refused before conversion: dtypes MNN cannot feed or return, zero-size dims."""
    for spec in model.inputs:
        if spec.dtype not in INPUT_DTYPES:
            raise UnsupportedModel(
                f"MNN takes {sorted(str(d) for d in INPUT_DTYPES)} inputs; {spec} is {spec.dtype}", **where
            )
        if 0 in spec.shape:
            raise UnsupportedModel(f"MNN cannot run zero-size tensors: input {spec} has a zero-size dim", **where)
    for spec in model.outputs:
        if spec.dtype not in OUTPUT_DTYPES:
            raise UnsupportedModel(
                f"MNN returns {sorted(str(d) for d in OUTPUT_DTYPES)} outputs; {spec} is {spec.dtype}", **where
            )


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` starts ``uname -p``: no process here)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "CPU"


def default_threads() -> int:
    """Threads when ``options.threads`` is None: the usable cores, at most 4 (MNN scales poorly beyond)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(4, count))


_cpu_features: dict[str, bool] | None = None


def cpu_features() -> dict[str, bool]:
    """What MNN says the CPU supports (its load banner: "i8sdot:0, fp16:0, ..."), read once."""
    global _cpu_features
    if _cpu_features is None:
        import re

        import_mnn()
        from . import _mnn_convert

        text = _mnn_convert.banner
        _cpu_features = {k: v != "0" for k, v in re.findall(r"(\w+):\s*(\d)", text)}
    return _cpu_features


_gpu_lock = threading.Lock()
_gpu: dict[str, str | None] | None = None


def gpu_status() -> dict[str, str | None]:
    """Per GPU backend: None when MNN creates it, else why not (read once per process).

    A runtime of each type is created; MNN falls back to the CPU without an
    error when the type is not built in and says so only on stdout ("Can't Find
    type=7 backend, use 0 instead"), which is captured and quoted.
    """
    global _gpu
    with _gpu_lock:
        if _gpu is None:
            mnn = import_mnn()
            found: dict[str, str | None] = {}
            for suffix, (api, code) in GPU_BACKENDS.items():
                try:
                    with captured(1) as said:
                        mnn.nn.create_runtime_manager(({"backend": code, "precision": "high", "numThread": 1},))
                except Exception as exc:
                    found[suffix] = f"MNN cannot create a {api} runtime: {type(exc).__name__}: {exc}"
                    continue
                text = " ".join(said.text().split())
                if "Can't Find type=" in text:
                    found[suffix] = (
                        f"this MNN build has no {api} backend and runs on the CPU instead "
                        f"(MNN: {text[text.index('Can') :][:80]!r}) (the PyPI wheel is built without GPU backends)"
                    )
                else:
                    found[suffix] = None
            _gpu = found
        return _gpu


@hookimpl
def nnport_register_backends(register):
    register(MnnBackend)
