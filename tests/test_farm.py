"""The device farm (``nnport.farm``, ``plugins/farm.py``) on a real local Ray cluster.

Every node binds and announces 127.0.0.2 (Ray rewrites 127.0.0.1 and
``localhost`` to the host's network address, 127.0.0.2 it keeps), so test
traffic stays on loopback.  Object stores are Ray's minimum (75 MiB), each node
gets one CPU, and every node is stopped by PID at teardown (never ``ray stop``,
which would kill other users' Ray processes on the host).

By default: the farm off (no Ray import, the backend unavailable with the
reason), unit checks, and one real single-node farm driven through the CLI
(join, status, compile and run, a missing device, stop).  ``-m slow``: a
two-node farm whose nodes own different devices (one without OpenVINO, one
without ncnn plus a test plugin), conformance across both, a busy device, a
segfaulting actor, and a node killed mid-run.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import nnport
from nnport import farm, zoo
from nnport.data import random_feeds
from nnport.errors import DeviceNotFound, ExecutionError, WorkerCrashed
from nnport.types import Device

IP = "127.0.0.2"
TESTS = Path(__file__).parent
OBJECT_STORE_MB = 75  # Ray's minimum
ONLY_ORT = "openvino,ncnn,mnn,litert,tensorrt"
needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'nnport[farm]')"
)


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    """The marker says "run with -m slow": honour it even where addopts does not deselect."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((IP, 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nnport", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _leftovers(nodes) -> list[int]:
    """Live processes still in the sessions of the nodes we started."""
    return [pid for n in nodes for pid in farm._session_pids(n.pid) if farm._alive(pid)]


def _disconnect() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    farm._connected = None


# -- the farm off: free ----------------------------------------------------------------------------


def test_without_a_farm_the_backend_is_unavailable_and_ray_is_not_imported():
    env = {k: v for k, v in os.environ.items() if k != farm.ENV_ADDRESS}
    code = (
        "import sys, json, nnport\nrows = {r.name: r for r in "
        "nnport.backends()}\nprint(json.dumps([rows['farm'].status, rows['farm'].reason, 'ray' in "
        "sys.modules]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    status, reason, imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == "unavailable" and "NNPORT_FARM" in reason
    assert imported is False


def test_configured_farm_costs_nothing_until_devices_are_listed():
    env = {**os.environ, farm.ENV_ADDRESS: f"{IP}:1"}
    code = "import sys, nnport\nnnport.backends(check_devices=False)\nprint('ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_device_ids_and_names():
    assert farm.device_id("n1", "ncnn:vulkan:0") == "farm:n1/ncnn:vulkan:0"
    assert farm.split_device_id("farm:n1/ncnn:vulkan:0") == ("n1", "ncnn:vulkan:0")
    assert farm.split_device_id("FARM:n1/openvino:CPU") == ("n1", "openvino:CPU")
    assert farm.split_device_id("openvino:CPU") is None and farm.split_device_id("farm:openvino") is None
    assert farm.device_resource("n1", "openvino:CPU") == "nnport_dev:n1/openvino:CPU"
    assert farm.check_name("lab-pi.4_b") == "lab-pi.4_b"
    for bad in ("", "a/b", "a:b", "a b", "-x"):
        with pytest.raises(farm.FarmError):
            farm.check_name(bad)


def test_version_differences_name_both_sides():
    diff = farm.version_differences(
        {"nnport": "0.1.0", "openvino": "2025.1", "ncnn": "1.0"}, {"nnport": "0.1.0", "openvino": "2026.4"}
    )
    assert diff == {"openvino": ("2025.1", "2026.4")}


def _farm_device(node: str, local: str, kind: str = "cpu") -> Device:
    return Device(
        id=farm.device_id(node, local),
        backend="farm",
        kind=kind,
        name=local,
        properties={"node": node, "remote_id": local, "remote_backend": local.split(":")[0]},
    )


def test_farm_selection_forms():
    from nnport.plugins.farm import FarmBackend

    devs = [
        _farm_device("n1", "ncnn:cpu"),
        _farm_device("n1", "ncnn:vulkan:0", "gpu"),
        _farm_device("n2", "openvino:CPU"),
        _farm_device("n2", "openvino:GPU.0", "gpu"),
    ]
    select = FarmBackend().select
    ids = lambda spec: [d.id for d in select(devs, spec)]  # noqa: E731
    assert ids("openvino") == ["farm:n2/openvino:GPU.0", "farm:n2/openvino:CPU"]  # accelerators first
    assert ids("ncnn:gpu") == ["farm:n1/ncnn:vulkan:0"]
    assert ids("n1") == ["farm:n1/ncnn:vulkan:0", "farm:n1/ncnn:cpu"]
    assert ids("n2/cpu") == ["farm:n2/openvino:CPU"]
    assert ids("openvino:CPU") == ["farm:n2/openvino:CPU"]
    assert ids("gpu") == ["farm:n1/ncnn:vulkan:0", "farm:n2/openvino:GPU.0"]
    assert ids("tensorrt") == []


# -- one real node, by default (the CLI end to end) ------------------------------------------------------


@needs_ray
def test_one_node_farm_end_to_end(tmp_path, monkeypatch):
    """join --head, status, compile + run through the farm == local, a missing device at once, stop by PID."""
    state = tmp_path / "state"
    ray_tmp = tempfile.mkdtemp(prefix="nnf", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = _free_port()
    env = {**os.environ, "NNPORT_FARM_STATE": str(state), "NNPORT_DISABLE_PLUGINS": ONLY_ORT}
    env.pop(farm.ENV_ADDRESS, None)
    monkeypatch.setenv("NNPORT_FARM_STATE", str(state))
    started = []
    try:
        t0 = time.monotonic()
        proc = _cli(
            "farm",
            "join",
            "--head",
            "--ip",
            IP,
            "--port",
            str(port),
            "--name",
            "solo",
            "--object-store-mb",
            str(OBJECT_STORE_MB),
            "--num-cpus",
            "1",
            "--temp-dir",
            ray_tmp,
            "--json",
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        node = json.loads(proc.stdout)
        assert node["name"] == "solo" and node["head"] and node["running"] and node["devices"] == ["onnxruntime:cpu"]
        started = farm.local_nodes()
        assert [n.name for n in started] == ["solo"] and "raylet" in farm.node_pids(started[0])
        join_s = time.monotonic() - t0

        monkeypatch.setenv(farm.ENV_ADDRESS, node["address"])
        st = farm.status()
        assert st.error is None and [n.name for n in st.nodes] == ["solo"]
        assert st.nodes[0].alive and st.nodes[0].nnport_version == nnport.__version__

        model = zoo.load("mlp")
        assert [d.id for d in nnport.devices("farm")] == ["farm:solo/onnxruntime:cpu"]
        compiled = nnport.compile(model, "farm:solo/onnxruntime:cpu", fallback=False)
        local = nnport.compile(model, "onnxruntime:cpu", fallback=False)
        feeds = random_feeds(local.inputs, seed=3)
        got, want = compiled.run(feeds), local.run(feeds)
        assert list(got) == list(want) and all(np.array_equal(got[k], want[k]) for k in want)
        assert all(v.flags.writeable for v in got.values())
        assert (
            compiled.info["farm"]["node"] == "solo"
            and compiled.info["farm"]["versions"]["nnport"] == nnport.__version__
        )

        t = time.monotonic()
        with pytest.raises(DeviceNotFound):
            nnport.compile(model, "farm:ghost/onnxruntime:cpu", fallback=False)
        with pytest.raises(DeviceNotFound, match="no live node"):
            nnport.compile(
                model,
                Device(
                    id="farm:ghost/openvino:CPU",
                    backend="farm",
                    kind="cpu",
                    properties={"node": "ghost", "remote_id": "openvino:CPU"},
                ),
                fallback=False,
            )
        assert time.monotonic() - t < 10, "a device no node has must fail at once, not wait"
        del compiled
        gc.collect()
        print(f"\nfarm: one-node join took {join_s:.1f} s")
    finally:
        _disconnect()
        proc = _cli("farm", "stop", env=env)
        assert proc.returncode == 0, proc.stderr
        time.sleep(0.5)
        assert _leftovers(started) == []
        assert farm.local_nodes() == []
        shutil.rmtree(ray_tmp, ignore_errors=True)


# -- two nodes (-m slow) --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_nodes(request):
    """n1 (head): ONNX Runtime + ncnn, no OpenVINO; n2: ONNX Runtime + OpenVINO + farmtest, no ncnn."""
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")  # module fixtures set up before the autouse skip above
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    mp = pytest.MonkeyPatch()
    state = Path(tempfile.mkdtemp(prefix="nnport-farm-state-"))
    ray_tmp = tempfile.mkdtemp(prefix="nnf", dir="/tmp")
    mp.setenv("NNPORT_FARM_STATE", str(state))
    mp.delenv(farm.ENV_ADDRESS, raising=False)
    nodes = []
    try:
        common = {"NNPORT_PLUGINS": None, "FARMTEST_VERSION": None}
        head = farm.join(
            head=True,
            ip=IP,
            port=_free_port(),
            name="n1",
            object_store_mb=OBJECT_STORE_MB,
            num_cpus=1,
            temp_dir=ray_tmp,
            env={
                **common,
                "NNPORT_DISABLE_PLUGINS": "openvino,mnn,litert,tensorrt",
                "RAY_health_check_period_ms": "1000",
                "RAY_health_check_failure_threshold": "3",
                "RAY_health_check_timeout_ms": "1000",
            },
        )
        nodes.append(head)
        nodes.append(
            farm.join(
                address=head.address,
                ip=IP,
                name="n2",
                object_store_mb=OBJECT_STORE_MB,
                num_cpus=1,
                temp_dir=ray_tmp,
                env={
                    "NNPORT_DISABLE_PLUGINS": "ncnn,mnn,litert,tensorrt",
                    "NNPORT_PLUGINS": "farm_testplugin",
                    "FARMTEST_VERSION": "1.0",
                    "FARMTEST_SLEEP_S": "3",
                    "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                },
            )
        )
        # This process (the driver) has farmtest 2.0: the node's 1.0 must show as a difference.
        mp.setenv(farm.ENV_ADDRESS, head.address)
        mp.setenv("NNPORT_PLUGINS", "farm_testplugin")
        mp.setenv("FARMTEST_VERSION", "2.0")
        mp.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        yield {n.name: n for n in nodes}
    finally:
        _disconnect()
        farm.stop()
        time.sleep(0.5)
        left = _leftovers(nodes)
        mp.undo()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
        assert left == [], f"processes of the test farm still running: {left}"


def _conformance(*args: str, timeout: float = 600) -> tuple[int, dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        t = time.monotonic()
        proc = _cli("conformance", *args, "--json", str(out), env=dict(os.environ), timeout=timeout)
        wall = time.monotonic() - t
        assert out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.returncode, json.loads(out.read_text()), wall


@needs_ray
@pytest.mark.slow
def test_nodes_own_different_devices_and_versions_show(two_nodes):
    ids = [d.id for d in nnport.devices("farm")]
    assert "farm:n1/ncnn:cpu" in ids and "farm:n2/openvino:CPU" in ids and "farm:n2/farmtest:crash" in ids
    assert not any(i.startswith("farm:n1/openvino") or i.startswith("farm:n2/ncnn") for i in ids)
    pm = nnport.get_plugin_manager()
    from nnport.selection import candidates

    assert {d.properties["node"] for d in candidates(pm, "farm:openvino")} == {"n2"}
    assert {d.properties["node"] for d in candidates(pm, "farm:ncnn")} == {"n1"}
    dev = next(d for d in nnport.devices("farm") if d.id == "farm:n2/farmtest:slow")
    assert dev.properties["version_differences"] == {"farmtest": {"node": "1.0", "here": "2.0"}}
    st = farm.status()
    by_name = {n.name: n for n in st.nodes}
    assert set(by_name) == {"n1", "n2"} and by_name["n1"].head and not by_name["n2"].head
    assert st.differences(by_name["n2"]) == {"farmtest": ("1.0", "2.0")}
    proc = _cli("farm", "status", env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "farmtest 1.0 (here 2.0)" in proc.stdout and "farm:n2/openvino:CPU" in proc.stdout


@needs_ray
@pytest.mark.slow
def test_remote_ncnn_equals_local_and_measure_runs_on_the_node(two_nodes):
    model = zoo.load("cnn")
    remote = nnport.compile(model, "farm:n1/ncnn:cpu", fallback=False)
    local = nnport.compile(model, "ncnn:cpu", fallback=False)
    feeds = random_feeds(local.inputs, seed=1)
    got, want = remote.run(feeds), local.run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6)
    m = nnport.measure(remote, min_iterations=20, min_duration_s=0.2, warmup=2, energy=False)
    assert m.device == "farm:n1/ncnn:cpu" and m.backend == "farm" and m.iterations >= 20
    assert m.context["farm"]["node"] == "n1" and m.context["remote_device"] == "ncnn:cpu"


@needs_ray
@pytest.mark.slow
def test_busy_device_waits_boundedly_and_frees_on_release(two_nodes, monkeypatch):
    from nnport.plugins import farm as farm_plugin

    device = next(d for d in nnport.devices("farm") if d.id == "farm:n2/onnxruntime:cpu")
    held = nnport.compile(zoo.load("mlp"), device, fallback=False)
    monkeypatch.setattr(farm_plugin, "WAIT_S", 2.0)
    t = time.monotonic()
    with pytest.raises(ExecutionError, match="busy"):
        farm_plugin._Lease(device)
    assert time.monotonic() - t < 15
    del held
    gc.collect()
    t = time.monotonic()
    monkeypatch.setattr(farm_plugin, "WAIT_S", 60.0)
    lease = farm_plugin._Lease(device)  # the cancelled placement did not keep the device
    assert time.monotonic() - t < 30
    lease.release_if_unused()


@needs_ray
@pytest.mark.slow
def test_segfaulting_actor_is_a_crash(two_nodes):
    compiled = nnport.compile(zoo.load("mlp"), "farm:n2/farmtest:crash", fallback=False)
    feeds = random_feeds(compiled.inputs, seed=0)
    t = time.monotonic()
    with pytest.raises(WorkerCrashed, match="died"):
        compiled.run(feeds)
    assert time.monotonic() - t < 30
    assert farm.node_alive(compiled.native.lease.node_id), "a crashed actor leaves its node up"
    rc, report, _ = _conformance(
        "-b", "farm:n2/farmtest:crash", "-b", "farm:n1/onnxruntime:cpu", "-k", "zoo/mlp", "-j", "1"
    )
    status = {r["device"]: r for r in report["results"]}
    assert status["farm:n2/farmtest:crash"]["status"] == "crash", status
    assert status["farm:n1/onnxruntime:cpu"]["status"] == "pass", status
    assert status["farm:n1/onnxruntime:cpu"]["remote"]["node"] == "n1"
    assert rc == 1


@needs_ray
@pytest.mark.slow
def test_conformance_across_two_nodes(two_nodes):
    rc, report, wall = _conformance("-b", "farm:ncnn", "-b", "farm:openvino", "-k", "zoo/*", "-j", "2")
    assert rc == 0, [r for r in report["results"] if r["status"] != "pass"]
    assert {"farm:n1/ncnn:cpu", "farm:n2/openvino:CPU"} <= set(report["devices"])
    assert all(d.startswith(("farm:n1/ncnn:", "farm:n2/openvino:")) for d in report["devices"]), report["devices"]
    for r in report["results"]:
        node = farm.split_device_id(r["device"])[0]
        assert r["remote"]["node"] == node and r["remote"]["versions"]["nnport"] == nnport.__version__
    assert "farm:n2" in report["environment"]["versions"]
    print(f"\nfarm: conformance zoo/* on {report['devices']} in {wall:.1f} s ({report['wall_s']:.1f} s in the runner)")


@needs_ray
@pytest.mark.slow
def test_node_killed_mid_run_loses_its_cases_and_reports_every_case(two_nodes):
    """Last: kills n2.  Its raylet dies while a run on it is in flight; no case goes unreported, nothing hangs.

    With ``--retry-elsewhere`` the cases of n2's ONNX Runtime CPU rerun on n1's; farmtest exists on n2 only, so its
    cases stay lost.
    """
    n2 = two_nodes["n2"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nnport",
                "conformance",
                "-b",
                "farm:n2/farmtest:slow",
                "-b",
                "farm:n2/onnxruntime:cpu",
                "-b",
                "farm:n1/onnxruntime:cpu",
                "-k",
                "zoo/*",
                "-j",
                "1",
                "--retry-elsewhere",
                "--json",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not any("DeviceServer" in p for p in farm.node_pids(n2)):
                time.sleep(0.2)
            assert any("DeviceServer" in p for p in farm.node_pids(n2)), "no run reached n2"
            time.sleep(1.5)  # compile done, the 3 s run in flight
            os.kill(farm.node_pids(n2)["raylet"][0], signal.SIGKILL)
            killed = time.monotonic()
            output, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 1, output[-3000:]
        report = json.loads(out.read_text())
    results = {(r["case"], r["device"]): r for r in report["results"]}
    assert len(results) == len(report["cases"]) * 3, "every case on every device is reported"
    n2_status = [results[(c, "farm:n2/farmtest:slow")]["status"] for c in report["cases"]]
    assert "lost" in n2_status and set(n2_status) <= {"pass", "lost"}, n2_status
    assert all(
        "no other live node" in results[(c, "farm:n2/farmtest:slow")]["reason"]
        for c in report["cases"]
        if results[(c, "farm:n2/farmtest:slow")]["status"] == "lost"
    )
    assert all(results[(c, "farm:n1/onnxruntime:cpu")]["status"] == "pass" for c in report["cases"])
    moved = [results[(c, "farm:n2/onnxruntime:cpu")] for c in report["cases"]]
    assert all(r["status"] == "pass" for r in moved), moved
    assert any(
        r["remote"]["node"] == "n1" and r["reason"].startswith("rerun on farm:n1/onnxruntime:cpu") for r in moved
    ), moved
    print(
        f"\nfarm: node killed; conformance ended {time.monotonic() - killed:.1f} s later "
        f"({time.monotonic() - t0:.1f} s in all): {n2_status}"
    )
