"""The command line, run as users run it: a subprocess of the installed ``nnport``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnport.manager import DEFAULT_PLUGINS


def nnport_cli(*args, env=None, check=True):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "nnport", *args], capture_output=True, text=True, env=full_env, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"nnport {' '.join(args)} exited {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
        )
    return proc


def test_backends_json_lists_every_builtin_with_status_or_reason():
    rows = json.loads(nnport_cli("backends", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert set(DEFAULT_PLUGINS) <= set(by_name)
    assert by_name["onnxruntime"]["status"] == "available"
    for name in DEFAULT_PLUGINS:
        row = by_name[name]
        assert row["status"] in ("available", "unavailable"), row
        assert (row["status"] == "available") == (row["reason"] is None)


def test_devices_json():
    rows = json.loads(nnport_cli("devices", "--json").stdout)
    assert any(r["id"] == "onnxruntime:cpu" and r["kind"] == "cpu" and r["available"] for r in rows)


def test_run_zoo_model_saves_outputs(tmp_path):
    out = tmp_path / "out.npz"
    proc = nnport_cli("run", "zoo:cnn", "--device", "onnxruntime:cpu", "--output", str(out))
    assert "ran cnn on onnxruntime:cpu" in proc.stdout
    with np.load(out) as data:
        assert data["probs"].shape == (1, 10)
        assert data["probs"].sum() == pytest.approx(1.0, rel=1e-5)


def test_run_with_input_file_and_json(tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    summary = json.loads(
        nnport_cli("run", "zoo:mlp", "-d", "onnxruntime", "--input", f"x={tmp_path / 'x.npy'}", "--json").stdout
    )
    assert summary["device"] == "onnxruntime:cpu"
    assert summary["outputs"]["probs"]["shape"] == [1, 10]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "/no/such.onnx"], "model file not found"),
        (["run", "zoo:mlp", "--device", "quantum"], "unknown device 'quantum'"),
        (["run", "zoo:nope"], "unknown zoo model 'nope'"),
        (["run", "zoo:mlp", "--input", "x"], "--input expects NAME=FILE.npy"),
        (["devices", "--backend", "nosuch"], "unknown backend 'nosuch'"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message):
    proc = nnport_cli(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_wrong_input_name_from_file(tmp_path):
    np.save(tmp_path / "y.npy", np.zeros((1, 64), np.float32))
    proc = nnport_cli("run", "zoo:mlp", "-d", "onnxruntime", "--input", f"y={tmp_path / 'y.npy'}", check=False)
    assert proc.returncode == 2
    assert "unexpected input(s) ['y']" in proc.stderr and "expects {x: float32[1, 64]}" in proc.stderr


def test_console_script_matches_module():
    import shutil

    exe = shutil.which("nnport", path=os.path.dirname(sys.executable))
    assert exe, "the nnport console script is installed next to the interpreter"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("nnport ")


def test_demo_runs_every_zoo_model_on_the_reference():
    proc = nnport_cli("demo", "--models", "mlp", "cnn")
    assert "zoo models against the reference" in proc.stdout
    assert "mlp" in proc.stdout and "onnxruntime:cpu" in proc.stdout
