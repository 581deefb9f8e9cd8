"""Test-only nnport backends for the conformance tests (loaded with NNPORT_PLUGINS).

Each wraps the real ONNX Runtime backend and misbehaves in one way:

* ``wrong``    perturbs every float output by 1% (and prints to stdout, which
  must not corrupt the worker protocol): conformance must report ``fail``;
* ``crashing`` calls ``os.abort()`` when the model has a Conv, and runs
  correctly otherwise: the Conv case must be ``crash`` and the next case on
  the same backend must still run;
* ``hanging``  sleeps for ten minutes when the model has a Relu: ``timeout``;
* ``nudged``   scales every float output by (1 + 1e-6): inside the fp32 default
  tolerances, outside any tight tolerance a user gives (``nnport compare
  --atol 1e-12 --rtol 1e-12`` must say so).

This module holds no tests; it lives in tests/ so that worker processes
can import it with tests/ on PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from nnport import Backend, CompiledModel, Device, hookimpl

MODULE = __name__


class _WrapsOnnxRuntime(Backend):
    vendor = "nnport tests"
    priority = -100

    def devices(self) -> list[Device]:
        return [Device(id=f"{self.name}:cpu", backend=self.name, kind="cpu", name="test device")]

    def compile(self, model: Any, device: Device, options: Any) -> CompiledModel:
        from nnport.plugins.onnxruntime import OnnxRuntimeBackend

        ort = OnnxRuntimeBackend()
        cpu = next(d for d in ort.devices() if d.id == "onnxruntime:cpu")
        return CompiledModel(self, model, device, options, native=ort.compile(model, cpu, options))

    def execute(self, compiled: CompiledModel, binding: Any) -> None:
        binding.outputs = self.run(compiled, binding.inputs)

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.misbehave(compiled, compiled.native.run(dict(feeds)))

    def misbehave(self, compiled: CompiledModel, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return outputs


class WrongBackend(_WrapsOnnxRuntime):
    name = "wrong"

    def misbehave(self, compiled: CompiledModel, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        print("wrong backend: perturbing outputs (this line goes to stdout)")
        return {
            k: (v * np.asarray(1.01, v.dtype) + np.asarray(1e-3, v.dtype)) if v.dtype.kind == "f" else v
            for k, v in outputs.items()
        }


class CrashingBackend(_WrapsOnnxRuntime):
    name = "crashing"

    def misbehave(self, compiled: CompiledModel, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "Conv" in compiled.model.operators():
            os.abort()
        return outputs


class HangingBackend(_WrapsOnnxRuntime):
    name = "hanging"

    def misbehave(self, compiled: CompiledModel, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "Relu" in compiled.model.operators():
            time.sleep(600)
        return outputs


class NudgedBackend(_WrapsOnnxRuntime):
    name = "nudged"

    def misbehave(self, compiled: CompiledModel, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            k: (v.astype(np.float64) * (1 + 1e-6)).astype(v.dtype) if v.dtype.kind == "f" else v
            for k, v in outputs.items()
        }


@hookimpl
def nnport_register_backends(register: Any) -> None:
    register(WrongBackend)
    register(CrashingBackend)
    register(HangingBackend)
    register(NudgedBackend)
