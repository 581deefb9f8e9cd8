"""The ``Backend`` base class: what a runtime plugin implements.

A backend adapts one runtime (ONNX Runtime, OpenVINO, ncnn, TensorRT, or a
vendor's own) to nnport.  ``plugins/onnxruntime.py`` is the template to copy.
Rules every backend follows (see specs/backend-contract.md):

* the runtime SDK is imported inside methods, never at module top, so that the
  plugin module imports, and ``nnport backends`` lists it, without the SDK;
* ``probe()`` returns None when usable, else one line saying why not;
* ``compile`` raises ``UnsupportedModel``/``CompileError`` (never a bare runtime
  exception) so that device selection can fall back to the next candidate;
* ``run``/``execute`` return outputs with the model's own names and dtypes, in
  arrays the caller owns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .types import Binding, Capabilities, CompileOptions, Device

if TYPE_CHECKING:
    from .compiled import CompiledModel
    from .measuring import Measurement, MeasureSettings
    from .model import Model


class Backend:
    """Base class of every nnport backend.

    Subclasses set ``name`` (the one name used everywhere: entry point, CLI,
    device ids, block list), ``vendor`` and ``priority`` (higher is tried first
    among devices of the same kind by ``device="auto"``).
    """

    name: ClassVar[str] = ""
    vendor: ClassVar[str] = ""
    priority: ClassVar[int] = 0
    description: ClassVar[str] = ""

    @classmethod
    def probe(cls) -> str | None:
        """None when the backend can be used here, else the reason it cannot.

        Must be cheap and must not import the SDK (use ``importlib.util.find_spec``).
        """
        return None

    def devices(self) -> list[Device]:
        """Every device this backend knows, available or not (with the reason)."""
        raise NotImplementedError

    def capabilities(self, device: Device) -> Capabilities:
        """What this backend supports on ``device``."""
        return Capabilities()

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        """Compile ``model`` for ``device``; raise ``UnsupportedModel``/``CompileError`` on failure."""
        raise NotImplementedError

    def allocate(self, compiled: CompiledModel, shapes: Mapping[str, Sequence[int]] | None = None) -> Binding:
        """Buffers for repeated execution; the default fills inputs with seeded data."""
        from .data import random_feeds

        return Binding(random_feeds(compiled.inputs, shapes=shapes))

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        """Run one inference on ``binding.inputs``; set ``binding.outputs``."""
        raise NotImplementedError

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference from already validated feeds: the hot path of ``CompiledModel.run``.

        The default reuses a per-thread binding; backends override it when the
        runtime has a cheaper direct call.  Returned arrays belong to the caller.
        """
        binding = compiled.thread_binding()
        binding.inputs = dict(feeds)
        self.execute(compiled, binding)
        return dict(binding.outputs)

    def measure(self, compiled: CompiledModel, binding: Binding, settings: MeasureSettings) -> Measurement:
        """Time ``execute`` on ``binding``; the default is nnport's timing loop."""
        from .measuring import default_measure

        return default_measure(self, compiled, binding, settings)

    def intermediates(
        self,
        model: Model,
        device: Device,
        options: CompileOptions,
        tensors: Sequence[str],
        feeds: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray] | None:
        """Optional fast path of ``nnport debug``: run once, return ``{name: value}`` of the ``tensors`` it can expose.

        The default offers nothing (None); ``nnport debug`` then cuts the ONNX
        graph and compiles prefixes, which works on every backend.  A backend
        that can mark intermediate tensors as outputs in one compile overrides
        it, leaves out the names it cannot expose, and declares
        ``Capabilities(intermediates=True)``.
        """
        return None

    def select(self, devices: Sequence[Device], spec: str) -> list[Device]:
        """Devices that ``<name>:<spec>`` names when ``spec`` is neither a local id nor a kind.

        Selection calls it for forms of the backend's own (the farm's
        ``farm:openvino``, ``farm:node1``); the default knows none.  Return the
        matching usable devices from ``devices`` in priority order.
        """
        return []

    def versions(self) -> dict[str, str]:
        """Runtime versions recorded with measurements and reports (SDK imported)."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
