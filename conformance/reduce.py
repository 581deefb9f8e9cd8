"""``nnport reduce``: the smallest sub-model that still fails on a device the same way.

Polygraphy's ``debug reduce`` algorithm (``polygraphy/tools/debug/subtool/reduce.py``),
with nnport's devices as the check:

1. **outputs**: the graph is cut after node *k* (in topological order): node
   *k*'s outputs become the graph's outputs and everything downstream is
   dropped.  A bisection over *k* finds the earliest node whose outputs still
   fail (``strategy="linear"`` tries every node, last to first).
2. **inputs**: the graph is cut before node *j*: every tensor that nodes from
   *j* on read but that earlier nodes computed becomes a graph input, fed with
   the reference's value (float data), or a constant holding it (indices,
   shapes), as Polygraphy freezes the tensors of cut-away branches.  A
   bisection over *j* finds the latest start that still fails.
3. **fold**: one trial with every tensor that does not depend on the inputs'
   values (``Shape`` arithmetic, constant subgraphs) frozen at the reference's
   value; kept when it still fails (``Constant`` nodes are initializers from
   the start).
4. **linear**: on a result of at most ``linear_limit`` nodes, both passes again
   one node at a time, which finds smaller models in branchy graphs.

Of every failing trial the one with the fewest nodes wins.  "Fails the same
way" is the ``mode``: ``mismatch`` (runs, and an output exceeds the caller's
tolerances), ``compile`` (``nnport.compile`` refuses or fails; the sub-model
must run on the reference, so that a cut the reference rejects is not taken
for the device's failure) or ``crash`` (the runtime's process dies);
``match`` (a regular expression) must also be found in the failure's text
when given; without it a compile failure or crash must have the whole model's
*signature* (error class and the first words of the message, names and numbers
left out; a crash's signal), so that a cut which fails for another reason (an
input of a rank the runtime cannot take) is not taken for the failure.  Each trial runs in a worker process
(``nnport.conformance.trial``),
so a segfault or a hang is a trial result: a hang (``timeout``) counts as not
failing, and the search goes on.

The result is written to ``out_dir``: ``reduced.onnx``, ``inputs.npz`` (its
feeds), ``reference_outputs.npz`` (the reference's outputs on those feeds),
``repro.py`` (the failure reproduced with the runtime's own Python API only,
for an upstream bug report) and ``report.json``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnport.data import save_arrays
from nnport.errors import NnportError

from .compare import Tol
from .debug import Session, feeds_for, prepare, reference_for
from .trial import TrialResult, TrialRunner

MODES = ("mismatch", "compile", "crash")
STRATEGIES = ("bisect", "linear")
LINEAR_LIMIT = 32
"""After bisection, the linear passes run only on a model of at most this many nodes (each costs one trial per node)."""


class ReduceError(NnportError, ValueError):
    """Bad arguments to ``reduce`` (the CLI exits 2)."""


@dataclass(frozen=True)
class ReduceTrial:
    """One candidate sub-model tried on the device."""

    phase: str
    """``whole``, ``outputs``, ``inputs``, ``fold`` (shape arithmetic frozen), ``linear-outputs`` or
    ``linear-inputs``."""
    nodes: int
    failed: bool
    status: str
    """The trial's status (``ok``, ``compile-error``, ``crash``...), ``mismatch``, or ``invalid`` (the reference cannot
    run the cut)."""
    detail: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "nodes": self.nodes,
            "failed": self.failed,
            "status": self.status,
            "detail": self.detail[:1000],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class ReduceResult:
    """What ``reduce`` produced.  ``status``: ``reduced`` or ``not-reproduced`` (the whole model does not fail that
    way)."""

    model: str
    device: str
    mode: str
    strategy: str
    status: str
    message: str
    nodes_before: int
    nodes_after: int
    node_names: tuple[str, ...]
    op_types: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    failure: str
    """How the reduced model fails on the device."""
    trials: tuple[ReduceTrial, ...]
    seconds: float
    files: Mapping[str, str] = field(default_factory=dict)
    proto: Any = field(default=None, repr=False, compare=False)
    """The reduced ``onnx.ModelProto``."""
    feeds: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "reduced" else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "mode": self.mode,
            "strategy": self.strategy,
            "status": self.status,
            "message": self.message,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "node_names": list(self.node_names),
            "op_types": list(self.op_types),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "failure": self.failure,
            "trials": [t.to_dict() for t in self.trials],
            "seconds": round(self.seconds, 3),
            "files": dict(self.files),
        }


@dataclass(frozen=True)
class _State:
    outputs: tuple[str, ...]
    cut: tuple[str, ...]
    nodes: tuple[int, ...]


def reduce(
    model: Any,
    device: str,
    *,
    mode: str = "mismatch",
    strategy: str = "bisect",
    out_dir: str | Path | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    atol: Tol | None = None,
    rtol: Tol | None = None,
    scale_tol: Tol | None = None,
    precision: str = "fp32",
    match: str | None = None,
    same_failure: bool = True,
    linear_limit: int = LINEAR_LIMIT,
    isolate: bool = True,
    timeout_s: float = 300.0,
    threads: int | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReduceResult:
    """Shrink ``model`` to a minimal sub-model that still fails on ``device`` (module docstring).

    Arguments as ``nnport.conformance.debug.first_divergence``; ``mode`` is
    ``mismatch``, ``compile`` or ``crash``; ``strategy`` ``bisect`` (then
    linear on a small result) or ``linear``; ``match`` a regular expression the
    failure's text must contain; without it, ``same_failure`` keeps only
    failures with the whole model's signature (``signature``: the error class
    and the first words of its message, names and numbers left out; the signal
    for a crash); ``out_dir`` where the files go (none written
    when None).  Returns a ``ReduceResult`` whose ``status`` is
    ``not-reproduced`` when the whole model does not fail that way.
    """
    if mode not in MODES:
        raise ReduceError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if strategy not in STRATEGIES:
        raise ReduceError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    pattern = re.compile(match) if match else None
    say = progress or (lambda text: None)
    start = time.perf_counter()
    s = prepare(
        model,
        feeds=feeds,
        seed=seed,
        shapes=shapes,
        reference=reference_for(device),
        precision=precision,
        atol=atol,
        rtol=rtol,
        scale_tol=scale_tol,
    )
    with TrialRunner(
        device, precision=precision, threads=threads, extra=extra, isolate=isolate, timeout_s=timeout_s
    ) as runner:
        r = _Reducer(s, runner, mode, pattern, say, same_failure)
        found = r.run(strategy, linear_limit)
    result = _result(s, device, mode, strategy, found, r.trials, time.perf_counter() - start)
    if out_dir is not None and result.status == "reduced":
        result = write(result, s, out_dir, device)
    return result


class _Reducer:
    def __init__(
        self,
        s: Session,
        runner: TrialRunner,
        mode: str,
        pattern: re.Pattern[str] | None,
        say: Callable[[str], None],
        same_failure: bool = True,
    ) -> None:
        self.s = s
        self.g = s.graph
        self.runner = runner
        self.mode = mode
        self.pattern = pattern
        self.say = say
        self.trials: list[ReduceTrial] = []
        self.memo: dict[tuple[tuple[str, ...], tuple[int, ...]], tuple[bool, str]] = {}
        self.best: _State | None = None
        self.best_failure = ""
        self.candidates = set(s.candidates)
        self.same_failure = same_failure
        self.signature: str | None = None
        g = self.g
        self.constants = [o for node in g.nodes if node.op_type == "Constant" for o in node.output if o in s.values]
        self.folded = [t for t in g.all_tensors() if t not in g.data and t in s.values]

    def state(self, outputs: Sequence[str], cut: Sequence[str], fold: bool = False) -> _State:
        """The sub-model computing ``outputs`` from ``cut``; Constant nodes become initializers, and with ``fold``
        every tensor that does not depend on the inputs' values (shape arithmetic) is frozen too."""
        outputs = tuple(outputs)
        frozen = self.folded if fold else self.constants
        cut = tuple(t for t in dict.fromkeys([*cut, *frozen]) if t not in outputs)
        nodes = tuple(self.g.ancestors(outputs, cut))
        needed = set(outputs).union(*(self.g.reads[i] for i in nodes))
        return _State(outputs, tuple(t for t in cut if t in needed), nodes)

    def fails(self, st: _State, phase: str) -> bool:
        key = (st.outputs, st.nodes)
        if key in self.memo:
            return self.memo[key][0]
        if not st.nodes:
            self.memo[key] = (False, "empty")
            return False
        proto = self.g.submodel(st.outputs, st.cut, self.s.values, name="reduced")
        failed, status, detail, seconds = self._check(proto)
        self.memo[key] = (failed, detail)
        self.trials.append(ReduceTrial(phase, len(st.nodes), failed, status, detail, seconds))
        self.say(
            f"{phase}: {len(st.nodes)} node(s): {'FAILS' if failed else 'passes'} "
            f"({status}{': ' + detail[:120] if detail else ''})"
        )
        if failed and (self.best is None or len(st.nodes) < len(self.best.nodes)):
            self.best, self.best_failure = st, detail
        return failed

    def _check(self, proto: Any) -> tuple[bool, str, str, float]:
        feeds = feeds_for(proto, self.s)
        start = time.perf_counter()
        if self.mode != "mismatch":
            problem = _reference_problem(proto, feeds)
            if problem:
                return False, "invalid", f"the reference cannot run this cut: {problem}", time.perf_counter() - start
        trial = self.runner.run(proto, feeds)
        seconds = time.perf_counter() - start
        verdict = self._verdict(trial, [o.name for o in proto.graph.output])
        if self.same_failure and self.signature is None and verdict[0]:
            self.signature = signature(trial)  # the whole model's failure: what every reduction must keep
        return (*verdict, seconds)

    def _verdict(self, trial: TrialResult, outputs: Sequence[str]) -> tuple[bool, str, str]:
        if self.mode == "mismatch":
            if not trial.ok:
                return False, trial.status, _detail(trial)
            results = self.s.compare(trial.outputs, outputs)
            bad = [r for r in results.values() if not r.passed]
            missing = [n for n in outputs if n not in trial.outputs]
            text = "; ".join(r.summary() for r in bad) + (f"; missing output(s) {missing}" if missing else "")
            failed = bool(bad or missing)
            status = "mismatch" if failed else "ok"
        else:
            wanted = "compile-error" if self.mode == "compile" else "crash"
            failed = trial.status == wanted
            status, text = trial.status, _detail(trial)
            if failed and self.pattern is None and self.signature is not None and signature(trial) != self.signature:
                return False, status, f"(another failure than the whole model's) {text}"
        if failed and self.pattern is not None and not self.pattern.search(text):
            return False, status, f"(does not match {self.pattern.pattern!r}) {text}"
        return failed, status, text

    # -- the passes ----------------------------------------------------------------------

    def _output_positions(self, st: _State) -> list[int]:
        return [i for i in st.nodes if any(o in self.candidates for o in self.g.nodes[i].output)]

    def _fold(self, st: _State) -> bool:
        return any(t in self.folded and t not in self.constants for t in st.cut)

    def _at_output(self, i: int, st: _State) -> _State:
        outs = [o for o in self.g.nodes[i].output if o in self.candidates]
        return self.state(outs, st.cut, fold=self._fold(st))

    def _at_input(self, j: int, st: _State) -> _State:
        keep = [i for i in st.nodes if i >= st.nodes[j]]
        return self.state(st.outputs, [*self.g.boundary(keep), *st.cut], fold=self._fold(st))

    def outputs_pass(self, st: _State, linear: bool) -> _State:
        positions = self._output_positions(st)
        phase = "linear-outputs" if linear else "outputs"
        if linear:
            for i in reversed(positions):
                self.fails(self._at_output(i, st), phase)
            return self.best or st
        good, bad = -1, len(positions)  # index len(positions): the current state, which fails
        while bad - good > 1:
            mid = (good + bad) // 2
            if self.fails(self._at_output(positions[mid], st), phase):
                bad = mid
            else:
                good = mid
        return self.best or st

    def inputs_pass(self, st: _State, linear: bool) -> _State:
        phase = "linear-inputs" if linear else "inputs"
        n = len(st.nodes)
        if linear:
            for j in range(1, n):
                self.fails(self._at_input(j, st), phase)
            return self.best or st
        bad, good = 0, n  # start 0: the current state (fails); start n: nothing left
        while good - bad > 1:
            mid = (good + bad) // 2
            if self.fails(self._at_input(mid, st), phase):
                bad = mid
            else:
                good = mid
        return self.best or st

    def run(self, strategy: str, linear_limit: int) -> dict[str, Any]:
        whole = self.state(self.g.outputs, ())
        proto = self.s.model.proto
        failed, status, detail, seconds = self._check(proto)
        self.trials.append(ReduceTrial("whole", len(self.g), failed, status, detail, seconds))
        self.say(
            f"whole model: {len(self.g)} node(s): {'FAILS' if failed else 'passes'} "
            f"({status}{': ' + detail[:160] if detail else ''})"
        )
        if not failed:
            what = {"mismatch": "agrees with the reference", "compile": "compiles", "crash": "does not crash"}[
                self.mode
            ]
            return {
                "status": "not-reproduced",
                "message": f"the failure does not reproduce on the whole model: it {what} on the device ({status})"
                + (f"; {detail[:300]}" if detail else ""),
                "state": whole,
                "failure": detail,
            }
        self.best, self.best_failure = whole, detail
        self.memo[(whole.outputs, whole.nodes)] = (True, detail)
        st = whole
        if strategy == "bisect":
            st = self.outputs_pass(st, linear=False)
            st = self.inputs_pass(st, linear=False)
        folded = self.state(st.outputs, st.cut, fold=True)
        if len(folded.nodes) < len(st.nodes) and self.fails(folded, "fold"):
            st = folded
        if strategy == "linear" or len(st.nodes) <= linear_limit:
            st = self.outputs_pass(st, linear=True)
            st = self.inputs_pass(st, linear=True)
        st = self.best or st
        return {
            "status": "reduced",
            "message": f"{len(st.nodes)} of {len(self.g)} node(s) still fail ({self.mode})",
            "state": st,
            "failure": self.best_failure,
        }


def signature(trial: TrialResult) -> str:
    """What makes two failures "the same": the status, the error class and the first words of the message
    with quoted names, bracketed lists and numbers left out (a crash: its signal)."""
    if trial.status == "crash":
        m = re.search(r"signal \w+|exited with status -?\d+", trial.error)
        return f"crash {m.group(0) if m else ''}".strip()
    if trial.status in ("ok", "timeout"):
        return trial.status
    text = re.sub(r"^backend '[^']*', device '[^']*': ", "", trial.error)
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\([^)]*\)|-?\d+(\.\d+)?", "_", text)
    return " ".join([trial.status, trial.error_type, *text.split()[:6]])


def _detail(trial: TrialResult) -> str:
    if trial.ok:
        return ""
    return f"{trial.error_type}: {trial.error}" if trial.error_type else trial.error


def _reference_problem(proto: Any, feeds: Mapping[str, np.ndarray]) -> str:
    """Why ONNX Runtime cannot run ``proto`` on ``feeds`` ("" when it can)."""
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, dict(feeds))
    except Exception as exc:
        return " ".join(str(exc).split())[:300]
    return ""


def _result(
    s: Session,
    device: str,
    mode: str,
    strategy: str,
    found: dict[str, Any],
    trials: Sequence[ReduceTrial],
    seconds: float,
) -> ReduceResult:
    g = s.graph
    st: _State = found["state"]
    proto = g.submodel(st.outputs, st.cut, s.values, name="reduced") if found["status"] == "reduced" else s.model.proto
    feeds = feeds_for(proto, s)
    return ReduceResult(
        model=s.model.name,
        device=device,
        mode=mode,
        strategy=strategy,
        status=found["status"],
        message=found["message"],
        nodes_before=len(g),
        nodes_after=len(st.nodes),
        node_names=tuple(g.names[i] for i in st.nodes),
        op_types=tuple(g.nodes[i].op_type for i in st.nodes),
        inputs=tuple(feeds),
        outputs=tuple(o.name for o in proto.graph.output),
        failure=found["failure"],
        trials=tuple(trials),
        seconds=seconds,
        proto=proto,
        feeds=feeds,
    )


# -- the files ------------------------------------------------------------------------------


def write(result: ReduceResult, s: Session, out_dir: str | Path, device: str) -> ReduceResult:
    """Write ``reduced.onnx``, ``inputs.npz``, ``reference_outputs.npz``, ``repro.py`` and ``report.json``."""
    import dataclasses

    import onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "model": out / "reduced.onnx",
        "inputs": out / "inputs.npz",
        "reference_outputs": out / "reference_outputs.npz",
        "repro": out / "repro.py",
        "report": out / "report.json",
    }
    onnx.save(result.proto, str(files["model"]))
    save_arrays(files["inputs"], {k: np.asarray(v) for k, v in result.feeds.items()})
    save_arrays(files["reference_outputs"], {k: np.asarray(s.values[k]) for k in result.outputs})
    files["repro"].write_text(repro_script(result, device, s))
    result = dataclasses.replace(result, files={k: str(v) for k, v in files.items()})
    files["report"].write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _tolerances(result: ReduceResult, s: Session) -> tuple[float, float]:
    """One (atol, rtol) for the repro script: the effective ones the outputs were judged with."""
    from .compare import Comparator

    kw = {k: v for k, v in s.tolerances.items()}
    c = Comparator(precision=s.comparator.precision, **{k: v for k, v in kw.items() if not isinstance(v, Mapping)})
    atol = rtol = 0.0
    for name in result.outputs:
        tol = c.tolerance(name)
        ref = np.asarray(s.values[name]).astype(np.float64)
        finite = ref[np.isfinite(ref)]
        scale = float(np.abs(finite).max()) if finite.size else 0.0
        atol = max(atol, tol.atol, tol.scale_tol * scale)
        rtol = max(rtol, tol.rtol)
    return (atol if math.isfinite(atol) else 0.0), (rtol if math.isfinite(rtol) else 0.0)


_COMMON = '''"""Reproduces an nnport-reduced failure ({mode}) on {device} with the runtime's own Python API.

{what}
Files beside this script: reduced.onnx ({nodes} node(s): {ops}), inputs.npz (its inputs),
reference_outputs.npz (ONNX Runtime CPU's outputs on those inputs).
Generated by `nnport reduce`; nnport itself is not needed to run it.
"""
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = HERE / "reduced.onnx"
INPUTS = dict(np.load(HERE / "inputs.npz"))
REFERENCE = dict(np.load(HERE / "reference_outputs.npz"))
ATOL, RTOL = {atol!r}, {rtol!r}  # an element fails only when it exceeds both


def check(got):
    failed = False
    for name, ref in REFERENCE.items():
        out = np.asarray(got[name])
        if out.size == ref.size and out.shape != ref.shape:
            out = out.reshape(ref.shape)
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        bad = (diff > ATOL) & (diff > RTOL * np.abs(ref.astype(np.float64)))
        print(f"{{name}}: max |error| {{diff.max():.4g}}, {{int(bad.sum())}} of {{ref.size}} element(s) "
              f"beyond atol={{ATOL:.3g}} and rtol={{RTOL:.3g}}")
        failed = failed or bool(bad.any())
    print("MISMATCH" if failed else "agrees with the reference")
    return failed

'''

_ORT = """import onnxruntime as ort

session = ort.InferenceSession(str(MODEL), providers=[{provider!r}])
names = [o.name for o in session.get_outputs()]
got = dict(zip(names, session.run(names, INPUTS)))
raise SystemExit(1 if check(got) else 0)
"""

_OPENVINO = """import openvino as ov

core = ov.Core()
model = core.read_model(str(MODEL))  # compiling raises here for a compile failure
compiled = core.compile_model(model, {ov_device!r}, {{"INFERENCE_PRECISION_HINT": "f32"}})
result = compiled(INPUTS)
got = {{name: result[compiled.output(name)] for name in REFERENCE}}
raise SystemExit(1 if check(got) else 0)
"""

_NCNN = """import importlib.util
import shutil
import subprocess
import tempfile

import ncnn

# ONNX -> ncnn with pnnx (pip install --no-deps pnnx); ncnn names the blobs in0.. / out0.. in ONNX order
INPUT_NAMES = {inputs!r}
OUTPUT_NAMES = {outputs!r}
pnnx = shutil.which("pnnx")
if pnnx is None:
    spec = importlib.util.find_spec("pnnx")
    pnnx = str(Path(spec.origin).parent / "pnnx") if spec and spec.origin else "pnnx"
work = Path(tempfile.mkdtemp(prefix="repro-ncnn-"))
shutil.copy(MODEL, work / "model.onnx")
shape = ",".join("[" + ",".join(str(d) for d in INPUTS[n].shape) + "]f32" for n in INPUT_NAMES)
# a crash/refusal shows here
subprocess.run([pnnx, "model.onnx", f"inputshape={{shape}}", "fp16=0"], cwd=work, check=True)
net = ncnn.Net()
net.opt.use_vulkan_compute = {vulkan!r}
net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
param = work / "model.ncnn.param"
layers = [ln.split()[0] for ln in param.read_text().splitlines()[2:] if ln.split()]
unknown = sorted({{layer for layer in layers if ncnn.layer_to_index(layer) < 0}})
if unknown:
    raise SystemExit(f"pnnx left layer(s) {{unknown}} that ncnn does not have: ncnn cannot load {{param}}")
if net.load_param(str(param)) != 0 or net.load_model(str(work / "model.ncnn.bin")) != 0:
    raise SystemExit(f"ncnn cannot load {{param}}")
ex = net.create_extractor()
for i, name in enumerate(INPUT_NAMES):
    a = np.ascontiguousarray(INPUTS[name].astype(np.float32))
    ex.input(f"in{{i}}", ncnn.Mat(a[0] if a.ndim > 1 and a.shape[0] == 1 else a).clone())  # pnnx drops a batch of 1
got = {{}}
for i, name in enumerate(OUTPUT_NAMES):
    ret, mat = ex.extract(f"out{{i}}")
    if ret != 0:
        raise SystemExit(f"ncnn failed to compute out{{i}} ({{name}}): status {{ret}}")
    got[name] = np.array(mat)
raise SystemExit(1 if check(got) else 0)
"""

_NNPORT = """# {device}'s runtime API is not known to nnport: this reproduces through nnport.
import nnport

compiled = nnport.compile(str(MODEL), {device!r}, fallback=False)
raise SystemExit(1 if check(compiled.run(INPUTS)) else 0)
"""


def repro_script(result: ReduceResult, device: str, s: Session) -> str:
    """A script reproducing ``result`` with the device's runtime API (ONNX Runtime, OpenVINO, ncnn; nnport
    otherwise)."""
    atol, rtol = _tolerances(result, s)
    what = {
        "mismatch": "Exit status 1 when an output exceeds the tolerances below.",
        "compile": "The failure is in compiling/converting the model: the script stops there with the runtime's error.",
        "crash": "The runtime's process dies (a segfault or abort) while compiling or running the model.",
    }[result.mode]
    ops = ", ".join(dict.fromkeys(result.op_types))
    head = _COMMON.format(
        mode=result.mode, device=device, what=what, nodes=result.nodes_after, ops=ops, atol=atol, rtol=rtol
    )
    backend, _, local = device.partition(":")
    if backend == "onnxruntime":
        from nnport.manager import get_plugin_manager
        from nnport.selection import candidates

        dev = candidates(get_plugin_manager(), device)[0]
        return head + _ORT.format(provider=dev.properties.get("provider", "CPUExecutionProvider"))
    if backend == "openvino":
        return head + _OPENVINO.format(ov_device=local or "CPU")
    if backend == "ncnn":
        return head + _NCNN.format(
            inputs=list(result.inputs), outputs=list(result.outputs), vulkan=local.startswith("vulkan")
        )
    return head + _NNPORT.format(device=device)


def to_text(result: ReduceResult) -> str:
    """The terminal report."""
    lines = [
        f"nnport reduce: {result.model} on {result.device} (mode {result.mode}, strategy {result.strategy})",
        f"{result.status}: {result.message}",
    ]
    if result.status == "reduced":
        lines.append(
            f"reduced model: {result.nodes_after} of {result.nodes_before} node(s): "
            + ", ".join(f"{n} ({op})" for n, op in list(zip(result.node_names, result.op_types))[:12])
            + (" ..." if result.nodes_after > 12 else "")
        )
        lines.append(f"  inputs: {list(result.inputs)}; outputs: {list(result.outputs)}")
        lines.append(f"  fails: {result.failure[:500]}")
    by_phase: dict[str, list[ReduceTrial]] = {}
    for t in result.trials:
        by_phase.setdefault(t.phase, []).append(t)
    lines.append(
        "trials: "
        + ", ".join(f"{phase} {len(ts)}" for phase, ts in by_phase.items())
        + f" ({len(result.trials)} in all; "
        f"{sum(1 for t in result.trials if t.status in ('crash', 'timeout'))} crash/timeout)"
    )
    for name, path in result.files.items():
        lines.append(f"  wrote {name}: {path}")
    lines.append(f"{result.seconds:.2f} s")
    return "\n".join(lines)
