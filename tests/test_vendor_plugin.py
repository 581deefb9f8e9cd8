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
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return site


def run_with_vendor(site, code):
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("NNPORT_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )


def test_vendor_backend_is_listed(vendor_site):
    proc = run_with_vendor(
        vendor_site, "import sys; from nnport.cli import main; sys.exit(main(['backends', '--json']))"
    )
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


# -- vendors that start from the ONNX Runtime template (issue 13, item 4) ---------------------------------------------

TEMPLATE_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "nnport-acmeort"
version = "0.1.0"

[project.entry-points.nnport]
acmeort = "nnport_acmeort"
acmeabort = "nnport_acmeabort"
acmelegacy = "nnport_acmelegacy"

[tool.setuptools]
py-modules = ["nnport_acmeort", "nnport_acmeabort", "nnport_acmelegacy"]
"""

TEMPLATE_MODULES = {
    # what the README invites: copy (here: subclass) the template and change the name
    "nnport_acmeort": """
import nnport
from nnport.plugins.onnxruntime import OnnxRuntimeBackend


class AcmeOrtBackend(OnnxRuntimeBackend):
    name = "acmeort"
    vendor = "ACME Corp"
    priority = 5


@nnport.hookimpl
def nnport_register_backends(register):
    register(AcmeOrtBackend)
""",
    # the same, with a compile that takes the process down
    "nnport_acmeabort": """
import os
import nnport
from nnport.plugins.onnxruntime import OnnxRuntimeBackend


class AcmeAbortBackend(OnnxRuntimeBackend):
    name = "acmeabort"
    vendor = "ACME Corp"
    priority = 4

    def compile(self, model, device, options):
        os.abort()


@nnport.hookimpl
def nnport_register_backends(register):
    register(AcmeAbortBackend)
""",
    # a copy of the old template that still hard-codes the reference's ids
    "nnport_acmelegacy": """
import nnport
from nnport.plugins.onnxruntime import OnnxRuntimeBackend
from nnport.types import Device


class AcmeLegacyBackend(OnnxRuntimeBackend):
    name = "acmelegacy"
    vendor = "ACME Corp"
    priority = 3

    def devices(self):
        props = {"provider": "CPUExecutionProvider"}
        return [Device(id="onnxruntime:cpu", backend=self.name, kind="cpu", name="copied", properties=props)]


@nnport.hookimpl
def nnport_register_backends(register):
    register(AcmeLegacyBackend)
""",
}


@pytest.fixture(scope="module")
def template_site(tmp_path_factory):
    src = tmp_path_factory.mktemp("nnport-acmeort")
    (src / "pyproject.toml").write_text(TEMPLATE_PYPROJECT)
    for name, text in TEMPLATE_MODULES.items():
        (src / f"{name}.py").write_text(text)
    site = tmp_path_factory.mktemp("site-acmeort")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return site


def test_template_subclass_gets_device_ids_of_its_own(template_site):
    proc = run_with_vendor(
        template_site,
        """
        import json, nnport
        from nnport import zoo
        from nnport.data import random_feeds
        model = zoo.load("mlp")
        feeds = random_feeds(model.inputs, seed=0)
        mine = nnport.compile(model, device="acmeort", fallback=False)
        ref = nnport.compile(model, device="onnxruntime:cpu", fallback=False)
        print(json.dumps({
            "ids": [d.id for d in nnport.devices("acmeort")],
            "device": mine.device.id, "backend": type(mine.backend).__name__, "device_backend": mine.device.backend,
            "ref": [ref.device.id, type(ref.backend).__name__],
            "same": bool((mine.run(feeds)["probs"] == ref.run(feeds)["probs"]).all()),
        }))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ids"] == ["acmeort:cpu"]
    assert got["device"] == "acmeort:cpu" and got["backend"] == "AcmeOrtBackend" and got["device_backend"] == "acmeort"
    assert got["ref"] == ["onnxruntime:cpu", "OnnxRuntimeBackend"] and got["same"]


def test_backend_claiming_another_backends_id_is_broken_and_never_wins(template_site):
    listing = run_with_vendor(
        template_site, "import sys; from nnport.cli import main; sys.exit(main(['backends', '--json']))"
    )
    assert listing.returncode == 0, listing.stderr
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    legacy = rows["acmelegacy"]
    assert legacy["status"] == "broken", legacy
    assert (
        "'onnxruntime:cpu' is not acmelegacy:<local id>" in legacy["reason"]
        and "backend 'onnxruntime'" in legacy["reason"]
    )
    assert rows["onnxruntime"]["status"] == "available" and rows["acmeort"]["status"] == "available"
    proc = run_with_vendor(
        template_site,
        """
        import nnport
        from nnport import zoo
        model = zoo.load("mlp")
        print(type(nnport.compile(model, "onnxruntime:cpu", fallback=False).backend).__name__)
        print(sorted({d.backend for d in nnport.devices()}))
        try:
            nnport.compile(model, "acmelegacy", fallback=False)
        except nnport.BackendUnavailable as exc:
            print(type(exc).__name__, exc)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    owner, backends, error = proc.stdout.strip().splitlines()[-3:]
    assert owner == "OnnxRuntimeBackend"  # the id resolves to its owner, never to the copy
    assert "acmelegacy" not in backends
    assert error.startswith("DeviceIdConflict backend 'acmelegacy' is broken: device id 'onnxruntime:cpu'")
    gate = run_with_vendor(
        template_site,
        "import sys; from nnport.cli import main; sys.exit(main(['conformance', '--backend', "
        "'acmelegacy', '-k', 'zoo/mlp', '-j', '1']))",
    )
    assert gate.returncode == 2 and "acmelegacy" in gate.stderr and "is broken" in gate.stderr, (
        gate.stdout + gate.stderr
    )


def test_conformance_tests_the_vendor_backend_not_the_reference(template_site, tmp_path):
    """A template subclass that aborts in compile is a crash, not a pass of the real ONNX Runtime."""
    report = tmp_path / "r.json"
    proc = run_with_vendor(
        template_site,
        "import sys; from nnport.cli import main; sys.exit(main(['conformance', '--backend', 'acmeabort', "
        f"'--backend', 'acmeort', '-k', 'zoo/mlp', '-j', '1', '--json', {str(report)!r}]))",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = {r["device"]: r for r in json.loads(report.read_text())["results"]}
    assert set(results) == {"acmeabort:cpu", "acmeort:cpu"}
    assert results["acmeabort:cpu"]["status"] == "crash" and "SIGABRT" in results["acmeabort:cpu"]["reason"]
    assert results["acmeort:cpu"]["status"] == "pass" and results["acmeort:cpu"]["reference"] == "onnxruntime:cpu"
