"""Measurement: what to time (``MeasureSettings``), the timing loop, the result (``Measurement``).

The loop calls ``backend.execute`` on pre-allocated bindings directly, never
through the pluggy hook, timing each call with ``time.perf_counter_ns``
(MLPerf LoadGen / benchmark_app style): warm-up runs, then at least
``min_iterations`` and at least ``min_duration_s``.  Every sample is kept.
Scenarios: ``single-stream`` (one caller, latency), ``multi-stream`` (N
threads, each with its own binding; aggregate throughput and per-stream
latency) and ``offline`` (batch B per call, N streams; throughput).
Around the run: peak resident memory (``/proc/self/status`` VmHWM) and energy
from the meters of ``nnport.energy``.  specs/measurement.md states what is
timed, what is not, and how each figure is computed.
"""

from __future__ import annotations

import math
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, MeasurementError

if TYPE_CHECKING:
    from .backend import Backend
    from .compiled import CompiledModel
    from .energy import EnergyResult
    from .types import Binding

SCENARIOS = ("single-stream", "multi-stream", "offline")
PROGRESS_INTERVAL_S = 0.5

Progress = Callable[[int, float, float], None]
"""``progress(inferences done, elapsed seconds, target seconds)``, called about twice a second."""


def _positive_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MeasurementError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MeasurementError(f"{name} must be a finite number of seconds > 0, got {value!r}")


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure.

    ``warmup`` untimed runs per stream, then timed runs until both
    ``min_iterations`` (over all streams) and ``min_duration_s`` are reached,
    or ``max_duration_s`` has passed.  ``scenario`` is ``single-stream``
    (``streams`` must be 1), ``multi-stream`` (``streams`` threads) or
    ``offline`` (``batch`` samples per call; ``streams`` threads).  ``batch``
    > 1 needs a model whose first input dimension is dynamic.  ``energy``
    turns the meters on; a run whose latency coefficient of variation exceeds
    ``cv_threshold`` carries an "unstable" warning.
    """

    warmup: int = 10
    min_iterations: int = 50
    min_duration_s: float = 1.0
    max_duration_s: float | None = None
    scenario: str = "single-stream"
    streams: int = 1
    batch: int = 1
    energy: bool = True
    seed: int = 0
    cv_threshold: float = 0.10
    progress: Progress | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _positive_int("warmup", self.warmup, 0)
        _positive_int("min_iterations", self.min_iterations, 1)
        _positive_seconds("min_duration_s", self.min_duration_s)
        if self.max_duration_s is not None:
            _positive_seconds("max_duration_s", self.max_duration_s)
            if self.max_duration_s < self.min_duration_s:
                raise MeasurementError(
                    f"max_duration_s ({self.max_duration_s}) is shorter than min_duration_s ({self.min_duration_s})"
                )
        if self.scenario not in SCENARIOS:
            raise MeasurementError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        _positive_int("streams", self.streams, 1)
        _positive_int("batch", self.batch, 1)
        if self.scenario == "single-stream" and self.streams != 1:
            raise MeasurementError(
                f"the single-stream scenario runs one stream, got streams={self.streams}; use "
                "scenario='multi-stream' or 'offline'"
            )
        if (
            isinstance(self.cv_threshold, bool)
            or not isinstance(self.cv_threshold, (int, float))
            or not self.cv_threshold > 0
        ):
            raise MeasurementError(f"cv_threshold must be a number > 0, got {self.cv_threshold!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup_iterations": self.warmup,
            "min_iterations": self.min_iterations,
            "min_duration_s": self.min_duration_s,
            "max_duration_s": self.max_duration_s,
            "scenario": self.scenario,
            "streams": self.streams,
            "batch": self.batch,
            "energy": self.energy,
            "seed": self.seed,
            "cv_threshold_percent": self.cv_threshold * 100,
        }


# -- statistics ------------------------------------------------------------------------------


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """min, mean, sample stdev, p50/p90/p95/p99 (linear interpolation), max and CV in %."""
    s = np.asarray(samples_ms, dtype=np.float64)
    if s.size == 0:
        raise MeasurementError("no timed samples")
    p50, p90, p95, p99 = np.percentile(s, [50, 90, 95, 99])
    mean = float(s.mean())
    stdev = float(s.std(ddof=1)) if s.size > 1 else 0.0
    return {
        "latency_min_ms": float(s.min()),
        "latency_mean_ms": mean,
        "latency_stdev_ms": stdev,
        "latency_p50_ms": float(p50),
        "latency_p90_ms": float(p90),
        "latency_p95_ms": float(p95),
        "latency_p99_ms": float(p99),
        "latency_max_ms": float(s.max()),
        "latency_cv_percent": 100.0 * stdev / mean if mean > 0 else float("nan"),
    }


# -- memory ------------------------------------------------------------------------------------


def _proc_status() -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of this process in KiB, or None where /proc is absent."""
    try:
        rss = hwm = None
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return (rss, hwm) if rss is not None and hwm is not None else None
    except (OSError, ValueError):
        return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class MemoryResult:
    peak_rss_mib: float | None
    added_mib: float | None
    note: str | None = None


class MemoryWatch:
    """Peak resident memory of this process over a window, and what the window added.

    VmHWM is a process-wide high-water mark: allocations by other threads count
    too.  ``start`` resets it where the kernel allows (``clear_refs``), so the
    peak is the window's own; where it cannot, the peak is the process's
    lifetime one and "added" is known only when the window set a new peak.
    """

    def start(self) -> None:
        self.reset = _reset_peak()
        self.before = _proc_status()

    def stop(self) -> MemoryResult:
        after = _proc_status()
        if self.before is None or after is None:
            return self._fallback()
        rss0, hwm0 = self.before
        peak = after[1]
        if self.reset or peak > hwm0:
            return MemoryResult(peak / 1024, max(0, peak - rss0) / 1024)
        return MemoryResult(
            peak / 1024,
            None,
            f"the process's earlier peak ({hwm0 / 1024:.1f} MiB) was not exceeded and "
            "/proc/self/clear_refs could not reset it: added memory unavailable",
        )

    def _fallback(self) -> MemoryResult:
        try:
            import resource
            import sys

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_mib = peak / 2**20 if sys.platform == "darwin" else peak / 1024
            return MemoryResult(
                peak_mib,
                None,
                "no /proc/self/status: peak is the process's lifetime peak (getrusage); added memory unavailable",
            )
        except Exception as exc:
            return MemoryResult(None, None, f"memory unavailable: {exc}")


# -- context -----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_context() -> dict[str, Any]:
    """What the machine is: enough to tell whether two results are comparable."""
    from . import __version__

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:
        physical = None
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {
        "nnport_version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": physical,
        "cpu_cores_usable": usable,
        "loadavg_1m": load,
    }


def run_context(compiled: CompiledModel) -> dict[str, Any]:
    """Host context plus the backend, device, runtime versions and compile options."""
    backend = compiled.backend
    try:
        versions = dict(backend.versions())
    except Exception as exc:
        versions = {"error": f"{type(exc).__name__}: {exc}"}
    opts = compiled.options
    return {
        **host_context(),
        "backend": backend.name,
        "device": compiled.device.id,
        "device_name": compiled.device.name,
        "runtime_versions": versions,
        "threads": opts.threads if opts.threads is not None else "runtime default",
        "precision": opts.precision,
        "hint": opts.hint,
        "model": compiled.model.name,
        "model_hash": compiled.model.hash,
    }


# -- the result ----------------------------------------------------------------------------------


@dataclass
class Measurement:
    """The result of measuring one compiled model on one device.

    ``samples_ms`` keeps every timed latency (all streams, in stream order);
    ``stream_samples_ms`` the same per stream.  ``energy_j`` is None when no
    meter could measure; ``energy_unavailable`` then says why, meter by meter:
    nnport never estimates energy.  ``to_dict`` gives the JSON form, every
    number's unit in its key.
    """

    device: str
    backend: str
    scenario: str
    samples_ms: list[float]
    duration_s: float
    streams: int = 1
    batch: int = 1
    warmup: int = 0
    stream_samples_ms: list[list[float]] = field(default_factory=list)
    stream_durations_s: list[float] = field(default_factory=list)
    model: str | None = None
    compile_cold_s: float | None = None
    compile_warm_s: float | None = None
    compile_warm_cache_hit: bool | None = None
    compile_rss_added_mib: float | None = None
    peak_rss_mib: float | None = None
    inference_rss_added_mib: float | None = None
    memory_note: str | None = None
    energy_j: float | None = None
    energy_meter: str | None = None
    energy_meter_reads: str | None = None
    energy_readings_j: dict[str, float] = field(default_factory=dict)
    energy_reasons: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    # -- figures ----------------------------------------------------------------------

    @property
    def iterations(self) -> int:
        """Timed calls of ``execute`` over all streams."""
        return len(self.samples_ms)

    @property
    def inferences(self) -> int:
        """Timed samples processed: calls x batch."""
        return self.iterations * self.batch

    def stats(self) -> dict[str, float]:
        return latency_stats(self.samples_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_ms), q))

    @property
    def latency_p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def latency_mean_ms(self) -> float:
        return float(np.mean(self.samples_ms))

    @property
    def throughput_ips(self) -> float:
        """Inferences (calls x batch, all streams) per second of the timed window."""
        return self.inferences / self.duration_s if self.duration_s > 0 else float("nan")

    @property
    def energy_per_inference_mj(self) -> float | None:
        return None if self.energy_j is None or self.inferences == 0 else self.energy_j * 1e3 / self.inferences

    @property
    def avg_power_w(self) -> float | None:
        return None if self.energy_j is None or self.duration_s <= 0 else self.energy_j / self.duration_s

    @property
    def energy_unavailable(self) -> str | None:
        """Why there is no energy figure (every meter's reason), or None when there is one."""
        if self.energy_j is not None:
            return None
        if not self.energy_reasons:
            return "no energy meter is registered"
        return "; ".join(f"{name}: {why}" for name, why in self.energy_reasons.items())

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        """The JSON form: every number carries its unit in its key."""
        d: dict[str, Any] = {
            "device": self.device,
            "backend": self.backend,
            "model": self.model,
            "scenario": self.scenario,
            "streams": self.streams,
            "batch": self.batch,
            "warmup_iterations": self.warmup,
            "iterations": self.iterations,
            "inferences": self.inferences,
            "duration_s": self.duration_s,
            **self.stats(),
            "throughput_ips": self.throughput_ips,
        }
        if self.streams > 1:
            d["stream_iterations"] = [len(s) for s in self.stream_samples_ms]
            d["stream_latency_p50_ms"] = [float(np.percentile(s, 50)) for s in self.stream_samples_ms]
            d["stream_latency_p99_ms"] = [float(np.percentile(s, 99)) for s in self.stream_samples_ms]
            d["stream_throughput_ips"] = [
                len(s) * self.batch / t if t > 0 else None
                for s, t in zip(self.stream_samples_ms, self.stream_durations_s)
            ]
        d.update(
            {
                "compile_cold_s": self.compile_cold_s,
                "compile_warm_s": self.compile_warm_s,
                "compile_warm_cache_hit": self.compile_warm_cache_hit,
                "compile_rss_added_mib": self.compile_rss_added_mib,
                "peak_rss_mib": self.peak_rss_mib,
                "inference_rss_added_mib": self.inference_rss_added_mib,
                "memory_note": self.memory_note,
                "energy": "measured" if self.energy_j is not None else "unavailable",
                "energy_j": self.energy_j,
                "energy_per_inference_mj": self.energy_per_inference_mj,
                "avg_power_w": self.avg_power_w,
                "energy_meter": self.energy_meter,
                "energy_meter_reads": self.energy_meter_reads,
                "energy_readings_j": dict(self.energy_readings_j),
                "energy_unavailable_reasons": dict(self.energy_reasons) if self.energy_j is None else {},
                "warnings": list(self.warnings),
                "context": dict(self.context),
                **self.extra,
            }
        )
        if samples:
            d["samples_ms"] = [round(x, 6) for x in self.samples_ms]
        return d

    def summary(self) -> str:
        """One line for logs and the CLI."""
        s = self.stats()
        energy = (
            f"{self.energy_per_inference_mj:.3g} mJ/inference"
            if self.energy_j is not None
            else f"energy: unavailable ({self.energy_unavailable})"
        )
        return (
            f"{self.device} {self.scenario}: p50 {s['latency_p50_ms']:.4g} ms, p99 {s['latency_p99_ms']:.4g} ms, "
            f"{self.throughput_ips:.4g} inferences/s over {self.iterations} iterations; {energy}"
        )


# -- batch -----------------------------------------------------------------------------------------


def batch_shapes(compiled: CompiledModel, batch: int) -> dict[str, tuple[int, ...]] | None:
    """Input shapes with the first dimension set to ``batch`` (None for batch 1: the spec's shapes).

    Raises ``MeasurementError`` when an input's first dimension is fixed to
    another size: such a model cannot take a batch of ``batch``.
    """
    if batch == 1:
        return None
    shapes = {}
    fixed = []
    for spec in compiled.inputs:
        shape = list(spec.concrete_shape())
        if not shape:
            raise MeasurementError(f"input {spec.name!r} is a scalar: it has no batch dimension for batch {batch}")
        if isinstance(spec.shape[0], int) and spec.shape[0] != batch:
            fixed.append(f"{spec.name!r} {list(spec.shape)}")
        shape[0] = batch
        shapes[spec.name] = tuple(shape)
    if fixed:
        raise MeasurementError(
            f"the model's batch is fixed: input(s) {', '.join(fixed)} have a fixed first dimension, so batch {batch} "
            "cannot be measured; export the model with a dynamic (symbolic) batch dimension, or use batch 1"
        )
    return shapes


def check_batch(compiled: CompiledModel, inputs: Mapping[str, np.ndarray], batch: int) -> None:
    """Raise ``MeasurementError`` unless the inputs hold ``batch`` samples per call.

    Checked on every input whose first dimension is dynamic (and on all for
    ``batch`` > 1), so that throughput never counts a batch-4 call as one
    inference.
    """
    if batch > 1:
        batch_shapes(compiled, batch)  # a fixed first dimension: the clear error
    wrong = []
    for spec in compiled.inputs:
        a = inputs.get(spec.name)
        if a is None or not spec.shape or getattr(a, "ndim", 0) == 0:
            continue
        if (batch > 1 or not isinstance(spec.shape[0], int)) and a.shape[0] != batch:
            wrong.append(f"{spec.name!r} {list(a.shape)}")
    if wrong:
        raise MeasurementError(
            f"batch is {batch} but input(s) {', '.join(wrong)} have another first dimension; "
            f"set batch to the inputs' batch size so that throughput counts every sample"
        )


# -- the timing loop -----------------------------------------------------------------------------


def _failure(exc: BaseException, compiled: CompiledModel, where: str) -> BaseException:
    if isinstance(exc, InputError):
        return exc
    return MeasurementError(
        f"measuring {compiled.model.name} on {compiled.device.id} failed at {where}: {type(exc).__name__}: {exc}"
    )


def _single_stream(
    execute: Callable[[CompiledModel, Binding], object],
    compiled: CompiledModel,
    binding: Binding,
    settings: MeasureSettings,
    on_start: Callable[[], None],
) -> tuple[list[int], float]:
    """One caller: the tight loop.  Returns (samples in ns, window in s)."""
    clock = time.perf_counter_ns
    i = 0
    try:
        for i in range(settings.warmup):  # noqa: B007 (i names the failing run)
            execute(compiled, binding)
    except Exception as exc:
        raise _failure(exc, compiled, f"warm-up run {i + 1}") from exc
    on_start()
    samples: list[int] = []
    append = samples.append
    min_iterations = settings.min_iterations
    progress = settings.progress
    start = clock()
    min_end = start + int(settings.min_duration_s * 1e9)
    max_end = start + int(settings.max_duration_s * 1e9) if settings.max_duration_s else None
    next_report = start + int(PROGRESS_INTERVAL_S * 1e9)
    target_s = settings.min_duration_s
    try:
        while True:
            t0 = clock()
            execute(compiled, binding)
            t1 = clock()
            append(t1 - t0)
            if t1 >= min_end and len(samples) >= min_iterations:
                break
            if max_end is not None and t1 >= max_end:
                break
            if progress is not None and t1 >= next_report:
                progress(len(samples) * settings.batch, (t1 - start) / 1e9, target_s)
                next_report = t1 + int(PROGRESS_INTERVAL_S * 1e9)
    except Exception as exc:
        raise _failure(exc, compiled, f"timed iteration {len(samples) + 1}") from exc
    return samples, (t1 - start) / 1e9


def _multi_stream(
    execute: Callable[[CompiledModel, Binding], object],
    compiled: CompiledModel,
    bindings: list[Binding],
    settings: MeasureSettings,
    on_start: Callable[[], None],
) -> tuple[list[list[int]], list[float], float]:
    """N threads, one binding each, released together by a barrier.

    Returns (samples per stream in ns, each stream's window in s, the whole
    window in s: from the release to the last stream's end).
    """
    n = len(bindings)
    per_stream_min = max(1, math.ceil(settings.min_iterations / n))
    samples: list[list[int]] = [[] for _ in range(n)]
    ends = [0] * n
    errors: list[BaseException] = []
    state: dict[str, int] = {}
    clock = time.perf_counter_ns

    def release() -> None:  # run by the last thread to reach the barrier
        on_start()
        state["start"] = clock()

    barrier = threading.Barrier(n, action=release)

    def stream(k: int) -> None:
        binding = bindings[k]
        try:
            for i in range(settings.warmup):  # noqa: B007 (i names the failing run)
                execute(compiled, binding)
        except Exception as exc:
            errors.append(_failure(exc, compiled, f"warm-up run {i + 1} of stream {k}"))
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            if not errors:  # the release action itself failed
                errors.append(
                    MeasurementError(f"the {n} streams on {compiled.device.id} could not be started together")
                )
            return
        mine = samples[k]
        append = mine.append
        start = state["start"]
        min_end = start + int(settings.min_duration_s * 1e9)
        max_end = start + int(settings.max_duration_s * 1e9) if settings.max_duration_s else None
        progress = settings.progress if k == 0 else None
        next_report = start + int(PROGRESS_INTERVAL_S * 1e9)
        t1 = start
        try:
            while not errors:
                t0 = clock()
                execute(compiled, binding)
                t1 = clock()
                append(t1 - t0)
                if t1 >= min_end and len(mine) >= per_stream_min:
                    break
                if max_end is not None and t1 >= max_end:
                    break
                if progress is not None and t1 >= next_report:
                    progress(sum(len(s) for s in samples) * settings.batch, (t1 - start) / 1e9, settings.min_duration_s)
                    next_report = t1 + int(PROGRESS_INTERVAL_S * 1e9)
        except Exception as exc:
            errors.append(_failure(exc, compiled, f"timed iteration {len(mine) + 1} of stream {k}"))
        ends[k] = t1

    threads = [threading.Thread(target=stream, args=(k,), name=f"nnport-stream-{k}", daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    start = state["start"]
    return samples, [(e - start) / 1e9 for e in ends], (max(ends) - start) / 1e9


def _allocate_like(backend: Backend, compiled: CompiledModel, binding: Binding) -> Binding:
    """Another binding with the same inputs, through the ``nnport_allocate`` hook."""
    from .manager import get_plugin_manager

    shapes = {k: tuple(v.shape) for k, v in binding.inputs.items()}
    other: Binding | None = get_plugin_manager().hook.nnport_allocate(backend=backend, compiled=compiled, shapes=shapes)
    if other is None:
        raise MeasurementError(
            f"no nnport_allocate implementation returned a binding for stream of {compiled.device.id}"
        )
    other.inputs.update(binding.inputs)
    return other


def default_measure(
    backend: Backend, compiled: CompiledModel, binding: Binding, settings: MeasureSettings
) -> Measurement:
    """nnport's measurement: the timing loop of the settings' scenario, memory and energy around it."""
    check_batch(compiled, binding.inputs, settings.batch)
    streams = settings.streams
    bindings = [binding] + [_allocate_like(backend, compiled, binding) for _ in range(streams - 1)]

    from .energy import EnergySession, collect_meters

    if settings.energy:
        meters, reasons = collect_meters()
        energy: EnergySession | None = EnergySession(meters, compiled.device.kind, reasons)
    else:
        energy = None
    memory = MemoryWatch()
    memory.start()
    on_start = energy.start if energy is not None else (lambda: None)
    try:
        if streams == 1:
            ns, duration_s = _single_stream(backend.execute, compiled, binding, settings, on_start)
            per_stream, stream_durations = [ns], [duration_s]
        else:
            per_stream, stream_durations, duration_s = _multi_stream(
                backend.execute, compiled, bindings, settings, on_start
            )
    except BaseException:
        if energy is not None:
            energy.abort()
        raise
    energy_result: EnergyResult | None = energy.stop() if energy is not None else None
    mem = memory.stop()

    stream_ms = [[x / 1e6 for x in s] for s in per_stream]
    m = Measurement(
        device=compiled.device.id,
        backend=backend.name,
        model=compiled.model.name,
        scenario=settings.scenario,
        samples_ms=[x for s in stream_ms for x in s],
        duration_s=duration_s,
        streams=streams,
        batch=settings.batch,
        warmup=settings.warmup,
        stream_samples_ms=stream_ms,
        stream_durations_s=stream_durations,
        peak_rss_mib=mem.peak_rss_mib,
        inference_rss_added_mib=mem.added_mib,
        memory_note=mem.note,
        context={**run_context(compiled), "settings": settings.to_dict()},
    )
    if compiled.compile_time_s is not None:
        if compiled.cache_hit:
            m.compile_warm_s, m.compile_warm_cache_hit = compiled.compile_time_s, True
        else:
            m.compile_cold_s = compiled.compile_time_s
    if energy_result is None:
        m.energy_reasons = {"settings": "energy measurement was not requested (energy=False)"}
    else:
        m.energy_j = energy_result.energy_j
        m.energy_meter = energy_result.meter
        m.energy_meter_reads = energy_result.meter_description
        m.energy_readings_j = dict(energy_result.readings_j)
        m.energy_reasons = dict(energy_result.reasons)
    m.warnings.extend(stability_warnings(m, settings))
    return m


def stability_warnings(m: Measurement, settings: MeasureSettings) -> list[str]:
    """perf_analyzer-style: flag a run whose latency spread is too wide to trust its mean."""
    warnings = []
    cv = m.stats()["latency_cv_percent"]
    if cv > settings.cv_threshold * 100:
        warnings.append(
            f"unstable run: latency coefficient of variation {cv:.1f}% exceeds {settings.cv_threshold * 100:.0f}% "
            "(other load on the machine, frequency scaling or too short a run); prefer p50 over the mean, or run longer"
        )
    if m.iterations < 100:
        warnings.append(f"only {m.iterations} timed iterations: p99 is interpolated between the largest samples")
    return warnings
