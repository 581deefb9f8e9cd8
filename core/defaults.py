"""Core default hook implementations: ``trylast``, delegating to the backend.

This is an *essential* plugin: ``NNPORT_DISABLE_PLUGINS`` cannot remove it.
Like pytest's ``pytest_pyfunc_call``, each default runs last, so any plugin
can replace a step by returning a non-None result first, or wrap it with
``wrapper=True``.
"""

from __future__ import annotations

from . import graph_edges
from .hookspecs import hookimpl


@hookimpl(trylast=True)
def nnport_compile(backend, model, device, options):
    # backend.compile(model, ...), except that outputs nnport can answer itself (an input passed
    # through, a constant, a repeated output) are served on the nnport side: see nnport.graph_edges
    return graph_edges.compile(backend, model, device, options)


@hookimpl(trylast=True)
def nnport_allocate(backend, compiled, shapes):
    return backend.allocate(compiled, shapes)


@hookimpl(trylast=True)
def nnport_execute(backend, compiled, binding):
    backend.execute(compiled, binding)
    return True


@hookimpl(trylast=True)
def nnport_measure(backend, compiled, binding, settings):
    return backend.measure(compiled, binding, settings)


@hookimpl(trylast=True)
def nnport_intermediates(backend, model, device, options, tensors, feeds):
    return backend.intermediates(model, device, options, tensors, feeds)
