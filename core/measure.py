"""Measurement: what to time (``MeasureSettings``) and the result (``Measurement``).

The timing loop calls ``backend.execute`` on a pre-allocated binding directly,
never through the pluggy hook, with ``time.perf_counter_ns``: warm-up runs,
then at least ``min_iterations`` and at least ``min_duration_s``.
specs/measurement.md states what is timed and how each figure is computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import MeasurementError

if TYPE_CHECKING:
    from .backend import Backend
    from .compiled import CompiledModel
    from .types import Binding

SCENARIOS = ("single-stream", "multi-stream", "offline")


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure: warm-up, minimum iterations and duration, scenario."""

    warmup: int = 10
    min_iterations: int = 50
    min_duration_s: float = 1.0
    max_duration_s: float | None = None
    scenario: str = "single-stream"
    streams: int = 1
    batch: int = 1
    energy: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise MeasurementError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        if not isinstance(self.min_iterations, int) or self.min_iterations < 1:
            raise MeasurementError(f"min_iterations must be an integer >= 1, got {self.min_iterations!r}")
        if not isinstance(self.min_duration_s, (int, float)) or self.min_duration_s < 0:
            raise MeasurementError(f"min_duration_s must be a number >= 0, got {self.min_duration_s!r}")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise MeasurementError(f"max_duration_s must be > 0 or None, got {self.max_duration_s!r}")
        if self.scenario not in SCENARIOS:
            raise MeasurementError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if not isinstance(self.streams, int) or self.streams < 1:
            raise MeasurementError(f"streams must be an integer >= 1, got {self.streams!r}")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise MeasurementError(f"batch must be an integer >= 1, got {self.batch!r}")


@dataclass
class Measurement:
    """The result of measuring one compiled model on one device.

    ``samples_ms`` keeps every timed latency.  ``energy_unavailable`` is the
    reason when no energy figure could be measured: nnport never estimates one.
    """

    device: str
    backend: str
    scenario: str
    samples_ms: list[float]
    duration_s: float
    streams: int = 1
    batch: int = 1
    energy_j: float | None = None
    energy_unavailable: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        return len(self.samples_ms)

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
        """Inferences (samples x batch) per second over the timed window."""
        return self.iterations * self.batch / self.duration_s if self.duration_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        s = np.asarray(self.samples_ms)
        return {
            "device": self.device,
            "backend": self.backend,
            "scenario": self.scenario,
            "iterations": self.iterations,
            "duration_s": self.duration_s,
            "latency_min_ms": float(s.min()),
            "latency_mean_ms": float(s.mean()),
            "latency_stdev_ms": float(s.std(ddof=1)) if s.size > 1 else 0.0,
            "latency_p50_ms": self.percentile(50),
            "latency_p90_ms": self.percentile(90),
            "latency_p95_ms": self.percentile(95),
            "latency_p99_ms": self.percentile(99),
            "latency_max_ms": float(s.max()),
            "throughput_ips": self.throughput_ips,
            "energy_j": self.energy_j,
            "energy_unavailable": self.energy_unavailable,
            **self.extra,
        }


def default_measure(backend: Backend, compiled: CompiledModel, binding: Binding, settings: MeasureSettings) -> Measurement:
    """nnport's single-stream timing loop around ``backend.execute``."""
    execute = backend.execute
    for _ in range(settings.warmup):
        execute(compiled, binding)
    samples: list[int] = []
    clock = time.perf_counter_ns
    min_ns = int(settings.min_duration_s * 1e9)
    max_ns = int(settings.max_duration_s * 1e9) if settings.max_duration_s else None
    start = clock()
    while True:
        t0 = clock()
        execute(compiled, binding)
        t1 = clock()
        samples.append(t1 - t0)
        elapsed = t1 - start
        if len(samples) >= settings.min_iterations and elapsed >= min_ns:
            break
        if max_ns is not None and elapsed >= max_ns and len(samples) >= 1:
            break
    duration_s = (clock() - start) / 1e9
    return Measurement(
        device=compiled.device.id,
        backend=backend.name,
        scenario=settings.scenario,
        samples_ms=[s / 1e6 for s in samples],
        duration_s=duration_s,
        energy_unavailable="no energy meter is implemented yet",
    )
