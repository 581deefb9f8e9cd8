"""Hook specifications of nnport (pluggy project name ``nnport``).

Every hook is documented in specs/hooks.md with the same signature; a
meta-test fails when the two drift apart.  Arguments may be added in later
versions, never renamed: pluggy passes only those an implementation asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .compiled import CompiledModel
    from .measuring import Measurement, MeasureSettings
    from .model import Model
    from .types import Binding, CompileOptions, Device

PROJECT = "nnport"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def nnport_register_backends(register: Callable[[type[Backend]], None]) -> None:
    """Register the backend classes a plugin provides.

    Call ``register(BackendClass)`` once per backend.  Registering must not
    import the runtime SDK: the class is only inspected (name, vendor,
    ``probe()``) until a device of the backend is used.

    *Called by* the plugin manager the first time backends are listed
    (``nnport.backends()``, ``nnport.devices()``, ``nnport.compile()``); each
    plugin's implementation is called on its own through pluggy
    (``NnportPluginManager.per_plugin``: wrappers run, arguments as the
    implementation asks), so one that raises is listed as broken and the others
    still register.

    :param register: callable taking a ``nnport.Backend`` subclass.

    *Returns* nothing; return values are ignored.
    """


@hookspec(firstresult=True)
def nnport_compile(backend: Backend, model: Model, device: Device, options: CompileOptions) -> CompiledModel | None:
    """Compile ``model`` for ``device`` with ``backend``.

    Implement it to wrap or replace compilation: a compile cache, tracing, a
    model transformation.  A ``wrapper=True`` implementation gets the result of
    the chain from ``yield`` and must return it (or a replacement).

    *Called by* ``nnport.compile`` once per candidate device, until one
    succeeds.  The core default (``trylast``) calls ``backend.compile``
    through ``nnport.graph_edges.compile``, which serves outputs that no
    operator computes (pass-through, constant, repeated) on the nnport side.

    :param backend: the ``Backend`` instance that owns ``device``.
    :param model: the loaded ``nnport.Model``.
    :param device: the ``Device`` to compile for.
    :param options: the ``CompileOptions``.

    *Returns* a ``CompiledModel``; None means "not handled": the next
    implementation runs.  Raise ``CompileError``/``UnsupportedModel`` to let
    selection fall back to the next device.
    """


@hookspec(firstresult=True)
def nnport_allocate(
    backend: Backend, compiled: CompiledModel, shapes: Mapping[str, Sequence[int]] | None
) -> Binding | None:
    """Allocate the input/output buffers for repeated execution of ``compiled``.

    *Called by* ``CompiledModel.thread_binding`` (once per thread when
    ``run`` goes through hooks) and by ``nnport.measure`` before timing.  The
    core default (``trylast``) calls ``backend.allocate``.

    :param backend: the ``Backend`` that compiled ``compiled``.
    :param compiled: the ``CompiledModel``.
    :param shapes: input name -> concrete shape for dynamic inputs, or None for
        the spec's shapes (unknown dims are 1).

    *Returns* a ``Binding``; None means "not handled": the next implementation runs.
    """


@hookspec(firstresult=True)
def nnport_execute(backend: Backend, compiled: CompiledModel, binding: Binding) -> bool | None:
    """Run one inference on ``binding.inputs``, leaving results in ``binding.outputs``.

    Implement it to wrap (``wrapper=True``: tracing, output checks) or replace
    execution.  While only the core default implements this hook,
    ``CompiledModel.run`` skips it and calls the backend directly, so an
    unused hook costs nothing on the hot path; measurement never calls it.

    *Called by* ``CompiledModel.run`` when some plugin implements this hook.
    The core default (``trylast``) calls ``backend.execute`` and returns True.

    :param backend: the ``Backend`` that compiled ``compiled``.
    :param compiled: the ``CompiledModel``.
    :param binding: the ``Binding`` with the validated inputs.

    *Returns* True when the inference ran; None means "not handled": the next
    implementation runs (so a replacing implementation must return True, or
    the backend runs again).
    """


@hookspec(firstresult=True)
def nnport_measure(
    backend: Backend, compiled: CompiledModel, binding: Binding, settings: MeasureSettings
) -> Measurement | None:
    """Measure latency, throughput, memory and energy of ``compiled``.

    Implement it to wrap or replace measurement: an external benchmark tool,
    a hardware energy meter that must bracket the run.

    *Called by* ``nnport.measure`` and ``nnport bench``.  The core default
    (``trylast``) calls ``backend.measure``, whose base implementation is
    nnport's timing loop (specs/measurement.md).

    :param backend: the ``Backend`` that compiled ``compiled``.
    :param compiled: the ``CompiledModel``.
    :param binding: an allocated ``Binding`` holding the inputs to time with.
    :param settings: the ``MeasureSettings``.

    *Returns* a ``Measurement``; None means "not handled": the next implementation runs.
    """


@hookspec(firstresult=True)
def nnport_intermediates(
    backend: Backend,
    model: Model,
    device: Device,
    options: CompileOptions,
    tensors: Sequence[str],
    feeds: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Run ``model`` once on ``device`` and return the values of intermediate ``tensors`` (a fast path).

    The optional capability behind ``nnport debug``'s fast path: one compile
    that exposes many intermediate tensors (ONNX Runtime: extra graph outputs;
    OpenVINO: ``Model.add_outputs`` by tensor name).  No backend has to offer
    it; without it ``nnport debug`` cuts the ONNX graph and compiles prefixes,
    which needs nothing but ``compile`` and ``run``.  Marking a tensor as an
    output can change a runtime's fusions, so ``nnport debug`` confirms what
    the fast path finds with the cut path.

    *Called by* ``nnport.conformance.debug.first_divergence`` (for the device
    under test and for the reference) and ``nnport.conformance.reduce``.  The
    core default (``trylast``) calls ``backend.intermediates``, whose base
    implementation returns None.

    :param backend: the ``Backend`` instance that owns ``device``.
    :param model: the loaded ``nnport.Model`` (ONNX, static shapes).
    :param device: the ``Device`` to run on.
    :param options: the ``CompileOptions``.
    :param tensors: names of tensors of the ONNX graph to expose.
    :param feeds: input name -> numpy array, already matching the model's inputs.

    *Returns* ``{tensor name: array}`` for the tensors the runtime could expose
    (a name it cannot expose, fused away or renamed, is left out: the caller
    falls back to cutting the graph there); None means "not handled": the next
    implementation runs, and None from all of them means the backend offers no
    fast path.
    """


@hookspec
def nnport_energy_meters(register: Callable[[Any], None]) -> None:
    """Register the energy meters a plugin provides.

    Call ``register(meter)`` once per ``nnport.energy.EnergyMeter`` instance
    (a board's power sensor, a smart plug, a lab power supply).  Creating a
    meter must be cheap and must not touch hardware: ``probe()`` does that and
    returns the reason when the meter cannot be read.  The built-in RAPL, NVML
    and hwmon meters are registered by the core plugin ``energy``.

    *Called by* nnport's default measurement (``nnport.measure``, ``nnport
    bench``) before every timed run, so each run gets fresh instances, and by
    ``nnport meters``.  Each plugin's implementation is called on its own: one
    that raises becomes a reason in the result and the other meters still run.

    :param register: callable taking an ``EnergyMeter`` instance; raises
        ``TypeError`` for anything else.

    *Returns* nothing; return values are ignored.
    """
