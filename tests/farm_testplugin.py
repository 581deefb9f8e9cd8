"""A plugin loaded into one farm node in tests/test_farm.py (``NNPORT_PLUGINS=farm_testplugin``).

Backend ``farmtest`` computes with ``onnx.reference`` (real results) on two
devices whose failures the farm must report:

* ``farmtest:crash`` segfaults in ``execute`` (the node's actor process dies,
  the node stays up): the farm must say ``crash``;
* ``farmtest:slow`` sleeps ``FARMTEST_SLEEP_S`` seconds (default 3) per run, so a
  test can kill the node while a run is in flight.

``versions()`` reports ``FARMTEST_VERSION`` (default ``1.0``), so a driver and a
node started with different values show a version difference.
"""

from __future__ import annotations

import ctypes
import os
import time

import numpy as np

import nnport
from nnport import hookimpl
from nnport.types import Device


class FarmTestBackend(nnport.Backend):
    name = "farmtest"
    vendor = "Test"
    priority = -50

    def devices(self):
        return [
            Device(id=f"{self.name}:{k}", backend=self.name, kind="cpu", name=f"farm test {k}")
            for k in ("crash", "slow")
        ]

    def versions(self):
        return {"farmtest": os.environ.get("FARMTEST_VERSION", "1.0")}

    def compile(self, model, device, options):
        from onnx.reference import ReferenceEvaluator

        return nnport.CompiledModel(self, model, device, options, native=ReferenceEvaluator(model.proto))

    def execute(self, compiled, binding):
        if compiled.device.id.endswith(":crash"):
            ctypes.string_at(0)  # SIGSEGV
        time.sleep(float(os.environ.get("FARMTEST_SLEEP_S", "3")))
        outs = compiled.native.run(None, binding.inputs)
        binding.outputs = {s.name: np.asarray(o) for s, o in zip(compiled.outputs, outs)}


@hookimpl
def nnport_register_backends(register):
    register(FarmTestBackend)
