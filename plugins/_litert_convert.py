"""ONNX -> ``.tflite`` through onnx2tf, run from an environment of its own, with a cache.

Helpers of ``plugins/litert.py`` (as ``_ncnn_convert`` is of ncnn's).

onnx2tf 1.29.24, the last release for Python 3.11, pins TensorFlow 2.19,
numpy 1.26, onnx 1.19 and onnxruntime 1.23: it cannot share nnport's
environment (its own is ~2.6 GB).  It runs as an external tool, as pnnx does
for ncnn.  Where it is found, first match wins:

1. ``extra={"litert_onnx2tf": PATH}`` on the compile;
2. ``$NNPORT_ONNX2TF`` (``ONNX2TF_ENV``);
3. ``<nnport cache root>/onnx2tf`` (``DEFAULT_ENV``), which
   ``bash dev.sh setup litert`` builds.

``PATH`` is the ``onnx2tf`` executable or the environment folder holding
``bin/onnx2tf``.

What onnx2tf needs and what it gets wrong, and what this module does about it:

* **Offline trap.** When every input looks like an NHWC image it downloads a
  calibration sample (``calibration_image_sample_data_20x128x128x3_float32.npy``)
  from GitHub into its working directory, and fails without a network.  The
  conversion runs in a fresh directory pre-seeded with a seeded stand-in of
  that file (images in [0, 1]; used only for onnx2tf's own checks), so it
  never downloads anything.
* **Layout.** By default it makes 3-D to 5-D inputs channels-last.  ``-k``
  with those inputs keeps the ONNX layout on inputs (onnx2tf transposes inside
  the graph; ``-kat``, "keep the shape absolutely", computed wrong results on a
  BatchNormalization and a batch-2 Conv).  Outputs may still come out
  channels-last, with a shape that can equal the ONNX one (``[2, 8, 8, 8]``):
  the one-time run beside ONNX Runtime picks, per output, the transpose back
  (identity first) whose result agrees.
* **Names.** Tensor names become ``serving_default_x:0``/``PartitionedCall:0``;
  the signature (``-osd``) carries the ONNX names, which the plugin uses.
* **Silent errors.** Each conversion is run once beside ONNX Runtime (when it
  is installed) on seeded inputs; an fp32 mismatch is ``UnsupportedModel``
  (cached, as pnnx's).  fp16 and int8 are recorded with their error, not refused.

Conversions (and their failures) are cached under ``<cache>/<model>-<key>/``
keyed by the model hash, precision, calibration digest, onnx2tf version and
``CONVERTER_VERSION``; least recently used entries are evicted beyond
``$NNPORT_LITERT_CACHE_MAX_ENTRIES`` (128) or ``..._MAX_MB`` (2048).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnport import progress
from nnport.errors import CompileError, UnsupportedModel
from nnport.model import Model, drop_initializer_inputs
from nnport.paths import cache_root

CONVERTER_VERSION = "3"
"""Bump when this module changes what it writes, so old cache entries are ignored."""

ONNX2TF_ENV = "NNPORT_ONNX2TF"
ONNX2TF_PIN = "onnx2tf==1.29.24"
DEFAULT_ENV = "onnx2tf"
CALIBRATION_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
OUTPUTS = {"fp32": "_float32.tflite", "fp16": "_float16.tflite", "int8": "_integer_quant.tflite"}
VERIFY_TOLERANCE: dict[str, tuple[float, float] | tuple[None, None]] = {
    "fp32": (1e-4, 1e-3),
    "fp16": (5e-2, 5e-2),
    "int8": (None, None),
}
"""(atol, rtol) of the one-time check against ONNX Runtime; int8 is recorded, not judged."""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# -- locating the converter ----------------------------------------------------------------------


def default_env() -> Path:
    """``<nnport cache root>/onnx2tf``: where ``bash dev.sh setup litert`` builds the converter."""
    return cache_root() / DEFAULT_ENV


def default_cache_root() -> Path:
    """``litert`` under nnport's cache root: converted models."""
    return cache_root() / "litert"


def onnx2tf_executable(explicit: Any = None) -> Path | None:
    """The onnx2tf executable (see the module docstring for the search order), or None."""
    for candidate in (explicit, os.environ.get(ONNX2TF_ENV), default_env()):
        if not candidate:
            continue
        path = Path(str(candidate)).expanduser()
        if path.is_dir():
            path = path / "bin" / "onnx2tf"
        if path.is_file() and os.access(path, os.X_OK):
            return path
        if candidate is explicit or candidate == os.environ.get(ONNX2TF_ENV):
            return None  # named but absent: do not silently use another one
    return None


def onnx2tf_version(exe: Path) -> str:
    """onnx2tf's version from its environment's metadata (no TensorFlow import)."""
    env = exe.resolve().parent.parent
    for found in sorted(env.glob("lib/python*/site-packages/onnx2tf-*.dist-info")):
        return found.name[len("onnx2tf-") : -len(".dist-info")]
    return f"unknown-{exe.stat().st_size}"


def missing_reason() -> str:
    named = os.environ.get(ONNX2TF_ENV)
    where = (
        f"${ONNX2TF_ENV}={named!r} is not an onnx2tf executable or environment"
        if named
        else f"no ${ONNX2TF_ENV} and no {default_env()}"
    )
    return (
        f"{where}. onnx2tf pins TensorFlow 2.19 and needs an environment of its own (~2.6 GB): "
        f"build it with `bash dev.sh setup litert` (or `python3 -m venv DIR && DIR/bin/pip install {ONNX2TF_PIN}`) "
        f"and set {ONNX2TF_ENV}=DIR"
    )


# -- what a conversion produces --------------------------------------------------------------------


@dataclass
class PortPlan:
    """One ONNX input/output: the converted model's signature name, its shape there, the transpose back."""

    name: str
    tensor: str
    shape: list[int]
    perm: list[int] | None = None


@dataclass
class Conversion:
    tflite: str
    inputs: list[PortPlan]
    outputs: list[PortPlan]
    onnx2tf_version: str
    seconds: float
    precision: str = "fp32"
    verified: str = "not verified"
    error: str | None = None
    log_tail: str = ""
    cache_hit: bool = field(default=False, compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("cache_hit")
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Conversion:
        data = json.loads(text)
        data["inputs"] = [PortPlan(**p) for p in data["inputs"]]
        data["outputs"] = [PortPlan(**p) for p in data["outputs"]]
        return cls(**data)


def check_convertible(model: Model, where: dict) -> None:
    """What is refused before onnx2tf runs (so selection falls back quickly)."""
    from nnport.graph_edges import plan

    edges = plan(model)
    served = edges.served if edges is not None else ()
    if served:
        listed = "; ".join(f"{s.name!r} is {s.why}" for s in served)
        raise UnsupportedModel(
            f"onnx2tf drops outputs that no operator computes ({listed}); nnport.compile serves them itself", **where
        )
    for spec in (*model.inputs, *model.outputs):
        if spec.dtype.kind not in "fiub":
            raise UnsupportedModel(f"LiteRT has no tensor type for {spec} ({spec.dtype})", **where)


# -- the cache ---------------------------------------------------------------------------------------


def cache_key(model: Model, precision: str, version: str, calibration: str) -> str:
    text = "|".join([model.hash, precision, version, calibration, CONVERTER_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def convert(
    model: Model,
    *,
    exe: Path,
    precision: str,
    cache_root: Path,
    calibration: Any = None,
    verify: bool = True,
    timeout_s: float = 900.0,
) -> Conversion:
    """The cached conversion of the static ONNX ``model``, running onnx2tf only on a miss."""
    version = onnx2tf_version(exe)
    feeds: list[dict[str, np.ndarray]] = []
    digest = ""
    if precision == "int8":
        from nnport.calibration import calibration_feeds, fingerprint

        feeds = calibration_feeds(calibration, model.inputs)
        digest = fingerprint(feeds)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.name)[:40] or "model"
    entry = cache_root / f"{safe}-{cache_key(model, precision, version, digest)}"
    meta = entry / "meta.json"
    if meta.is_file():
        try:
            conv = Conversion.from_json(meta.read_text())
        except (ValueError, TypeError, KeyError):
            conv = None
        if conv is not None and (conv.error or (entry / conv.tflite).is_file()):
            conv.cache_hit = True
            _touch(meta)
            conv.tflite = str(entry / conv.tflite)
            if conv.error:
                raise UnsupportedModel(f"{conv.error} (cached verdict; delete {entry} to retry)")
            return conv
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_root))
    try:
        conv = _convert_in(work, model, exe, version, precision, feeds, verify, timeout_s)
        if conv.error and conv.error.startswith("onnx2tf did not finish"):
            raise UnsupportedModel(conv.error)  # a timeout may not recur on a quieter machine: not cached
        (work / "meta.json").write_text(conv.to_json())
        for junk in work.iterdir():  # keep only what LiteRT loads
            if junk.name not in ("model.tflite", "meta.json"):
                junk.unlink() if junk.is_file() else shutil.rmtree(junk, ignore_errors=True)
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(work, entry)
        except OSError:  # another process filled the entry first: use theirs
            pass
        prune(cache_root, keep=entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    conv.tflite = str(entry / conv.tflite)
    if conv.error:
        raise UnsupportedModel(conv.error)
    return conv


def cache_limits() -> tuple[int, int]:
    entries = int(os.environ.get("NNPORT_LITERT_CACHE_MAX_ENTRIES", "128"))
    megabytes = float(os.environ.get("NNPORT_LITERT_CACHE_MAX_MB", "2048"))
    return max(1, entries), int(max(1.0, megabytes) * (1 << 20))


def _touch(meta: Path) -> None:
    try:
        os.utime(meta)
    except OSError:
        pass


def prune(root: Path, keep: Path | None = None) -> list[Path]:
    """Evict least recently used entries beyond ``cache_limits()`` (best effort)."""
    max_entries, max_bytes = cache_limits()
    found: list[tuple[float, int, Path]] = []
    try:
        for entry in root.iterdir():
            meta = entry / "meta.json"
            if entry.is_dir() and meta.is_file():
                size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
                found.append((meta.stat().st_mtime, size, entry))
    except OSError:
        return []
    found.sort(key=lambda t: t[0], reverse=True)
    removed, total = [], 0
    for count, (_, size, entry) in enumerate(found, 1):
        total += size
        if entry != keep and (count > max_entries or total > max_bytes):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# -- one conversion -------------------------------------------------------------------------------------


def _convert_in(
    work: Path,
    model: Model,
    exe: Path,
    version: str,
    precision: str,
    feeds: list[dict[str, np.ndarray]],
    verify: bool,
    timeout_s: float,
) -> Conversion:
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    drop_initializer_inputs(proto)
    (work / "model.onnx").write_bytes(proto.SerializeToString())
    np.save(work / CALIBRATION_SAMPLE, _stand_in_images())  # onnx2tf's offline trap: never download it
    keep = [s.name for s in model.inputs if 3 <= len(s.shape) <= 5]  # NCW/NCHW/NCDHW kept (onnx2tf transposes inside)
    args = [str(exe), "-i", "model.onnx", "-o", "out", "-osd", "-n"]
    if keep:
        args += ["-k", *keep]
    if precision == "int8":
        args += ["-oiqt", "-qt", "per-channel"]
        args += _calibration_args(work, model, feeds)
    conv = Conversion("model.tflite", [], [], version, 0.0, precision=precision)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    try:
        with progress.step(f"litert: converting {model.name!r} with onnx2tf ({precision})"):
            proc = subprocess.run(
                args, cwd=work, capture_output=True, text=True, errors="replace", timeout=timeout_s, env=env
            )
    except subprocess.TimeoutExpired:
        conv.error = f"onnx2tf did not finish converting {model.name!r} within {timeout_s:.0f} s"
        return conv
    except OSError as exc:
        raise CompileError(f"cannot run onnx2tf ({exe}): {exc}") from None
    conv.seconds = round(time.perf_counter() - start, 3)
    log = _ANSI.sub("", (proc.stdout or "") + (proc.stderr or ""))
    conv.log_tail = log[-4000:]
    produced = work / "out" / f"model{OUTPUTS[precision]}"
    if proc.returncode != 0 or not produced.is_file():
        conv.error = (
            f"onnx2tf cannot convert {model.name!r} to {precision} (exit status {proc.returncode}): {_reason(log)}"
        )
        return conv
    os.replace(produced, work / "model.tflite")
    try:
        conv.inputs, conv.outputs = _port_plans(work / "model.tflite", model)
    except UnsupportedModel as exc:
        conv.error = str(exc)
        return conv
    if verify:
        conv.verified, conv.error = _verify(work / "model.tflite", model, conv, precision)
    return conv


def _stand_in_images() -> np.ndarray:
    """Seeded, smooth image-like data of the shape onnx2tf downloads (20x128x128x3, [0, 1])."""
    rng = np.random.default_rng(20)
    y, x = np.mgrid[0:128, 0:128].astype(np.float32) / 127.0
    base = np.stack([x, y, (x + y) / 2], axis=-1)[None]
    images = base * rng.uniform(0.3, 1.0, (20, 1, 1, 3)) + rng.normal(0, 0.05, (20, 128, 128, 3))
    return np.clip(images, 0, 1).astype(np.float32)


def _calibration_args(work: Path, model: Model, feeds: list[dict[str, np.ndarray]]) -> list[str]:
    """``-cind NAME FILE.npy MEAN STD`` per input: nnport's calibration samples, stacked in the ONNX layout (kept by
    ``-k``)."""
    args: list[str] = []
    for spec in model.inputs:
        stacked = np.concatenate([np.asarray(f[spec.name], np.float32) for f in feeds], axis=0)
        path = work / f"calib_{len(args)}.npy"
        np.save(path, stacked)
        args += ["-cind", spec.name, str(path), "[0.0]", "[1.0]"]  # already normalised: (x - 0) / 1, broadcast
    return args


def _reason(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    told = [ln for ln in lines if "ERROR" in ln or "Error" in ln or "error:" in ln]
    text = " | ".join(told[-3:]) if told else " | ".join(lines[-3:])
    return text[-800:] or "no message"


def _port_plans(tflite: Path, model: Model) -> tuple[list[PortPlan], list[PortPlan]]:
    """Map ONNX inputs/outputs onto the converted model's signature, with the transposes back."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(tflite), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    signatures = interpreter.get_signature_list()
    if len(signatures) > 1:
        raise UnsupportedModel(f"onnx2tf's output for {model.name!r} has {len(signatures)} signatures, expected one")
    if signatures:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        sig_in, sig_out = runner.get_input_details(), runner.get_output_details()
    else:  # onnx2tf sometimes writes none: tensor names, in the graph's order
        sig_in = {d["name"]: d for d in interpreter.get_input_details()}
        sig_out = {d["name"]: d for d in interpreter.get_output_details()}
    ins = [_match(spec, sig_in, i, "input") for i, spec in enumerate(model.inputs)]
    outs = [_match(spec, sig_out, i, "output") for i, spec in enumerate(model.outputs)]
    for plan, spec in zip(ins, model.inputs):
        if plan.perm is not None:
            raise UnsupportedModel(
                f"onnx2tf changed the layout of input {spec.name!r} despite -kat: {list(spec.shape)} -> {plan.shape}"
            )
    return ins, outs


def _sanitized(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _match(spec: Any, details: dict[str, Any], position: int, what: str) -> PortPlan:
    names = list(details)
    tensor = (
        spec.name if spec.name in details else next((n for n in names if _sanitized(n) == _sanitized(spec.name)), None)
    )
    if tensor is None and len(names) > position:
        tensor = names[position]
    if tensor is None:
        raise UnsupportedModel(f"onnx2tf's signature has no {what} for ONNX {what} {spec.name!r}; it has {names}")
    shape = [int(d) for d in details[tensor]["shape"]]
    want = [d if isinstance(d, int) else None for d in spec.shape]
    if len(shape) == len(want) and all(w is None or w == s for w, s in zip(want, shape)):
        return PortPlan(spec.name, tensor, shape, None)
    perms = _candidate_perms(shape, want)
    if not perms:
        raise UnsupportedModel(
            f"onnx2tf's {what} {tensor!r} has shape {shape}, which no transpose turns into ONNX {what} {spec}"
        )
    perm = perms[0]
    return PortPlan(spec.name, tensor, [shape[p] for p in perm], list(perm))


def _candidate_perms(shape: Sequence[int], want: Sequence[int | None]) -> list[tuple[int, ...]]:
    """Transposes of ``shape`` that give ``want``, channels-last -> channels-first first."""
    if len(shape) != len(want) or len(shape) < 3:
        return []
    rank = len(shape)
    first = (0, rank - 1, *range(1, rank - 1))  # NHWC -> NCHW
    found = [p for p in itertools.permutations(range(rank)) if all(w is None or w == shape[i] for w, i in zip(want, p))]
    found.sort(key=lambda p: p != first)
    return found[:6]


def _verify(tflite: Path, model: Model, conv: Conversion, precision: str) -> tuple[str, str | None]:
    """Run the converted model beside ONNX Runtime once; (what was found, an error for an fp32 mismatch)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "not verified: onnxruntime is not installed", None
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from nnport.data import random_feeds

    feeds = random_feeds(model.inputs, seed=1)
    try:
        session = ort.InferenceSession(model.serialized(), providers=["CPUExecutionProvider"])
        want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except Exception as exc:
        return f"not verified: ONNX Runtime cannot run the model ({type(exc).__name__})", None
    interpreter = Interpreter(model_path=str(tflite))
    if interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(next(iter(interpreter.get_signature_list())))
        got = runner(**{p.tensor: feeds[p.name] for p in conv.inputs})
    else:
        interpreter.allocate_tensors()
        by_name = {d["name"]: d["index"] for d in (*interpreter.get_input_details(), *interpreter.get_output_details())}
        for p in conv.inputs:
            interpreter.set_tensor(by_name[p.tensor], feeds[p.name])
        interpreter.invoke()
        got = {p.tensor: interpreter.get_tensor(by_name[p.tensor]) for p in conv.outputs}
    atol, rtol = VERIFY_TOLERANCE[precision]
    worst = 0.0
    problems = []
    for plan, spec in zip(conv.outputs, model.outputs):
        ref = np.asarray(want[spec.name])
        raw = np.asarray(got[plan.tensor])
        candidates: list[list[int] | None] = [None] if raw.shape == ref.shape else []  # identity first: it wins ties
        candidates += [
            list(p) for p in _candidate_perms(raw.shape, list(ref.shape)) if list(p) != list(range(raw.ndim))
        ]
        best: tuple[float, list[int] | None] | None = None
        for perm in candidates:
            value = raw if perm is None else raw.transpose(perm)
            if value.shape != ref.shape:
                continue
            err = float(np.max(np.abs(value.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
            if best is None or err < best[0]:
                best = (err, perm)
        if best is None:
            problems.append(f"{spec.name}: shape {list(raw.shape)} vs {list(ref.shape)}")
            continue
        err, plan.perm = best
        if plan.perm is not None:
            plan.shape = [int(raw.shape[p]) for p in plan.perm]
        worst = max(worst, err)
        limit = None if atol is None or rtol is None or not ref.size else atol + rtol * float(np.max(np.abs(ref)))
        if limit is not None and err > limit:
            problems.append(f"{spec.name}: max abs error {err:.3g}")
    text = f"max abs error {worst:.3g} vs ONNX Runtime {ort.__version__} on seeded inputs ({precision})"
    if problems and precision == "fp32":
        return text, f"onnx2tf's conversion of {model.name!r} disagrees with ONNX Runtime: {'; '.join(problems)}"
    if problems:
        text += f"; beyond the {precision} check: {'; '.join(problems)}"
    return text, None


# -- a tiny model, built without TensorFlow (accelerator probes, tests) ------------------------------


def tiny_model(*, quantized: str | None = None) -> bytes:
    """A one-ADD ``.tflite`` (``y = x + x``, ``x: [1, 8]``) built with the flatbuffer schema LiteRT ships.

    ``quantized="uint8"``/``"int8"`` makes x and y quantised (scale 0.5,
    zero point 10 / -5 for x; scale 1.0 and the same zero point for y).
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    ttype = {None: fb.TensorType.FLOAT32, "uint8": fb.TensorType.UINT8, "int8": fb.TensorType.INT8}[quantized]
    zero = {None: 0, "uint8": 10, "int8": -5}[quantized]

    def tensor(name: str, buffer: int, scale: float) -> Any:
        t = fb.TensorT()
        t.shape = [1, 8]
        t.type = ttype
        t.buffer = buffer
        t.name = name
        if quantized:
            q = fb.QuantizationParametersT()
            q.scale = [scale]
            q.zeroPoint = [zero]
            t.quantization = q
        return t

    code = fb.OperatorCodeT()
    code.builtinCode = fb.BuiltinOperator.ADD
    code.deprecatedBuiltinCode = fb.BuiltinOperator.ADD
    code.version = 1 if not quantized else 2
    op = fb.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0, 0]
    op.outputs = [1]
    op.builtinOptionsType = fb.BuiltinOptions.AddOptions
    op.builtinOptions = fb.AddOptionsT()
    graph = fb.SubGraphT()
    graph.tensors = [tensor("x", 1, 0.5), tensor("y", 2, 1.0)]
    graph.inputs = [0]
    graph.outputs = [1]
    graph.operators = [op]
    graph.name = "main"
    model = fb.ModelT()
    model.version = 3
    model.operatorCodes = [code]
    model.subgraphs = [graph]
    model.buffers = [fb.BufferT(), fb.BufferT(), fb.BufferT()]
    model.description = "nnport tiny model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
