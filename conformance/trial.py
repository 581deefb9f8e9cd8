"""One trial of ``debug``/``reduce``: compile a (sub-)model on a device, run it, keep the outputs.

A ``TrialRunner`` runs trials in this process (``isolate=False``: fast, for
trusted backends and tests) or in a worker process it keeps alive between
trials (``python -m nnport.conformance.trial``), so that a segfault,
``abort()`` or hang in a runtime is a trial result (``crash``/``timeout``), not
the end of the search.  A dead or hung worker is replaced by a fresh one and the
next trial goes on.  Models, feeds and outputs travel as files in the runner's
temporary directory; one JSON line per trial on the worker's stdin/stdout (the
worker keeps its original stdout for the protocol and points fd 1 at stderr,
so that a talkative converter cannot corrupt it; stderr goes to a file whose
tail a ``crash`` result quotes).

Statuses: ``ok`` (outputs in ``TrialResult.outputs``), ``compile-error``
(``nnport.compile`` raised: the backend refused or failed), ``run-error``,
``unsupported`` (an intermediates trial on a backend that offers none),
``crash`` (the worker died: the signal is in ``error``), ``timeout``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnport.data import save_arrays

STATUSES = ("ok", "compile-error", "run-error", "unsupported", "crash", "timeout")
STARTUP_TIMEOUT_S = 120.0
"""How long a new worker may take to import nnport and find its plugins (not counted in a trial's timeout)."""


@dataclass(frozen=True)
class TrialResult:
    """What one trial did: ``status`` (module docstring), the outputs when ``ok``, else the error."""

    status: str
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    error: str = ""
    error_type: str = ""
    seconds: float = 0.0
    compile_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        if self.ok:
            return "ok"
        return f"{self.status}: {self.error_type + ': ' if self.error_type else ''}{self.error}".strip()


def _options(options: Mapping[str, Any]) -> Any:
    from nnport.types import CompileOptions

    return CompileOptions(**{k: v for k, v in options.items() if v is not None})


def run_trial(
    model: Any,
    feeds: Mapping[str, np.ndarray],
    device: str,
    options: Mapping[str, Any],
    tensors: Sequence[str] | None = None,
) -> TrialResult:
    """Compile ``model`` on ``device`` and run ``feeds``, in this process; never raises an nnport error.

    With ``tensors``, ask the backend's fast path (``nnport_intermediates``)
    for those intermediate tensors instead of the graph outputs.
    """
    import nnport
    from nnport.errors import NnportError
    from nnport.manager import get_plugin_manager
    from nnport.selection import candidates

    start = time.perf_counter()
    opts = _options(options)
    if tensors is not None:
        try:
            pm = get_plugin_manager()
            dev = candidates(pm, device)[0]
            backend = pm.backend(dev.backend)
            loaded = nnport.load(model)
            outputs = pm.hook.nnport_intermediates(
                backend=backend, model=loaded, device=dev, options=opts, tensors=list(tensors), feeds=dict(feeds)
            )
        except NnportError as exc:
            return TrialResult(
                "run-error", error=str(exc), error_type=type(exc).__name__, seconds=time.perf_counter() - start
            )
        except Exception as exc:
            return TrialResult(
                "run-error", error=f"{exc}", error_type=type(exc).__name__, seconds=time.perf_counter() - start
            )
        if outputs is None:
            return TrialResult(
                "unsupported", error=f"{device} offers no intermediate tensors", seconds=time.perf_counter() - start
            )
        return TrialResult("ok", {k: np.asarray(v) for k, v in outputs.items()}, seconds=time.perf_counter() - start)
    try:
        compiled = nnport.compile(model, device, opts, fallback=False)
    except Exception as exc:
        return TrialResult(
            "compile-error",
            error=" ".join(str(exc).split()),
            error_type=type(exc).__name__,
            seconds=time.perf_counter() - start,
        )
    compile_s = time.perf_counter() - start
    try:
        outputs = compiled.run(dict(feeds))
    except Exception as exc:
        return TrialResult(
            "run-error",
            error=" ".join(str(exc).split()),
            error_type=type(exc).__name__,
            seconds=time.perf_counter() - start,
            compile_s=compile_s,
        )
    finally:
        del compiled
    return TrialResult(
        "ok", {k: np.asarray(v) for k, v in outputs.items()}, seconds=time.perf_counter() - start, compile_s=compile_s
    )


class TrialRunner:
    """Runs trials on one device with one set of compile options; counts them.

    ``isolate=True`` runs each trial in a long-lived worker process (replaced
    after a crash or a timeout of ``timeout_s``); ``isolate=False`` runs it
    here.  Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        device: str,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        extra: Mapping[str, Any] | None = None,
        isolate: bool = True,
        timeout_s: float = 600.0,
    ) -> None:
        self.device = device
        self.options: dict[str, Any] = {"precision": precision, "threads": threads, "extra": dict(extra or {})}
        self.isolate = isolate
        self.timeout_s = float(timeout_s)
        self.compiles = 0
        """Trials that compiled (or tried to compile) a model on the device."""
        self.crashes = 0
        self._proc: subprocess.Popen[str] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="nnport-trial-")
        self._dir = Path(self._tmp.name)
        self._stderr: Any = None
        self._n = 0

    def __enter__(self) -> TrialRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, model: Any, feeds: Mapping[str, np.ndarray], tensors: Sequence[str] | None = None) -> TrialResult:
        """One trial of ``model`` (an ``onnx.ModelProto`` or ``nnport.Model``) on ``feeds``."""
        self.compiles += 1
        if not self.isolate:
            return run_trial(model, feeds, self.device, self.options, tensors)
        return self._remote(model, feeds, tensors)

    # -- the worker process -------------------------------------------------------------

    def _remote(self, model: Any, feeds: Mapping[str, np.ndarray], tensors: Sequence[str] | None) -> TrialResult:
        self._n += 1
        stem = self._dir / f"trial{self._n}"
        proto = getattr(model, "proto", model)
        model_path = stem.with_suffix(".onnx")
        model_path.write_bytes(proto.SerializeToString())
        names = list(feeds)
        feeds_path = Path(f"{stem}-feeds.npz")
        save_arrays(feeds_path, {f"t{i}": np.asarray(feeds[n]) for i, n in enumerate(names)})
        out_path = Path(f"{stem}-out.npz")
        task = {
            "model": str(model_path),
            "feeds": str(feeds_path),
            "feed_names": names,
            "out": str(out_path),
            "device": self.device,
            "options": self.options,
            "tensors": None if tensors is None else list(tensors),
        }
        try:
            proc = self._worker()
            start = time.perf_counter()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(task) + "\n")
            proc.stdin.flush()
            line = self._readline(proc, start + self.timeout_s)
        except (BrokenPipeError, OSError) as exc:
            self._stop()
            return TrialResult("crash", error=f"the trial worker could not be reached: {exc}")
        finally:
            for p in (model_path, feeds_path):
                p.unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        if line == "":  # the worker died
            proc.wait(timeout=10)
            code = proc.returncode
            self._proc = None
            self.crashes += 1
            why = (
                f"killed by signal {signal.Signals(-code).name}"
                if code is not None and code < 0
                else f"exited with status {code}"
            )
            return TrialResult("crash", error=f"the runtime process {why}{self._stderr_tail()}", seconds=seconds)
        if line is None:
            self._stop()
            return TrialResult(
                "timeout", error=f"no answer within {self.timeout_s:g} s (the worker was killed)", seconds=seconds
            )
        answer = json.loads(line)
        outputs: dict[str, np.ndarray] = {}
        if answer["status"] == "ok":
            with np.load(out_path, allow_pickle=False) as data:
                outputs = {n: data[f"t{i}"] for i, n in enumerate(answer["names"])}
            out_path.unlink(missing_ok=True)
        return TrialResult(
            answer["status"],
            outputs,
            answer.get("error", ""),
            answer.get("error_type", ""),
            seconds,
            answer.get("compile_s"),
        )

    def _worker(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = open(self._dir / "worker-stderr.txt", "w+b")  # noqa: SIM115 - kept open for the worker's life
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "nnport.conformance.trial"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        # The worker says when it has imported nnport and found its plugins: a trial's timeout starts after that.
        line = self._readline(self._proc, time.perf_counter() + max(STARTUP_TIMEOUT_S, self.timeout_s))
        if not line or "ready" not in line:
            self._stop()
            raise OSError(f"the trial worker did not start{self._stderr_tail()}")
        return self._proc

    def _readline(self, proc: subprocess.Popen[str], deadline: float) -> str | None:
        """The worker's next line, ``""`` when it died, None on timeout."""
        assert proc.stdout is not None
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
            if ready:
                return proc.stdout.readline()
            if proc.poll() is not None:
                return proc.stdout.readline()

    def _stderr_tail(self, limit: int = 800) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            text = self._stderr.read().decode("utf-8", "replace").strip()
            self._stderr.seek(0)
            self._stderr.truncate()
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("[trial ")]
        return f"; its last output: {' | '.join(lines[-4:])}" if lines else ""

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None and self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._tmp.cleanup()


def _serve_one(task: dict[str, Any]) -> dict[str, Any]:
    import onnx

    model = onnx.load(task["model"])
    with np.load(task["feeds"], allow_pickle=False) as data:
        feeds = {n: data[f"t{i}"] for i, n in enumerate(task["feed_names"])}
    result = run_trial(model, feeds, task["device"], task["options"], task.get("tensors"))
    answer: dict[str, Any] = {
        "status": result.status,
        "error": result.error[:4000],
        "error_type": result.error_type,
        "compile_s": result.compile_s,
    }
    if result.ok:
        names = list(result.outputs)
        save_arrays(task["out"], {f"t{i}": result.outputs[n] for i, n in enumerate(names)})
        answer["names"] = names
    return answer


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from nnport.manager import get_plugin_manager

    get_plugin_manager().registered_backends()  # plugins found before the first trial's clock starts
    proto.write(json.dumps({"ready": True}) + "\n")
    proto.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        print(f"[trial {os.getpid()}] {Path(task['model']).name} on {task['device']}", file=sys.stderr, flush=True)
        try:
            answer = _serve_one(task)
        except BaseException as exc:  # the protocol must answer even for a bug here
            answer = {
                "status": "run-error",
                "error": f"trial worker error: {exc}",
                "error_type": type(exc).__name__,
                "traceback": traceback.format_exc(),
            }
        proto.write(json.dumps(answer, default=str) + "\n")
        proto.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
