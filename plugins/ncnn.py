"""Tencent ncnn: ONNX through pnnx, guarded inputs, fp32 parity, Vulkan GPUs.

ncnn is what Arm boards run (the Raspberry Pi deployments); its Python binding
is thin and unforgiving, so this plugin puts guards between the user and it.
Each guard below was observed with ncnn 1.0.20261020 before it was written:

* **float64** input: ``ncnn.Mat(float64 array)`` segfaults.  Feeds are checked
  against the float32 specs before any ncnn call (``CompiledModel.run`` does it,
  ``execute``/``measure`` check ``binding.inputs`` again, and
  ``NcnnProgram.infer`` checks for callers beneath the core).
* **non-contiguous** input: ``ncnn.Mat(a.T)`` reads the raw buffer and ignores
  strides (garbage).  The copy into the staging Mat is a numpy assignment,
  which reads strides; where no staging Mat exists (a shape left open) the
  array is made C-contiguous first.
* **lifetime**: ``ncnn.Mat(array)`` wraps the numpy buffer without a reference
  count; a first layer that works in place (ReLU) then segfaults in light mode
  or would write into the caller's array.  Inputs are therefore never wrapped:
  each is copied into an ncnn-owned staging Mat (one per input and thread,
  allocated once, see ``NcnnProgram``), which in-place layers clone because
  Python holds a second reference.  That copy is cheaper than the
  ``Mat(array).clone()`` of pnnx's script (~0.1 us vs 3.5-5 us measured for a 64-float
  input), so no model needs a per-model "is the first layer in place" plan.
* **outputs** are copied out (``np.array(mat)`` owns its data) before the
  extractor, and the memory it owns, goes away.
* **batch**: a Mat has no batch axis (a 4-D array becomes a 4-D Mat: wrong
  output).  pnnx converts at batch 1; the batch axis is dropped where pnnx's own
  script drops it, and restored on outputs, so shapes equal the reference's.
  Batch > 1 loops over samples when the graph is per-sample (every input and
  output leads with the same symbolic dim, and the conversion check at batch 2
  agreed with ONNX Runtime); otherwise it is an ``InputError``: a graph with a
  fixed batch takes only that batch, and a graph that mixes samples cannot be
  run one sample at a time.  A fixed leading dim N > 1 that pnnx takes for the
  batch (``[2,8,16,16]``) runs one extractor per sample, the results stacked.
* **wrong conversions**: pnnx can emit graphs that load and compute something
  else (opset-18 reductions left unreduced, LayerNorm over axis 1, the tanh
  GELU).  A cold conversion is checked once against ONNX Runtime on seeded
  inputs (see ``_ncnn_convert``); a mismatch is ``UnsupportedModel``, cached.
* **extractor**: one per inference, created from and dying before its ``Net``.
* **fp32 parity**: ncnn turns fp16 storage/arithmetic on by default where the
  CPU or GPU has it (errors near 2e-4); fp32 turns all three fp16 switches off,
  ``precision="fp16"`` turns them on (and converts with pnnx ``fp16=1``).
* **int8** is refused: ncnn quantizes with its ``ncnn2table`` (calibration) and
  ``ncnn2int8`` (rewrite) command-line tools, which neither the ncnn wheel (the
  Python binding and its ``libgomp``) nor the pnnx wheel (the converter) ships.

Devices: ``ncnn:cpu`` and ``ncnn:vulkan:N`` per ``ncnn.get_gpu_count()``.  A
Vulkan device that is a CPU rasterizer (Mesa's lavapipe/llvmpipe: ncnn's gpu
type 3) is listed with kind ``cpu`` and ``software_rasterizer=True``; without
Vulkan, ``ncnn:vulkan`` is listed unavailable with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import sys
import tempfile
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

from ._ncnn_convert import (
    EXACT_FLOAT_INT,
    INTEGER_INPUTS,
    NO_BATCH,
    BlobPlan,
    convert,
    default_cache_root,
    fixed_batch,
    pnnx_executable,
    pnnx_version,
)

GPU_TYPES = {0: "discrete", 1: "integrated", 2: "virtual", 3: "cpu"}
SOFTWARE_RASTERIZERS = ("llvmpipe", "lavapipe", "swiftshader", "softpipe")
INT8_REASON = (
    "ncnn int8 needs a calibration table from ncnn2table and weights rewritten by ncnn2int8, "
    "command-line tools that the ncnn and pnnx wheels do not ship"
)
_F32 = np.dtype(np.float32)
_stderr_lock = threading.Lock()


class NcnnBackend(Backend):
    name = "ncnn"
    vendor = "Tencent"
    priority = 50
    description = "Tencent ncnn (Arm/mobile runtime) with pnnx conversion; Vulkan GPUs"

    @classmethod
    def probe(cls) -> str | None:
        if importlib.util.find_spec("ncnn") is None:
            return "the ncnn package is not installed (pip install 'nnport[ncnn]')"
        if pnnx_executable() is None:
            return "the pnnx converter executable is missing: pip install --no-deps pnnx"
        return None

    def versions(self) -> dict[str, str]:
        import importlib.metadata

        return {"ncnn": importlib.metadata.version("ncnn"), "pnnx": pnnx_version()}

    def devices(self) -> list[Device]:
        import ncnn

        found = [
            Device(
                id="ncnn:cpu",
                backend=self.name,
                kind="cpu",
                name=platform.processor() or platform.machine() or "CPU",
                properties={"threads_default": ncnn.get_physical_big_cpu_count(), "cpu_count": ncnn.get_cpu_count()},
            )
        ]
        try:
            with quiet_stderr():  # ncnn prints every GPU's details when it creates its Vulkan instance
                count = ncnn.get_gpu_count()
        except Exception as exc:  # a wheel without Vulkan, a broken loader
            count, why = 0, f"Vulkan could not be initialised: {type(exc).__name__}: {exc}"
        else:
            why = (
                "no Vulkan device found (ncnn.get_gpu_count() is 0): install a Vulkan driver (on a machine "
                "without a GPU, Mesa's lavapipe: apt-get install libvulkan1 mesa-vulkan-drivers)"
            )
        if count == 0:
            found.append(
                Device(id="ncnn:vulkan", backend=self.name, kind="gpu", name="Vulkan", available=False, reason=why)
            )
        for index in range(count):
            found.append(_vulkan_device(ncnn, index))
        return found

    def capabilities(self, device: Device) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16"),
            dtypes=("float32", *sorted(str(d) for d in INTEGER_INPUTS)),  # integer inputs only, as float32 ids
            opset_min=None,
            opset_max=None,
            dynamic_shapes=False,
            model_formats=("onnx", "ncnn"),
            notes=(
                "ONNX is converted by pnnx at batch 1 with static shapes: shapes= fixes symbolic dims, "
                "else each new feed shape is converted on first use (cached on disk)",
                "batch > 1 loops over samples when the graph is per-sample",
                f"int8 unsupported: {INT8_REASON}",
            ),
        )

    # -- compile -------------------------------------------------------------------

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        where = {"backend": self.name, "device": device.id}
        if options.precision == "int8":
            raise UnsupportedPrecision(
                f"precision 'int8' is not supported: {INT8_REASON}; supported: ['fp32', 'fp16']", **where
            )
        if options.precision not in ("fp32", "fp16"):
            raise UnsupportedPrecision(
                f"precision {options.precision!r} is not supported; supported: ['fp32', 'fp16']", **where
            )
        vulkan_index = device.properties.get("index") if device.id.startswith("ncnn:vulkan:") else None
        if model.format == "onnx" and not options.extra.get("ncnn_input_shapes"):
            symbol = batch_symbol(model.inputs, model.outputs)
            axes = open_axes(model, keep=(symbol,) if symbol else ())
            if axes:  # pnnx converts static shapes: convert at the shapes of the feeds, on first use
                _check_convertible(model, where)
                why = (
                    f"pnnx converts static shapes only; open dims {_axes_text(model, axes)} are fixed from "
                    "each new feed shape"
                )
                return specialize.lazily(self, model, device, options, axes, why)
        if model.format == "onnx":
            program, conversion = self._from_onnx(model, options, vulkan_index, where)
        elif model.format == "ncnn":
            program, conversion = self._from_native(model, options, vulkan_index, where), None
        else:
            raise UnsupportedModel(
                f"ncnn reads ONNX models (converted by pnnx) or ncnn .param/.bin pairs, not {model.format}", **where
            )
        compiled = CompiledModel(
            self, model, device, options, native=program, inputs=program.input_specs, outputs=program.output_specs
        )
        if conversion is not None:
            compiled.cache_hit = conversion.cache_hit
            compiled.info.update(
                {
                    "ncnn_param": conversion.param,
                    "pnnx_version": conversion.pnnx_version,
                    "pnnx_seconds": conversion.seconds,
                    "verified": conversion.verified,
                    "upgraded_opset": conversion.upgraded_opset,
                }
            )
        compiled.info["per_sample_batch"] = program.loop
        compiled.info["input_plan"] = program.plan
        compiled.info["blobs"] = {p.name: p.blob for p in (*program.in_plans, *program.out_plans)}
        return compiled

    def _from_onnx(
        self, model: Model, options: CompileOptions, vulkan_index: int | None, where: dict
    ) -> tuple[NcnnProgram, Any]:
        symbol = batch_symbol(model.inputs, model.outputs)
        _check_convertible(model, where)
        _check_served_outputs(model, where)
        shapes = conversion_shapes(model.inputs, options.extra.get("ncnn_input_shapes") or {}, where)
        cache_root = Path(options.cache_dir) / "ncnn" if options.cache_dir else default_cache_root()
        try:
            conversion = convert(
                model,
                precision=options.precision,
                shapes=shapes,
                per_sample=symbol is not None,
                cache_root=cache_root,
                verify=bool(options.extra.get("ncnn_verify", True)),
                timeout_s=float(options.extra.get("ncnn_pnnx_timeout_s", 900)),
            )
        except CompileError as exc:  # raised without a location: add it
            raise type(exc)(str(exc), **where) from exc
        try:
            net = load_net(
                conversion.param,
                conversion.bin,
                precision=options.precision,
                threads=options.threads,
                vulkan_index=vulkan_index,
            )
        except UnsupportedModel as exc:
            raise UnsupportedModel(str(exc), **where) from exc
        program = NcnnProgram(
            net,
            conversion.inputs,
            conversion.outputs,
            loop=conversion.per_sample,
            model_name=model.name,
            specs=(model.inputs, model.outputs),
        )
        return program, conversion

    def _from_native(self, model: Model, options: CompileOptions, vulkan_index: int | None, where: dict) -> NcnnProgram:
        if model.path is None:
            raise UnsupportedModel("an ncnn model needs its .param path", **where)
        param, weights = str(model.path), str(model.path.with_suffix(".bin"))
        try:
            net = load_net(
                param, weights, precision=options.precision, threads=options.threads, vulkan_index=vulkan_index
            )
        except UnsupportedModel as exc:
            raise UnsupportedModel(str(exc), **where) from exc
        blobs_in, blobs_out = list(net.input_names()), list(net.output_names())
        missing = [s.name for s in model.inputs if s.name not in blobs_in] + [
            s.name for s in model.outputs if s.name not in blobs_out
        ]
        if missing:
            raise UnsupportedModel(
                f"the specs name blob(s) {missing} that {model.path.name} does not have; its inputs are "
                f"{blobs_in} and its outputs {blobs_out}",
                **where,
            )
        for spec in (*model.inputs, *model.outputs):
            if spec.dtype != _F32:
                raise UnsupportedModel(f"ncnn runs float32 tensors only; {spec} is {spec.dtype}", **where)
        ins = [_native_plan(s) for s in model.inputs]
        outs = [_native_plan(s) for s in model.outputs]
        # An ncnn graph sees one sample per extractor (Mats have no batch axis), so a
        # symbolic batch shared by every spec is looped without a check against ONNX.
        symbol = batch_symbol(model.inputs, model.outputs)
        return NcnnProgram(
            net, ins, outs, loop=symbol is not None, model_name=model.name, specs=(model.inputs, model.outputs)
        )

    # -- run -------------------------------------------------------------------------

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        # binding.inputs may have been edited by hand: validate again (never hand ncnn a float64)
        compiled.check_feeds(binding.inputs)
        binding.outputs = compiled.native.run_checked(binding.inputs)

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # CompiledModel.run validated names, dtype, rank and fixed dims against the
        # compiled specs; run_checked re-checks only what those specs leave open.
        return compiled.native.run_checked(feeds)


# -- the loaded network and one inference --------------------------------------------------------


class NcnnProgram:
    """An ncnn ``Net`` plus the plan that maps ONNX tensors onto its blobs.

    Two entry points: ``infer`` checks dtype and shape itself (any caller);
    ``run_checked`` trusts feeds that ``CompiledModel.check_feeds`` accepted
    (names, float32, rank, fixed dims) and re-checks only what the compiled
    specs leave open (a symbolic leading dim the graph cannot loop over).

    Inputs are copied into ncnn-owned **staging Mats**, one set per thread,
    allocated once: ``Mat(array).clone()`` per call costs ~5 us (pybind11
    resolves ``Mat.__init__`` through ~10 overloads before the buffer one, then
    ``clone`` allocates), a numpy assignment into the staging Mat ~0.1 us.  The
    staging Mat keeps the guard's guarantees: its memory belongs to ncnn and
    Python holds a reference, so ncnn's refcount on it is >= 2 while the
    extractor runs, and a layer that works in place (ReLU, LayerNorm first)
    clones it instead of writing into it (ncnn's light mode: ``support_inplace
    && *refcount != 1``); the caller's array is never wrapped, so neither the
    NULL refcount of a wrapped buffer (the segfault) nor a write into the
    caller's memory can happen; the assignment reads strides, so a
    non-contiguous array needs no separate copy.

    Thread-safe: ncnn allows concurrent extractors on one net, each call makes
    its own, and each thread has its own staging Mats.
    """

    def __init__(
        self,
        net: Any,
        in_plans: Sequence[BlobPlan],
        out_plans: Sequence[BlobPlan],
        *,
        loop: bool,
        model_name: str = "model",
        specs: tuple[Sequence[TensorSpec], Sequence[TensorSpec]] | None = None,
    ) -> None:
        import ncnn

        self.net = net
        self.in_plans = list(in_plans)
        self.out_plans = list(out_plans)
        self.model_name = model_name
        self._Mat = ncnn.Mat
        self._tls = threading.local()
        known = lambda p: tuple(p.shape) if all(d >= 0 for d in p.shape) else None  # noqa: E731
        given_in, given_out = specs if specs is not None else ((), ())
        self.input_specs = tuple(_spec_of(p, given_in) for p in self.in_plans)
        self.output_specs = tuple(_spec_of(p, given_out) for p in self.out_plans)
        self.loop = loop = bool(loop and self.in_plans)
        # Per input, decided once: (name, blob, drop batch axis, batch-1 shape or None,
        # whether run_checked must still compare the shape, whether it is staged).
        # The core pins a static spec's shape; a dynamic spec is pinned per sample by
        # the loop; only a dynamic spec without the loop needs the comparison here.
        self._ins = [
            (
                p.name,
                p.blob,
                p.batch_index == 0,
                known(p),
                known(p) is not None and s.is_dynamic and not loop,
                known(p) is not None,
            )
            for p, s in zip(self.in_plans, self.input_specs)
        ]
        self._outs = [(p.name, p.blob, p.batch_index == 0, known(p), int(np.prod(p.shape))) for p in self.out_plans]
        self.plan = {  # the same decisions, readable (compiled.info["input_plan"])
            name: {"blob": blob, "drop_batch_axis": drop, "staged": staged, "shape_checked_here": check}
            for name, blob, drop, _, check, staged in self._ins
        }

        self._dtypes = {s.name: s.dtype for s in self.input_specs}
        self.integer_inputs = [s.name for s in self.input_specs if s.dtype != _F32]
        self.fixed_n = fixed_batch(self.in_plans, self.out_plans, model_name)
        self._sample = self._single_io() or self._one  # one inference of one sample
        if self.fixed_n > 1:
            self.run_checked = self._samples  # type: ignore[method-assign]
        elif loop:
            self.run_checked = self._looped  # type: ignore[method-assign]
        else:
            self.run_checked = self._sample  # type: ignore[method-assign]  # one Python call less on the hot path
        if self.integer_inputs:  # ids become float32 values: refuse those float32 cannot hold exactly
            unchecked = self.run_checked

            def run_ids(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                self._check_ids(feeds)
                return unchecked(feeds)

            self.run_checked = run_ids  # type: ignore[method-assign]

    def _check_ids(self, feeds: Mapping[str, np.ndarray]) -> None:
        for name in self.integer_inputs:
            a = feeds[name]
            if a.size and a.dtype.itemsize >= 4 and (a.max() >= EXACT_FLOAT_INT or a.min() <= -EXACT_FLOAT_INT):
                raise InputError(
                    f"input {name!r} holds values beyond +-2**24 ({int(a.min())}..{int(a.max())}); ncnn "
                    "takes integer ids as "
                    "float32 values, which cannot represent them exactly"
                )

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference of feeds nobody has checked: dtype and shape here, then ``run_checked``."""
        for name, _, _, shape, _, _ in self._ins:
            try:
                a = feeds[name]
                dtype, got = a.dtype, a.shape
            except KeyError:
                raise InputError(
                    f"model {self.model_name!r}: missing input {name!r}; inputs: {[i[0] for i in self._ins]}"
                ) from None
            except AttributeError:
                raise InputError(
                    f"input {name!r} of model {self.model_name!r} is a {type(feeds[name]).__name__}, "
                    "expected a numpy float32 array"
                ) from None
            if dtype != self._dtypes[name]:
                raise InputError(
                    f"input {name!r} has dtype {dtype}, expected {self._dtypes[name]} (ncnn runs float32 "
                    "tensors; integer ids only where the model takes them)"
                )
            if shape is not None:
                if self.loop and self.fixed_n == 1:
                    ok = len(got) == len(shape) and got[1:] == shape[1:]
                else:
                    ok = got == shape
                if not ok:
                    raise InputError(self._shape_problem(name, got, shape))
        return self.run_checked(feeds)

    def run_checked(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference of feeds the core validated (replaced per program in ``__init__``)."""
        return self._one(feeds)

    def _looped(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A per-sample graph: one extractor per sample of the batch, results concatenated."""
        first = feeds[self._ins[0][0]]
        n = first.shape[0] if first.ndim else 1
        if len(self._ins) > 1:  # the core checks fixed dims only, not that a symbolic dim agrees
            sizes = {k: feeds[k].shape[0] for k, *_ in self._ins}
            if any(m != n for m in sizes.values()):
                raise InputError(
                    f"model {self.model_name!r}: the inputs' batch sizes differ ({sizes}); every input "
                    "must carry the same batch"
                )
        if n == 1:
            return self._sample(feeds)
        if n == 0:
            raise InputError(f"model {self.model_name!r}: a batch of 0 samples has nothing to run")
        parts = [self._sample({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(n)]
        return {name: np.concatenate([p[name] for p in parts]) for name, *_ in self._outs}

    def _single_io(self) -> Any:
        """``_one`` unrolled for the common plan (one staged input, one output of known shape), or None.

        The same steps as ``_one`` without its loops, tuple unpacking and
        attribute lookups: ~0.3-0.5 us of the ~8 us a tiny model takes.
        """
        if len(self._ins) != 1 or len(self._outs) != 1:
            return None
        name, blob, _, _, check, staged = self._ins[0]
        out_name, out_blob, drop, shape, size = self._outs[0]
        if check or not staged or shape is None:
            return None
        create, tls, staging, shaped, model = (
            self.net.create_extractor,
            self._tls,
            self._staging,
            self._shaped,
            self.model_name,
        )
        array = np.array

        def one(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            try:
                mat, view = tls.stage[0]
            except AttributeError:
                mat, view = staging()[0]
            view[...] = feeds[name]  # into ncnn-owned memory; shape and dtype checked by the caller
            ex = create()
            try:
                if ex.input(blob, mat) != 0:
                    raise ExecutionError(f"ncnn rejected input blob {blob!r} ({name!r}) of model {model!r}")
                rc, result = ex.extract(out_blob)
                if rc != 0:
                    raise ExecutionError(
                        f"ncnn failed to compute output {out_name!r} (blob {out_blob!r}, status {rc}) of "
                        f"model {model!r}"
                    )
                arr = array(result)  # a copy: the Mat's memory belongs to ncnn
            finally:
                ex.clear()
            return {out_name: arr.reshape(shape) if arr.size == size else shaped(out_name, arr, drop, shape)}

        return one

    def _staging(self) -> list[tuple[Any, np.ndarray] | None]:
        """This thread's staging Mats (ncnn-owned) with writable numpy views in the feeds' shape."""
        stage: list[tuple[Any, np.ndarray] | None] = []
        for _, _, drop, shape, _, staged in self._ins:
            if not staged:
                stage.append(None)
                continue
            inner = shape[1:] if drop else shape
            mat = self._Mat(np.zeros(inner, _F32)).clone()  # the layout (cstep) ncnn allocates itself
            view = np.asarray(mat)  # no copy: ncnn's memory; keeps `mat` alive through the buffer export
            if view.shape != tuple(inner) or not view.flags.writeable:
                stage.append(None)  # never seen; the per-call copy below stays correct
                continue
            stage.append((mat, view[None] if drop else view))
        self._tls.stage = stage
        return stage

    def _one(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            stage = self._tls.stage
        except AttributeError:
            stage = self._staging()
        ex = self.net.create_extractor()
        try:
            for (name, blob, drop, shape, check, _), slot in zip(self._ins, stage):
                a = feeds[name]
                if check and a.shape != shape:
                    raise InputError(self._shape_problem(name, a.shape, shape))
                if slot is not None:
                    mat, view = slot
                    view[...] = a  # shapes are equal (checked), dtype float32 (checked): a plain copy
                else:  # a shape the conversion left open (native .param with symbolic dims)
                    if drop:
                        a = a[0]
                    mat = self._Mat(
                        np.ascontiguousarray(a, dtype=_F32)
                    ).clone()  # ncnn ignores strides; clone: ncnn-owned
                if ex.input(blob, mat) != 0:
                    raise ExecutionError(f"ncnn rejected input blob {blob!r} ({name!r}) of model {self.model_name!r}")
            out: dict[str, np.ndarray] = {}
            for name, blob, drop, shape, size in self._outs:
                rc, mat = ex.extract(blob)
                if rc != 0:
                    raise ExecutionError(
                        f"ncnn failed to compute output {name!r} (blob {blob!r}, status {rc}) of model "
                        f"{self.model_name!r}"
                    )
                arr = np.array(mat)  # a copy: the Mat's memory belongs to ncnn
                if shape is not None and arr.size == size:
                    out[name] = arr.reshape(shape)
                else:
                    out[name] = self._shaped(name, arr, drop, shape)
            return out
        finally:
            ex.clear()

    def _samples(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A fixed leading dim N > 1 that pnnx took for the batch: one extractor per sample.

        pnnx drops the axis (``batch_index=0``), so its ncnn graph computes one
        sample; feeding the whole array would compute sample 0 only.  Shapes are
        static here (the core or ``infer`` checked them).
        """
        Mat = self._Mat
        parts: list[list[np.ndarray]] = []
        for i in range(self.fixed_n):
            ex = self.net.create_extractor()
            try:
                for name, blob, *_ in self._ins:
                    if ex.input(blob, Mat(np.ascontiguousarray(feeds[name][i], dtype=_F32)).clone()) != 0:
                        raise ExecutionError(
                            f"ncnn rejected input blob {blob!r} ({name!r}) of model {self.model_name!r}"
                        )
                row = []
                for name, blob, *_ in self._outs:
                    rc, mat = ex.extract(blob)
                    if rc != 0:
                        raise ExecutionError(
                            f"ncnn failed to compute output {name!r} (blob {blob!r}, status {rc}) of model "
                            f"{self.model_name!r}"
                        )
                    row.append(np.array(mat))
                parts.append(row)
            finally:
                ex.clear()
        return {
            name: self._shaped(name, np.stack([row[j].reshape(-1) for row in parts]), drop, shape)
            for j, (name, blob, drop, shape, _) in enumerate(self._outs)
        }

    def _shaped(self, name: str, arr: np.ndarray, drop: bool, shape: tuple[int, ...] | None) -> np.ndarray:
        if shape is not None:
            if arr.size != int(np.prod(shape)):
                raise ExecutionError(
                    f"ncnn output {name!r} of model {self.model_name!r} has {arr.size} elements (shape "
                    f"{list(arr.shape)}), expected shape {list(shape)}"
                )
            return arr.reshape(shape)
        return arr[None] if drop else arr

    def _shape_problem(self, name: str, got: tuple[int, ...], want: tuple[int, ...]) -> str:
        why = (
            "the graph is per-sample, so only the leading (batch) dimension may change"
            if self.loop
            else "the ncnn graph was converted for this shape (batch > 1 is looped only when every input and output "
            "leads with the same symbolic batch dimension and the graph checked per-sample)"
        )
        return f"input {name!r} of model {self.model_name!r} has shape {list(got)}, expected {list(want)}: {why}"


def load_net(param: str, weights: str, *, precision: str, threads: int | None, vulkan_index: int | None) -> Any:
    """A loaded ``ncnn.Net`` with options set before loading (ncnn reads them at load time).

    Raises ``UnsupportedModel`` carrying what ncnn printed when it cannot load the files.
    """
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    fp16 = precision == "fp16"
    opt.use_fp16_storage = fp16
    opt.use_fp16_arithmetic = fp16
    opt.use_fp16_packed = fp16
    opt.use_bf16_storage = False
    if threads:
        opt.num_threads = threads
    if vulkan_index is not None:
        opt.use_vulkan_compute = True
        net.set_vulkan_device(vulkan_index)
    else:
        opt.use_vulkan_compute = False
    with quiet_stderr() as said:
        rc_param = net.load_param(param)
        rc_model = net.load_model(weights) if rc_param == 0 else -1
    if rc_param != 0 or rc_model != 0:
        what = "graph" if rc_param != 0 else "weights"
        message = " ".join(said.text().split())[:600] or "no message"
        raise UnsupportedModel(f"ncnn cannot load the {what} of {Path(param).name}: {message}")
    return net


class _Said:
    def __init__(self) -> None:
        self.value = ""

    def text(self) -> str:
        return self.value


@contextlib.contextmanager
def quiet_stderr() -> Iterator[_Said]:
    """Capture what native code writes to file descriptor 2 (ncnn's messages).

    Used only outside the hot path (device listing, loading, the conversion
    check), where ncnn prints GPU details and errors with ``fprintf(stderr, ...)``.
    """
    said = _Said()
    with _stderr_lock, tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            sys.stderr.flush()
        except Exception:  # a replaced or closed sys.stderr
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon): nothing to capture
            yield said
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said.value = sink.read().decode(errors="replace")


# -- helpers ---------------------------------------------------------------------------------------


def _vulkan_device(ncnn: Any, index: int) -> Device:
    info = ncnn.get_gpu_info(index)
    name = str(info.device_name())
    gpu_type = int(info.type())
    software = gpu_type == 3 or any(s in name.lower() for s in SOFTWARE_RASTERIZERS)
    return Device(
        id=f"ncnn:vulkan:{index}",
        backend="ncnn",
        kind="cpu" if software else "gpu",
        name=name,
        properties={
            "index": index,
            "gpu_type": GPU_TYPES.get(gpu_type, str(gpu_type)),
            "software_rasterizer": software,
            "vendor_id": int(info.vendor_id()),
            "device_id": int(info.device_id()),
            "api_version": int(info.api_version()),
            "driver_version": int(info.driver_version()),
        },
    )


def _check_convertible(model: Model, where: dict) -> None:
    """What can be refused before any shape is known: dtypes and ranks ncnn cannot hold."""
    for spec in model.inputs:
        if spec.dtype != _F32 and spec.dtype not in INTEGER_INPUTS:
            raise UnsupportedModel(
                f"ncnn takes float32 inputs (and integer ids, fed as float32 values) only; {spec} is {spec.dtype}",
                **where,
            )
    for spec in model.outputs:
        if spec.dtype != _F32:
            raise UnsupportedModel(f"ncnn computes float32 tensors only; output {spec} is {spec.dtype}", **where)
    for spec in model.inputs:
        if len(spec.shape) > 5 or (
            len(spec.shape) == 5 and spec.shape[0] not in (1, None) and not isinstance(spec.shape[0], str)
        ):
            raise UnsupportedModel(
                f"ncnn Mats have at most 4 dims besides batch; input {spec} has rank {len(spec.shape)}", **where
            )


def _check_served_outputs(model: Model, where: dict) -> None:
    """Refuse, before pnnx runs, outputs pnnx cannot convert: an input passed through, a constant, a repeated output.

    pnnx segfaults on a graph whose output is its input, drops constant and
    repeated outputs (``out0`` for outputs ``[y, c]``), so the blob mapping would
    fail after a long conversion.  ``nnport.compile`` never hands ncnn such a
    graph: the core serves those outputs itself (``nnport.graph_edges``); this
    guards a direct ``NcnnBackend.compile``.
    """
    from nnport.graph_edges import plan

    edges = plan(model)
    served = edges.served if edges is not None else ()
    if served:
        listed = "; ".join(f"{s.name!r} is {s.why}" for s in served)
        raise UnsupportedModel(
            f"pnnx cannot convert outputs that no operator computes ({listed}); nnport.compile serves them itself",
            **where,
        )


def _axes_text(model: Model, axes: Sequence[tuple[str, int]]) -> str:
    by_name = {s.name: s for s in model.inputs}
    return ", ".join(f"{name}[{axis}]={by_name[name].shape[axis]!r}" for name, axis in axes)


def batch_symbol(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str | None:
    """The symbolic batch dim when every input and output leads with it (and only there)."""
    specs = (*inputs, *outputs)
    if not inputs or not outputs or any(len(s.shape) < 1 for s in specs):
        return None
    lead = specs[0].shape[0]
    if not isinstance(lead, str) or any(s.shape[0] != lead or lead in s.shape[1:] for s in specs):
        return None
    return lead


def conversion_shapes(
    inputs: Sequence[TensorSpec], given: Mapping[str, Sequence[int]], where: dict
) -> dict[str, list[int]]:
    """Each input's static shape for pnnx: batch 1, other symbolic dims from ``given``."""
    unknown = [k for k in given if k not in {s.name for s in inputs}]
    if unknown:
        raise CompileError(
            f"extra ncnn_input_shapes names unknown input(s) {unknown}; inputs: {[s.name for s in inputs]}", **where
        )
    shapes: dict[str, list[int]] = {}
    for spec in inputs:
        if spec.name in given:
            shape = [int(d) for d in given[spec.name]]
            if not spec.accepts_shape(shape):
                raise CompileError(f"ncnn_input_shapes[{spec.name!r}] = {shape} does not fit {spec}", **where)
        else:
            rest = [d for d in spec.shape[1:] if not isinstance(d, int)]
            if rest:
                raise UnsupportedModel(
                    f"pnnx converts static shapes only; input {spec} has symbolic dims {rest}: "
                    f"pass extra={{'ncnn_input_shapes': {{{spec.name!r}: [1, ...]}}}}",
                    **where,
                )
            shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        if len(shape) > 5 or (len(shape) == 5 and shape[0] != 1):
            raise UnsupportedModel(
                f"ncnn Mats have at most 4 dims besides batch; input {spec} has rank {len(shape)}", **where
            )
        if 0 in shape:  # an empty Mat crashed the process (SIGSEGV) in the conversion check
            raise UnsupportedModel(
                f"ncnn cannot hold an empty tensor: input {spec.name!r} has shape {shape} with a zero-size dim", **where
            )
        shapes[spec.name] = shape
    return shapes


def _spec_of(plan: BlobPlan, given: Sequence[TensorSpec]) -> TensorSpec:
    """The compiled spec: the model's, with the dims the conversion fixed made static.

    A symbolic leading (batch) dim stays symbolic, so that a wrong batch reaches
    ``NcnnProgram`` and gets its explanation instead of a bare shape mismatch.
    """
    spec = next((s for s in given if s.name == plan.name), None)
    shape: list[Any] = [d if d >= 0 else None for d in plan.shape]
    if spec is not None and len(spec.shape) == len(shape):
        shape = [d if isinstance(d, int) or (i == 0 and d is not None) else shape[i] for i, d in enumerate(spec.shape)]
    dtype = spec.dtype if spec is not None and spec.dtype in INTEGER_INPUTS else _F32  # ids stay ids for the caller
    return TensorSpec(plan.name, tuple(shape), dtype)


def _native_plan(spec: TensorSpec) -> BlobPlan:
    """A native ``.param`` follows ncnn's convention: the specs' leading batch dim is not in the Mat."""
    lead = spec.shape[0] if spec.shape else None
    drop = len(spec.shape) >= 2 and (lead == 1 or not isinstance(lead, int))
    dims = [d if isinstance(d, int) else (1 if i == 0 and drop else -1) for i, d in enumerate(spec.shape)]
    return BlobPlan(spec.name, spec.name, dims, 0 if drop else NO_BATCH)


@hookimpl
def nnport_register_backends(register):
    register(NcnnBackend)
