"""ONNX -> ncnn ``.param``/``.bin`` through the ``pnnx`` executable, with a cache.

Helpers of ``plugins/ncnn.py``; kept apart so that the backend file reads as
the contract (devices, compile, run) and this one as the conversion recipe.

What pnnx needs and what it gets wrong, and what this module does about it:

* pnnx writes its outputs next to its input, so it runs on a copy of the model
  in a temporary directory; the finished files move into the cache atomically.
* pnnx renames blobs ``in0``/``out0``...: in the order of the ONNX graph's
  inputs and outputs.  The mapping back is checked against the shapes pnnx
  records in its own ``model.pnnx.param`` (``#0=(1,3,224,224)f32``) and the
  layout (batch axis dropped or not) is read from the ``model_ncnn.py`` script
  pnnx writes (``ncnn.Mat(in0.numpy(), batch_index=0)``).
* Old models (IR < 4) list initializers as graph inputs; pnnx then takes a
  weight for the first input ("input_shapes[0] expect [64]f32"), so those
  entries are dropped from the copy.
* Before opset 13, ONNX ``Softmax`` flattens everything from ``axis`` on; pnnx
  applies it to one axis, a silent wrong answer (light_squeezenet).  Models
  below opset 13 are upgraded with ``onnx.version_converter`` first.
* pnnx may leave an ONNX operator unconverted (``AveragePool`` with
  asymmetric pads); ncnn then fails to load the graph.  Such layers are found
  by name (``ncnn.layer_to_index``) and reported as ``UnsupportedModel``.
* Whatever else goes wrong silently is caught by a one-time check: the
  converted graph is run on seeded inputs beside ONNX Runtime (when it is
  installed), at batch 1 and, for a per-sample graph, at batch 2.  A mismatch
  is ``UnsupportedModel``, so device selection falls back.

Conversions (and their failures, which can take pnnx 30 s to reach) are cached
under ``<cache>/<model name>-<key>/`` keyed by the model hash, the conversion
options, the pnnx version and ``CONVERTER_VERSION``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnport import progress
from nnport.errors import CompileError, ExecutionError, InputError, UnsupportedModel
from nnport.model import Model, drop_initializer_inputs
from nnport.paths import cache_root

CONVERTER_VERSION = "5"
"""Bump when this module changes what it writes, so old cache entries are ignored."""

NO_BATCH = 233
"""pnnx's ``batch_index`` for a blob without a batch axis (ncnn's Python binding default)."""

UPGRADE_OPSET = 13
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- locating things without importing them ------------------------------------------------


def pnnx_executable() -> Path | None:
    """The ``pnnx`` binary inside the pnnx wheel, found without importing pnnx.

    ``import pnnx`` pulls torch in (its ``utils`` import it), and the console
    script does the same, so the binary in the package directory is used.
    """
    try:
        spec = importlib.util.find_spec("pnnx")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in ("pnnx", "pnnx.exe"):
            candidate = Path(folder) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def pnnx_version() -> str:
    try:
        return importlib.metadata.version("pnnx")
    except importlib.metadata.PackageNotFoundError:
        exe = pnnx_executable()
        return f"unknown-{exe.stat().st_size}" if exe else "missing"


def default_cache_root() -> Path:
    """``ncnn`` under nnport's cache root (``$NNPORT_CACHE_DIR``, XDG, ``~/.cache/nnport``)."""
    return cache_root() / "ncnn"


# -- what a conversion produces ---------------------------------------------------------------


@dataclass
class BlobPlan:
    """How one ONNX tensor maps onto an ncnn blob.

    ``batch_index`` is 0 when ncnn's Mat drops the tensor's leading (batch)
    axis, ``NO_BATCH`` when the whole array is the Mat; ``shape`` is the
    shape of one inference (batch 1), as pnnx recorded it.
    """

    name: str
    blob: str
    shape: list[int]
    batch_index: int = NO_BATCH


@dataclass
class Conversion:
    """A converted model in the cache: files, blob plans and how it was checked."""

    param: str
    bin: str
    inputs: list[BlobPlan]
    outputs: list[BlobPlan]
    pnnx_version: str
    seconds: float
    upgraded_opset: str | None = None
    verified: str = "not verified"
    per_sample: bool = False
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
        data["inputs"] = [BlobPlan(**b) for b in data["inputs"]]
        data["outputs"] = [BlobPlan(**b) for b in data["outputs"]]
        return cls(**data)


# -- the cache ---------------------------------------------------------------------------------


def cache_key(model: Model, precision: str, shapes: Mapping[str, Sequence[int]], verify: bool) -> str:
    """Model hash + options + pnnx version (the files) + ncnn version (the verification verdict)."""
    try:
        ncnn_version = importlib.metadata.version("ncnn")
    except importlib.metadata.PackageNotFoundError:
        ncnn_version = "unknown"
    text = "|".join(
        [
            model.hash,
            precision,
            json.dumps({k: list(v) for k, v in sorted(shapes.items())}),
            str(verify),
            pnnx_version(),
            ncnn_version,
            CONVERTER_VERSION,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def convert(
    model: Model,
    *,
    precision: str,
    shapes: Mapping[str, Sequence[int]],
    per_sample: bool,
    cache_root: Path,
    verify: bool = True,
    timeout_s: float = 900.0,
) -> Conversion:
    """The cached conversion of ``model``, running pnnx only on a cache miss.

    ``shapes`` gives every input's static conversion shape.  Raises
    ``UnsupportedModel`` with pnnx's or ncnn's message when the model cannot
    be converted, loaded or verified (also when that verdict is cached).
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.name)[:40] or "model"
    entry = cache_root / f"{safe}-{cache_key(model, precision, shapes, verify)}"
    meta = entry / "meta.json"
    if meta.is_file():
        try:
            conv = Conversion.from_json(meta.read_text())
        except (ValueError, TypeError, KeyError):
            conv = None  # a damaged entry: convert again
        if conv is not None and (conv.error or (entry / conv.param).is_file() and (entry / conv.bin).is_file()):
            conv.cache_hit = True
            _touch(meta)
            conv.param, conv.bin = str(entry / conv.param), str(entry / conv.bin)
            if conv.error:
                raise UnsupportedModel(f"{conv.error} (cached verdict; delete {entry} to retry)")
            return conv
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_root))
    try:
        conv = _convert_in(work, model, precision, shapes, per_sample, verify, timeout_s)
        if (
            conv.error
            and conv.upgraded_opset
            and "->" in conv.upgraded_opset
            and not conv.error.startswith("pnnx did not finish")
        ):
            # The opset upgrade is for old Softmax semantics; where the upgraded graph does not
            # convert (the converter's reshape wrapping), the graph as shipped may: verification judges it.
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            kept = _convert_in(work, model, precision, shapes, per_sample, verify, timeout_s, upgrade=False)
            if kept.error is None:
                kept.upgraded_opset = f"kept opset {model.opset}: the upgraded graph failed ({conv.error[:300]})"
            conv = kept if kept.error is None else conv
        if conv.error and conv.error.startswith("pnnx did not finish"):
            raise UnsupportedModel(conv.error)  # a timeout may not recur on a quieter machine: not cached
        (work / "meta.json").write_text(conv.to_json())
        for junk in work.iterdir():  # keep only what ncnn loads
            if junk.name not in ("model.ncnn.param", "model.ncnn.bin", "meta.json"):
                junk.unlink() if junk.is_file() else shutil.rmtree(junk, ignore_errors=True)
        if entry.exists():  # a damaged entry (unreadable meta.json or missing files): replace it
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(work, entry)
        except OSError:  # another process filled the entry first: use theirs
            pass
        prune(cache_root, keep=entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    conv.param, conv.bin = str(entry / conv.param), str(entry / conv.bin)
    if conv.error:
        raise UnsupportedModel(conv.error)
    return conv


def cache_limits() -> tuple[int, int]:
    """(max entries, max bytes) of the conversion cache: ``NNPORT_NCNN_CACHE_MAX_ENTRIES`` (256), ``..._MAX_MB``
    (2048)."""
    entries = int(os.environ.get("NNPORT_NCNN_CACHE_MAX_ENTRIES", "256"))
    megabytes = float(os.environ.get("NNPORT_NCNN_CACHE_MAX_MB", "2048"))
    return max(1, entries), int(max(1.0, megabytes) * (1 << 20))


def _touch(meta: Path) -> None:
    """Mark an entry as used now (its meta.json's mtime orders the eviction); best effort."""
    try:
        os.utime(meta)
    except OSError:
        pass


def prune(cache_root: Path, keep: Path | None = None) -> list[Path]:
    """Evict least recently used entries beyond ``cache_limits()``; returns what was removed.

    Lazy shape specialisation converts once per new feed shape, so without a
    bound a detector fed many image sizes would fill the disk.  Best effort: an
    entry another process is removing or using is skipped, never an error.
    """
    max_entries, max_bytes = cache_limits()
    found: list[tuple[float, int, Path]] = []
    try:
        for entry in cache_root.iterdir():
            meta = entry / "meta.json"
            if not entry.is_dir() or not meta.is_file():
                continue
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            found.append((meta.stat().st_mtime, size, entry))
    except OSError:
        return []
    found.sort(key=lambda t: t[0], reverse=True)  # newest first
    removed: list[Path] = []
    total = 0
    for count, (_, size, entry) in enumerate(found, 1):
        total += size
        if entry != keep and (count > max_entries or total > max_bytes):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _convert_in(
    work: Path,
    model: Model,
    precision: str,
    shapes: Mapping[str, Sequence[int]],
    per_sample: bool,
    verify: bool,
    timeout_s: float,
    upgrade: bool = True,
) -> Conversion:
    exe = pnnx_executable()
    if exe is None:
        raise CompileError("the pnnx converter is missing: pip install --no-deps pnnx")
    proto, upgraded = _prepared_proto(model, upgrade)
    (work / "model.onnx").write_bytes(proto.SerializeToString())
    inputshape = ",".join("[" + ",".join(str(int(d)) for d in shapes[s.name]) + "]f32" for s in model.inputs)
    args = [str(exe), "model.onnx", f"inputshape={inputshape}", f"fp16={1 if precision == 'fp16' else 0}"]
    conv = Conversion("model.ncnn.param", "model.ncnn.bin", [], [], pnnx_version(), 0.0, upgraded_opset=upgraded)
    start = time.perf_counter()
    try:
        with progress.step(f"ncnn: converting {model.name!r} with pnnx at {inputshape}"):
            proc = subprocess.run(args, cwd=work, capture_output=True, text=True, errors="replace", timeout=timeout_s)
    except subprocess.TimeoutExpired:
        conv.error = f"pnnx did not finish converting {model.name!r} within {timeout_s:.0f} s"
        return conv
    conv.seconds = time.perf_counter() - start
    log = _ANSI.sub("", (proc.stdout or "") + (proc.stderr or ""))
    conv.log_tail = _tail(log)
    param = work / "model.ncnn.param"
    if proc.returncode != 0 or not param.is_file() or not (work / "model.ncnn.bin").is_file():
        conv.error = f"pnnx cannot convert {model.name!r} (exit status {proc.returncode}): {_reason(log)}"
        return conv
    try:
        conv.inputs, conv.outputs = _blob_plans(work, model, shapes)
        _check_layers(param)
    except UnsupportedModel as exc:
        conv.error = str(exc)
        return conv
    conv.per_sample = per_sample
    if verify:
        conv.verified, conv.per_sample, error = _verify(work, model, conv, precision, shapes, per_sample)
        if error:
            conv.error = error
    return conv


INTEGER_INPUTS = frozenset(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32))
"""Integer input dtypes ncnn takes as float32 values (token ids, bytes, class indices)."""
EXACT_FLOAT_INT = 1 << 24
"""Integers up to this magnitude are exact in float32; larger ids would silently become other ids."""


def _float_index_inputs(proto: Any) -> list[str]:
    """Make every integer graph input a float32 input followed by a Cast back to its type, in place.

    ncnn's Mats hold float32 and its index-taking layers (Embed, Gather) read
    indices from float values; pnnx segfaults on an ONNX model whose input is
    int64 as it is.  The Cast keeps the graph's own semantics, so ONNX Runtime's
    verification of the converted graph still judges it on integer feeds.
    Returns the inputs it rewrote.
    """
    import onnx
    from onnx import helper

    initializers = {i.name for i in proto.graph.initializer}
    rewritten: list[str] = []
    casts: list[Any] = []
    for value in proto.graph.input:
        t = value.type.tensor_type
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        if np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)) not in INTEGER_INPUTS:
            continue
        inner = f"{value.name}__nnport_index"
        _rename_uses(proto.graph, value.name, inner)
        casts.append(helper.make_node("Cast", [value.name], [inner], to=t.elem_type, name=f"nnport_cast_{len(casts)}"))
        t.elem_type = onnx.TensorProto.FLOAT
        rewritten.append(value.name)
    for node in reversed(casts):
        proto.graph.node.insert(0, node)
    _lookups_as_matmul(proto, {f"{n}__nnport_index": n for n in rewritten})
    return rewritten


MAX_ONE_HOT_ROWS = 1 << 16
"""Largest embedding table turned into a one-hot MatMul (the one-hot row costs rows x ids floats)."""


def _lookups_as_matmul(proto: Any, index_of: Mapping[str, str]) -> None:
    """Rewrite ``Gather(table, ids, axis=0)`` on an integer input as an exact one-hot MatMul, in place.

    Also ``Cast(ids, to=float)`` becomes the float input itself (pnnx leaves Cast
    as an unconvertible ``Tensor.to``).

    pnnx leaves an ONNX Gather on an initializer unconverted (ncnn cannot load
    it), but every op of ``Relu(1 - |ids - arange(rows)|) @ table`` is an ncnn
    layer, and for integer ids the one-hot row is exactly 0/1, so the product
    picks the table row exactly.  ``index_of`` maps the Cast outputs that
    ``_float_index_inputs`` made to the float input feeding them.
    """
    from onnx import helper, numpy_helper

    tables = {i.name: i for i in proto.graph.initializer}
    nodes = list(proto.graph.node)
    new_nodes: list[Any] = []
    added: list[Any] = []
    for node in nodes:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to == 1 and node.input[0] in index_of:  # ids -> float: the float input itself
            new_nodes.append(
                helper.make_node(
                    "Identity",
                    [index_of[node.input[0]]],
                    list(node.output),
                    name=node.name or f"nnport_id_{len(new_nodes)}",
                )
            )
            added.append(None)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table = tables.get(node.input[0]) if node.op_type == "Gather" and len(node.input) == 2 else None
        if (
            table is None
            or node.input[1] not in index_of
            or axis != 0
            or len(table.dims) != 2
            or table.dims[0] > MAX_ONE_HOT_ROWS
        ):
            new_nodes.append(node)
            continue
        if table.data_type != 1:  # float tables only
            new_nodes.append(node)
            continue
        ids, out, tag = index_of[node.input[1]], node.output[0], f"nnport_onehot_{len(new_nodes)}"
        rows = np.arange(table.dims[0], dtype=np.float32)
        added += [numpy_helper.from_array(rows, f"{tag}_rows"),
                  numpy_helper.from_array(np.array([-1], np.int64), f"{tag}_axis"),
                  numpy_helper.from_array(np.array(1.0, np.float32), f"{tag}_one")]  # fmt: skip
        new_nodes += [
            helper.make_node("Unsqueeze", [ids, f"{tag}_axis"], [f"{tag}_u"], name=f"{tag}_unsqueeze"),
            helper.make_node("Sub", [f"{tag}_u", f"{tag}_rows"], [f"{tag}_d"], name=f"{tag}_sub"),
            helper.make_node("Abs", [f"{tag}_d"], [f"{tag}_a"], name=f"{tag}_abs"),
            helper.make_node("Sub", [f"{tag}_one", f"{tag}_a"], [f"{tag}_m"], name=f"{tag}_one_minus"),
            helper.make_node("Relu", [f"{tag}_m"], [f"{tag}_h"], name=f"{tag}_onehot"),
            helper.make_node("MatMul", [f"{tag}_h", node.input[0]], [out], name=f"{tag}_matmul"),
        ]
    if added:
        del proto.graph.node[:]
        proto.graph.node.extend(new_nodes)
        proto.graph.initializer.extend(t for t in added if t is not None)
        used = {i for n in proto.graph.node for i in n.input}
        keep = [
            n
            for n in proto.graph.node
            if n.op_type != "Cast" or not n.name.startswith("nnport_cast_") or n.output[0] in used
        ]
        del proto.graph.node[:]
        proto.graph.node.extend(keep)


def _rename_uses(graph: Any, old: str, new: str) -> None:
    """Point every use of tensor ``old`` (subgraphs included) at ``new``.

    Graph outputs keep their names: an integer input that is also an output is
    an integer output, which ncnn cannot return and the plugin refuses first.
    """
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_uses(sub, old, new)


PNNX_MAX_IR_VERSION = 13
"""The newest ONNX IR version pnnx's bundled ONNX Runtime reads."""


def _prepared_proto(model: Model, upgrade: bool = True) -> tuple[Any, str | None]:
    """A copy of the ONNX graph pnnx reads correctly: no initializer inputs, opset >= 13 (unless ``upgrade=False``)."""
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    drop_initializer_inputs(proto)
    # pnnx parses ONNX with the ONNX Runtime it bundles (1.30 in pnnx 20260409: IR <= 13); a
    # model saved by a newer onnx (IR 14) segfaulted pnnx although it uses nothing IR 14 adds.
    proto.ir_version = min(proto.ir_version, PNNX_MAX_IR_VERSION)
    _float_index_inputs(proto)
    upgraded = None
    if upgrade and model.opset is not None and model.opset < UPGRADE_OPSET and not _softmax_on_last_axis(proto):
        try:
            from onnx import version_converter

            proto = version_converter.convert_version(proto, UPGRADE_OPSET)
            upgraded = f"{model.opset} -> {UPGRADE_OPSET}"
        except Exception as exc:  # keep the original graph; verification judges the result
            upgraded = (
                f"kept opset {model.opset}: onnx.version_converter failed ({type(exc).__name__}: {str(exc)[:200]})"
            )
    return proto, upgraded


SOFTMAX_FAMILY = ("Softmax", "LogSoftmax", "Hardmax")


def _softmax_on_last_axis(proto: Any) -> bool:
    """Whether every Softmax-family node of an opset < 13 graph already works on its last axis.

    The upgrade exists for the old Softmax (coerce to 2-D from ``axis``), which pnnx
    mis-applied; where every such node is on the last axis the two semantics agree,
    and the version converter's Flatten/Shape/Reshape wrapping only breaks pnnx
    (PP-OCRv4's recogniser: ``Tensor.reshape``/``torch.unbind`` left unconverted).
    Unknown ranks count as "not last", so the upgrade stays the safe default.
    """
    import onnx

    nodes = [n for n in proto.graph.node if n.op_type in SOFTMAX_FAMILY]
    if not nodes:
        return False
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:
        return False
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
        if v.type.tensor_type.HasField("shape")
    }
    for node in nodes:
        rank = ranks.get(node.input[0])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if rank is None or axis not in (-1, rank - 1):
            return False
    return True


_IO_LINE = re.compile(r"^pnnx\.(Input|Output)\s+(\S+)\s.*#\d+=\(([^)]*)\)(\w+)")


def _blob_plans(work: Path, model: Model, shapes: Mapping[str, Sequence[int]]) -> tuple[list[BlobPlan], list[BlobPlan]]:
    """Map pnnx's ``inN``/``outN`` back to ONNX names, checking order, shapes and layout."""
    records: dict[str, list[tuple[str, list[int], str]]] = {"Input": [], "Output": []}
    pnnx_param = work / "model.pnnx.param"
    if not pnnx_param.is_file():
        raise UnsupportedModel("pnnx wrote no model.pnnx.param, so its blob names cannot be mapped back to ONNX names")
    for line in pnnx_param.read_text(errors="replace").splitlines():
        m = _IO_LINE.match(line)
        if m:
            dims = [int(d) for d in m.group(3).split(",") if d.strip()]
            records[m.group(1)].append((m.group(2), dims, m.group(4)))
    layouts = _layouts(work / "model_ncnn.py")
    plans: list[list[BlobPlan]] = []
    for kind, specs, prefix in (("Input", model.inputs, "in"), ("Output", model.outputs, "out")):
        found = records[kind]
        if [r[0] for r in found] != [f"{prefix}{i}" for i in range(len(specs))]:
            raise UnsupportedModel(
                f"pnnx produced {kind.lower()}s {[r[0] for r in found]} for the ONNX {kind.lower()}s "
                f"{[s.name for s in specs]}: "
                "cannot map them back by order"
            )
        plan = []
        for spec, (blob, dims, dtype) in zip(specs, found):
            if dtype != "f32":
                raise UnsupportedModel(
                    f"{kind.lower()} {spec.name!r} is {dtype} after conversion; ncnn runs float32 tensors only"
                )
            want = list(shapes[spec.name]) if kind == "Input" else None
            rank_known = bool(spec.shape) or not dims  # ONNX leaves some output shapes out: shape ()
            if (want is not None and dims != want) or (rank_known and not spec.accepts_shape(dims)):
                raise UnsupportedModel(
                    f"pnnx's {blob} has shape {dims}, which does not fit ONNX {kind.lower()} {spec}: the "
                    "name mapping is unsafe"
                )
            plan.append(BlobPlan(spec.name, blob, dims, layouts.get(blob, NO_BATCH)))
        plans.append(plan)
    fixed_batch(plans[0], plans[1], model.name)  # raises for a graph that mixes samples
    return plans[0], plans[1]


def fixed_batch(inputs: Sequence[BlobPlan], outputs: Sequence[BlobPlan], model_name: str = "model") -> int:
    """N when pnnx took a fixed leading dim N > 1 for the batch (and dropped it), else 1.

    Every input and every output must then lead with the same N and drop it:
    the graph runs one sample per extractor and the samples are stacked.
    Anything else (an output without that axis: a reduction over it) cannot be
    computed one sample at a time, so it raises ``UnsupportedModel``.
    """
    dropped = [p for p in (*inputs, *outputs) if p.batch_index == 0 and p.shape and p.shape[0] > 1]
    if not dropped:
        return 1
    n = dropped[0].shape[0]
    if all(p.batch_index == 0 and p.shape and p.shape[0] == n for p in (*inputs, *outputs)):
        return n
    layout = {
        p.name: (p.shape, "batch axis dropped" if p.batch_index == 0 else "whole array") for p in (*inputs, *outputs)
    }
    raise UnsupportedModel(
        f"pnnx took the leading dim {n} of {dropped[0].name!r} for a batch, but the inputs and outputs of "
        f"{model_name!r} "
        f"do not all carry it ({layout}): ncnn computes one sample per extractor, which cannot give this graph's answer"
    )


def _layouts(script: Path) -> dict[str, int]:
    """``batch_index`` per blob from pnnx's generated ``model_ncnn.py`` (absent: no batch axis)."""
    found: dict[str, int] = {}
    if not script.is_file():
        return found
    text = script.read_text(errors="replace")
    for line in text.splitlines():
        m = re.search(r'ex\.input\("([^"]+)".*?batch_index=(\d+)', line)
        if m:
            found[m.group(1)] = int(m.group(2))
            continue
        m = re.search(r"(\w+)\.numpy\(.*?batch_index=(\d+)", line)
        if m:
            found[m.group(1)] = int(m.group(2))
    return found


def _check_layers(param: Path) -> None:
    """Raise ``UnsupportedModel`` for layer types this ncnn does not have (ops pnnx left as-is)."""
    import ncnn

    unknown: list[str] = []
    lines = param.read_text(errors="replace").splitlines()
    for line in lines[2:]:
        parts = line.split()
        if parts and ncnn.layer_to_index(parts[0]) < 0 and parts[0] not in unknown:
            unknown.append(parts[0])
    if unknown:
        raise UnsupportedModel(
            f"pnnx left ONNX operator(s) {unknown} unconverted and ncnn has no such layer(s); "
            'ncnn cannot load this graph ("layer ... not exists or registered")'
        )


# -- one-time check against ONNX Runtime -------------------------------------------------------

VERIFY_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
"""Max abs error relative to the reference's max abs value: loose on purpose, it
catches conversions that are wrong (errors near 1), not rounding (near 1e-7)."""
VERIFY_ATOL = {"fp32": 1e-5, "fp16": 1e-3}
"""Absolute errors always accepted (the conformance defaults' atol): an output that is
nearly zero everywhere on the check inputs (a text detector's sigmoid on a photo-like
input: scale 1e-6) must not turn rounding (9e-8) into a refused conversion."""


def _verify(
    work: Path, model: Model, conv: Conversion, precision: str, shapes: Mapping[str, Sequence[int]], per_sample: bool
) -> tuple[str, bool, str | None]:
    """Compare the converted graph with ONNX Runtime on seeded inputs.

    Returns (what was checked, whether batch > 1 may loop per sample, error or None).
    """
    if importlib.util.find_spec("onnxruntime") is None:
        return "not verified: onnxruntime is not installed", per_sample, None
    import onnxruntime as ort

    from nnport.data import random_feeds

    from .ncnn import NcnnProgram, load_net, quiet_stderr

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        session = ort.InferenceSession(model.serialized(), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return f"not verified: ONNX Runtime cannot run the model ({str(exc)[:200]})", per_sample, None
    net = load_net(str(work / conv.param), str(work / conv.bin), precision=precision, threads=None, vulkan_index=None)
    program = NcnnProgram(
        net, conv.inputs, conv.outputs, loop=per_sample, model_name=model.name, specs=(model.inputs, model.outputs)
    )
    tol = VERIFY_TOLERANCE[precision]
    batches = (1, 2) if per_sample else (1,)
    for batch in batches:
        feeds = random_feeds(
            model.inputs,
            seed=0,
            shapes={s.name: (batch, *shapes[s.name][1:]) if batch > 1 else shapes[s.name] for s in model.inputs},
        )
        try:
            ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        except Exception as exc:
            if batch > 1:
                return f"verified at batch 1 only (ONNX Runtime failed at batch {batch})", False, None
            return f"not verified: ONNX Runtime failed ({str(exc)[:200]})", per_sample, None
        try:
            with quiet_stderr() as said:
                got = program.infer(feeds)
        except (ExecutionError, InputError) as exc:
            told = " ".join(said.text().split())[:300]
            why = f"{exc}" + (f" (ncnn: {told})" if told else "")
            if batch > 1:
                return f"verified at batch 1; batch {batch} failed in ncnn ({why})", False, None
            return (
                "verification failed",
                False,
                f"the ncnn graph pnnx made of {model.name!r} fails on the check inputs: {why}",
            )
        for name, want in ref.items():
            if not np.all(np.isfinite(want)):
                return (
                    f"not verified: ONNX Runtime's output {name!r} is not finite on the seeded check inputs",
                    per_sample if batch == 1 else False,
                    None,
                )
            have = got[name]
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            err = float(np.max(np.abs(have.astype(np.float64) - want))) if have.shape == want.shape else float("inf")
            if have.shape != want.shape or not err <= max(tol * scale, VERIFY_ATOL[precision]):
                what = (
                    f"shape {list(have.shape)} vs {list(want.shape)}"
                    if have.shape != want.shape
                    else f"max abs error {err:.3g} at output scale {scale:.3g}"
                )
                if batch > 1:
                    return (
                        f"verified at batch 1; batch {batch} differs ({what}): the graph is not per-sample",
                        False,
                        None,
                    )
                return (
                    "verification failed",
                    False,
                    f"pnnx converted {model.name!r} but the ncnn graph disagrees with ONNX Runtime on output {name!r} "
                    f"({what}, tolerance {tol:g} x scale): a conversion error, refusing to give wrong answers",
                )
    return f"verified against ONNX Runtime {ort.__version__} at batch {', '.join(map(str, batches))}", per_sample, None


# -- pnnx's output ----------------------------------------------------------------------------


def _tail(log: str, lines: int = 12) -> str:
    return "\n".join([ln for ln in log.splitlines() if ln.strip()][-lines:])


def _reason(log: str) -> str:
    """The informative lines of pnnx's log (it echoes its options first)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    keys = ("error", "fail", "expect", "not support", "unsupported", "abort", "exception", "terminate", "what()")
    picked = [ln for ln in lines if any(k in ln.lower() for k in keys)]
    text = "; ".join(dict.fromkeys(picked or lines[-3:]))
    return text[:800] or "no message"
