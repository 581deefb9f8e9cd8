"""The public functions: ``backends``, ``devices``, ``compile``, ``measure``."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np

from .compiled import CompiledModel
from .errors import BackendUnavailable, CompileError, NnportError, NoDeviceCouldCompile
from .manager import get_plugin_manager
from .measure import Measurement, MeasureSettings, batch_shapes, check_batch
from .model import Model, load
from .selection import BackendStatus, all_devices, backend_devices, backend_statuses, candidates
from .types import CompileOptions, Device

log = logging.getLogger("nnport")

DeviceSpec = str | Device | Sequence[str | Device]


def backends() -> list[BackendStatus]:
    """Every backend (available, unavailable with the reason, or broken), best first.

    Imports no runtime SDK: availability comes from each backend's ``probe()``.
    """
    return backend_statuses(get_plugin_manager())


def devices(backend: str | None = None, *, include_unavailable: bool = False) -> list[Device]:
    """Devices of every usable backend (or of ``backend``), in ``device="auto"`` order."""
    pm = get_plugin_manager()
    if backend is not None:
        found = backend_devices(pm, backend)
        return [d for d in found if d.available or include_unavailable]
    return all_devices(pm, include_unavailable=include_unavailable)


def compile(
    model: Any,
    device: DeviceSpec = "auto",
    options: CompileOptions | None = None,
    *,
    fallback: bool = True,
    policy: str = "first",
    **option_fields: Any,
) -> CompiledModel:
    """Compile ``model`` on the first candidate device that can take it.

    ``device`` is a device id, backend name, kind, ``"auto"`` or a list of
    these (see ``nnport.selection``).  Candidates are tried in order; one that
    raises is recorded in ``compiled.attempts`` and logged, and the next is
    tried, unless ``fallback=False``, which re-raises the first failure.
    ``policy="fastest"`` compiles every candidate, measures each briefly and
    keeps the fastest.  Keyword arguments are ``CompileOptions`` fields
    (``precision="fp16"``, ``threads=2``...).
    """
    if policy not in ("first", "fastest"):
        raise ValueError(f"policy must be 'first' or 'fastest', got {policy!r}")
    loaded = load(model)
    if options is None:
        options = CompileOptions(**option_fields)
    elif option_fields:
        options = options.replace(**option_fields)
    pm = get_plugin_manager()
    attempts: list[tuple[str, BaseException]] = []
    successes: list[CompiledModel] = []
    for dev in candidates(pm, device, skipped=attempts):  # unusable list entries are attempts too
        try:
            compiled = _compile_on(pm, loaded, dev, options)
        except NnportError as exc:
            if not fallback:
                raise
            attempts.append((dev.id, exc))
            log.info("nnport: %s could not compile %s: %s; trying the next device", dev.id, loaded.name, exc)
            continue
        compiled.attempts = list(attempts)
        if policy == "first":
            return compiled
        successes.append(compiled)
    if not successes:
        raise NoDeviceCouldCompile(attempts)
    return _fastest(successes, attempts)


def _compile_on(pm: Any, model: Model, dev: Device, options: CompileOptions) -> CompiledModel:
    if not dev.available:
        raise BackendUnavailable(dev.backend, f"device {dev.id} is unusable: {dev.reason}")
    backend = pm.backend(dev.backend)
    start = time.perf_counter()
    try:
        compiled = pm.hook.nnport_compile(backend=backend, model=model, device=dev, options=options)
    except NnportError:
        raise
    except Exception as exc:
        raise CompileError(f"{type(exc).__name__}: {exc}", backend=dev.backend, device=dev.id) from exc
    if compiled is None:
        raise CompileError("no plugin compiled the model (every nnport_compile returned None)", backend=dev.backend, device=dev.id)
    if compiled.compile_time_s is None:
        compiled.compile_time_s = time.perf_counter() - start
    return compiled


def _fastest(compiled: list[CompiledModel], attempts: list[tuple[str, BaseException]]) -> CompiledModel:
    settings = MeasureSettings(warmup=3, min_iterations=10, min_duration_s=0.2, energy=False)
    timed = []
    for c in compiled:
        m = measure(c, settings=settings)
        timed.append((m.latency_p50_ms, c))
        c.info["fastest_policy_p50_ms"] = m.latency_p50_ms
    timed.sort(key=lambda t: t[0])
    best = timed[0][1]
    best.attempts = list(attempts)
    best.info["fastest_policy"] = {c.device.id: p50 for p50, c in timed}
    return best


def measure(
    compiled: CompiledModel,
    inputs: Mapping[str, np.ndarray] | None = None,
    settings: MeasureSettings | None = None,
    **setting_fields: Any,
) -> Measurement:
    """Measure ``compiled`` (see specs/measurement.md); ``inputs`` default to seeded data."""
    if settings is None:
        settings = MeasureSettings(**setting_fields)
    pm = get_plugin_manager()
    backend = compiled.backend
    if inputs is not None:
        compiled.check_feeds(inputs)
        check_batch(compiled, inputs, settings.batch)
        shapes = {k: tuple(v.shape) for k, v in inputs.items()}
    else:
        shapes = batch_shapes(compiled, settings.batch)  # None for batch 1; raises when the batch is fixed
    binding = pm.hook.nnport_allocate(backend=backend, compiled=compiled, shapes=shapes)
    if inputs is not None:
        binding.inputs.update(inputs)
    return pm.hook.nnport_measure(backend=backend, compiled=compiled, binding=binding, settings=settings)
