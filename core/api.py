"""The public functions: ``backends``, ``devices``, ``compile``, ``measure``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .compiled import CompiledModel
from .errors import BackendUnavailable, CompileError, NnportError, NoDeviceCouldCompile
from .manager import get_plugin_manager
from .measuring import Measurement, MeasureSettings, batch_shapes, check_batch
from .model import Model, load
from .paths import cache_root
from .selection import BackendStatus, all_devices, backend_devices, backend_statuses, candidates
from .shapes import fix_shapes
from .types import CompileOptions, Device

log = logging.getLogger("nnport")

DeviceSpec = str | Device | Sequence[str | Device]


def backends(*, check_devices: bool = False) -> list[BackendStatus]:
    """Every backend (available, unavailable with the reason, or broken), best first.

    Imports no runtime SDK: availability comes from each backend's ``probe()``.
    ``check_devices=True`` also lists every available backend's devices (importing
    its SDK) so that a backend whose device ids are not its own
    (``<backend name>:<local id>``) is a ``broken`` row naming the other backend.
    """
    return backend_statuses(get_plugin_manager(), check_devices=check_devices)


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
    keeps the fastest; the choice is remembered per (model hash, candidates,
    options, host) in ``fastest.json`` under ``nnport.paths.cache_root()``
    (``$NNPORT_CACHE_DIR``, else ``~/.cache/nnport``), so later compiles go
    straight to it.  Keyword
    arguments are ``CompileOptions`` fields (``precision="fp16"``, ``threads=2``,
    ``shapes={"images": (1, 3, 640, 640)}``...).  ``shapes`` fixes symbolic
    input dims here, once, so every candidate backend compiles the same static
    model (``nnport.shapes``); a bad shape is an ``InputError`` before any
    backend is tried.
    """
    if policy not in ("first", "fastest"):
        raise ValueError(f"policy must be 'first' or 'fastest', got {policy!r}")
    if options is None:
        options = CompileOptions(**option_fields)
    elif option_fields:
        options = options.replace(**option_fields)
    loaded = fix_shapes(load(model), options.shapes)
    pm = get_plugin_manager()
    attempts: list[tuple[str, BaseException]] = []
    successes: list[CompiledModel] = []
    devices_to_try = candidates(pm, device, skipped=attempts)  # unusable list entries are attempts too
    choice_key = None
    if policy == "fastest":
        choice_key = _choice_key(loaded, devices_to_try, options)
        remembered = _fastest_choices().get(choice_key)
        preferred = [d for d in devices_to_try if d.id == remembered]
        if preferred:
            try:
                compiled = _compile_on(pm, loaded, preferred[0], options)
                compiled.info["fastest_policy_cached"] = True
                return compiled
            except NnportError as exc:  # the remembered device no longer works: measure again
                log.info("nnport: remembered fastest device %s failed (%s); measuring again", remembered, exc)
    for dev in devices_to_try:
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
    best = _fastest(successes, attempts)
    if choice_key is not None:
        _remember_fastest(choice_key, best.device.id)
    return best


def _choice_key(model: Model, devices: Sequence[Device], options: CompileOptions) -> str:
    """The fastest-policy cache key: model hash, candidates, options and this host."""
    host = f"{platform.node()}|{platform.machine()}|{platform.processor()}|{os.cpu_count()}"
    text = "|".join([model.hash, options.key(), host, *sorted(d.id for d in devices)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _fastest_choices() -> dict[str, str]:
    try:
        choices: dict[str, str] = json.loads((cache_root() / "fastest.json").read_text())
        return choices
    except (OSError, ValueError):
        return {}


def _remember_fastest(key: str, device_id: str) -> None:
    """Best effort: a read-only home must not make compile fail."""
    try:
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        choices = _fastest_choices()
        choices[key] = device_id
        tmp = root / f"fastest.json.{os.getpid()}"
        tmp.write_text(json.dumps(choices, indent=1, sort_keys=True))
        os.replace(tmp, root / "fastest.json")
    except OSError as exc:
        log.info("nnport: could not record the fastest device: %s", exc)


def _compile_on(pm: Any, model: Model, dev: Device, options: CompileOptions) -> CompiledModel:
    """Compile on one device; with ``shapes=``, the as-shipped graph is the fallback of the static one.

    A runtime can fail on a graph only because its inputs became static (ONNX
    Runtime on silero-vad: the LSTM inside an If branch loses its rank once
    the input dims are fixed, raw ONNX Runtime alike).  Then the model as
    shipped is compiled instead, and the compiled model still takes exactly the
    given shapes (its input specs are the static ones), so ``shapes=`` is never
    worse than no shapes.  ``compiled.info["shapes_fallback"]`` says why.
    """
    if not dev.available:
        raise BackendUnavailable(dev.backend, f"device {dev.id} is unusable: {dev.reason}")
    backend = pm.backend(dev.backend)
    start = time.perf_counter()
    source = model.metadata.get("_shapes_source")
    try:
        compiled = _hook_compile(pm, backend, model, dev, options)
    except CompileError as exc:
        if source is None:
            raise
        try:
            compiled = _hook_compile(pm, backend, source, dev, options)
        except NnportError:
            raise exc from None
        compiled.pin_inputs(model.inputs)
        compiled.info["shapes_fallback"] = (
            f"the static graph failed ({exc}); compiled the model as shipped, feeds pinned to {dict(options.shapes)}"
        )
    if compiled.compile_time_s is None:
        compiled.compile_time_s = time.perf_counter() - start
    return compiled


def _hook_compile(pm: Any, backend: Any, model: Model, dev: Device, options: CompileOptions) -> CompiledModel:
    try:
        compiled: CompiledModel | None = pm.hook.nnport_compile(
            backend=backend, model=model, device=dev, options=options
        )
    except NnportError:
        raise
    except Exception as exc:
        raise CompileError(f"{type(exc).__name__}: {exc}", backend=dev.backend, device=dev.id) from exc
    if compiled is None:
        raise CompileError(
            "no plugin compiled the model (every nnport_compile returned None)", backend=dev.backend, device=dev.id
        )
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
    """Measure ``compiled`` (see specs/measurement.md); ``inputs`` default to seeded data.

    Keyword arguments are ``MeasureSettings`` fields; given with ``settings``
    they override its values.
    """
    if settings is None:
        settings = MeasureSettings(**setting_fields)
    elif setting_fields:
        settings = dataclasses.replace(settings, **setting_fields)
    pm = get_plugin_manager()
    backend = compiled.backend
    if inputs is not None:
        compiled.check_feeds(inputs)
        check_batch(compiled, inputs, settings.batch)
        shapes: dict[str, tuple[int, ...]] | None = {k: tuple(v.shape) for k, v in inputs.items()}
    else:
        shapes = batch_shapes(compiled, settings.batch)  # None for batch 1; raises when the batch is fixed
    binding = pm.hook.nnport_allocate(backend=backend, compiled=compiled, shapes=shapes)
    if inputs is not None:
        binding.inputs.update(inputs)
    result: Measurement = pm.hook.nnport_measure(backend=backend, compiled=compiled, binding=binding, settings=settings)
    return result


def bench(
    model: Any,
    device: str,
    options: CompileOptions | None = None,
    settings: MeasureSettings | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    warm: bool = True,
) -> Measurement:
    """One column of ``nnport bench``: a cold compile, a warm (cached) compile, then ``measure``.

    ``device`` must name one device's backend (no fallback).  The measurement carries the
    compile figures (``compile_cold_s``, ``compile_warm_s``, ``compile_warm_cache_hit``,
    ``compile_rss_added_mib``) with warnings where they are not what they say (a cold compile
    that hit a cache, a backend that does not cache); ``extra["compile_memory_note"]`` says why
    compile memory could not be read, where it could not.  ``warm=False`` skips the warm compile.
    """
    import gc
    import tempfile

    from .measuring import MemoryWatch

    options = options or CompileOptions()
    memory = MemoryWatch()
    memory.start()
    compiled = compile(model, device, options, fallback=False)
    compile_mem = memory.stop()
    cold_s, cold_hit = compiled.compile_time_s, compiled.cache_hit
    warm_s = warm_hit = None
    if warm:
        with tempfile.TemporaryDirectory(prefix="nnport-bench-cache-") as cache:
            cached = options.replace(cache_dir=cache)
            first = compile(model, compiled.device.id, cached, fallback=False)  # fills the cache
            del first
            second = compile(model, compiled.device.id, cached, fallback=False)
            warm_s, warm_hit = second.compile_time_s, second.cache_hit
            del second
            gc.collect()
    m = measure(compiled, inputs, settings)
    m.compile_cold_s = cold_s
    m.compile_warm_s = warm_s
    m.compile_warm_cache_hit = warm_hit
    m.compile_rss_added_mib = compile_mem.added_mib
    if cold_hit:
        m.warnings.append("the cold compile hit a compile cache: compile_cold_s is not a cold figure")
    backend = compiled.device.backend
    if warm and warm_hit is False:
        m.warnings.append(f"{backend} did not reuse its cache: compile_warm_s is a second full compile")
    elif warm and warm_hit is None:
        m.warnings.append(f"{backend} does not report cache hits: compile_warm_s may be a second full compile")
    if compile_mem.note:
        m.extra["compile_memory_note"] = compile_mem.note
    return m
