"""Benchmark: what the device farm costs, on a two-node farm on this host's loopback.

    .venv/bin/python benchmarks/bench_farm.py [--calls 300] [--no-conformance]

Starts n1 (head; ONNX Runtime + ncnn, no OpenVINO) and n2 (ONNX Runtime +
OpenVINO, no ncnn) on 127.0.0.2 with 75 MiB object stores, then measures:

* join time of each node (device discovery, ``ray start``, publish);
* connect time of a fresh driver (``python -c "ray.init(...)"`` in a child, and
  the first ``nnport.devices("farm")`` there);
* the zoo MLP's ``run`` through the farm against a local ``run``, on the same
  backend and device kind (overhead per call, in us);
* remote-measured p50 (``nnport.measure`` runs on the node) against a local p50;
* ``nnport conformance -b farm:ncnn -b farm:openvino -k 'zoo/*'`` against the same
  run on the local devices (wall time; on one host's cores expect no speed-up).

Everything is stopped by PID at the end (``nnport.farm.stop``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IP = "127.0.0.2"


def _port() -> int:
    with socket.socket() as s:
        s.bind((IP, 0))
        return int(s.getsockname()[1])


def _timed_calls(fn, feeds, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn(feeds)
        out.append((time.perf_counter() - t) * 1e6)
    return out


def _conformance(devices: list[str], env: dict[str, str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "nnport", "conformance", "-k", "zoo/*", "-j", "2", "--json", f"{tmp}/r.json"]
        for d in devices:
            args += ["-b", d]
        t = time.monotonic()
        subprocess.run(args, env=env, capture_output=True, text=True, timeout=1200)
        wall = time.monotonic() - t
        report = json.loads(Path(f"{tmp}/r.json").read_text())
    counts: dict[str, int] = {}
    for r in report["results"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return wall, counts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--no-conformance", action="store_true")
    args = ap.parse_args()
    state = tempfile.mkdtemp(prefix="nnport-farm-bench-")
    ray_tmp = tempfile.mkdtemp(prefix="nnfb", dir="/tmp")
    os.environ["NNPORT_FARM_STATE"] = state
    os.environ.pop("NNPORT_FARM", None)
    from nnport import farm

    figures: dict[str, object] = {}
    try:
        t = time.monotonic()
        head = farm.join(
            head=True,
            ip=IP,
            port=_port(),
            name="n1",
            object_store_mb=75,
            num_cpus=1,
            temp_dir=ray_tmp,
            env={"NNPORT_DISABLE_PLUGINS": "openvino,mnn,litert,tensorrt"},
        )
        figures["join_head_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        farm.join(
            address=head.address,
            ip=IP,
            name="n2",
            object_store_mb=75,
            num_cpus=1,
            temp_dir=ray_tmp,
            env={"NNPORT_DISABLE_PLUGINS": "ncnn,mnn,litert,tensorrt"},
        )
        figures["join_node_s"] = round(time.monotonic() - t, 2)
        os.environ["NNPORT_FARM"] = head.address
        env = dict(os.environ)

        code = (
            "import time; t=time.perf_counter(); import ray; t1=time.perf_counter(); "
            f"ray.init(address={head.address!r}, log_to_driver=False, logging_level='warning'); "
            "t2=time.perf_counter(); "
            "import nnport; d=nnport.devices('farm'); t3=time.perf_counter(); print(t1-t, t2-t1, t3-t2)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        ).stdout.split()
        figures["driver_import_ray_s"], figures["driver_ray_init_s"], figures["driver_list_farm_devices_s"] = (
            round(float(x), 2) for x in out[-3:]
        )

        import numpy as np

        import nnport
        from nnport import zoo
        from nnport.data import random_feeds

        model = zoo.load("mlp")
        for remote_id, local_id in (
            ("farm:n1/onnxruntime:cpu", "onnxruntime:cpu"),
            ("farm:n2/openvino:CPU", "openvino:CPU"),
        ):
            t = time.monotonic()
            remote = nnport.compile(model, remote_id, fallback=False)
            compile_s = time.monotonic() - t
            local = nnport.compile(model, local_id, fallback=False)
            feeds = random_feeds(local.inputs, seed=0)
            assert all(np.allclose(remote.run(feeds)[k], v, atol=1e-6) for k, v in local.run(feeds).items())
            r = _timed_calls(remote.run, feeds, args.calls)
            loc = _timed_calls(local.run, feeds, args.calls)
            mr = nnport.measure(remote, min_duration_s=2, energy=False)
            ml = nnport.measure(local, min_duration_s=2, energy=False)
            figures[remote_id] = {
                "first_compile_with_actor_start_s": round(compile_s, 2),
                "run_p50_us_remote": round(statistics.median(r), 1),
                "run_p50_us_local": round(statistics.median(loc), 1),
                "run_overhead_p50_us": round(statistics.median(r) - statistics.median(loc), 1),
                "measured_p50_ms_on_node": round(mr.latency_p50_ms, 5),
                "measured_p50_ms_local": round(ml.latency_p50_ms, 5),
                "measured_p50_ratio": round(mr.latency_p50_ms / ml.latency_p50_ms, 3),
            }
            del remote
        if not args.no_conformance:
            wall, counts = _conformance(["farm:n1/ncnn:cpu", "farm:n2/openvino:CPU"], env)
            figures["conformance_zoo_farm_two_nodes"] = {"wall_s": round(wall, 1), "statuses": counts}
            local_env = {k: v for k, v in env.items() if k != "NNPORT_FARM"}
            wall, counts = _conformance(["ncnn:cpu", "openvino:CPU"], local_env)
            figures["conformance_zoo_local"] = {"wall_s": round(wall, 1), "statuses": counts}
        try:
            figures["loadavg_1m"] = os.getloadavg()[0]
        except OSError:
            pass
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        farm.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
