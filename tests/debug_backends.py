"""Deliberately faulty vendor backends for ``nnport debug`` / ``nnport reduce`` tests.

They implement only the plain Backend contract (no intermediates), compute with
ONNX Runtime after doing one thing wrong, and read what to get wrong from the
environment so that the trial worker process (``NNPORT_PLUGINS=debug_backends``)
behaves exactly as the test process does:

* ``rewrite``: before compiling, turns each node named in ``NNPORT_FAKE_REWRITE``
  (``name:NewOp[,name:NewOp]``) into another unary op: a kernel bug in one node;
* ``abortop``: ``abort()``s when it runs a model containing the op type
  ``NNPORT_FAKE_ABORT_OP`` (a runtime that segfaults on one op), and hangs on
  one containing ``NNPORT_FAKE_HANG_OP``;
* ``refuseop``: refuses to compile a model containing the op type
  ``NNPORT_FAKE_REFUSE_OP``: a converter without that op.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

import nnport
from nnport import hookimpl
from nnport.errors import UnsupportedModel
from nnport.types import Device


class _OrtBacked(nnport.Backend):
    vendor: ClassVar[str] = "Test"
    priority: ClassVar[int] = 1

    def devices(self):
        return [Device(id=f"{self.name}:cpu", backend=self.name, kind="cpu", name=f"{self.name} test device")]

    def transform(self, proto):
        return proto

    def compile(self, model, device, options):
        import onnxruntime as ort

        proto = self.transform(model.proto)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        compiled = nnport.CompiledModel(self, model, device, options, native=session)
        compiled.info["ops"] = sorted({n.op_type for n in proto.graph.node})
        return compiled

    def execute(self, compiled, binding):
        names = [o.name for o in compiled.outputs]
        binding.outputs = dict(zip(names, (np.asarray(v) for v in compiled.native.run(names, binding.inputs))))


class RewriteBackend(_OrtBacked):
    name: ClassVar[str] = "rewrite"

    def transform(self, proto):
        import onnx

        table = dict(item.split(":", 1) for item in os.environ.get("NNPORT_FAKE_REWRITE", "").split(",") if ":" in item)
        if not any(n.name in table for n in proto.graph.node):
            return proto
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        for node in out.graph.node:
            if node.name in table:
                node.op_type = table[node.name]
                del node.attribute[:]
        return out


class AbortBackend(_OrtBacked):
    name: ClassVar[str] = "abortop"

    def execute(self, compiled, binding):
        if os.environ.get("NNPORT_FAKE_ABORT_OP", "Tanh") in compiled.info["ops"]:
            os.abort()
        if os.environ.get("NNPORT_FAKE_HANG_OP", "-") in compiled.info["ops"]:
            import time

            time.sleep(3600)
        super().execute(compiled, binding)


class RefuseBackend(_OrtBacked):
    name: ClassVar[str] = "refuseop"

    def compile(self, model, device, options):
        op = os.environ.get("NNPORT_FAKE_REFUSE_OP", "Tanh")
        if any(n.op_type == op for n in model.proto.graph.node):
            raise UnsupportedModel(f"the converter has no {op} layer", backend=self.name, device=device.id)
        return super().compile(model, device, options)


@hookimpl
def nnport_register_backends(register):
    for cls in (RewriteBackend, AbortBackend, RefuseBackend):
        register(cls)
