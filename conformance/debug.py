"""``nnport debug``: the first node where a device's result leaves the reference's.

``first_divergence(model, device)`` runs the reference (ONNX Runtime; onnx's
``ReferenceEvaluator`` when the device under test *is* ONNX Runtime CPU) once
with every intermediate tensor exposed, runs the device, compares, and names
the first node whose output diverges while its inputs still agree: its name,
op type, attributes, input and output statistics and the error.

Two ways to see a device's intermediate tensors:

* **the cut path** (generic, the ground truth): cut the ONNX graph so that the
  tensors live after node *k* in topological order become the graph's outputs
  (everything downstream dropped; ``If``/``Loop`` nodes kept whole), compile
  that prefix on the device with ``nnport.compile(..., fallback=False)`` and
  compare it.  "Some live tensor after node *k* diverges" is false before the
  culprit and true from it on, so a bisection over the positions finds it in
  about log2(N) compiles.  It needs nothing but the Backend contract, so it
  works for ncnn (whose converter renames every tensor: the cut tensors are
  simply its outputs) and for any vendor's backend.
* **the fast path** (optional): a backend that implements
  ``Backend.intermediates`` (hook ``nnport_intermediates``) exposes many
  tensors from one compile (ONNX Runtime: extra graph outputs; OpenVINO:
  ``Model.add_outputs``).  That gives the error at every node (the curve in
  the HTML report) from one compile, but a marked tensor can change what the
  runtime fuses, so the node it points at is confirmed on the cut path (two
  compiles); when the cut path disagrees, the bisection decides.

Tolerances are the caller's, exactly (``nnport.conformance.compare``); a
mapping may name graph outputs or intermediate tensors, with ``""`` as the
default.  Every device trial runs in a worker process by default, so a crash
in a prefix is a result (see ``nnport.conformance.trial``).
"""

from __future__ import annotations

import html
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnport.errors import InputError, NnportError

from ._graph import Graph
from .compare import Comparator, OutputResult, Tol
from .trial import TrialResult, TrialRunner

ORACLE = "onnx.reference"
REFERENCE_DEVICE = "onnxruntime:cpu"


class DebugError(NnportError, ValueError):
    """The debug session cannot start: the reference cannot run the model, bad feeds, no tensor to compare.

    A problem with the input (the model or the feeds): the CLI exits 2."""


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorStats:
    """Summary statistics of one array (float64 maths; NaN/Inf counted, not averaged)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    min: float
    max: float
    mean: float
    std: float
    nonfinite: int = 0

    @classmethod
    def of(cls, name: str, value: Any) -> TensorStats:
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub" or arr.size == 0:
            return cls(name, tuple(arr.shape), str(arr.dtype), math.nan, math.nan, math.nan, math.nan)
        a = arr.astype(np.float64)
        finite = a[np.isfinite(a)]
        nonfinite = int(a.size - finite.size)
        if not finite.size:
            return cls(name, tuple(arr.shape), str(arr.dtype), math.nan, math.nan, math.nan, math.nan, nonfinite)
        return cls(
            name,
            tuple(arr.shape),
            str(arr.dtype),
            float(finite.min()),
            float(finite.max()),
            float(finite.mean()),
            float(finite.std()),
            nonfinite,
        )

    def text(self) -> str:
        if math.isnan(self.min):
            return f"{self.dtype}{list(self.shape)}"
        extra = f" nonfinite={self.nonfinite}" if self.nonfinite else ""
        return (
            f"{self.dtype}{list(self.shape)} min={self.min:.4g} max={self.max:.4g} mean={self.mean:.4g} "
            f"std={self.std:.4g}{extra}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "min": _num(self.min),
            "max": _num(self.max),
            "mean": _num(self.mean),
            "std": _num(self.std),
            "nonfinite": self.nonfinite,
        }


@dataclass(frozen=True)
class TensorCheck:
    """One tensor of the device against the reference: where it is, how it was seen, the comparison."""

    tensor: str
    node_index: int
    node: str
    op_type: str
    source: str
    """``fast`` (the backend's intermediates), ``cut`` (a compiled prefix) or ``whole`` (the whole model's output)."""
    result: OutputResult
    device_stats: TensorStats | None = None
    reference_stats: TensorStats | None = None

    @property
    def passed(self) -> bool:
        return self.result.passed

    @property
    def relative_error(self) -> float:
        """Largest absolute error over the reference's largest magnitude (what the HTML plot shows)."""
        r = self.result
        if r.shape is None or math.isnan(r.max_abs_error):
            return math.inf
        return r.max_abs_error / r.ref_scale if r.ref_scale else (0.0 if r.max_abs_error == 0 else math.inf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "node_index": self.node_index,
            "node": self.node,
            "op_type": self.op_type,
            "source": self.source,
            "passed": self.passed,
            "relative_error": _num(self.relative_error),
            "comparison": self.result.to_dict(),
            "device_stats": self.device_stats.to_dict() if self.device_stats else None,
            "reference_stats": self.reference_stats.to_dict() if self.reference_stats else None,
        }


@dataclass(frozen=True)
class Probe:
    """One compile on the device: a cut prefix (``cut``), the whole model (``whole``) or the fast path (``fast``)."""

    path: str
    position: int
    """Index into ``DebugReport.positions`` (-1 for the whole model and the fast path)."""
    node_index: int
    node: str
    tensors: tuple[str, ...]
    status: str
    """``agree``, ``diverge``, or ``error`` (the trial's status and message are in ``error``)."""
    seconds: float
    error: str = ""
    nodes: int = 0
    """Nodes in the compiled model."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "position": self.position,
            "node_index": self.node_index,
            "node": self.node,
            "tensors": list(self.tensors),
            "status": self.status,
            "seconds": round(self.seconds, 4),
            "error": self.error,
            "nodes": self.nodes,
        }


@dataclass(frozen=True)
class DivergentNode:
    """The first node whose output diverges while its inputs agree."""

    index: int
    """Position in the graph's topological order."""
    name: str
    op_type: str
    attributes: Mapping[str, Any]
    inputs: tuple[TensorStats, ...]
    """Reference statistics of the node's inputs (weights included)."""
    input_checks: tuple[TensorCheck, ...]
    """The device's values of the node's data inputs against the reference's (they agree)."""
    outputs: tuple[TensorCheck, ...]
    """The node's outputs on the device against the reference's (at least one diverges)."""
    found_by: str
    """``cut`` (bisection), or ``fast+cut`` (the fast path pointed here and the cut path confirmed it)."""
    input_kinds: Mapping[str, str] = field(default_factory=dict)
    """Input name -> ``graph input`` (the same feed on both sides), ``weight``, ``constant`` (computed from no input) or
    ``data``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "op_type": self.op_type,
            "attributes": {k: _jsonable(v) for k, v in self.attributes.items()},
            "inputs": [s.to_dict() for s in self.inputs],
            "input_kinds": dict(self.input_kinds),
            "input_checks": [c.to_dict() for c in self.input_checks],
            "outputs": [c.to_dict() for c in self.outputs],
            "found_by": self.found_by,
        }


@dataclass(frozen=True)
class DebugReport:
    """What ``first_divergence`` found.  ``status``: ``diverges``, ``agrees``, ``failed`` or ``inconclusive``."""

    model: str
    device: str
    reference: str
    status: str
    message: str
    node: DivergentNode | None
    outputs: tuple[TensorCheck, ...]
    """The whole model's outputs against the reference's."""
    checks: tuple[TensorCheck, ...]
    """Every intermediate tensor compared (fast path and cut probes), in graph order: the error curve."""
    probes: tuple[Probe, ...]
    compiles: int
    """Models compiled on the device (the whole model, the fast path, every cut prefix)."""
    seconds: float
    nodes: int
    positions: int
    """Candidate positions: nodes with a float output that depends on the inputs' values."""
    fast_path: str
    """``used``, ``not offered`` (the backend has none), ``off`` or the reason it failed."""
    tolerance: str
    notes: tuple[str, ...] = ()
    largest_error: TensorCheck | None = None
    """The tensor with the largest relative error seen (for a device that agrees everywhere)."""
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when the device agrees, 1 otherwise (CI gates on it)."""
        return 0 if self.status == "agrees" else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "reference": self.reference,
            "status": self.status,
            "message": self.message,
            "node": self.node.to_dict() if self.node else None,
            "outputs": [c.to_dict() for c in self.outputs],
            "checks": [c.to_dict() for c in self.checks],
            "probes": [p.to_dict() for p in self.probes],
            "compiles": self.compiles,
            "seconds": round(self.seconds, 3),
            "nodes": self.nodes,
            "positions": self.positions,
            "fast_path": self.fast_path,
            "tolerance": self.tolerance,
            "notes": list(self.notes),
            "largest_error": self.largest_error.to_dict() if self.largest_error else None,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _num(v: float) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


# -- preparing a session ------------------------------------------------------------------


@dataclass
class Session:
    """The model at static shapes, its feeds, the reference's value of every tensor and the comparator."""

    model: Any
    """``nnport.Model`` with every input dim fixed."""
    graph: Graph
    feeds: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    reference: str
    comparator: Comparator
    tolerances: dict[str, Any]
    candidates: list[str]
    """Float tensors that depend on the inputs' values, in topological order."""
    seconds: float = 0.0

    def compare(self, got: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, OutputResult]:
        """Compare ``got[name]`` with the reference for each of ``names`` (tolerances restricted to them)."""
        kw = {k: _restrict(v, names) for k, v in self.tolerances.items()}
        comparator = Comparator(precision=self.comparator.precision, **kw)
        out: dict[str, OutputResult] = {}
        for name in names:
            if name in got:
                out[name] = comparator.compare_output(name, np.asarray(got[name]), np.asarray(self.values[name]))
        return out

    def check(self, name: str, result: OutputResult, source: str, got: Any = None) -> TensorCheck:
        p = self.graph.producer.get(name, -1)
        node = self.graph.names[p] if p >= 0 else name
        op = self.graph.nodes[p].op_type if p >= 0 else "input"
        return TensorCheck(
            name,
            p,
            node,
            op,
            source,
            result,
            TensorStats.of(name, got) if got is not None else None,
            TensorStats.of(name, self.values[name]),
        )


def feeds_for(model: Any, s: Session) -> dict[str, np.ndarray]:
    """Feeds of a (sub-)model: the session's feeds, and the reference's values for tensors that became inputs."""
    inits = {i.name for i in model.graph.initializer}
    return {
        i.name: s.feeds[i.name] if i.name in s.feeds else s.values[i.name]
        for i in model.graph.input
        if i.name not in inits
    }


def _restrict(value: Any, names: Sequence[str]) -> Any:
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k == "" or k in names}
    return value


def offers_intermediates(device: str) -> bool:
    """Whether ``device``'s backend may answer ``nnport_intermediates``: it overrides ``Backend.intermediates``,
    or some plugin besides the core default implements the hook (without a trial)."""
    from nnport.backend import Backend
    from nnport.manager import get_plugin_manager
    from nnport.selection import candidates

    pm = get_plugin_manager()
    try:
        backend = pm.backend(candidates(pm, device)[0].backend)
    except NnportError:
        return True  # let the trial say what is wrong
    if type(backend).intermediates is not Backend.intermediates:
        return True
    return any(impl.plugin_name != "defaults" for impl in pm.hook.nnport_intermediates.get_hookimpls())


def reference_for(device: str) -> str:
    """ONNX Runtime CPU judges every device but itself; onnx's ReferenceEvaluator judges ONNX Runtime CPU."""
    return ORACLE if device.lower() == REFERENCE_DEVICE else REFERENCE_DEVICE


def prepare(
    model: Any,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    reference: str = REFERENCE_DEVICE,
    precision: str = "fp32",
    atol: Tol | None = None,
    rtol: Tol | None = None,
    scale_tol: Tol | None = None,
) -> Session:
    """Load ``model``, fix every input dim (``shapes``, then the feeds' shapes), run the reference on every tensor."""
    import nnport
    from nnport.compiled import feed_problems
    from nnport.data import random_feeds
    from nnport.shapes import fix_shapes

    start = time.perf_counter()
    loaded = fix_shapes(nnport.load(model), shapes)
    if loaded.format != "onnx":
        raise DebugError(f"debug cuts ONNX graphs; {loaded.name!r} is {loaded.format}")
    if feeds is None:
        feeds = random_feeds(loaded.inputs, seed=seed)
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    open_dims = {s.name: tuple(feeds[s.name].shape) for s in loaded.inputs if s.is_dynamic and s.name in feeds}
    if open_dims:
        loaded = fix_shapes(loaded, open_dims)  # every cut compiles at the feeds' shapes
    problems = [
        s
        for s in loaded.inputs
        if s.name not in feeds or feeds[s.name].shape != tuple(s.shape) or feeds[s.name].dtype != s.dtype
    ]
    if problems or set(feeds) - set(loaded.input_names):
        raise InputError(feed_problems(loaded.inputs, feeds))
    graph = Graph(loaded.proto)
    tensors = graph.all_tensors()
    try:
        values = reference_values(loaded, feeds, tensors, reference)
    except NnportError as exc:
        raise DebugError(f"the reference ({reference}) cannot run {loaded.name!r}: {exc}") from exc
    except Exception as exc:
        raise DebugError(
            f"the reference ({reference}) cannot run {loaded.name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    values.update(feeds)
    tolerances: dict[str, Any] = {
        k: v for k, v in {"atol": atol, "rtol": rtol, "scale_tol": scale_tol}.items() if v is not None
    }
    comparator = Comparator(precision=precision, **tolerances)
    comparator.check_names(list(values))  # a mapping may name any tensor; a typo raises
    candidates = [t for t in tensors if t in graph.data and t in values and np.asarray(values[t]).dtype.kind == "f"]
    return Session(
        loaded, graph, feeds, values, reference, comparator, tolerances, candidates, time.perf_counter() - start
    )


def reference_values(
    model: Any, feeds: Mapping[str, np.ndarray], tensors: Sequence[str], reference: str = REFERENCE_DEVICE
) -> dict[str, np.ndarray]:
    """The reference's value of each of ``tensors`` (and the graph outputs), from one run."""
    names = list(dict.fromkeys([*tensors, *model.output_names]))
    if reference == ORACLE:
        from .oracle import evaluate  # onnx.reference with the corrected kernels (conformance/oracle.py)

        return evaluate(model, feeds, names)
    from nnport.manager import get_plugin_manager
    from nnport.selection import candidates
    from nnport.types import CompileOptions

    pm = get_plugin_manager()
    dev = candidates(pm, reference)[0]
    backend = pm.backend(dev.backend)
    got = pm.hook.nnport_intermediates(
        backend=backend, model=model, device=dev, options=CompileOptions(), tensors=names, feeds=dict(feeds)
    )
    if got is None:
        raise DebugError(f"the reference device {reference} exposes no intermediate tensors (nnport_intermediates)")
    missing = [n for n in model.output_names if n not in got]
    if missing:
        raise DebugError(f"the reference {reference} did not return output(s) {missing}")
    return {n: np.asarray(v) for n, v in got.items()}


# -- the search ---------------------------------------------------------------------------


def first_divergence(
    model: Any,
    device: str,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    atol: Tol | None = None,
    rtol: Tol | None = None,
    scale_tol: Tol | None = None,
    precision: str = "fp32",
    reference: str | None = None,
    fast: bool = True,
    isolate: bool = True,
    timeout_s: float = 600.0,
    threads: int | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DebugReport:
    """Find the first node where ``device`` diverges from the reference (module docstring).

    ``model``: a path, ONNX bytes, ``onnx.ModelProto`` or ``nnport.Model``;
    ``device``: one device id (no fallback).  ``feeds`` default to nnport's
    seeded inputs (``seed``); ``shapes`` fixes symbolic dims first, and any dim
    still open is fixed to the feeds' shapes.  ``atol``/``rtol``/``scale_tol``
    are passed to ``Comparator`` as given (floats or ``{tensor: value}`` with
    ``""`` as the default).  ``fast=False`` skips the backend's intermediates
    even where offered.  ``isolate=False`` compiles in this process (no crash
    protection).  ``extra`` is ``CompileOptions.extra`` for the device.
    Raises ``DebugError`` when the reference cannot run the model.
    """
    say = progress or (lambda text: None)
    start = time.perf_counter()
    reference = reference or reference_for(device)
    s = prepare(
        model,
        feeds=feeds,
        seed=seed,
        shapes=shapes,
        reference=reference,
        precision=precision,
        atol=atol,
        rtol=rtol,
        scale_tol=scale_tol,
    )
    say(
        f"reference {reference}: {len(s.values)} tensors in {s.seconds:.2f} s; {len(s.candidates)} float "
        f"data tensors over {len(s.graph)} nodes"
    )
    with TrialRunner(
        device, precision=precision, threads=threads, extra=extra, isolate=isolate, timeout_s=timeout_s
    ) as runner:
        search = _Search(s, runner, device, say)
        found = search.run(fast)
    search.timings["reference_s"] = s.seconds
    return search.report(found, reference, time.perf_counter() - start)


class _Search:
    def __init__(self, s: Session, runner: TrialRunner, device: str, say: Callable[[str], None]) -> None:
        self.s = s
        self.runner = runner
        self.device = device
        self.say = say
        g = s.graph
        candidate_set = set(s.candidates)
        self.positions = [i for i, node in enumerate(g.nodes) if any(o in candidate_set for o in node.output)]
        self.probes: list[Probe] = []
        self.checks: dict[tuple[str, str], TensorCheck] = {}
        self.known: dict[int, bool | None] = {-1: False}
        self.cut_results: dict[int, dict[str, tuple[OutputResult, np.ndarray]]] = {}
        """Per cut position: each compared tensor's result and the device's value."""
        self.fast_values: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        self.fast_status = "off"
        self.timings: dict[str, float] = {}

    # one compile of the device, recorded
    def _probe(
        self, path: str, position: int, model: Any, tensors: Sequence[str], fast_tensors: Sequence[str] | None = None
    ) -> tuple[TrialResult, dict[str, OutputResult]]:
        feeds = feeds_for(model, self.s)
        trial = self.runner.run(model, feeds, tensors=fast_tensors)
        results: dict[str, OutputResult] = {}
        if trial.ok:
            results = self.s.compare(trial.outputs, [t for t in tensors if t in trial.outputs])
            status = "agree" if all(r.passed for r in results.values()) else "diverge"
            for name, r in results.items():
                self.checks[(name, path)] = self.s.check(name, r, path)  # statistics only for the reported node (_node)
            if path == "cut":
                self.cut_results[position] = {n: (r, trial.outputs[n]) for n, r in results.items()}
            elif path == "fast":
                self.fast_values = {n: trial.outputs[n] for n in results}
        else:
            status = "error"
        node_index = self.positions[position] if 0 <= position < len(self.positions) else -1
        node = (
            self.s.graph.names[node_index]
            if node_index >= 0
            else ("(whole model)" if path == "whole" else "(every tensor)")
        )
        self.probes.append(
            Probe(
                path,
                position,
                node_index,
                node,
                tuple(tensors),
                status,
                trial.seconds,
                "" if trial.ok else trial.describe(),
                len(model.graph.node),
            )
        )
        if trial.status != "unsupported":
            self.say(
                f"{path} probe{' after ' + node if path == 'cut' else ''}: {status} ({trial.seconds:.2f} "
                f"s){'' if trial.ok else ' ' + trial.describe()[:200]}"
            )
        return trial, results

    def cut(self, position: int) -> bool | None:
        """Does some live float tensor after position ``position`` diverge?  None when the prefix would not compile or
        run."""
        if position in self.known:
            return self.known[position]
        g = self.s.graph
        tensors = g.frontier(self.positions[position], self.s.candidates)
        sub = g.submodel(tensors, (), self.s.values, name=f"cut_{position}")
        trial, results = self._probe("cut", position, sub, tensors)
        verdict = None if not trial.ok or len(results) != len(tensors) else not all(r.passed for r in results.values())
        self.known[position] = verdict
        return verdict

    def run(self, fast: bool) -> dict[str, Any]:
        s = self.s
        t = time.perf_counter()
        whole, out_results = self._probe("whole", -1, s.model.proto, s.model.output_names)
        self.timings["whole_s"] = time.perf_counter() - t
        outputs = tuple(self.checks[(n, "whole")] for n in s.model.output_names if (n, "whole") in self.checks)
        result: dict[str, Any] = {"outputs": outputs, "node": None}
        if not whole.ok:
            advice = ""
            if "disagree" in whole.error:  # a backend that checks its own conversion refused a wrong one
                advice = "; to find where, turn the backend's own check off (ncnn: --option ncnn_verify=false)"
            result.update(
                status="failed",
                message=f"{self.device} cannot run the whole model ({whole.describe()}); "
                f"nothing to compare (`nnport reduce --mode compile` or `--mode crash` isolates such a failure)"
                f"{advice}",
            )
            return result
        if fast and not offers_intermediates(self.device):
            self.fast_status = "not offered"
        elif fast:
            t = time.perf_counter()
            trial, _ = self._probe("fast", -1, s.model.proto, s.candidates, fast_tensors=s.candidates)
            self.timings["fast_s"] = time.perf_counter() - t
            if trial.status == "unsupported":
                self.fast_status = "not offered"
                self.runner.compiles -= 1  # the backend compiled nothing
                self.probes.pop()
            elif not trial.ok:
                self.fast_status = f"failed: {trial.describe()[:300]}"
            else:
                missing = [n for n in s.candidates if n not in trial.outputs]
                self.fast_status = "used" + (
                    f" ({len(missing)} of {len(s.candidates)} tensors not exposed: cut path there)" if missing else ""
                )
        diverging_outputs = [c for c in outputs if not c.passed]
        if not diverging_outputs:
            fast_bad = [c for (n, src), c in self.checks.items() if src == "fast" and not c.passed]
            if fast_bad:
                first = min(fast_bad, key=lambda c: c.node_index)
                self.notes.append(
                    f"the outputs agree, but with intermediates marked the fast path sees {len(fast_bad)} "
                    "tensor(s) diverge, first "
                    f"{first.tensor!r} at node {first.node!r} ({first.result.summary()[:200]})"
                )
            result.update(status="agrees", message="no divergence above tolerance")
            return result
        float_bad = [c for c in diverging_outputs if np.asarray(s.values[c.tensor]).dtype.kind == "f"]
        if not float_bad:
            self.notes.append(
                f"only non-float output(s) {[c.tensor for c in diverging_outputs]} differ; float tensors "
                "are what the search compares"
            )
        if not self.positions:
            result.update(
                status="inconclusive", message="the model has no float tensor computed from its inputs to compare"
            )
            return result
        last = len(self.positions) - 1
        if set(s.graph.frontier(self.positions[last], s.candidates)) <= {c.tensor for c in outputs} and float_bad:
            self.known[last] = True
        t = time.perf_counter()
        found_by = "cut"
        hint = self._fast_hint()
        lo, hi = -1, last
        if hint is not None:
            at, before = self.cut(hint), self.cut(hint - 1) if hint > 0 else False
            if at and before is False:
                lo, hi, found_by = hint - 1, hint, "fast+cut"
            else:
                verdict = (
                    "does not confirm it"
                    if at is not None and before is not None
                    else "could not compile the prefixes there"
                )
                self.notes.append(
                    f"the fast path pointed at node {s.graph.names[self.positions[hint]]!r}; the cut path {verdict}: "
                    "bisecting"
                )
                if at:
                    hi = hint
                elif at is False:
                    lo = hint
        lo, hi = self._bisect(lo, hi)
        self.timings["search_s"] = time.perf_counter() - t
        if self.known.get(hi) is not True:
            result.update(
                status="inconclusive",
                message="no prefix of the model diverges on the cut path, though the whole model does "
                "(the divergence shows only when the whole graph is compiled, e.g. a fusion across the last nodes)",
            )
            return result
        if hi - lo > 1:
            names = [s.graph.names[self.positions[p]] for p in range(lo + 1, hi + 1)]
            result.update(
                status="inconclusive",
                message=f"the divergence starts within nodes {names[:8]}{'...' if len(names) > 8 else ''}: "
                "prefixes ending between them did not compile on the device",
            )
            return result
        result.update(status="diverges", node=self._node(hi, found_by))
        node = result["node"]
        bad = [c for c in node.outputs if not c.passed]
        result["message"] = f"first divergence at node {node.name!r} ({node.op_type}): " + (
            "; ".join(c.result.summary() for c in bad) if bad else "its outputs diverge in the cut model"
        )
        return result

    def report(self, found: dict[str, Any], reference: str, seconds: float) -> DebugReport:
        s = self.s
        outputs = tuple(found["outputs"])
        checks = tuple(
            sorted(
                (c for (n, src), c in self.checks.items() if src != "whole"),
                key=lambda c: (c.node_index, c.source != "cut"),
            )
        )
        seen = [c for c in (*outputs, *checks) if c.result.shape is not None]
        largest = max(seen, key=lambda c: (c.relative_error, c.result.max_abs_error), default=None)
        tolerance = outputs[0].result.tolerance_text() if outputs else ""
        message = found["message"]
        if found["status"] == "agrees" and largest is not None:
            message += (
                f" (largest error: {largest.result.max_abs_error:.3g} at {largest.tensor!r}, "
                f"{largest.relative_error:.3g} of its range)"
            )
        return DebugReport(
            model=s.model.name,
            device=self.device,
            reference=reference,
            status=found["status"],
            message=message,
            node=found["node"],
            outputs=outputs,
            checks=checks,
            probes=tuple(self.probes),
            compiles=self.runner.compiles,
            seconds=seconds,
            nodes=len(s.graph),
            positions=len(self.positions),
            fast_path=self.fast_status,
            tolerance=tolerance,
            notes=tuple(self.notes),
            largest_error=largest,
            timings=dict(self.timings),
        )

    def _fast_hint(self) -> int | None:
        fast_bad = sorted(
            (c for (n, src), c in self.checks.items() if src == "fast" and not c.passed), key=lambda c: c.node_index
        )
        if not fast_bad:
            return None
        index = fast_bad[0].node_index
        return self.positions.index(index) if index in self.positions else None

    def _bisect(self, lo: int, hi: int) -> tuple[int, int]:
        """Narrow (agreeing ``lo``, diverging ``hi``) until adjacent; positions that fail to compile are stepped
        over."""
        if self.known.get(hi) is None:
            verdict = self.cut(hi)
            if not verdict:
                return lo, hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            verdict = self.cut(mid)
            if verdict is None:  # try the nearest other positions in (lo, hi)
                for alt in sorted(range(lo + 1, hi), key=lambda p: abs(p - mid)):
                    if alt in self.known:
                        continue
                    verdict = self.cut(alt)
                    if verdict is not None:
                        mid = alt
                        break
                if verdict is None:
                    return lo, hi
            if verdict:
                hi = mid
            else:
                lo = mid
        return lo, hi

    def _node(self, position: int, found_by: str) -> DivergentNode:
        """The node at ``position``: its outputs as ``cut(position)`` saw them, its inputs as ``cut(position - 1)``
        did."""
        import onnx

        g = self.s.graph
        index = self.positions[position]
        info = g.info(index)
        inits = {i.name: i for i in g.proto.graph.initializer}
        kinds = {
            n: "graph input" if n in g.inputs else "weight" if n in inits else "data" if n in g.data else "constant"
            for n in g.reads[index]
        }
        before = self.cut_results.get(position - 1, {})
        stats = []
        input_checks = []
        for name in g.reads[index]:
            if name in self.s.values:
                stats.append(TensorStats.of(name, self.s.values[name]))
            elif name in inits:
                stats.append(TensorStats.of(name, onnx.numpy_helper.to_array(inits[name])))
            if name in before:
                r, got = before[name]
                input_checks.append(self.s.check(name, r, "cut", got))
            elif (name, "fast") in self.checks:
                input_checks.append(
                    self.s.check(name, self.checks[(name, "fast")].result, "fast", self.fast_values.get(name))
                )
        at = self.cut_results.get(position, {})
        outputs = [self.s.check(o, at[o][0], "cut", at[o][1]) for o in info.outputs if o in at]
        return DivergentNode(
            index,
            info.name,
            info.op_type,
            dict(info.attributes),
            tuple(stats),
            tuple(input_checks),
            tuple(outputs),
            found_by,
            kinds,
        )


# -- rendering -----------------------------------------------------------------------------


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _err(c: TensorCheck) -> list[str]:
    r = c.result
    if r.shape is None:
        return ["-", "-", "-", "; ".join(r.reasons)[:60]]
    return [
        f"{r.max_abs_error:.3g}",
        f"{r.cosine:.6f}",
        f"{r.mismatches}/{r.elements}",
        "ok" if r.passed else "DIVERGES",
    ]


def _kind_text(node: DivergentNode, name: str) -> str:
    kind = node.input_kinds.get(name, "")
    return {
        "graph input": "graph input (same feed)",
        "weight": "weight",
        "constant": "constant (shape arithmetic)",
    }.get(kind, "not compared")


def to_text(report: DebugReport) -> str:
    """The terminal report: the verdict, the node's table, the probes."""
    lines = [f"nnport debug: {report.model} on {report.device} against {report.reference} ({report.tolerance})"]
    lines.append(f"{report.status}: {report.message}")
    node = report.node
    if node is not None:
        lines.append("")
        lines.append(
            f"node {node.name!r}: {node.op_type}, position {node.index} of {report.nodes} (found by: {node.found_by})"
        )
        if node.attributes:
            attrs = ", ".join(f"{k}={_jsonable(v)}" for k, v in node.attributes.items())
            lines.append(f"  attributes: {attrs}")
        rows = []
        checked = {c.tensor: c for c in node.input_checks}
        for st in node.inputs:
            c = checked.get(st.name)
            rows.append(["input", st.name, st.text()] + (_err(c) if c else ["", "", "", _kind_text(node, st.name)]))
        for c in node.outputs:
            rows.append(["output", c.tensor, c.reference_stats.text() if c.reference_stats else ""] + _err(c))
            if c.device_stats is not None:
                rows.append(["", "  (device)", c.device_stats.text(), "", "", "", ""])
        lines.append(
            _table(rows, ["role", "tensor", "reference statistics", "max|err|", "cosine", "mismatches", "verdict"])
        )
        for c in node.outputs:
            if not c.passed:
                lines.append(f"  error: {c.result.summary()}")
    if report.outputs:
        lines.append("")
        lines.append("whole model outputs:")
        lines.append(
            _table(
                [[c.tensor] + _err(c) for c in report.outputs],
                ["output", "max|err|", "cosine", "mismatches", "verdict"],
            )
        )
    if report.probes:
        lines.append("")
        lines.append("compiles on the device:")
        rows = [
            [
                p.path,
                p.node,
                str(p.nodes),
                str(len(p.tensors)),
                p.status + (f" ({p.error[:80]})" if p.error else ""),
                f"{p.seconds:.2f}",
            ]
            for p in report.probes
        ]
        lines.append(_table(rows, ["path", "cut after", "nodes", "tensors", "result", "seconds"]))
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append(
        f"fast path: {report.fast_path}; {report.compiles} compile(s) on {report.device}; {report.seconds:.2f} s"
    )
    return "\n".join(lines)


def plot_svg(report: DebugReport, fmt: str = "svg") -> Any:
    """Error along the graph (max |error| / max |reference| per tensor against node position).

    Inline SVG text (``fmt="svg"``), or PNG bytes (``fmt="png"``); "" without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    checks = [c for c in report.checks if c.result.shape is not None]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    floor = 1e-12
    for source, marker in (("fast", "o"), ("cut", "s")):
        pts = [c for c in checks if c.source == source]
        if not pts:
            continue
        xs = [c.node_index for c in pts]
        ys = [max(c.relative_error, floor) if math.isfinite(c.relative_error) else 1e3 for c in pts]
        colors = ["#2a7" if c.passed else "#d33" for c in pts]
        label = "fast path (one compile)" if source == "fast" else "cut path (compiled prefixes)"
        if source == "fast":
            ax.plot(xs, ys, color="#999", linewidth=0.6, zorder=1)
        ax.scatter(
            xs,
            ys,
            c=colors,
            marker=marker,
            s=14 if source == "fast" else 36,
            label=label,
            zorder=2,
            edgecolors="none" if source == "fast" else "k",
        )
    if report.node is not None:
        ax.axvline(report.node.index, color="#d33", linestyle="--", linewidth=1)
        ax.annotate(
            f"{report.node.name} ({report.node.op_type})",
            (report.node.index, 1),
            xycoords=("data", "axes fraction"),
            xytext=(4, -12),
            textcoords="offset points",
            color="#d33",
            fontsize=8,
        )
    ax.set_yscale("log")
    ax.set_xlim(-1, max(report.nodes, 1))
    ax.set_xlabel("node position (topological order)")
    ax.set_ylabel("max |error| / max |reference|")
    ax.set_title(f"{report.model} on {report.device}: error along the graph (red: beyond tolerance)", fontsize=10)
    if checks:
        ax.legend(fontsize=8, loc="best")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    if fmt == "png":
        raw = io.BytesIO()
        fig.savefig(raw, format="png")
        plt.close(fig)
        return raw.getvalue()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :] if "<svg" in text else text


def to_html(report: DebugReport) -> str:
    """A self-contained page: the verdict, the node, the error plot (inline SVG), outputs and probes."""
    e = html.escape
    status_color = {"agrees": "#2a7", "diverges": "#d33"}.get(report.status, "#c80")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>nnport debug: {e(report.model)} on {e(report.device)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}th{background:#f4f4f4}"
        ".bad{color:#d33;font-weight:bold}.ok{color:#2a7}code{background:#f4f4f4;padding:0 3px}</style></head><body>",
        f"<h1>nnport debug: {e(report.model)} on {e(report.device)}</h1>",
        f"<p>reference <code>{e(report.reference)}</code>; tolerance {e(report.tolerance)}; fast path: "
        f"{e(report.fast_path)}; "
        f"{report.compiles} compile(s) on the device; {report.seconds:.2f} s</p>",
        f"<p style='font-size:1.2em;color:{status_color}'><b>{e(report.status)}</b>: {e(report.message)}</p>",
    ]
    node = report.node
    if node is not None:
        parts.append(
            f"<h2>Node <code>{e(node.name)}</code> ({e(node.op_type)}), position {node.index} of {report.nodes}</h2>"
        )
        parts.append(f"<p>found by: {e(node.found_by)}</p>")
        if node.attributes:
            parts.append(
                "<table><tr><th>attribute</th><th>value</th></tr>"
                + "".join(
                    f"<tr><td>{e(k)}</td><td>{e(str(_jsonable(v)))}</td></tr>" for k, v in node.attributes.items()
                )
                + "</table>"
            )
        rows = []
        checked = {c.tensor: c for c in node.input_checks}
        for st in node.inputs:
            c = checked.get(st.name)
            rows.append(("input", st.name, st.text(), c))
        for c in node.outputs:
            rows.append(("output", c.tensor, c.reference_stats.text() if c.reference_stats else "", c))
        parts.append(
            "<table><tr><th>role</th><th>tensor</th><th>reference</th><th>device</th><th>max "
            "|err|</th><th>cosine</th><th>mismatches</th><th>verdict</th></tr>"
        )
        for role, name, ref, c in rows:
            if c is None:
                parts.append(
                    f"<tr><td>{role}</td><td>{e(name)}</td><td>{e(ref)}</td><td "
                    f"colspan=5>{e(_kind_text(node, name))}</td></tr>"
                )
                continue
            err = _err(c)
            cls = "ok" if c.passed else "bad"
            dev = c.device_stats.text() if c.device_stats else ""
            parts.append(
                f"<tr><td>{role}</td><td>{e(name)}</td><td>{e(ref)}</td><td>{e(dev)}</td>"
                f"<td>{err[0]}</td><td>{err[1]}</td><td>{err[2]}</td><td class={cls}>{err[3]}</td></tr>"
            )
        parts.append("</table>")
        for c in node.outputs:
            if not c.passed:
                parts.append(f"<p class=bad>error: {e(c.result.summary())}</p>")
    svg = plot_svg(report)
    if svg:
        parts.append("<h2>Error along the graph</h2>")
        parts.append(
            "<p>Each point is one tensor: its largest absolute error over the reference's largest "
            "magnitude, at the position of the node "
            "that computes it. Circles: the fast path (one compile with every tensor marked as an "
            "output); squares: compiled prefixes "
            "(the cut path, the ground truth). Red: beyond tolerance.</p>"
        )
        parts.append(svg)
    parts.append(
        "<h2>Whole model outputs</h2><table><tr><th>output</th><th>max "
        "|err|</th><th>cosine</th><th>mismatches</th><th>verdict</th><th>detail</th></tr>"
    )
    for c in report.outputs:
        err = _err(c)
        parts.append(
            f"<tr><td>{e(c.tensor)}</td><td>{err[0]}</td><td>{err[1]}</td><td>{err[2]}</td><td "
            f"class={'ok' if c.passed else 'bad'}>{err[3]}</td><td>{e(c.result.summary())}</td></tr>"
        )
    parts.append(
        "</table><h2>Compiles on the device</h2><table><tr><th>path</th><th>cut "
        "after</th><th>nodes</th><th>tensors</th><th>result</th><th>seconds</th></tr>"
    )
    for p in report.probes:
        parts.append(
            f"<tr><td>{e(p.path)}</td><td>{e(p.node)}</td><td>{p.nodes}</td><td>{len(p.tensors)}</td><td>{e(p.status)} "
            f"{e(p.error[:300])}</td><td>{p.seconds:.2f}</td></tr>"
        )
    parts.append("</table>")
    for note in report.notes:
        parts.append(f"<p>note: {e(note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
