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


# -- one convention for every command (issue 19, point 3) ---------------------------------------------------------

REFUSER = """
import nnport
from nnport.errors import CompileError
from nnport.types import Device


class Refuser(nnport.Backend):
    name = "refuser"
    vendor = "Test"
    priority = 1000

    def devices(self):
        return [Device(id="refuser:cpu", backend="refuser", kind="cpu", name="refuses every model")]

    def compile(self, model, device, options):
        raise CompileError("refuses every model", backend=self.name, device=device.id)


@nnport.hookimpl
def nnport_register_backends(register):
    register(Refuser)
"""


@pytest.fixture
def refuser_env(tmp_path):
    (tmp_path / "nnport_test_refuser.py").write_text(REFUSER)
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    return {"NNPORT_PLUGINS": "nnport_test_refuser", "PYTHONPATH": path}


def test_exit_codes_tell_bad_input_from_a_runtime_failure(refuser_env):
    usage = nnport_cli("run", check=False)  # argparse: a missing argument
    assert usage.returncode == 2
    bad_input = nnport_cli("run", "zoo:mlp", "-d", "quantum", check=False, env=refuser_env)
    assert bad_input.returncode == 2 and "unknown device 'quantum'" in bad_input.stderr
    failed = nnport_cli("run", "zoo:mlp", "-d", "refuser:cpu", "--no-fallback", check=False, env=refuser_env)
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.startswith("nnport: error: ") and "refuses every model" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_verbose_shows_the_fallback_log(refuser_env):
    args = ("run", "zoo:mlp", "-d", "refuser:cpu", "-d", "onnxruntime:cpu")
    quiet = nnport_cli(*args, env=refuser_env)
    assert "could not compile" not in quiet.stderr
    loud = nnport_cli("-v", *args, env=refuser_env)
    assert "nnport: INFO:" in loud.stderr and "refuser:cpu could not compile" in loud.stderr, loud.stderr
    assert nnport_cli(*args, "--verbose", env=refuser_env).stderr == loud.stderr  # after the command too


@pytest.mark.parametrize(
    "args, text",
    [
        (["backends"], "onnxruntime"),
        (["devices"], "onnxruntime:cpu"),
        (["run", "zoo:mlp", "-d", "onnxruntime:cpu"], "ran mlp on onnxruntime:cpu"),
        (["meters"], "meter"),
        (["compare", "zoo:mlp", "-d", "onnxruntime:cpu"], "all devices agree"),
        (["compress", "zoo:mlp", "-p", "fp16", "-o", "{tmp}/m.onnx"], "wrote"),
    ],
)
def test_json_without_a_file_is_pure_json_on_stdout_and_text_on_stderr(tmp_path, args, text):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    for flag in (["--json"], ["--json", "-"]):
        proc = nnport_cli(*args, *flag)
        json.loads(proc.stdout)  # nothing but the JSON
        assert text in proc.stderr, proc.stderr
    out = tmp_path / "out.json"
    proc = nnport_cli(*args, "--json", str(out))
    json.loads(out.read_text())
    assert text in proc.stdout and f"JSON written to {out}" in proc.stdout


def test_backends_show_runtime_versions():
    rows = {r["name"]: r for r in json.loads(nnport_cli("backends", "--json").stdout)}
    assert rows["onnxruntime"]["versions"]["onnxruntime"]
    assert "versions" in nnport_cli("backends").stdout.splitlines()[0]
    probe_only = {r["name"]: r for r in json.loads(nnport_cli("backends", "--probe-only", "--json").stdout)}
    assert probe_only["onnxruntime"]["versions"] == {}  # no SDK imported


def test_conformance_takes_device_and_backend_alike():
    for flag in ("-d", "--device", "-b", "--backend"):
        proc = nnport_cli("conformance", flag, "onnxruntime:cpu", "-k", "zoo/mlp", "--list")
        assert "zoo/mlp" in proc.stdout


def test_every_command_takes_json_and_verbose():
    from nnport.cli import _subcommands, build_parser

    for command in _subcommands(build_parser()):
        if command.prog.endswith("nnport farm"):
            continue
        options = {s for a in command._actions for s in a.option_strings}
        assert {"-v", "--verbose"} <= options, command.prog
        assert "--json" in options, command.prog
        takes_devices = any(a.dest in ("device", "backend") for a in command._actions if a.option_strings)
        if takes_devices and not command.prog.endswith(" devices"):
            assert {"-d", "--device"} <= options, command.prog


# -- extras that match the commands (issue 19, point 2) -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv, module, extra",
    [
        (["compress", "zoo:mlp", "-p", "fp16", "-o", "{tmp}/m.onnx"], "onnxruntime", "compress"),
        (["conformance", "-k", "zoo/mlp"], "onnxruntime", "conformance"),
        (["compare", "zoo:mlp", "-d", "onnxruntime:cpu"], "onnxruntime", "onnxruntime"),
        (["port", "zoo:mlp"], "onnxruntime", "onnxruntime"),
        (["farm", "status"], "ray", "farm"),
    ],
)
def test_a_command_missing_its_extra_names_it(tmp_path, monkeypatch, capsys, argv, module, extra):
    from nnport.cli import main

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importlib.util.find_spec gives None
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"pip install 'nnport[{extra}]'" in err and err.strip().count("\n") == 0, err


def test_extras_hold_what_their_commands_import():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def names(extra):
        return {req.split(">")[0].split("=")[0].split("[")[0].strip().lower() for req in extras[extra]}

    assert "onnxruntime" in names("compress")
    assert {"onnxruntime", "pytest"} <= names("conformance")
    assert {"ruff", "mypy", "pytest"} <= names("dev")
    assert "matplotlib" in names("plot") and "ray" in names("farm")


NOISY = """
import os

import nnport
from nnport.types import Device


class Noisy(nnport.Backend):
    name = "noisy"
    vendor = "Test"

    def devices(self):
        os.write(1, b"noise a runtime prints at C level\\n")  # below Python's sys.stdout
        return [Device(id="noisy:cpu", backend="noisy", kind="cpu", name="noisy")]


@nnport.hookimpl
def nnport_register_backends(register):
    register(Noisy)
"""


def test_json_on_stdout_survives_what_runtimes_print_at_c_level(tmp_path):
    (tmp_path / "nnport_test_noisy.py").write_text(NOISY)
    env = {
        "NNPORT_PLUGINS": "nnport_test_noisy",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    proc = nnport_cli("devices", "--json", env=env)
    assert "noisy:cpu" in {d["id"] for d in json.loads(proc.stdout)}
    assert "noise a runtime prints at C level" in proc.stderr


# -- progress of long steps (issue 19, point 9) -------------------------------------------------------------------


def test_long_steps_report_progress(caplog):
    import logging
    import time

    from nnport import progress

    with caplog.at_level(logging.INFO, logger="nnport.progress"):
        with progress.step("a long conversion", every_s=0.05):
            time.sleep(0.2)
        with pytest.raises(RuntimeError), progress.step("a failing build", every_s=10):
            raise RuntimeError("boom")
    text = [r.getMessage() for r in caplog.records if r.name == "nnport.progress"]
    assert text[0] == "a long conversion ..." and any("still working" in t for t in text)
    assert any(t.startswith("a long conversion: done in") for t in text)
    assert any(t.startswith("a failing build: stopped after") for t in text)


def test_verbose_shows_a_conversion_in_progress(tmp_path):
    proc = nnport_cli("-v", "run", "zoo:mlp", "-d", "ncnn:cpu", env={"NNPORT_CACHE_DIR": str(tmp_path)}, check=False)
    if proc.returncode == 2 and "unknown device" in proc.stderr:
        pytest.skip("ncnn is not usable here")
    assert proc.returncode == 0, proc.stderr
    assert "ncnn: converting 'mlp' with pnnx" in proc.stderr and "done in" in proc.stderr, proc.stderr
    quiet = nnport_cli("run", "zoo:mlp", "-d", "ncnn:cpu", env={"NNPORT_CACHE_DIR": str(tmp_path / "again")})
    assert "converting" not in quiet.stderr  # not a terminal, no -v: the caller's stderr stays as it was
