"""The ONNX backend node tests through nnport: an ``onnx.backend.base.Backend`` adapter and pass rates.

Two ways in:

* ``backend_for("openvino:CPU")`` returns an ``onnx.backend.base.Backend``
  subclass whose ``prepare(model, device)`` is ``nnport.compile`` on that
  device, so onnx's own ``onnx.backend.test.BackendTest`` runs against any
  nnport backend (the tests use it for a smoke subset);
* ``node_cases()`` turns each of the ~1,900 node tests that
  ``onnx.backend.test.loader.load_model_tests(kind="node")`` generates in
  memory into a conformance ``Case`` (id ``node/<test name>``) whose reference
  is the test's stored outputs, judged as onnx's runner judges them
  (``numpy.testing.assert_allclose`` with the test's rtol/atol, equal dtype
  and shape).  The conformance runner then gives every node test crash and
  timeout isolation, and ``python -m nnport.conformance.onnx_backend`` writes
  the pass-rate table (docs/node-tests.md).

A node test counts as passed only if nnport loads the model, the backend
compiles and runs it, and every output matches; anything else (an
unsupported operator, a sequence-typed input nnport does not model, a wrong
answer, a crash) counts against the rate, as on the ONNX scoreboard.  Only
the first data set of a test is used (all but a handful have exactly one).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cases import Case

try:  # onnx is a base dependency; the guard keeps import errors readable
    from onnx.backend.base import Backend as _OnnxBackend
    from onnx.backend.base import BackendRep as _OnnxBackendRep
except ImportError:  # pragma: no cover
    _OnnxBackend = object  # type: ignore[assignment,misc]
    _OnnxBackendRep = object  # type: ignore[assignment,misc]


# -- the onnx.backend adapter ----------------------------------------------------------------


class NnportBackendRep(_OnnxBackendRep):
    """A compiled model answering onnx's ``BackendRep.run(inputs)`` with a tuple of outputs."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.input_names = [s.name for s in compiled.inputs]
        self.output_names = [s.name for s in compiled.outputs]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.input_names, inputs))
        outputs = self.compiled.run(feeds)
        return tuple(outputs[name] for name in self.output_names)


class NnportBackend(_OnnxBackend):
    """``onnx.backend.base.Backend`` over one nnport device (``nnport_device``)."""

    nnport_device = "onnxruntime:cpu"

    @classmethod
    def is_compatible(cls, model: Any, device: str = "CPU", **kwargs: Any) -> bool:
        return True

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> NnportBackendRep:
        import nnport

        loaded = nnport.load(model, check=False)
        return NnportBackendRep(nnport.compile(loaded, cls.nnport_device, fallback=False))

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """onnx asks for "CPU" and "CUDA"; an nnport device answers for its own kind."""
        kind = "gpu" if device.upper().startswith("CUDA") else "cpu"
        import nnport

        try:
            devices = {d.id.lower(): d for d in nnport.devices(cls.nnport_device.split(":")[0])}
        except Exception:
            return False
        dev = devices.get(cls.nnport_device.lower())
        return dev is not None and dev.kind == kind


def backend_for(device: str) -> type[NnportBackend]:
    """An ``onnx.backend.base.Backend`` class bound to nnport device ``device``."""
    return type(f"NnportBackend_{device.replace(':', '_')}", (NnportBackend,), {"nnport_device": device})


# -- node tests as conformance cases ------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _node_tests() -> dict[str, Any]:
    import warnings

    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        tests = load_model_tests(kind="node")
    return {t.name: t for t in tests}


def _array(value: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, np.generic):  # some tests store scalars as numpy scalars; runtimes want 0-d arrays
        return np.asarray(value)
    return value


def _make_case(test: Any) -> Case:
    model = test.model

    def build() -> Any:
        return model

    def graph_input_names() -> list[str]:
        inits = {i.name for i in model.graph.initializer}
        return [i.name for i in model.graph.input if i.name not in inits]

    def feeds() -> dict[str, np.ndarray]:
        inputs = test.data_sets[0][0] if test.data_sets else []
        return {name: _array(v) for name, v in zip(graph_input_names(), inputs)}

    def expected() -> dict[str, np.ndarray]:
        outputs = test.data_sets[0][1] if test.data_sets else []
        return {o.name: _array(v) for o, v in zip(model.graph.output, outputs)}

    return Case(
        f"node/{test.name}",
        build,
        f"ONNX backend node test {test.name}",
        tolerances={
            "atol": float(test.atol),
            "rtol": float(test.rtol),
            "scale_tol": 0.0,
            "rule": "sum",
            "classifier": False,
        },
        timeout_s=60.0,
        feeds=feeds,
        expected=expected,
    )


def node_names() -> list[str]:
    """Names of every node test onnx generates, sorted."""
    return sorted(_node_tests())


def node_case(name: str) -> Case:
    test = _node_tests().get(name)
    if test is None:
        raise KeyError(f"unknown ONNX node test {name!r}")
    return _make_case(test)


def node_cases(every: int = 1) -> list[Case]:
    """All node tests as cases, or every ``every``-th of the sorted names (a deterministic subset)."""
    names = node_names()[:: max(1, every)]
    return [node_case(n) for n in names]


# -- the pass-rate table ------------------------------------------------------------------------

SCOREBOARD_NOTE = (
    "The ONNX backend scoreboard's anchor: ONNX Runtime scored 82.1% there (its own runner, "
    "an older onnx release); the rates here use onnx {onnx} and its {total} node tests."
)


def pass_rates(report: Any, subsets: Mapping[str, int]) -> list[dict[str, Any]]:
    """Rows of the pass-rate table from a conformance report over ``node/`` cases."""
    rows = []
    counts = report.counts()
    for device in report.devices:
        c = counts[device]
        ran = [r for r in report.results if r.device == device]
        total = len(ran)
        passed = c["pass"] + c["xpass"]
        rows.append(
            {
                "device": device,
                "cases": total,
                "subset_every": subsets.get(device, 1),
                "passed": passed,
                "failed": c["fail"] + c["xfail"],
                "unsupported": c["skip"],
                "crashed": c["crash"],
                "timed_out": c["timeout"],
                "rate": passed / total if total else 0.0,
                "wall_s": sum(r.duration_s for r in ran),
            }
        )
    return rows


def markdown_table(
    rows: Sequence[Mapping[str, Any]], *, onnx_version: str, total: int, command: str, wall_s: float, jobs: int
) -> str:
    lines = [
        "# ONNX backend node tests through nnport",
        "",
        "Each node test of `onnx.backend.test` (generated in memory by onnx "
        f"{onnx_version}: {total} tests) is compiled and run through nnport on the device, "
        "in an isolated worker process, and judged as onnx's own runner judges it "
        "(`assert_allclose` with the test's rtol/atol, equal shape and dtype). "
        "Passed = loaded, compiled, ran and matched; everything else counts against the rate.",
        "",
        SCOREBOARD_NOTE.format(onnx=onnx_version, total=total),
        "",
        "| device | node tests run | passed | wrong/failed | unsupported | crashed | timed out | pass "
        "rate | case time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        subset = f" (every {r['subset_every']}th, deterministic subset)" if r["subset_every"] > 1 else ""
        lines.append(
            f"| {r['device']} | {r['cases']}{subset} | {r['passed']} | {r['failed']} | {r['unsupported']} "
            f"| {r['crashed']} | {r['timed_out']} | "
            f"**{100 * r['rate']:.1f}%** | {r['wall_s']:.0f} |"
        )
    lines += [
        "",
        f"Regenerate: `{command}` ({wall_s:.0f} s wall with {jobs} job(s) on this host).",
        "",
        '"unsupported" = the backend refused the model with `UnsupportedModel` (an operator, dtype or '
        "shape it does not take), or nnport could not represent it (sequence/optional-typed inputs or outputs). "
        '"wrong/failed" = compiled but disagreed with the stored outputs, or failed with another error.',
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the node tests on each backend and write the pass-rate table."""
    from . import reports, runner

    parser = argparse.ArgumentParser(
        prog="python -m nnport.conformance.onnx_backend", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--backend", action="append", help="backend or device (repeat); default: every available backend"
    )
    parser.add_argument(
        "--every",
        action="append",
        default=[],
        metavar="BACKEND=N",
        help="run every N-th node test on BACKEND (e.g. ncnn=4)",
    )
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per node test")
    parser.add_argument("--out", default=None, help="write the markdown table here (e.g. docs/node-tests.md)")
    parser.add_argument("--json", default=None, help="write the full conformance JSON report here")
    args = parser.parse_args(argv)
    every = {}
    for item in args.every:
        name, _, n = item.partition("=")
        every[name] = int(n)
    targets = runner.resolve_targets(args.backend)
    start = time.monotonic()
    all_results = []
    subsets = {}
    for target in targets:
        step = every.get(target.backend, every.get(target.device, 1))
        subsets[target.device] = step
        cases = node_cases(step)
        print(f"{target.device}: {len(cases)} node tests", file=sys.stderr)
        rep = runner.run(cases, [target], jobs=args.jobs, timeout_s=args.timeout, progress=reports.Progress())
        all_results.append(rep)
    wall = time.monotonic() - start
    merged = runner.Report(
        results=[r for rep in all_results for r in rep.results],
        devices=[t.device for t in targets],
        cases=sorted({r.case for rep in all_results for r in rep.results}),
        wall_s=wall,
        jobs=args.jobs,
        environment=all_results[0].environment if all_results else {},
    )
    rows = pass_rates(merged, subsets)
    import onnx

    command = "python -m nnport.conformance.onnx_backend " + " ".join(
        [f"--backend {t.device}" for t in targets]
        + [f"--every {k}={v}" for k, v in every.items()]
        + [f"--jobs {args.jobs}"]
        + (["--out " + args.out] if args.out else [])
    )
    text = markdown_table(
        rows, onnx_version=onnx.__version__, total=len(node_names()), command=command, wall_s=wall, jobs=args.jobs
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        reports.write_json(merged, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
