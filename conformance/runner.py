"""Running cases x devices in isolated worker processes.

Each (case, device) pair is a task.  ``jobs`` worker processes
(``nnport.conformance.worker``) take tasks one at a time; a worker that dies
mid-task (segfault, ``abort()``) yields ``crash`` for that task and a worker
that does not answer within the case's timeout is killed and yields
``timeout``; either way a fresh worker takes the next task and the run goes on.
Workers stay alive between tasks, so runtime start-up (importing OpenVINO,
ONNX Runtime) is paid once per worker, not once per case.

Statuses: ``pass``, ``fail``, ``xfail`` (failed as the backend's
expected-failures file says, with its reason), ``xpass`` (listed as expected
to fail but passed: reported, not fatal), ``skip`` (unsupported, with the
reason), ``crash``, ``timeout``, ``lost`` (a farm device whose node died or
left mid-run: ``nnport.plugins.farm``).  A run fails (``Report.ok`` is False) when any
task is ``fail``, ``crash``, ``timeout`` or ``lost``, or when nothing ran at all (every
result a ``skip``): a gate must not pass on nothing.

Expected failures live in ``conformance/xfail/<backend>.toml``::

    [xfail]
    "op/LSTM/*" = "why it fails, and where it is tracked"

    [skip]            # not run at all (a known hang would only burn its timeout)
    "model/light_vgg19" = "why"

Keys are glob patterns over case ids.  Extra files (a vendor's own) are given
with ``expectations=[path]``; a file with ``backend = "name"`` applies to that
backend only.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any

STATUSES = ("pass", "fail", "xfail", "xpass", "skip", "crash", "timeout", "lost")
FAILING = frozenset({"fail", "crash", "timeout", "lost"})
XFAIL_DIR = Path(__file__).parent / "xfail"


# -- expectations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectations:
    """Expected failures and skips of one backend: glob pattern -> reason."""

    xfail: Mapping[str, str] = field(default_factory=dict)
    skip: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def xfail_reason(self, case_id: str, device: str | None = None) -> str | None:
        """The reason ``case_id`` is expected to fail (on ``device``), or None.

        A key ``"case@device"`` (globs allowed) applies to that device only,
        e.g. a Vulkan shader's approximation; a plain case key to every device.
        """
        return _match(self.xfail, case_id, device)

    def skip_reason(self, case_id: str, device: str | None = None) -> str | None:
        return _match(self.skip, case_id, device)

    def merged(self, other: Expectations) -> Expectations:
        return Expectations({**self.xfail, **other.xfail}, {**self.skip, **other.skip}, self.sources + other.sources)


def _match(table: Mapping[str, str], case_id: str, device: str | None = None) -> str | None:
    keys = [f"{case_id}@{device}", case_id] if device else [case_id]
    for key in keys:
        if key in table:
            return table[key]
    for key in keys:
        for pattern, reason in table.items():
            if ("@" in pattern) == ("@" in key) and fnmatch.fnmatchcase(key, pattern):
                return reason
    return None


def toml_module() -> Any:
    """``tomllib`` (Python 3.11+), else the ``tomli`` backport it came from (a dependency on 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def load_expectations_file(path: str | os.PathLike) -> tuple[str | None, Expectations]:
    """Parse one TOML expectations file; returns (backend it is restricted to, entries)."""
    from nnport.errors import InputError

    toml = toml_module()
    try:
        with open(path, "rb") as fh:
            data = toml.load(fh)
    except (OSError, toml.TOMLDecodeError) as exc:
        raise InputError(f"cannot read expectations file {str(path)!r}: {exc}") from exc
    unknown = set(data) - {"xfail", "skip", "backend"}
    if unknown:
        raise InputError(
            f"expectations file {str(path)!r} has unknown key(s) {sorted(unknown)}; expected [xfail], "
            "[skip] and backend"
        )
    tables = {}
    for key in ("xfail", "skip"):
        table = data.get(key, {})
        bad = [k for k, v in table.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise InputError(
                f"expectations file {str(path)!r}: entries {bad} in [{key}] need a non-empty reason string"
            )
        tables[key] = dict(table)
    return data.get("backend"), Expectations(tables["xfail"], tables["skip"], (str(path),))


def expectations_for(backend: str, extra: Sequence[str | os.PathLike] = ()) -> Expectations:
    """The built-in file for ``backend`` (if any) merged with applicable ``extra`` files."""
    found = Expectations()
    builtin = XFAIL_DIR / f"{backend}.toml"
    if builtin.exists():
        found = found.merged(load_expectations_file(builtin)[1])
    for path in extra:
        only, exp = load_expectations_file(path)
        if only is None or only == backend:
            found = found.merged(exp)
    return found


# -- results ------------------------------------------------------------------------------


@dataclass
class Result:
    """The outcome of one case on one device."""

    case: str
    device: str
    backend: str
    status: str
    reason: str = ""
    duration_s: float = 0.0
    reference: str = ""
    observed: str = ""
    """For xfail/xpass: the raw status before the expectation was applied."""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    remote: dict[str, Any] = field(default_factory=dict)
    """For a farm device: the node, its local device, and the nnport and runtime versions that ran the case."""
    note: str = ""
    """How the reference was decided when it was not the usual one (the reference backend judged by the
    independent runtimes' agreement: which agreed, which one disagreed and by how much)."""

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """A whole run: every result, the devices, the environment, the wall time."""

    results: list[Result]
    devices: list[str]
    cases: list[str]
    wall_s: float
    jobs: int
    precision: str = "fp32"
    started: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    tolerances: dict[str, Any] = field(default_factory=dict)
    """The run's tolerance overrides (``run(tolerances=...)``); empty: each case's own, else the precision's
    defaults."""

    @property
    def ok(self) -> bool:
        """No result failed, crashed or timed out, and at least one case ran somewhere."""
        return not any(r.failing for r in self.results) and not self.nothing_ran

    @property
    def nothing_ran(self) -> bool:
        """Every result is a skip (or there is none): the run tested nothing."""
        return all(r.status == "skip" for r in self.results)

    def untested(self) -> list[str]:
        """Devices on which no case ran (every result a skip)."""
        ran = {r.device for r in self.results if r.status != "skip"}
        return [d for d in self.devices if d not in ran]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{device: {status: count}}`` with every status present."""
        out = {d: {s: 0 for s in STATUSES} for d in self.devices}
        for r in self.results:
            out.setdefault(r.device, {s: 0 for s in STATUSES})[r.status] += 1
        return out

    def get(self, case: str, device: str) -> Result | None:
        for r in self.results:
            if r.case == case and r.device == device:
                return r
        return None


# -- targets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A device under test, or a backend that cannot be tested here (with why)."""

    device: str
    backend: str
    unavailable: str | None = None


def resolve_targets(names: Sequence[str] | None) -> list[Target]:
    """Backend names or device ids -> devices; default: the first usable device of every available backend.

    A backend name picks its first usable device.  A backend that is missing
    or unusable stays in the list with the reason, so that its column says why
    instead of vanishing.
    """
    import nnport
    from nnport.errors import NnportError

    statuses = {b.name: b for b in nnport.backends()}
    if not names:
        names = [b.name for b in statuses.values() if b.status == "available"]
    targets: list[Target] = []
    for name in names:
        backend = name.split(":", 1)[0].lower()
        status = statuses.get(backend)
        if status is None:
            targets.append(Target(name, backend, f"no backend named {backend!r}; registered: {sorted(statuses)}"))
            continue
        if status.status != "available":
            targets.append(Target(name, backend, status.reason or status.status))
            continue
        try:
            devices = [d for d in nnport.devices(backend, include_unavailable=True)]
        except NnportError as exc:
            targets.append(Target(name, backend, str(exc)))
            continue
        if ":" in name:
            match = [d for d in devices if d.id.lower() == name.lower()]
            if not match:  # a kind or a backend's own form (farm:openvino): every usable device it names
                try:
                    from nnport.selection import candidates

                    picked = candidates(nnport.get_plugin_manager(), name)
                except NnportError:
                    picked = []
                targets.extend(Target(d.id, backend) for d in picked)
                if picked:
                    continue
            if not match:
                targets.append(
                    Target(name, backend, f"no device {name!r}; {backend} devices: {[d.id for d in devices]}")
                )
            elif not match[0].available:
                targets.append(Target(match[0].id, backend, match[0].reason or "unusable"))
            else:
                targets.append(Target(match[0].id, backend))
            continue
        usable = [d for d in devices if d.available]
        if not usable:
            targets.append(
                Target(name, backend, "no usable device: " + "; ".join(f"{d.id}: {d.reason}" for d in devices))
            )
        else:
            targets.append(Target(usable[0].id, backend))
    unique: dict[str, Target] = {}
    for t in targets:
        unique.setdefault(t.device, t)
    return list(unique.values())


# -- the worker pool ------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    case: str
    device: str
    backend: str
    timeout_s: float
    precision: str = "fp32"
    tolerances: Mapping[str, Any] = field(default_factory=dict)
    shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)


class _Worker:
    """One worker process and its protocol pipe; replaced after a crash or timeout."""

    def __init__(self, env: Mapping[str, str], log_dir: str) -> None:
        self.log = tempfile.NamedTemporaryFile("w+b", dir=log_dir, prefix="worker-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nnport.conformance.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=dict(env),
            start_new_session=True,
        )
        self.buf = b""

    def send(self, task: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(task) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, deadline: float) -> dict[str, Any] | str:
        """The next result, or ``"timeout"``/``"eof"``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return "eof"
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def log_tail(self, start: int, limit: int = 1500) -> str:
        try:
            with open(self.log.name, "rb") as fh:
                fh.seek(start)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("[worker ")]
        return "\n".join(lines)[-limit:]

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log.name)
        except OSError:
            return 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()
        self._close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
                return
        self._close()

    def _close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        self.log.close()


def _signal_name(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def worker_env(plugins: Sequence[str] = (), pythonpath: Sequence[str] = ()) -> dict[str, str]:
    """The environment of worker processes: this one, plus plugin modules and paths to import them from."""
    env = dict(os.environ)
    if plugins:
        current = [p for p in env.get("NNPORT_PLUGINS", "").split(",") if p]
        env["NNPORT_PLUGINS"] = ",".join(dict.fromkeys(current + list(plugins)))
    paths = list(pythonpath) + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Pool:
    """``jobs`` worker processes fed from one queue; usable for one task at a time too."""

    def __init__(
        self,
        jobs: int = 1,
        *,
        env: Mapping[str, str] | None = None,
        threads: int | None = None,
        ref_cache: str | None = None,
    ) -> None:
        self.jobs = max(1, int(jobs))
        self.env = dict(env) if env is not None else worker_env()
        self.threads = threads
        self._tmp = tempfile.TemporaryDirectory(prefix="nnport-conformance-")
        self.ref_cache = ref_cache or os.path.join(self._tmp.name, "reference")
        os.makedirs(self.ref_cache, exist_ok=True)
        self._idle: Queue[_Worker] = Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except Empty:
            worker = _Worker(self.env, self._tmp.name)
            with self._lock:
                self._all.append(worker)
            return worker

    def run_task(self, task: Task) -> Result:
        """Run one task in a worker; crash and timeout are results, never exceptions."""
        worker = self._take()
        start = time.monotonic()
        log_start = worker.log_size()
        payload = {
            "case": task.case,
            "device": task.device,
            "precision": task.precision,
            "threads": self.threads,
            "ref_cache": self.ref_cache,
            "tolerances": dict(task.tolerances),
            "shapes": {k: list(v) for k, v in task.shapes.items()},
        }
        base: dict[str, Any] = dict(case=task.case, device=task.device, backend=task.backend)
        try:
            worker.send(payload)
            answer = worker.receive(start + task.timeout_s)
        except (BrokenPipeError, OSError):
            answer = "eof"
        duration = time.monotonic() - start
        if isinstance(answer, dict):
            self._idle.put(worker)
            return Result(
                status=answer.get("status", "fail"),
                reason=answer.get("reason", ""),
                duration_s=duration,
                reference=answer.get("reference", ""),
                outputs=answer.get("outputs", []),
                timings=answer.get("timings", {}),
                remote=answer.get("remote") or {},
                note=answer.get("note", ""),
                **base,
            )
        if answer == "timeout":
            tail = worker.log_tail(log_start)
            worker.kill()
            return Result(
                status="timeout",
                reason=f"no answer within {task.timeout_s:g} s; the worker was killed"
                + (f"; its last output: {tail[-300:]}" if tail else ""),
                duration_s=duration,
                **base,
            )
        code = worker.proc.wait()
        tail = worker.log_tail(log_start)
        worker.kill()
        return Result(
            status="crash",
            reason=f"the worker process died ({_signal_name(code)})"
            + (f"; its last output: {tail[-500:]}" if tail else ""),
            duration_s=duration,
            **base,
        )

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for w in workers:
            w.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- the run ------------------------------------------------------------------------------------

ProgressFn = Callable[[int, int, Result], None]


def apply_expectations(result: Result, expectations: Expectations, device: str | None = None) -> Result:
    """Turn a raw result into xfail/xpass where the backend's file lists the case (on ``device``, default the
    result's)."""
    reason = expectations.xfail_reason(result.case, device or result.device)
    if reason is None:
        return result
    if result.status == "pass":
        result.observed, result.status = "pass", "xpass"
        result.reason = f"expected to fail ({reason}) but passed"
    elif result.status in FAILING:
        result.observed = result.status
        result.status = "xfail"
        result.reason = f"{reason} [observed {result.observed}: {result.reason}]"
    return result


def _rerun_elsewhere(pool: Pool, task: Task, lost: Result, expectations: Expectations) -> Result:
    """The first other node's result for a lost farm case, or the lost result with why it was not rerun."""
    from dataclasses import replace

    from nnport import farm
    from nnport.errors import NnportError

    try:
        others = farm.elsewhere(task.device)
    except NnportError as exc:
        lost.reason += f"; not rerun elsewhere: {exc}"
        return lost
    for other in others:
        again = apply_expectations(pool.run_task(replace(task, device=other)), expectations, device=_judged_as(other))
        if again.status == "lost":
            continue
        again.device = task.device
        again.duration_s += lost.duration_s
        again.reason = f"rerun on {other} after {task.device} was lost ({lost.reason[:300]})" + (
            f": {again.reason}" if again.reason else ""
        )
        return again
    lost.reason += "; not rerun elsewhere: " + (
        "every other candidate was lost too"
        if others
        else "no other live node has a device of the same backend and kind"
    )
    return lost


def _judged_as(device: str) -> str:
    """The device id expectations are written for: a farm device's own id on its node (``ncnn:vulkan:0``)."""
    from nnport.farm import split_device_id

    remote = split_device_id(device)
    return remote[1] if remote else device


def _expectations_of(target: Target, extra: Sequence[str | os.PathLike]) -> Expectations:
    """The target backend's expectations; a farm device gets those of the backend that runs it on its node."""
    local = _judged_as(target.device)
    if local == target.device:
        return expectations_for(target.backend, extra)
    return expectations_for(local.split(":", 1)[0], extra).merged(expectations_for(target.backend, extra))


def run(
    cases: Sequence[Any],
    targets: Sequence[Target],
    *,
    jobs: int = 1,
    precision: str = "fp32",
    expectations: Sequence[str | os.PathLike] = (),
    timeout_s: float | None = None,
    timeout_scale: float = 1.0,
    plugins: Sequence[str] = (),
    pythonpath: Sequence[str] = (),
    tolerances: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    retry_elsewhere: bool = False,
) -> Report:
    """Run ``cases`` on every target; see the module docstring.

    ``shapes`` (``--input-shapes``) fixes the dims of the inputs it names in every
    case that has those inputs; the reference and the device see the same model.
    ``retry_elsewhere`` reruns a ``lost`` case (its farm node died) on a device
    of another live node with the same backend and kind; the result stays in the
    lost device's column, says where it ran, and carries that node in ``remote``.
    """
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    exp = {t.device: _expectations_of(t, expectations) for t in targets}
    results: list[Result] = []
    pending: list[Task] = []
    for case in cases:
        for target in targets:
            if target.unavailable:
                results.append(
                    Result(case.id, target.device, target.backend, "skip", f"backend unavailable: {target.unavailable}")
                )
                continue
            skip = exp[target.device].skip_reason(case.id, _judged_as(target.device))
            if skip:
                results.append(Result(case.id, target.device, target.backend, "skip", f"listed in [skip]: {skip}"))
                continue
            limit = (timeout_s if timeout_s is not None else case.timeout_s) * timeout_scale
            pending.append(
                Task(
                    case.id, target.device, target.backend, limit, precision, dict(tolerances or {}), dict(shapes or {})
                )
            )
    # Long cases first, so that the last minutes are not one worker alone on a big model.
    pending.sort(key=lambda t: -t.timeout_s)
    total = len(results) + len(pending)
    done = 0
    lock = threading.Lock()
    for r in results:
        done += 1
        if progress:
            progress(done, total, r)
    cpu = os.cpu_count() or 1
    threads = max(1, cpu // max(1, jobs))
    queue: Queue[Task] = Queue()
    for task in pending:
        queue.put(task)
    env = worker_env(plugins, pythonpath)
    with Pool(jobs, env=env, threads=threads) as pool:

        def drain() -> None:
            nonlocal done
            while True:
                try:
                    task = queue.get_nowait()
                except Empty:
                    return
                result = apply_expectations(pool.run_task(task), exp[task.device], device=_judged_as(task.device))
                if result.status == "lost" and retry_elsewhere:
                    result = _rerun_elsewhere(pool, task, result, exp[task.device])
                with lock:
                    results.append(result)
                    done += 1
                    if progress:
                        progress(done, total, result)

        threads_ = [threading.Thread(target=drain, daemon=True) for _ in range(min(pool.jobs, max(1, len(pending))))]
        for th in threads_:
            th.start()
        for th in threads_:
            th.join()
    order = {c.id: i for i, c in enumerate(cases)}
    dev_order = {t.device: i for i, t in enumerate(targets)}
    results.sort(key=lambda r: (order.get(r.case, 1 << 30), dev_order.get(r.device, 1 << 30)))
    return Report(
        results=results,
        devices=[t.device for t in targets],
        cases=[c.id for c in cases],
        wall_s=time.monotonic() - t0,
        jobs=jobs,
        precision=precision,
        started=started,
        environment=environment(targets),
        tolerances=dict(tolerances or {}),
    )


def environment(targets: Sequence[Target]) -> dict[str, Any]:
    """Host and runtime versions recorded in every report."""
    import nnport
    from nnport import isa

    env: dict[str, Any] = {
        "nnport": nnport.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu": isa.describe(),  # which numerical path ran (AVX2 vs AVX-512, int8 with or without VNNI)
        "versions": {},
        "unavailable": {t.device: t.unavailable for t in targets if t.unavailable},
    }
    pm = nnport.get_plugin_manager()
    for backend in sorted({t.backend for t in targets if not t.unavailable} | {"onnxruntime"}):
        try:
            env["versions"].update(pm.backend(backend).versions())
        except Exception as exc:  # versions are informative; never fail a run on them
            env["versions"][backend] = f"unknown ({type(exc).__name__})"
    try:
        import onnx

        env["versions"]["onnx"] = onnx.__version__
    except ImportError:
        pass
    return env
