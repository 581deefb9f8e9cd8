"""Lazy shape specialisation: compile a dynamic model at the shapes it is fed.

A backend that needs static shapes (ncnn: pnnx converts static graphs only;
OpenVINO when its frontend refuses a graph with open dims) cannot compile a
model like a YOLO detector with symbolic height and width until it knows them.
Asking every user for backend-specific shapes is what made ncnn refuse every
real export; instead the backend checks at compile what it can check without
shapes (dtypes, ranks, formats: so selection still falls back on a model it can
never run) and returns ``specialize.lazily(...)``: a ``CompiledModel`` that
compiles the model once per feed-shape signature, on first use, through the
backend's own ``compile`` on the shape-fixed model (``nnport.shapes.fix_axes``).

Each specialisation is an ordinary static model, so the backend's disk caches
(keyed by the fixed model's hash) make the same shapes cheap in a later process.
In memory at most ``max_specializations`` (default 8, ``extra`` key
``max_specializations``) stay loaded, least recently used evicted.
``compiled.info["specializations"]`` lists them: shapes, compile seconds,
whether the backend's cache had it.

The wrapper is a proxy backend, ``SpecializingBackend``, set as the outer
compiled model's ``backend``: ``run``/``execute``/``allocate``/``measure``
resolve the specialisation for the feeds and hand the static compiled model to
the real backend, so hooks and the timing loop see the same contract.
Steady-state ``run`` costs one tuple of shapes and one dict lookup over the
static model's own ``run``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import Backend
from .compiled import CompiledModel
from .errors import CompileError, NnportError
from .shapes import fix_axes
from .types import Binding, Capabilities, CompileOptions, Device

if TYPE_CHECKING:
    from .measuring import Measurement, MeasureSettings
    from .model import Model

DEFAULT_MAX_SPECIALIZATIONS = 8


def open_axes(model: Model, keep: Sequence[str] = ()) -> tuple[tuple[str, int], ...]:
    """``(input, axis)`` of every symbolic or unknown input dim, except symbols in ``keep``.

    ``keep`` names dims the backend handles itself (ncnn's per-sample batch).
    """
    return tuple(
        (spec.name, axis)
        for spec in model.inputs
        for axis, dim in enumerate(spec.shape)
        if not isinstance(dim, int) and dim not in keep
    )


def lazily(
    backend: Backend, model: Model, device: Device, options: CompileOptions, axes: Sequence[tuple[str, int]], why: str
) -> CompiledModel:
    """A ``CompiledModel`` of ``model`` that ``backend`` compiles per shape of ``axes``, on first use.

    ``why`` says why the backend specialises (reported in ``compiled.info``).
    """
    proxy = SpecializingBackend(backend)
    compiled = CompiledModel(
        proxy, model, device, options, native=Specializations(backend, model, device, options, tuple(axes))
    )
    compiled.info["specialized_lazily"] = why
    compiled.info["specializations"] = compiled.native.report
    return compiled


class Specializations:
    """The static compiled models of one dynamic model, keyed by the sizes of its open axes."""

    def __init__(
        self, backend: Backend, model: Model, device: Device, options: CompileOptions, axes: tuple[tuple[str, int], ...]
    ) -> None:
        self.backend = backend
        self.model = model
        self.device = device
        self.options = options
        self.axes = axes
        self.limit = int(options.extra.get("max_specializations", DEFAULT_MAX_SPECIALIZATIONS))
        self.loaded: OrderedDict[tuple[int, ...], CompiledModel] = OrderedDict()
        self.failed: dict[tuple[int, ...], NnportError] = {}
        self.report: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def key(self, feeds: Mapping[str, np.ndarray]) -> tuple[int, ...]:
        return tuple(feeds[name].shape[axis] for name, axis in self.axes)

    def for_feeds(self, feeds: Mapping[str, np.ndarray]) -> CompiledModel:
        """The compiled model for these (already validated) feeds, compiled on a miss."""
        key = tuple(feeds[name].shape[axis] for name, axis in self.axes)
        found = self.loaded.get(key)
        if found is not None:
            return found
        return self._compile(key)

    def _compile(self, key: tuple[int, ...]) -> CompiledModel:
        with self._lock:
            found = self.loaded.get(key)
            if found is not None:
                self.loaded.move_to_end(key)
                return found
            if key in self.failed:
                raise self.failed[key]
            sizes = dict(zip(self.axes, key))
            shapes = {f"{name}[{axis}]": size for (name, axis), size in sizes.items()}
            start = time.perf_counter()
            try:
                fixed = fix_axes(self.model, sizes)
                inner = _compile_static(self.backend, fixed, self.device, self.options)
            except NnportError as exc:  # remembered: the same shapes are not converted again
                self.failed[key] = exc
                self.report.append({"shapes": shapes, "error": str(exc)})
                raise
            seconds = time.perf_counter() - start
            if inner.compile_time_s is None:
                inner.compile_time_s = seconds
            self.loaded[key] = inner
            self.report.append({"shapes": shapes, "compile_s": round(seconds, 4), "cache_hit": inner.cache_hit})
            while len(self.loaded) > max(1, self.limit):
                self.loaded.popitem(last=False)
            return inner


def _compile_static(backend: Backend, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
    """One specialisation through the ``nnport_compile`` hook, so compile wrappers apply."""
    from .manager import get_plugin_manager

    compiled: CompiledModel | None = get_plugin_manager().hook.nnport_compile(
        backend=backend, model=model, device=device, options=options
    )
    if compiled is None:
        raise CompileError("no plugin compiled the specialised model", backend=backend.name, device=device.id)
    if isinstance(compiled.native, Specializations):  # the fixed model still has open dims: the backend cannot fix them
        raise CompileError(
            f"{backend.name} still needs shapes after fixing {model.metadata.get('fixed_shapes')}",
            backend=backend.name,
            device=device.id,
        )
    return compiled


class SpecializingBackend(Backend):
    """The backend of a lazily specialised model: resolves the static model, then delegates."""

    def __init__(self, real: Backend) -> None:
        self.real = real
        self.name = real.name  # type: ignore[misc]  # instance attribute over the ClassVar: it is the real backend's
        self.vendor = real.vendor  # type: ignore[misc]
        self.priority = real.priority  # type: ignore[misc]

    def devices(self) -> list[Device]:
        return self.real.devices()

    def capabilities(self, device: Device) -> Capabilities:
        return self.real.capabilities(device)

    def versions(self) -> dict[str, str]:
        return self.real.versions()

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        return self.real.compile(model, device, options)

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inner: CompiledModel = compiled.native.for_feeds(feeds)
        return inner.backend.run(inner, feeds)

    def allocate(self, compiled: CompiledModel, shapes: Mapping[str, Sequence[int]] | None = None) -> Binding:
        from .data import random_feeds

        feeds = random_feeds(compiled.inputs, shapes=shapes)
        inner: CompiledModel = compiled.native.for_feeds(feeds)
        binding = inner.backend.allocate(inner, {k: v.shape for k, v in feeds.items()})
        binding.extra["specialization"] = inner
        return binding

    def _inner(self, compiled: CompiledModel, binding: Binding) -> CompiledModel:
        inner: CompiledModel = compiled.native.for_feeds(binding.inputs)
        if binding.extra.get("specialization") is not inner:
            # the binding was made for other shapes (inputs replaced by hand): rebind for these
            fresh = inner.backend.allocate(inner, {k: v.shape for k, v in binding.inputs.items()})
            binding.native = fresh.native
            binding.extra.update(fresh.extra)
            binding.extra["specialization"] = inner
        return inner

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        inner = self._inner(compiled, binding)
        inner.backend.execute(inner, binding)

    def measure(self, compiled: CompiledModel, binding: Binding, settings: MeasureSettings) -> Measurement:
        inner = self._inner(compiled, binding)
        return inner.backend.measure(inner, binding, settings)

    def __repr__(self) -> str:
        return f"<specializing {self.real!r}>"
