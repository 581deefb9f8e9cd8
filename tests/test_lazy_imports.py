"""``import nnport`` and ``nnport backends`` import no SDK, and work with none installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SDKS = (
    "onnxruntime",
    "openvino",
    "ncnn",
    "tensorrt",
    "pnnx",
    "torch",
    "nncf",
    "polygraphy",
    "ai_edge_litert",
    "tensorflow",
    "MNN",
    "_tools",
    "_mnncengine",
    "ray",
)


def test_import_and_listing_import_no_sdk():
    code = f"import sys, nnport\nnnport.backends()\nprint([m for m in {SDKS!r} if m in sys.modules])\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _package_dir(module_name: str) -> Path:
    import importlib

    return Path(importlib.import_module(module_name).__path__[0])


@pytest.fixture
def bare_site(tmp_path):
    """A site with nnport, pluggy and numpy only: no onnx, no runtime SDK at all."""
    site = tmp_path / "site"
    (site / "nnport").parent.mkdir(parents=True)
    shutil.copytree(_package_dir("nnport"), site / "nnport")
    for sub in ("plugins", "conformance"):
        target = site / "nnport" / sub
        if not target.exists():
            shutil.copytree(_package_dir(f"nnport.{sub}"), target)
    for dep in ("pluggy", "numpy"):
        src = _package_dir(dep)
        (site / dep).symlink_to(src)
        libs = src.parent / f"{dep}.libs"
        if libs.exists():
            (site / f"{dep}.libs").symlink_to(libs)
    return site


def test_backends_work_without_any_runtime_installed(bare_site):
    code = (
        "import sys\n"
        f"sys.path[:] = [{str(bare_site)!r}] + [p for p in sys.path if 'site-packages' not in p and p]\n"
        "from nnport.cli import main\n"
        "sys.exit(main(['backends', '--json']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for name in ("onnxruntime", "openvino", "ncnn", "tensorrt", "litert", "mnn"):
        assert rows[name]["status"] == "unavailable", rows[name]
        assert "not installed" in rows[name]["reason"]
