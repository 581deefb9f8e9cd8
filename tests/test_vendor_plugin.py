"""A third-party vendor package, built and pip-installed, found through its entry point.

This is user 2 of DESIGN.md: a hardware vendor ships ``nnport-acme`` with an
``[project.entry-points.nnport]`` entry; nnport lists and uses it with no change.
The package is installed with ``pip --target`` into a temporary directory that
only the subprocesses see, so the test environment is left untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "nnport-acme"
version = "1.2.3"

[project.entry-points.nnport]
acme = "nnport_acme"

[tool.setuptools]
py-modules = ["nnport_acme"]
"""

MODULE = '''
"""ACME NPU runtime for nnport (runs on onnx's reference evaluator for this test)."""
import numpy as np
import nnport
from nnport.types import Device


class AcmeBackend(nnport.Backend):
    name = "acme"
    vendor = "ACME Corp"
    priority = 5

    def devices(self):
        return [Device(id="acme:npu0", backend="acme", kind="npu", name="ACME NPU 9000")]

    def compile(self, model, device, options):
        from onnx.reference import ReferenceEvaluator
        return nnport.CompiledModel(self, model, device, options, native=ReferenceEvaluator(model.proto))

    def execute(self, compiled, binding):
        outs = compiled.native.run(None, binding.inputs)
        binding.outputs = {s.name: np.asarray(o) for s, o in zip(compiled.outputs, outs)}


@nnport.hookimpl
def nnport_register_backends(register):
    register(AcmeBackend)
'''


@pytest.fixture(scope="module")
def vendor_site(tmp_path_factory):
    src = tmp_path_factory.mktemp("nnport-acme")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "nnport_acme.py").write_text(MODULE)
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return site


def run_with_vendor(site, code):
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("NNPORT_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)


def test_vendor_backend_is_listed(vendor_site):
    proc = run_with_vendor(vendor_site, "import sys; from nnport.cli import main; sys.exit(main(['backends', '--json']))")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["acme"]["status"] == "available"
    assert rows["acme"]["vendor"] == "ACME Corp"
    assert "nnport-acme 1.2.3" in rows["acme"]["source"]


def test_vendor_backend_compiles_and_runs(vendor_site):
    proc = run_with_vendor(
        vendor_site,
        """
        import numpy as np, nnport
        from nnport import zoo
        from nnport.data import random_feeds
        model = zoo.load("cnn")
        c = nnport.compile(model, device="acme:npu0")
        ref = nnport.compile(model, device="onnxruntime:cpu")
        feeds = random_feeds(model.inputs, seed=0)
        diff = float(np.abs(c.run(feeds)["probs"] - ref.run(feeds)["probs"]).max())
        auto = nnport.compile(model)  # npu first: the vendor's device wins "auto"
        print(c.device.id, auto.device.id, diff)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    device, auto_device, diff = proc.stdout.split()
    assert device == "acme:npu0" and auto_device == "acme:npu0"
    assert float(diff) < 1e-5


def test_vendor_plugin_can_be_disabled(vendor_site):
    code = "import nnport; print(sorted(b.name for b in nnport.backends()))"
    env_code = "import os; os.environ['NNPORT_DISABLE_PLUGINS'] = 'acme'\n" + code
    assert "acme" in run_with_vendor(vendor_site, code).stdout
    assert "acme" not in run_with_vendor(vendor_site, env_code).stdout
    autoload_off = "import os; os.environ['NNPORT_DISABLE_PLUGIN_AUTOLOAD'] = '1'\n" + code
    assert "acme" not in run_with_vendor(vendor_site, autoload_off).stdout
