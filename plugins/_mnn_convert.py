"""ONNX -> ``.mnn`` through MNN's converter, in a guarded worker process, with a cache.

Helpers of ``plugins/mnn.py``; the backend file reads as the contract (devices,
compile, run), this one as the conversion recipe.  What was measured with MNN
3.6.1 before each rule was written:

* **No telemetry.**  ``MNN.tools`` (what the ``mnnconvert``/``mnnquant``
  console scripts run) imports ``MNN/tools/utils/log.py``, which runs
  ``pip install -U aliyun-log-python-sdk`` when that SDK is missing and uploads
  the machine id, a model id and the converter's arguments after each
  conversion.  This module never imports ``MNN.tools`` and never runs those
  scripts: it calls the converter's C entry point, the top-level module
  ``_tools`` (``_tools.mnnconvert(argv)``), which has no Python logging code.
* **A worker process.**  The converter is native code that aborts on some
  inputs, so it runs in ``python -c WORKER`` with a timeout: a crash is a
  ``UnsupportedModel`` with the converter's last messages, never the end of
  the user's process.  The worker installs an audit hook before importing
  ``_tools`` that refuses network connections, name look-ups and process
  starts (``socket.connect``, ``subprocess.Popen``, ``os.system``, ...), and
  reports whether ``MNN.tools`` got imported; both verdicts are kept with the
  conversion (``compiled.info["converter_guard"]``).
* **It returns True when it fails** (it only prints "Model File Does Not
  Exist!" and the like), so success is the output file, and a failure carries
  the converter's informative lines.
* **Opset < 13 Softmax**: MNN applies an opset-9 ``Softmax(axis=1)`` to one
  axis instead of flattening from it (``light_squeezenet``: every output 1.0,
  error 999 x scale).  Models below opset 13 are upgraded with
  ``onnx.version_converter`` first (it rewrites such a Softmax exactly).
* **epsilon left at its default**: MNN reads a ``BatchNormalization`` without
  an ``epsilon`` attribute as epsilon 1e-10, not ONNX's 1e-5 (a channel with
  running variance 1e-13 came out x316 too large; ``light_shufflenet`` with
  real weights disagreed).  The default is written out explicitly on every
  normalization node that leaves it implicit.
* **GELU**: MNN's own GELU kernel is neither ONNX form (max abs error 4.7e-4
  against the erf form and 1.8e-4 against the tanh form on [-6, 6], whatever
  ``--useGeluApproximation`` says), while the composed forms it runs op by op
  are exact.  ONNX ``Gelu`` nodes (opset 20) are therefore written out as their
  defining formula (``0.5 x (1 + erf(x / sqrt 2))``, or the tanh form for
  ``approximate="tanh"``) before conversion, and ``--useGeluApproximation 0``
  keeps the converter from fusing an erf GELU into that kernel.
* Whatever else is wrong is caught by a one-time check: the converted model is
  run beside ONNX Runtime on seeded inputs (``verify``), MNN's side in a child
  process too, since MNN's runtime crashes (SIGFPE, SIGSEGV, a double free)
  or hangs on some converted graphs.  A mismatch is
  ``UnsupportedModel`` (cached), so device selection falls back.

Conversions (and their failures) are cached under ``<cache>/<model
name>-<key>/`` keyed by the model hash, precision, the MNN version and
``CONVERTER_VERSION``; entries are written in a temporary directory and moved
into place atomically, damaged entries are converted again, and the cache is
bounded (least recently used entries evicted).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnport.data import save_arrays
from nnport.errors import CompileError, UnsupportedModel
from nnport.model import Model, drop_initializer_inputs
from nnport.paths import cache_root

CONVERTER_VERSION = "6"
"""Bump when this module changes what it writes, so old cache entries are ignored."""

UPGRADE_OPSET = 13
CHECK_TIMEOUT_S = 30.0
"""How long the check run may take (``extra["mnn_check_timeout_s"]``): MNN hangs on OneHot node tests."""
HANG = "did not finish running the converted model"


STATUS_MARK = "@@nnport-mnn-worker@@"

BLOCKED_EVENTS = (
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.sendto",
    "urllib.Request",
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "pty.spawn",
)
"""Audit events the converter worker refuses: it needs neither the network nor another process."""

WORKER = r"""
import json, sys
blocked = []
BLOCK = set(json.loads(sys.argv[1]))
def _guard(event, args):
    if event in BLOCK:
        blocked.append(event)
        raise PermissionError("nnport's MNN converter worker refuses " + event)
sys.addaudithook(_guard)
status = {"guard": "audit hook installed: no network, no process starts"}
try:
    import _tools
    status["returned"] = bool(_tools.mnnconvert(json.loads(sys.argv[2])))
except BaseException as exc:
    status["exception"] = type(exc).__name__ + ": " + str(exc)[:400]
status["blocked"] = blocked
status["mnn_tools_imported"] = "MNN.tools" in sys.modules
sys.stdout.flush()
print("\n" + sys.argv[3] + json.dumps(status), flush=True)
"""


# -- locating things without importing them ------------------------------------------------


def converter_available() -> bool:
    """Whether the converter's C module ``_tools`` is installed (found, not imported)."""
    try:
        return importlib.util.find_spec("_tools") is not None
    except (ImportError, ValueError):
        return False


def mnn_version() -> str:
    try:
        return importlib.metadata.version("MNN")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_cache_root() -> Path:
    """``mnn`` under nnport's cache root (``$NNPORT_CACHE_DIR``, XDG, ``~/.cache/nnport``)."""
    return cache_root() / "mnn"


# -- native output capture -------------------------------------------------------------------

_fd_lock = threading.Lock()


class Said:
    """What native code wrote to a file descriptor while it was captured."""

    def __init__(self) -> None:
        self.value = ""

    def text(self) -> str:
        return self.value


@contextlib.contextmanager
def captured(fd: int = 1) -> Iterator[Said]:
    """Capture what native code writes to ``fd`` (MNN prints to stdout with ``printf``).

    MNN prints "The device supports: ..." when its library loads, "MNN use high
    precision" when a runtime is made and "Can't Find type=7 backend, use 0
    instead" when it falls back to the CPU; none of that belongs on a user's
    stdout (``nnport run --json`` writes JSON there).  Used outside the hot path
    only.  The text is also the only sign of a GPU fallback (see ``mnn.py``).
    """
    said = Said()
    stream = sys.stdout if fd == 1 else sys.stderr
    with _fd_lock, tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            stream.flush()
        except Exception:  # a replaced or closed stream
            pass
        try:
            saved = os.dup(fd)
        except OSError:  # no such descriptor (a daemon): nothing to capture
            yield said
            return
        os.dup2(sink.fileno(), fd)
        try:
            yield said
        finally:
            with contextlib.suppress(Exception):
                stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            said.value = sink.read().decode(errors="replace")


_mnn_module: Any = None
banner = ""
"""What MNN's library printed when it loaded ("The device supports: i8sdot:0, fp16:0, ...")."""


def import_mnn() -> Any:
    """``import MNN`` with the banner its library prints on load kept off stdout (and kept in ``banner``)."""
    global _mnn_module, banner
    if _mnn_module is None:
        if "MNN" in sys.modules:
            _mnn_module = sys.modules["MNN"]
        else:
            with captured(1) as said:
                import MNN
            banner = said.text().strip()
            _mnn_module = MNN
    return _mnn_module


# -- what a conversion produces ---------------------------------------------------------------


@dataclass
class Conversion:
    """A converted model in the cache: the file, how it was made and checked."""

    path: str
    mnn_version: str
    seconds: float
    args: list[str]
    upgraded_opset: str | None = None
    verified: str = "not verified"
    error: str | None = None
    log_tail: str = ""
    guard: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = field(default=False, compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("cache_hit")
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Conversion:
        return cls(**json.loads(text))


def converter_args(precision: str, extra: Mapping[str, Any] | None = None) -> list[str]:
    """The converter flags for ``precision`` (file names excluded).

    fp32: weights as they are, exact erf GELU.  fp16: ``--fp16`` (Conv weights
    stored as half floats).  int8: ``--weightQuantBits 8`` (weights of
    Conv/MatMul/LSTM stored as int8, per channel; activations stay float).
    ``extra["mnn_converter_args"]`` appends flags (a list of strings).
    """
    args = ["--useGeluApproximation", "0"]
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args += ["--weightQuantBits", "8"]
    more = (extra or {}).get("mnn_converter_args") or []
    if isinstance(more, str) or not all(isinstance(a, str) for a in more):
        raise CompileError(f"extra['mnn_converter_args'] must be a list of strings, got {more!r}")
    forbidden = [a for a in more if a.lstrip("-") in ("modelFile", "MNNModel", "f", "framework")]
    if forbidden:
        raise CompileError(
            f"extra['mnn_converter_args'] may not set {forbidden}: nnport chooses the files and the framework"
        )
    return args + list(more)


# -- the cache ---------------------------------------------------------------------------------


def cache_key(model: Model, args: Sequence[str], verify: bool) -> str:
    """Model hash + converter flags + MNN version (files and verdict) + this module's version."""
    text = "|".join([model.hash, json.dumps(list(args)), str(verify), mnn_version(), CONVERTER_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def entry_for(model: Model, args: Sequence[str], verify: bool, root: Path) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.name)[:40] or "model"
    return root / f"{safe}-{cache_key(model, args, verify)}"


def convert(
    model: Model,
    *,
    precision: str,
    cache_root: Path,
    extra: Mapping[str, Any] | None = None,
    verify: bool = True,
    timeout_s: float = 600.0,
    check_timeout_s: float = CHECK_TIMEOUT_S,
) -> Conversion:
    """The cached conversion of ``model``, running the converter only on a cache miss.

    A converter that overruns ``timeout_s``, or a converted model whose check
    run overruns ``check_timeout_s`` (MNN hangs on some graphs), is refused but
    not cached: a quieter machine may finish.

    Raises ``UnsupportedModel`` with the converter's message when the model
    cannot be converted, loaded or verified (also when that verdict is cached).
    """
    args = converter_args(precision, extra)
    entry = entry_for(model, args, verify, cache_root)
    meta = entry / "meta.json"
    if meta.is_file():
        try:
            conv: Conversion | None = Conversion.from_json(meta.read_text())
        except (ValueError, TypeError, KeyError):
            conv = None  # a damaged entry: convert again
        if conv is not None and (conv.error or _readable(entry / conv.path)):
            conv.cache_hit = True
            _touch(meta)
            conv.path = str(entry / conv.path)
            if conv.error:
                raise UnsupportedModel(f"{conv.error} (cached verdict; delete {entry} to retry)")
            return conv
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_root))
    try:
        conv = _convert_in(work, model, args, precision, verify, timeout_s, check_timeout_s)
        if conv.error and (conv.error.startswith("the MNN converter did not finish") or HANG in conv.error):
            raise UnsupportedModel(conv.error)  # a timeout may not recur on a quieter machine: not cached
        (work / "meta.json").write_text(conv.to_json())
        for junk in work.iterdir():  # keep only what MNN loads
            if junk.name not in ("model.mnn", "meta.json"):
                junk.unlink() if junk.is_file() else shutil.rmtree(junk, ignore_errors=True)
        if entry.exists():  # a damaged entry (unreadable meta.json or a missing file): replace it
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(work, entry)
        except OSError:  # another process filled the entry first: use theirs
            pass
        prune(cache_root, keep=entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    conv.path = str(entry / conv.path)
    if conv.error:
        raise UnsupportedModel(conv.error)
    return conv


def _readable(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def cache_limits() -> tuple[int, int]:
    """(max entries, max bytes): ``NNPORT_MNN_CACHE_MAX_ENTRIES`` (256), ``NNPORT_MNN_CACHE_MAX_MB`` (4096)."""
    entries = int(os.environ.get("NNPORT_MNN_CACHE_MAX_ENTRIES", "256"))
    megabytes = float(os.environ.get("NNPORT_MNN_CACHE_MAX_MB", "4096"))
    return max(1, entries), int(max(1.0, megabytes) * (1 << 20))


def _touch(meta: Path) -> None:
    try:
        os.utime(meta)
    except OSError:
        pass


def prune(root: Path, keep: Path | None = None) -> list[Path]:
    """Evict least recently used entries beyond ``cache_limits()``; returns what was removed (best effort)."""
    max_entries, max_bytes = cache_limits()
    found: list[tuple[float, int, Path]] = []
    try:
        for entry in root.iterdir():
            meta = entry / "meta.json"
            if not entry.is_dir() or not meta.is_file():
                continue
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            found.append((meta.stat().st_mtime, size, entry))
    except OSError:
        return []
    found.sort(key=lambda t: t[0], reverse=True)
    removed: list[Path] = []
    total = 0
    for count, (_, size, entry) in enumerate(found, 1):
        total += size
        if entry != keep and (count > max_entries or total > max_bytes):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# -- one conversion ----------------------------------------------------------------------------


def run_converter(argv: Sequence[str], *, cwd: Path, timeout_s: float) -> tuple[int | None, str, dict[str, Any]]:
    """Run ``_tools.mnnconvert(argv)`` in the guarded worker: (exit status or None on timeout, log, status)."""
    cmd = [sys.executable, "-c", WORKER, json.dumps(BLOCKED_EVENTS), json.dumps(list(argv)), STATUS_MARK]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, out, {}
    log = (proc.stdout or "") + (proc.stderr or "")
    status: dict[str, Any] = {}
    kept = []
    for line in log.splitlines():
        if line.startswith(STATUS_MARK):
            with contextlib.suppress(ValueError):
                status = json.loads(line[len(STATUS_MARK) :])
        else:
            kept.append(line)
    return proc.returncode, "\n".join(kept), status


def _convert_in(
    work: Path,
    model: Model,
    args: Sequence[str],
    precision: str,
    verify: bool,
    timeout_s: float,
    check_timeout_s: float = 30.0,
) -> Conversion:
    if not converter_available():
        raise CompileError("MNN's converter module _tools is missing: pip install 'nnport[mnn]'")
    ignored = unsupported_attributes(model.proto.graph)
    if ignored is not None:
        return Conversion(
            "model.mnn", mnn_version(), 0.0, list(args), error=f"MNN cannot honour {model.name!r}: {ignored}"
        )
    proto, upgraded = _prepared_proto(model)
    (work / "model.onnx").write_bytes(proto.SerializeToString())
    argv = [
        "mnnconvert",
        "-f",
        "ONNX",
        "--modelFile",
        "model.onnx",
        "--MNNModel",
        "model.mnn",
        "--bizCode",
        "nnport",
        *args,
    ]
    conv = Conversion("model.mnn", mnn_version(), 0.0, list(args), upgraded_opset=upgraded)
    start = time.perf_counter()
    rc, log, status = run_converter(argv, cwd=work, timeout_s=timeout_s)
    conv.seconds = time.perf_counter() - start
    conv.log_tail = _tail(log)
    conv.guard = {k: status[k] for k in ("guard", "blocked", "mnn_tools_imported") if k in status}
    if rc is None:
        conv.error = f"the MNN converter did not finish converting {model.name!r} within {timeout_s:.0f} s"
        return conv
    if status.get("blocked"):
        conv.error = (
            f"the MNN converter tried {sorted(set(status['blocked']))} (refused by nnport's worker): not using "
            "its output"
        )
        return conv
    out = work / "model.mnn"
    if rc != 0 or not _readable(out) or "exception" in status:
        how = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
        extra = f"; {status['exception']}" if "exception" in status else ""
        conv.error = f"the MNN converter cannot convert {model.name!r} ({how}{extra}): {_reason(log)}"
        return conv
    if verify:
        conv.verified, conv.error = _verify(out, model, precision, check_timeout_s)
    return conv


_TIE = (
    "MNN ignores select_last_index=1 and returns the first index of a tie (node tests arg{max,min}_*_select_last_index)"
)
UNSUPPORTED_ATTRIBUTES = {
    (
        "ArgMax",
        "select_last_index",
    ): _TIE,
    (
        "ArgMin",
        "select_last_index",
    ): _TIE,
}
"""(operator, attribute set to non-zero) that MNN converts but ignores; seeded random inputs have no ties to show it."""


def unsupported_attributes(graph: Any) -> str | None:
    """Why MNN would silently ignore an attribute of ``graph`` (subgraphs too), or None."""
    for node in graph.node:
        for attr in node.attribute:
            why = UNSUPPORTED_ATTRIBUTES.get((node.op_type, attr.name))
            if why is not None and attr.i != 0:
                return f"node {node.name or node.op_type!r}: {why}"
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found = unsupported_attributes(sub)
                if found:
                    return found
    return None


def _prepared_proto(model: Model) -> tuple[Any, str | None]:
    """A copy of the ONNX graph MNN's converter reads correctly: no initializer inputs, opset >= 13."""
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    drop_initializer_inputs(proto)
    _explicit_epsilon(proto.graph)
    _compose_gelu(proto.graph)
    upgraded = None
    if model.opset is not None and model.opset < UPGRADE_OPSET:
        try:
            from onnx import version_converter

            proto = version_converter.convert_version(proto, UPGRADE_OPSET)
            upgraded = f"{model.opset} -> {UPGRADE_OPSET}"
        except Exception as exc:  # keep the original graph; verification judges the result
            upgraded = (
                f"kept opset {model.opset}: onnx.version_converter failed ({type(exc).__name__}: {str(exc)[:200]})"
            )
    return proto, upgraded


def _compose_gelu(graph: Any) -> int:
    """Replace ONNX ``Gelu`` nodes by their defining formula, in place (subgraphs too); returns how many."""
    from onnx import helper, numpy_helper

    count = 0
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                count += _compose_gelu(sub)
        if node.op_type != "Gelu" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        count += 1
        approximate = next((a.s.decode() for a in node.attribute if a.name == "approximate"), "none")
        x, y, tag = node.input[0], node.output[0], f"nnport_gelu_{count}_{node.name or 'n'}"

        def const(name: str, value: float, tag: str = tag) -> str:
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{tag}_{name}"))
            return f"{tag}_{name}"

        if approximate == "tanh":
            nodes += [
                helper.make_node("Mul", [x, x], [f"{tag}_x2"]),
                helper.make_node("Mul", [f"{tag}_x2", x], [f"{tag}_x3"]),
                helper.make_node("Mul", [f"{tag}_x3", const("c", 0.044715)], [f"{tag}_cx3"]),
                helper.make_node("Add", [x, f"{tag}_cx3"], [f"{tag}_inner"]),
                helper.make_node("Mul", [f"{tag}_inner", const("k", float(np.sqrt(2.0 / np.pi)))], [f"{tag}_scaled"]),
                helper.make_node("Tanh", [f"{tag}_scaled"], [f"{tag}_t"]),
            ]
        else:
            nodes += [
                helper.make_node("Div", [x, const("sqrt2", float(np.sqrt(2.0)))], [f"{tag}_d"]),
                helper.make_node("Erf", [f"{tag}_d"], [f"{tag}_t"]),
            ]
        nodes += [
            helper.make_node("Add", [f"{tag}_t", const("one", 1.0)], [f"{tag}_p"]),
            helper.make_node("Mul", [x, f"{tag}_p"], [f"{tag}_xp"]),
            helper.make_node("Mul", [f"{tag}_xp", const("half", 0.5)], [y], name=node.name),
        ]
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


DEFAULT_EPSILON = {
    "BatchNormalization": 1e-5,
    "InstanceNormalization": 1e-5,
    "LayerNormalization": 1e-5,
    "GroupNormalization": 1e-5,
}


def _explicit_epsilon(graph: Any) -> int:
    """Write ONNX's default ``epsilon`` on normalization nodes that omit it (subgraphs too); returns how many."""
    from onnx import helper

    count = 0
    for node in graph.node:
        default = DEFAULT_EPSILON.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if default is not None and not any(a.name == "epsilon" for a in node.attribute):
            node.attribute.append(helper.make_attribute("epsilon", default))
            count += 1
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                count += _explicit_epsilon(sub)
    return count


# -- one-time check against ONNX Runtime -------------------------------------------------------

VERIFY_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8": 2.5e-1}
"""Max abs error relative to the reference's max abs value: loose on purpose, it
catches conversions that are wrong (errors near 1), not rounding (near 1e-7)."""


def verify_feeds(model: Model) -> dict[str, np.ndarray]:
    """Seeded check inputs (open dims at 1, integer inputs in their declared or a small range)."""
    from nnport.data import random_feeds

    return random_feeds(model.inputs, seed=0)


DEFERRED = "deferred to the first run"
"""Prefix of ``Conversion.verified`` when the model has open dims and the seeded check could not decide."""


def _reference_session(model: Model) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.serialized(), sess_options=so, providers=["CPUExecutionProvider"])


def has_open_dims(model: Model) -> bool:
    return any(not isinstance(d, int) for s in model.inputs for d in s.shape)


CHECK_WORKER = r"""
import json, sys
BLOCK = set(json.loads(sys.argv[1]))
def _guard(event, args):
    if event in BLOCK:
        raise PermissionError("nnport's MNN check worker refuses " + event)
sys.addaudithook(_guard)
task = json.loads(sys.argv[2])
if task.get("memory_limit"):  # a runaway allocation fails here instead of paging the machine into the OOM killer
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (task["memory_limit"], task["memory_limit"]))
import numpy as np
from nnport.errors import NnportError
from nnport.model import Model
from nnport.plugins.mnn import MnnProgram
from nnport.types import TensorSpec
specs = lambda rows: tuple(TensorSpec(n, tuple(s), d) for n, s, d in rows)
model = Model(format="onnx", inputs=specs(task["inputs"]), outputs=specs(task["outputs"]), hash="", name=task["name"])
status = {}
try:
    with np.load(task["feeds"], allow_pickle=False) as data:
        feeds = {s.name: data["i%d" % i] for i, s in enumerate(model.inputs)}
    program = MnnProgram.load(task["path"], model, precision=task["precision"], threads=1, backend_type=None)
    out = program.infer(feeds)
    np.savez(task["out"], **{"o%d" % i: out[s.name] for i, s in enumerate(model.outputs)})
except NnportError as exc:
    status["error"] = str(exc)
except Exception as exc:  # MNN's bare SystemError and the like
    status["error"] = type(exc).__name__ + ": " + str(exc)[:300]
print(sys.argv[3] + json.dumps(status), flush=True)
"""
"""Runs the converted model once on the check inputs in a child process: a crash or a hang in MNN is a verdict."""

SIGNALS = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV"}


def check_memory_limit(model_bytes: int = 0) -> int:
    """Address-space limit of the check worker, in bytes (0: none).

    ``NNPORT_MNN_CHECK_MEMORY_MB`` if set, else 3 GiB plus 4x the converted
    model, at most half the memory available now.  A OneHot node test with a
    garbage depth made MNN allocate until the kernel's OOM killer stopped it a
    minute later, paging the whole machine; under the limit it fails at once.
    """
    env = os.environ.get("NNPORT_MNN_CHECK_MEMORY_MB")
    if env:
        return int(float(env) * (1 << 20))
    want = (3 << 30) + 4 * max(0, model_bytes)
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            available = next((int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable:")), 0)
    except (OSError, ValueError):
        available = 0
    return int(min(want, available // 2)) if available else want


class CheckFailed(Exception):
    """MNN crashed, hung or raised on the check inputs (in the check worker); the message says which."""


def run_isolated(
    path: str, model: Model, precision: str, feeds: Mapping[str, np.ndarray], timeout_s: float = CHECK_TIMEOUT_S
) -> dict[str, np.ndarray]:
    """The converted model's outputs on ``feeds``, computed in a child process; raises ``CheckFailed``.

    MNN's runtime crashes on some converted graphs (SIGFPE in 2-D pooling of
    the ONNX node tests, SIGSEGV on uint8 arithmetic, a double free in
    CenterCropPad) and hangs on others (OneHot): found here, such a model is
    refused instead of taking the user's process down at its first run.
    """
    with tempfile.TemporaryDirectory(prefix="nnport-mnn-check-") as tmp:
        feeds_path, out_path = os.path.join(tmp, "feeds.npz"), os.path.join(tmp, "out.npz")
        save_arrays(feeds_path, {f"i{i}": np.asarray(feeds[s.name]) for i, s in enumerate(model.inputs)})

        def rows(specs: Any) -> list[Any]:
            return [[s.name, [d if isinstance(d, int) else None for d in s.shape], str(s.dtype)] for s in specs]

        limit = check_memory_limit(os.path.getsize(path) if os.path.isfile(path) else 0)
        task = {
            "path": str(path),
            "precision": precision,
            "name": model.name,
            "inputs": rows(model.inputs),
            "outputs": rows(model.outputs),
            "feeds": feeds_path,
            "out": out_path,
            "memory_limit": limit,
        }
        cmd = [sys.executable, "-c", CHECK_WORKER, json.dumps(BLOCKED_EVENTS), json.dumps(task), STATUS_MARK]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, errors="replace", timeout=timeout_s, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise CheckFailed(
                f"MNN {HANG} within {timeout_s:.0f} s (a hang; extra mnn_check_timeout_s gives it longer)"
            ) from None
        log = (proc.stdout or "") + (proc.stderr or "")
        status = None
        for line in log.splitlines():
            if line.startswith(STATUS_MARK):
                with contextlib.suppress(ValueError):
                    status = json.loads(line[len(STATUS_MARK) :])
        if proc.returncode < 0 or (status is None and "MemoryError" in log):
            sig = SIGNALS.get(-proc.returncode, f"signal {-proc.returncode}") if proc.returncode < 0 else "MemoryError"
            if sig in ("SIGABRT", "SIGKILL", "MemoryError") and (
                "bad_alloc" in log or "MemoryError" in log or sig == "SIGKILL"
            ):
                sig += f", out of memory under the check's {limit / (1 << 30):.1f} GiB limit"
            tail = " ".join(_reason(log).split())[:200]
            raise CheckFailed(
                f"MNN crashed ({sig}) running the converted model"
                + (f": {tail}" if tail and tail != "no message" else "")
            )
        if status is None:
            raise CheckFailed(f"the check worker failed (exit status {proc.returncode}): {_tail(log, 4)[:400]}")
        if "error" in status:
            raise CheckFailed(status["error"])
        with np.load(out_path, allow_pickle=False) as data:
            return {s.name: data[f"o{i}"] for i, s in enumerate(model.outputs)}


def _verify(
    path: Path, model: Model, precision: str, check_timeout_s: float = CHECK_TIMEOUT_S
) -> tuple[str, str | None]:
    """Compare the converted model with ONNX Runtime on seeded inputs: (what was checked, error or None).

    A model with open dims is checked at guessed sizes (1); when the two
    disagree there (degenerate shapes: a 1x1 image), and for any model whose
    seeded inputs the reference cannot run (integer inputs that are axes or
    indices: ``ReduceL1`` with ``axes`` fed at run time), the verdict is
    ``DEFERRED``: ``FirstRunCheck`` decides on the first real feeds instead of
    refusing a model for inputs nobody feeds it, or passing it unchecked.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        return "not verified: onnxruntime is not installed", None
    import onnxruntime as ort

    open_dims = has_open_dims(model)
    try:
        session = _reference_session(model)
    except Exception as exc:
        return f"not verified: ONNX Runtime cannot run the model ({str(exc)[:200]})", None
    feeds = verify_feeds(model)
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())
    try:
        ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except Exception as exc:  # guessed shapes, or seeded values a graph cannot take (axes, indices as inputs)
        return (
            f"{DEFERRED}: ONNX Runtime cannot run the seeded check inputs {shapes} "
            f"({' '.join(str(exc).split())[:160]})",
            None,
        )
    try:
        got = run_isolated(str(path), model, precision, feeds, check_timeout_s)
    except CheckFailed as exc:
        if open_dims and HANG not in str(exc):
            return f"{DEFERRED}: MNN failed at the guessed check shapes {shapes} ({str(exc)[:200]})", None
        return "verification failed", f"the MNN model converted from {model.name!r} fails on the check inputs: {exc}"
    error = disagreement(model, precision, got, ref)
    if error is not None:
        if open_dims:
            return f"{DEFERRED}: at the guessed check shapes {shapes}, {error}", None
        return (
            "verification failed",
            f"MNN converted {model.name!r} but {error}: a conversion error, refusing to give wrong answers",
        )
    return f"verified against ONNX Runtime {ort.__version__} at {shapes}", None


ABS_FLOOR = 1e-6
"""Absolute slack of the check: outputs near zero everywhere (a heat map at 3e-7) compare on rounding otherwise."""


def disagreement(
    model: Model, precision: str, got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]
) -> str | None:
    """Why ``got`` (MNN) is not ``ref`` (ONNX Runtime) within the check's loose tolerance, or None.

    Shapes must be equal; values are compared where the reference is finite
    (seeded inputs can make a graph's reference NaN, ``ReduceLogSum`` of
    negative sums, and MNN's NaN/inf propagation differs from ONNX Runtime's
    anyway: that is for conformance to report, not for this check to decide).
    """
    for name, want in ref.items():
        have = got.get(name)
        if have is None:
            return f"its model has no output {name!r}"
        if have.shape != want.shape:
            shapes = f"shape {list(have.shape)} vs {list(want.shape)}"
            return f"its model disagrees with ONNX Runtime on output {name!r} ({shapes})"
        if not want.size:
            continue
        w, h = want.astype(np.float64), have.astype(np.float64)
        finite = np.isfinite(w)
        if not finite.any():
            continue
        w, h = w[finite], h[finite]
        scale = float(np.max(np.abs(w)))
        err = float(np.max(np.abs(h - w))) if np.all(np.isfinite(h)) else float("inf")
        floating = want.dtype.kind == "f"
        tol = VERIFY_TOLERANCE[precision] if floating else 0.0
        slack = ABS_FLOOR if floating else 0.5
        if not err <= tol * scale + slack:
            return (
                f"its model disagrees with ONNX Runtime on output {name!r} "
                f"(max abs error {err:.3g} at output scale {scale:.3g}, tolerance {tol:g} x scale)"
            )
    return None


class FirstRunCheck:
    """The deferred check of a model with open dims: ONNX Runtime on the first real feeds, once.

    A disagreement is ``UnsupportedModel`` (a refusal, raised at the first run
    as lazily specialised backends do), kept for every later call.
    """

    def __init__(self, model: Model, precision: str, why: str, path: str) -> None:
        self.model = model
        self.path = path
        self.precision = precision
        self.why = why
        self.verdict: str | None = None
        self.error: UnsupportedModel | None = None
        self.lock = threading.Lock()

    def judge(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Run MNN on ``feeds`` in the check worker and ONNX Runtime here; set ``verdict`` and ``error``."""
        shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())
        try:
            got = run_isolated(self.path, self.model, self.precision, feeds)
        except CheckFailed as exc:
            self.verdict = "verification failed at the first run"
            self.error = UnsupportedModel(
                f"MNN cannot run {self.model.name!r} at the first run's shapes {shapes}: {exc}"
            )
            return
        try:
            session = _reference_session(self.model)
            ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, dict(feeds))))
        except Exception as exc:
            self.verdict = f"not verified: ONNX Runtime failed on the first run's feeds {shapes} ({str(exc)[:200]})"
            return
        error = disagreement(self.model, self.precision, got, ref)
        if error is None:
            self.verdict = f"verified against ONNX Runtime at the first run's shapes {shapes}"
            return
        self.verdict = "verification failed at the first run"
        self.error = UnsupportedModel(
            f"MNN converted {self.model.name!r} but at the first run's shapes {shapes} {error}: a "
            "conversion error, refusing to give wrong answers"
        )


# -- the converter's output ----------------------------------------------------------------------

_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*\S*:\d+:\s*")


def _tail(log: str, lines: int = 12) -> str:
    return "\n".join([ln for ln in log.splitlines() if ln.strip()][-lines:])


def _reason(log: str) -> str:
    """The informative lines of the converter's log (it echoes versions and progress first)."""
    lines = [_TIMESTAMP.sub("", ln).strip() for ln in log.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("The device supports")]
    keys = (
        "error",
        "fail",
        "not support",
        "unsupported",
        "does not exist",
        "abort",
        "exception",
        "terminate",
        "can't",
        "cannot",
        "invalid",
        "what()",
    )
    picked = [ln for ln in lines if any(k in ln.lower() for k in keys)]
    text = "; ".join(dict.fromkeys(picked or lines[-3:]))
    return text[:800] or "no message"
