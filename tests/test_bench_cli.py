"""``nnport bench``: the side-by-side table, JSON, --compare, --plot and bad input, on real runtimes."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

import nnport
from nnport.cli import main

pytest.importorskip("onnxruntime")

QUICK = ["--warmup", "1", "--iterations", "10", "--min-duration", "0.05", "--threads", "1"]


def bench(capsys, *args):
    code = main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_one_device_table_and_json(capsys, tmp_path):
    out_json = tmp_path / "a.json"
    code, out, err = bench(capsys, "zoo:cnn", "-d", "onnxruntime:cpu", *QUICK, "--json", str(out_json))
    assert code == 0, err
    assert "onnxruntime:cpu" in out and "latency p50 (ms)" in out and "throughput (inferences/s)" in out
    assert "compile warm, cached (s)" in out
    report = json.loads(out_json.read_text())
    assert report["model"]["name"] == "cnn" and report["settings"]["min_iterations"] == 10
    (r,) = report["results"]
    assert r["device"] == "onnxruntime:cpu" and r["iterations"] >= 10
    assert r["compile_cold_s"] > 0 and r["compile_warm_s"] > 0 and r["compile_warm_cache_hit"] is True
    assert r["compile_rss_added_mib"] is not None and r["peak_rss_mib"] > 0
    assert len(r["samples_ms"]) == r["iterations"]
    assert r["context"]["threads"] == 1 and r["context"]["hint"] == "latency"
    if r["energy"] == "unavailable":
        assert "energy: unavailable" in out and "rapl:" in out


def test_bench_two_devices_side_by_side(capsys, tmp_path):
    devices = [d.id for d in nnport.devices()]
    second = next((d for d in devices if d.startswith("openvino:")), None)
    if second is None:
        pytest.skip("needs a second backend (openvino) for two columns")
    out_json = tmp_path / "two.json"
    code, out, err = bench(capsys, "zoo:mlp", "-d", "onnxruntime:cpu", "-d", second, *QUICK, "--json", str(out_json))
    assert code == 0, err
    header = out.splitlines()[2]
    assert "onnxruntime:cpu" in header and second in header
    results = json.loads(out_json.read_text())["results"]
    assert [r["device"] for r in results] == ["onnxruntime:cpu", second]
    assert "openvino" in results[1]["context"]["runtime_versions"]


def test_bench_one_bad_device_among_good(capsys):
    code, out, err = bench(
        capsys, "zoo:mlp", "-d", "onnxruntime:cpu", "-d", "nosuchbackend:x", *QUICK, "--no-warm-compile"
    )
    assert code == 1
    assert "nosuchbackend:x: error:" in out


def test_bench_only_bad_devices(capsys):
    code, out, err = bench(capsys, "zoo:mlp", "-d", "nosuchbackend:x", *QUICK)
    assert code == 2 and "nnport: error: no device could be measured" in err


@pytest.mark.parametrize(
    "args, match",
    [
        (["--iterations", "0"], "min_iterations must be an integer >= 1"),
        (["--iterations", "-3"], "min_iterations"),
        (["--min-duration", "0"], "min_duration_s must be"),
        (["--min-duration", "-2"], "min_duration_s"),
        (["--warmup", "-1"], "warmup"),
        (["--streams", "0", "--scenario", "multi-stream"], "streams"),
        (["--threads", "0"], "threads"),
    ],
)
def test_bench_bad_counts(capsys, args, match):
    code, out, err = bench(capsys, "zoo:mlp", "-d", "onnxruntime:cpu", *args)
    assert code == 2 and match in err and "Traceback" not in err


def test_bench_inputs(capsys, tmp_path):
    good = tmp_path / "x.npy"
    np.save(good, np.full((1, 64), 0.5, np.float32))
    code, out, err = bench(
        capsys, "zoo:mlp", "-d", "onnxruntime:cpu", *QUICK, "--input", f"x={good}", "--no-warm-compile"
    )
    assert code == 0, err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 3), np.float32))
    code, out, err = bench(
        capsys, "zoo:mlp", "-d", "onnxruntime:cpu", *QUICK, "--input", f"x={bad}", "--no-warm-compile"
    )
    assert code == 2 and "InputError" in err and "x" in err
    code, out, err = bench(
        capsys, "zoo:mlp", "-d", "onnxruntime:cpu", *QUICK, "--input", f"nope={good}", "--no-warm-compile"
    )
    assert code == 2 and "unexpected input" in err


def test_bench_offline_and_multi_stream(capsys, tmp_path):
    out_json = tmp_path / "o.json"
    code, out, err = bench(
        capsys,
        "zoo:mlp_dynamic",
        "-d",
        "onnxruntime:cpu",
        *QUICK,
        "--scenario",
        "offline",
        "--batch",
        "4",
        "--json",
        str(out_json),
        "--no-warm-compile",
    )
    assert code == 0, err
    (r,) = json.loads(out_json.read_text())["results"]
    assert r["batch"] == 4 and r["inferences"] == 4 * r["iterations"]
    code, out, err = bench(
        capsys, "zoo:cnn", "-d", "onnxruntime:cpu", *QUICK, "--scenario", "offline", "--batch", "4", "--no-warm-compile"
    )
    assert code == 2 and "batch is fixed" in err
    code, out, err = bench(
        capsys,
        "zoo:cnn",
        "-d",
        "onnxruntime:cpu",
        *QUICK,
        "--scenario",
        "multi-stream",
        "--streams",
        "2",
        "--json",
        str(out_json),
        "--no-warm-compile",
    )
    assert code == 0, err
    (r,) = json.loads(out_json.read_text())["results"]
    assert r["streams"] == 2 and len(r["stream_latency_p50_ms"]) == 2
    assert r["context"]["hint"] == "throughput"  # the default hint for more than one stream


def test_bench_compare(capsys, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert bench(capsys, "zoo:cnn", "-d", "onnxruntime:cpu", *QUICK, "--json", str(a), "--no-warm-compile")[0] == 0
    report = json.loads(a.read_text())
    r = report["results"][0]
    r["latency_p50_ms"] *= 2
    r["throughput_ips"] /= 4
    r["context"]["runtime_versions"] = {"onnxruntime": "0.0-other"}
    b.write_text(json.dumps(report))
    code, out, err = bench(capsys, "--compare", str(a), str(b))
    assert code == 0, err
    p50 = next(line for line in out.splitlines() if line.startswith("latency p50"))
    assert p50.split()[-1] == "2.000"
    tput = next(line for line in out.splitlines() if line.startswith("throughput"))
    assert tput.split()[-1] == "0.250"
    assert "context differs" in out and "0.0-other" in out
    code, out, err = bench(capsys, "--compare", str(a), str(tmp_path / "missing.json"))
    assert code == 2 and "not found" in err


def test_bench_compare_accepts_a_measurement_json(capsys, tmp_path):
    compiled = nnport.compile(nnport.zoo.load("mlp"), "onnxruntime:cpu", threads=1)
    m = nnport.measure(compiled, warmup=1, min_iterations=5, min_duration_s=0.02)
    a = tmp_path / "m.json"
    a.write_text(json.dumps(m.to_dict(), default=str))
    code, out, err = bench(capsys, "--compare", str(a), str(a))
    assert code == 0 and "1.000" in out


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_bench_plot(capsys, tmp_path):
    png = tmp_path / "cdf.png"
    code, out, err = bench(capsys, "zoo:cnn", "-d", "onnxruntime:cpu", *QUICK, "--plot", str(png), "--no-warm-compile")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, out, err = bench(capsys, "zoo:cnn", "-d", "onnxruntime:cpu", *QUICK, "--plot", str(tmp_path / "x.png"))
    assert code == 2 and "--plot needs matplotlib" in err and "nnport[plot]" in err
    assert out == ""  # refused before any compile or run


def test_bench_progress_on_stderr(capsys):
    code, out, err = bench(
        capsys,
        "zoo:mlp",
        "-d",
        "onnxruntime:cpu",
        "--warmup",
        "0",
        "--iterations",
        "1",
        "--min-duration",
        "0.6",
        "--progress",
        "--no-warm-compile",
    )
    assert code == 0
    assert "compiling" in err and "inferences" in err and "s " in err


def test_bench_needs_a_model(capsys):
    code, out, err = bench(capsys)
    assert code == 2 and "needs a MODEL" in err


def test_bench_and_compare_are_api_functions_the_cli_calls():
    """nnport.bench and nnport.conformance.compare.compare_devices: the commands' logic, callable from Python."""
    import nnport.cli_bench
    import nnport.conformance.cli
    from nnport import zoo
    from nnport.conformance.compare import compare_devices
    from nnport.data import random_feeds

    model = zoo.load("mlp")
    m = nnport.bench(
        model, "onnxruntime:cpu", settings=nnport.MeasureSettings(warmup=1, min_iterations=5, min_duration_s=0.01)
    )
    assert m.compile_cold_s > 0 and m.compile_warm_s is not None and m.latency_p50_ms > 0
    feeds = random_feeds(model.inputs, seed=0)
    reference, rows = compare_devices(model, ["onnxruntime:cpu", "nosuch:device"], feeds)
    assert set(reference) == set(model.output_names)
    assert rows[0].passed and rows[0].device == "onnxruntime:cpu" and rows[0].comparison is not None
    assert not rows[1].passed and "DeviceNotFound" in rows[1].error
    assert not hasattr(nnport.cli_bench, "bench_one")
    assert "compare_devices(" in open(nnport.conformance.cli.__file__).read()
