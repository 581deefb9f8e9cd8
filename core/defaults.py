"""Core default hook implementations: ``trylast``, delegating to the backend.

This is an *essential* plugin: ``NNPORT_DISABLE_PLUGINS`` cannot remove it.
Like pytest's ``pytest_pyfunc_call``, each default runs last, so any plugin
can replace a step by returning a non-None result first, or wrap it with
``wrapper=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import graph_edges
from .hookspecs import hookimpl

if TYPE_CHECKING:
    import numpy as np

    from .backend import Backend
    from .compiled import CompiledModel
    from .measuring import Measurement, MeasureSettings
    from .model import Model
    from .types import Binding, CompileOptions, Device


@hookimpl(trylast=True)
def nnport_compile(backend: Backend, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
    # backend.compile(model, ...), except that outputs nnport can answer itself (an input passed
    # through, a constant, a repeated output) are served on the nnport side: see nnport.graph_edges
    return graph_edges.compile(backend, model, device, options)


@hookimpl(trylast=True)
def nnport_allocate(backend: Backend, compiled: CompiledModel, shapes: Mapping[str, Sequence[int]] | None) -> Binding:
    return backend.allocate(compiled, shapes)


@hookimpl(trylast=True)
def nnport_execute(backend: Backend, compiled: CompiledModel, binding: Binding) -> bool:
    backend.execute(compiled, binding)
    return True


@hookimpl(trylast=True)
def nnport_measure(
    backend: Backend, compiled: CompiledModel, binding: Binding, settings: MeasureSettings
) -> Measurement:
    return backend.measure(compiled, binding, settings)


@hookimpl(trylast=True)
def nnport_intermediates(
    backend: Backend,
    model: Model,
    device: Device,
    options: CompileOptions,
    tensors: Sequence[str],
    feeds: Mapping[str, np.ndarray],
) -> Any:
    return backend.intermediates(model, device, options, tensors, feeds)
