"""Small fake backends for testing core logic only (selection, hooks, discovery).

They compute with numpy and ``onnx.reference`` so that results are real, but
they stand in for no runtime: backend behaviour is tested with the real SDKs.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

import nnport
from nnport import hookimpl
from nnport.manager import create_plugin_manager, set_plugin_manager
from nnport.types import Device


class FakeBackend(nnport.Backend):
    """Runs ONNX with onnx's ReferenceEvaluator; devices and failures are configurable."""

    name: ClassVar[str] = "fake"
    vendor: ClassVar[str] = "Test"
    priority: ClassVar[int] = 10
    kinds: ClassVar[tuple[str, ...]] = ("cpu",)
    fail_compile: ClassVar[type[BaseException] | None] = None
    unavailable: ClassVar[str | None] = None
    delay_s: ClassVar[float] = 0.0
    calls: ClassVar[list[str]]

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.calls = []

    @classmethod
    def probe(cls):
        return cls.unavailable

    def devices(self):
        return [Device(id=f"{self.name}:{k}", backend=self.name, kind=k, name=f"{self.name} {k}") for k in self.kinds]

    def compile(self, model, device, options):
        type(self).calls.append(f"compile:{device.id}")
        if self.fail_compile is not None:
            raise self.fail_compile(f"{self.name} cannot compile this")
        from onnx.reference import ReferenceEvaluator

        return nnport.CompiledModel(self, model, device, options, native=ReferenceEvaluator(model.proto))

    def execute(self, compiled, binding):
        type(self).calls.append("execute")
        import time

        if self.delay_s:
            time.sleep(self.delay_s)
        outs = compiled.native.run(None, binding.inputs)
        binding.outputs = {s.name: np.asarray(o) for s, o in zip(compiled.outputs, outs)}


def make_backend(
    name: str, *, kinds=("cpu",), priority=10, fail=None, unavailable=None, delay_s=0.0
) -> type[FakeBackend]:
    return type(
        f"Fake_{name}",
        (FakeBackend,),
        {
            "name": name,
            "kinds": tuple(kinds),
            "priority": priority,
            "fail_compile": fail,
            "unavailable": unavailable,
            "delay_s": delay_s,
        },
    )


class BackendPlugin:
    """A plugin object registering the given backend classes."""

    def __init__(self, *classes):
        self.classes = classes

    @hookimpl
    def nnport_register_backends(self, register):
        for cls in self.classes:
            register(cls)


def install(*classes, builtins: bool = False):
    """A fresh process-wide manager holding only core defaults and these backends."""
    pm = create_plugin_manager(builtins=builtins, entrypoints=False, blocked=[])
    pm.register(BackendPlugin(*classes), "fakes")
    set_plugin_manager(pm)
    return pm
