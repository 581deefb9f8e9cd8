"""``nnport port`` / ``nnport.port``: the device x precision table, the recommendation, the reports, bad input.

The main fixture ports the zoo's trained digits classifier with its 360
held-out labels on ONNX Runtime, OpenVINO and ncnn at fp32/fp16/int8 (short
measurements), so accuracy is real accuracy.  Slow tests (``-m slow``) render
the HTML in Debian's headless Chromium and port the real YOLOv8n detector on
photos.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnport
from nnport import zoo
from nnport.cli import main
from nnport.errors import ExecutionError, InputError
from nnport.porting import (
    Artefact,
    PortCell,
    PortData,
    PortDataWarning,
    PortReport,
    image_shape,
    parse_drop,
    port,
    preprocess_image,
    recommend,
)
from nnport.types import TensorSpec

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ("onnxruntime:cpu", "openvino:CPU", "ncnn:cpu")
FAST = dict(warmup=2, min_iterations=20, min_duration_s=0.2)


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    """The marker says "run with -m slow": honour it even where addopts does not deselect."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")


def _usable(wanted=DEVICES):
    have = {d.id for d in nnport.devices()}
    return [d for d in wanted if d in have]


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    return zoo.export_labelled("digits", tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def digits_report(digits_data):
    from nnport import manager

    old = manager.set_plugin_manager(None)  # module scope: outside the per-test fresh manager
    try:
        return port(
            zoo.load("digits"),
            digits_data.data,
            digits_data.labels,
            devices=_usable(),
            calibration=digits_data.calibration,
            **FAST,
        )
    finally:
        manager.set_plugin_manager(old)


# -- the table on the digits classifier ------------------------------------------------------------


def test_every_device_x_precision_has_a_row(digits_report):
    devices = _usable()
    assert [(c.device, c.precision) for c in digits_report.cells] == [
        (d, p) for d in devices for p in ("fp32", "fp16", "int8")
    ]
    assert digits_report.metric == "labels"
    assert digits_report.data.samples == 360 and digits_report.data.kind == "samples"
    assert digits_report.data.shapes == {"image": (1, 1, 8, 8)}
    assert digits_report.reference_score == pytest.approx(358 / 360)  # measured: 358/360 (test_digits)
    for c in digits_report.cells:
        assert c.status in ("ok", "unsupported"), (c.label, c.status, c.reason)
        if c.status == "unsupported":
            assert c.reason and "supported" in c.reason


def test_real_accuracy_against_the_labels(digits_report):
    for c in digits_report.cells:
        if c.status != "ok":
            continue
        assert c.labels is not None and c.labels.total == 360
        # fp32 within one sample, fp16/int8 within one point (3 of 360): what tests/test_digits.py asserts
        allowed = 1 if c.precision == "fp32" else 3
        assert abs(c.labels.top1_correct - 358) <= allowed, c.label
        assert c.labels.top5 is not None and c.labels.top5 >= 0.99
        assert c.accuracy_drop == pytest.approx(digits_report.reference_score - c.score)
        assert c.within_budget == (c.accuracy_drop <= 0.01 + 1e-9)
        (whole,) = [a for a in c.accuracy if a.part is None]
        assert whole.output == "logits" and whole.samples == 360 and whole.top1 is not None
        assert whole.mean_abs_error is not None and whole.mean_abs_error <= whole.max_abs_error
    ref = digits_report.cell("onnxruntime:cpu", "fp32")
    assert ref.accuracy[0].max_abs_error == 0.0 and ref.accuracy[0].cosine == pytest.approx(1.0)


def test_speed_memory_energy_and_compile_figures(digits_report):
    for c in digits_report.cells:
        if c.status != "ok":
            continue
        assert 0 < c.latency_p50_ms <= c.latency_p99_ms
        assert c.throughput_ips > 0 and c.throughput_scenario == "single-stream"
        assert c.iterations >= 20
        assert c.peak_rss_mib and c.peak_rss_mib > 0
        assert (c.energy_per_inference_mj is None) != (
            c.energy_unavailable is None
        )  # a figure or the reason, never both
        assert c.compile_cold_s is not None and c.compile_cold_s > 0
        assert c.compile_warm_s is not None and c.compile_warm_s > 0


def test_size_on_disk_names_the_artefact(digits_report):
    onnx_size = len(zoo.load("digits").serialized())
    ort32 = digits_report.cell("onnxruntime:cpu", "fp32")
    assert (
        abs(ort32.size.size_bytes - onnx_size) < 100 and "ONNX" in ort32.size.what
    )  # the model with its batch dim fixed
    ort8 = digits_report.cell("onnxruntime:cpu", "int8")
    assert "QDQ" in ort8.size.what and ort8.size.size_bytes < onnx_size / 2
    ort16 = digits_report.cell("onnxruntime:cpu", "fp16")
    assert "fp16 ONNX" in ort16.size.what and ort16.size.size_bytes < 0.6 * onnx_size
    if "ncnn:cpu" in _usable():
        n32 = digits_report.cell("ncnn:cpu", "fp32")
        assert "ncnn param + bin" in n32.size.what and n32.size.files == ("model.ncnn.param", "model.ncnn.bin")
        assert digits_report.cell("ncnn:cpu", "fp16").size.size_bytes < 0.6 * n32.size.size_bytes
        n8 = digits_report.cell("ncnn:cpu", "int8")
        assert n8.status == "unsupported" and "ncnn2table" in n8.reason
    if "openvino:CPU" in _usable():
        ov8 = digits_report.cell("openvino:CPU", "int8")
        if ov8.status == "ok":
            assert ov8.size.what.startswith("OpenVINO int8 IR") and ov8.size.files[1].endswith(".bin")


def test_recommendation_is_the_fastest_within_budget(digits_report):
    rec = digits_report.recommendation
    assert rec is not None and rec.objective == "latency", digits_report.no_recommendation
    within = sorted((c for c in digits_report.cells if c.measured and c.within_budget), key=lambda c: c.latency_p50_ms)
    assert (rec.best.device, rec.best.precision) == (within[0].device, within[0].precision)
    assert "within the 1% accuracy budget" in rec.best.why and "top-1" in rec.best.why
    assert rec.runner_up is not None and (rec.runner_up.device, rec.runner_up.precision) == (
        within[1].device,
        within[1].precision,
    )
    assert "slower" in rec.runner_up.why


def test_reports_text_json_html(digits_report, tmp_path):
    text = digits_report.format()
    assert "recommended for latency:" in text and "runner-up:" in text
    assert "top-1 (labels)" in text and "compile s (cold/warm)" in text
    assert "accuracy per output and part" in text
    data = json.loads(digits_report.write_json(tmp_path / "r.json").read_text())
    assert data["schema"] == "nnport.port/1" and len(data["cells"]) == len(digits_report.cells)
    assert data["recommendation"]["best"]["device"] == digits_report.recommendation.best.device
    row = data["cells"][0]
    assert {
        "latency_p50_ms",
        "latency_p99_ms",
        "throughput_ips",
        "peak_rss_mib",
        "energy_unavailable",
        "size",
        "compile_cold_s",
        "compile_warm_s",
        "labels",
        "accuracy",
    } <= set(row)
    page = digits_report.write_html(tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "recommended" in page
    assert page.count("class='point'") == sum(1 for c in digits_report.cells if c.measured)
    for c in digits_report.cells:
        assert f"data-device='{c.device}' data-precision='{c.precision}'" in page


# -- the command line ------------------------------------------------------------------------------


def test_cli_port_digits(digits_data, tmp_path, capsys):
    out_json, out_html = tmp_path / "p.json", tmp_path / "p.html"
    argv = [
        "port",
        "zoo:digits",
        *digits_data.port_args(),
        "-d",
        "onnxruntime:cpu",
        "-p",
        "fp32,int8",
        "--max-accuracy-drop",
        "0.5%",
    ]
    argv += ["--objective", "size", "--json", str(out_json), "--html", str(out_html), "--input-shapes", "image:1x1x8x8"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert (
        "recommended for size: onnxruntime:cpu int8" in out.out
    )  # the QDQ file is the smallest, and within 0.5 points
    assert "[2/2] onnxruntime:cpu int8: ok" in out.err  # the progress display (one line per row off a terminal)
    data = json.loads(out_json.read_text())
    assert data["max_accuracy_drop"] == pytest.approx(0.005) and data["objective"] == "size"
    assert out_html.read_text().count("<tr class=") == 2


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--objective", "speed"], "invalid choice: 'speed' (choose from 'latency', 'throughput', 'energy', 'size')"),
        (["-p", "fp32,fp8"], "unknown precision fp8 (choose from fp32, fp16, int8"),
        (["--max-accuracy-drop", "a lot"], "takes a percentage such as 1% or 0.5%"),
        (["--preprocess", "resnet"], "invalid choice: 'resnet' (choose from 'imagenet', 'yolo', 'none')"),
    ],
)
def test_cli_bad_choices_exit_2_with_the_choices(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["port", "zoo:digits", *argv])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_api_bad_choices_name_the_choices():
    with pytest.raises(
        InputError, match=r"unknown objective 'speed'; choose one of \['latency', 'throughput', 'energy', 'size'\]"
    ):
        port(zoo.load("digits"), objective="speed")
    with pytest.raises(InputError, match=r"unknown precision\(s\) \['bf16'\]; choose from \['fp32', 'fp16', 'int8'\]"):
        port(zoo.load("digits"), precisions=["fp32", "bf16"])
    assert parse_drop("1%") == pytest.approx(0.01) and parse_drop("0.5") == pytest.approx(0.005)


# -- bad data -------------------------------------------------------------------------------------


def _samples(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(arrays):
        np.savez(folder / f"s{i:03d}.npz", **feed)
    return folder


def _digit(i=0):
    return {"image": zoo.labelled("digits").feeds["image"][i : i + 1]}


def test_data_not_matching_names_the_input_and_the_file(tmp_path):
    folder = _samples(tmp_path / "d", [_digit(0), _digit(1), {"image": _digit(2)["image"].astype(np.float64)}])
    with pytest.raises(InputError) as exc:
        port(zoo.load("digits"), folder, devices=["onnxruntime:cpu"])
    assert "data file s002.npz" in str(exc.value) and "input 'image' has dtype float64, expected float32" in str(
        exc.value
    )

    folder = _samples(tmp_path / "e", [_digit(0), {"pixels": _digit(1)["image"]}])
    with pytest.raises(
        InputError,
        match=r"data file s001.npz does not match the model's inputs: missing input\(s\) \['image'\]; unexpected "
        r"input\(s\) \['pixels'\]",
    ):
        port(zoo.load("digits"), folder, devices=["onnxruntime:cpu"])

    folder = _samples(tmp_path / "f", [_digit(0), {"image": np.zeros((1, 1, 9, 9), np.float32)}])
    with pytest.raises(
        InputError,
        match=r"data file s001.npz .*input 'image' has shape \[1, 1, 9, 9\], expected \[1, 1, 8, 8\].*fixed from "
        r"the first sample, s000.npz",
    ):
        port(zoo.load("digits"), folder, devices=["onnxruntime:cpu"])


def test_label_count_mismatch_is_a_clear_error(tmp_path):
    folder = _samples(tmp_path / "d", [_digit(i) for i in range(5)])
    labels = tmp_path / "labels.txt"
    labels.write_text("1\n2\n3\n4\n")
    with pytest.raises(
        InputError, match=r"the labels \(.*labels.txt\) hold 4 classes but the data \(.*\) holds 5 samples"
    ):
        port(zoo.load("digits"), folder, labels, devices=["onnxruntime:cpu"])
    labels.write_text("1\n2\nseven\n")
    with pytest.raises(InputError, match="line 3: 'seven' is not an integer class id"):
        port(zoo.load("digits"), folder, labels, devices=["onnxruntime:cpu"])
    np.save(tmp_path / "labels.npy", np.arange(6))
    with pytest.raises(InputError, match="hold 6 classes but the data .* holds 5 samples"):
        port(zoo.load("digits"), folder, tmp_path / "labels.npy", devices=["onnxruntime:cpu"])
    with pytest.raises(InputError, match="labels need data"):
        port(zoo.load("digits"), None, labels, devices=["onnxruntime:cpu"])


def test_image_folder_needs_preprocess_and_one_image_input(tmp_path):
    from PIL import Image

    folder = tmp_path / "img"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "a.png")
    with pytest.raises(InputError, match="is an image folder: say how .* --preprocess imagenet|yolo|none"):
        port(zoo.load("digits"), folder, devices=["onnxruntime:cpu"])
    with pytest.raises(InputError, match="one image input"):
        port(zoo.load("mlp"), folder, preprocess="none", devices=["onnxruntime:cpu"])


# -- data forms -----------------------------------------------------------------------------------


def test_no_data_warns_and_means_agreement():
    with pytest.warns(PortDataWarning, match="agreement with fp32"):
        report = port(zoo.load("digits"), devices=["onnxruntime:cpu"], precisions=["fp32", "int8"], **FAST)
    assert report.metric == "agreement" and report.data.kind == "random" and report.data.samples == 16
    assert "random inputs" in report.data.calibration
    assert report.cell("onnxruntime:cpu", "fp32").score == 1.0
    assert "agreement, not accuracy" in report.format()


def test_calibration_held_out_from_the_data(tmp_path):
    folder = _samples(tmp_path / "d", [_digit(i) for i in range(20)])
    labels = tmp_path / "l.npy"
    np.save(labels, zoo.labelled("digits").labels[:20])
    report = port(zoo.load("digits"), folder, labels, devices=["onnxruntime:cpu"], precisions=["int8"], **FAST)
    assert report.data.samples == 16 and "the last 4 samples" in report.data.calibration
    assert report.cell("onnxruntime:cpu", "int8").labels.total == 16


def test_image_preprocessing(tmp_path):
    from PIL import Image

    path = tmp_path / "wide.png"
    img = np.zeros((30, 60, 3), np.uint8)
    img[:, :30] = (255, 0, 0)
    img[:, 30:] = (0, 0, 255)
    Image.fromarray(img).save(path)
    spec = TensorSpec("images", ("batch", 3, "h", "w"), np.float32)
    shape, layout, note = image_shape(spec, "yolo", None)
    assert shape == (1, 3, 640, 640) and layout == "NCHW" and "640x640" in note
    x = preprocess_image(path, np.float32, (1, 3, 64, 64), "NCHW", "yolo")
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    assert x[0, :, 0, 0] == pytest.approx([114 / 255] * 3)  # letterbox padding above the 2:1 image
    assert x[0, 0, 32, 5] == pytest.approx(1.0) and x[0, 2, 32, 60] == pytest.approx(1.0)
    y = preprocess_image(path, np.float32, (1, 3, 32, 32), "NCHW", "imagenet")
    assert y[0, 0, 16, 2] == pytest.approx((1 - 0.485) / 0.229, rel=1e-4)  # red, normalised
    z = preprocess_image(path, np.uint8, (1, 16, 16, 3), "NHWC", "none")
    assert z.dtype == np.uint8 and z.shape == (1, 16, 16, 3) and z.max() == 255  # uint8 input: raw pixels


def test_image_folder_end_to_end(tmp_path):
    from PIL import Image

    folder = tmp_path / "digits-images"
    folder.mkdir()
    for i in range(4):
        pixels = (zoo.labelled("digits").feeds["image"][i, 0] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((32, 32)).save(folder / f"{i}.png")
    report = port(
        zoo.load("digits"), folder, preprocess="none", devices=["onnxruntime:cpu"], precisions=["fp32"], **FAST
    )
    assert report.data.kind == "images" and report.data.samples == 4 and report.data.shapes == {"image": (1, 1, 8, 8)}
    assert report.cell("onnxruntime:cpu", "fp32").status == "ok"


def _two_outputs():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8]) for n in ("logits", "probs")]
    nodes = [helper.make_node("Identity", ["x"], ["logits"]), helper.make_node("Softmax", ["x"], ["probs"], axis=-1)]
    model = helper.make_model(helper.make_graph(nodes, "two", [x], outs), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return nnport.load(model)


def test_label_output_among_several(tmp_path):
    rng = np.random.default_rng(0)
    folder = _samples(tmp_path / "d", [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(6)])
    labels = tmp_path / "l.txt"
    labels.write_text("".join(f"{int(np.load(f)['x'].argmax())}\n" for f in sorted(folder.iterdir())))
    with pytest.raises(
        InputError,
        match=r"several outputs \['logits', 'probs'\]: name the one whose argmax is the class with --label-output NAME",
    ):
        port(_two_outputs(), folder, labels, devices=["onnxruntime:cpu"])
    with pytest.raises(InputError, match="--label-output 'scores' is not an output"):
        port(_two_outputs(), folder, labels, label_output="scores", devices=["onnxruntime:cpu"])
    report = port(
        _two_outputs(), folder, labels, label_output="probs", devices=["onnxruntime:cpu"], precisions=["fp32"], **FAST
    )
    cell = report.cell("onnxruntime:cpu", "fp32")
    assert cell.labels.output == "probs" and cell.labels.top1 == 1.0 and report.reference_score == 1.0
    assert cell.labels.top5 == 1.0  # 8 classes: top-5 is measured too


def test_throughput_objective_measures_streams():
    with pytest.warns(PortDataWarning):
        report = port(
            zoo.load("digits"), devices=["onnxruntime:cpu"], precisions=["fp32", "fp16"], objective="throughput", **FAST
        )
    cores = len(os.sched_getaffinity(0))
    for c in report.cells:
        assert c.throughput_scenario == (f"multi-stream x{cores}" if cores > 1 else "single-stream")
    rec = report.recommendation
    best = max(report.cells, key=lambda c: c.throughput_ips)
    assert (rec.best.device, rec.best.precision) == (best.device, best.precision) and "inferences/s" in rec.best.why


# -- partial reports -------------------------------------------------------------------------------


def test_ctrl_c_returns_the_partial_report():
    seen = []

    def interrupt(event):
        seen.append((event.index, event.stage))
        if event.index == 2 and event.stage == "accuracy":
            raise KeyboardInterrupt

    with pytest.warns(PortDataWarning):
        report = port(zoo.load("digits"), devices=["onnxruntime:cpu"], progress=interrupt, **FAST)
    assert report.interrupted
    assert [c.status for c in report.cells] == ["ok", "interrupted", "not run"]
    assert "during accuracy" in report.cells[1].reason
    assert report.recommendation.best.precision == "fp32" and report.recommendation.runner_up is None
    assert "PARTIAL" in report.format() and "Partial report" in report.to_html()
    from nnport.cli_port import exit_status

    assert exit_status(report) == 130


def test_sigint_to_the_command_prints_the_partial_report(tmp_path):
    env = {**os.environ, "NNPORT_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nnport",
            "port",
            "zoo:digits",
            "-d",
            "onnxruntime:cpu",
            "--json",
            str(tmp_path / "partial.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in proc.stderr:
            if "[1/3] onnxruntime:cpu fp32: ok" in line:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "(PARTIAL: interrupted)" in out and "interrupted (Ctrl-C) after 1 of 3 rows" in out
    data = json.loads((tmp_path / "partial.json").read_text())
    assert (
        data["interrupted"]
        and data["cells"][0]["status"] == "ok"
        and data["cells"][2]["status"] in ("not run", "interrupted")
    )


def test_a_device_failing_mid_way_keeps_its_row_and_the_rest_goes_on():
    from fakes import FakeBackend, install

    class Flaky(FakeBackend):
        name = "flaky"
        runs = 0

        def execute(self, compiled, binding):
            type(self).runs += 1
            if type(self).runs > 20:  # 16 accuracy runs pass; the measurement's warm-up fails
                raise ExecutionError("the device went away")
            super().execute(compiled, binding)

    install(Flaky, builtins=True)
    with pytest.warns(PortDataWarning):
        report = port(zoo.load("digits"), devices=["flaky:cpu", "onnxruntime:cpu"], precisions=["fp32"], **FAST)
    flaky, ort = report.cells
    assert flaky.status == "error" and flaky.stage == "measure" and "the device went away" in flaky.reason
    assert flaky.score == 1.0 and flaky.accuracy  # what it measured before failing stays
    assert ort.status == "ok"
    assert report.recommendation.best.device == "onnxruntime:cpu"
    assert "error (measure)" in report.format()
    from nnport.cli_port import exit_status

    assert exit_status(report) == 1


# -- the recommendation's logic ---------------------------------------------------------------------


def _report(cells, objective="latency", budget=0.01):
    data = PortData("feeds", None, 10, (), None, None, "-", {})
    report = PortReport("m", "0" * 64, objective, budget, "labels", "onnxruntime:cpu", 0.95, data, cells=cells)
    for c in cells:
        c.accuracy_drop = 0.95 - c.score
        c.within_budget = c.accuracy_drop <= budget + 1e-9
    recommend(report)
    return report


def _cell(device, precision, score, p50, size=1000, energy=None, ips=None):
    c = PortCell(device, device.split(":")[0], precision, status="ok", score=score, latency_p50_ms=p50)
    c.size = Artefact("x", size)
    c.energy_per_inference_mj = energy
    c.energy_unavailable = None if energy is not None else "rapl: no powercap"
    c.throughput_ips = ips if ips is not None else 1000 / p50
    return c


def test_recommend_within_budget_with_runner_up_and_ruled_out():
    cells = [
        _cell("a:cpu", "fp32", 0.95, 10.0, 4000),
        _cell("a:cpu", "int8", 0.90, 4.0, 1000),
        _cell("b:cpu", "fp16", 0.945, 6.0, 2000),
    ]
    r = _report(cells)
    assert (r.recommendation.best.device, r.recommendation.best.precision) == ("b:cpu", "fp16")
    assert r.recommendation.runner_up.precision == "fp32" and "1.67x slower" in r.recommendation.runner_up.why
    assert (
        len(r.recommendation.over_budget) == 1
        and "a:cpu int8: p50 4 ms, but top-1 90.00% drops +5.00 points below the reference (budget 1%)"
        in r.recommendation.over_budget[0]
    )
    assert _report(cells, objective="size").recommendation.best.precision == "fp16"
    assert _report(cells, objective="size", budget=0.06).recommendation.best.precision == "int8"
    assert _report(cells, objective="throughput").recommendation.best.precision == "fp16"
    r = _report([_cell("a:cpu", "fp32", 0.95, 10.0), _cell("b:cpu", "fp32", 0.95, 10.3)])
    assert "a tie on this machine" in r.recommendation.runner_up.why


def test_recommend_says_why_not():
    r = _report([_cell("a:cpu", "fp32", 0.95, 10.0)], objective="energy")
    assert (
        r.recommendation is None
        and "energy per inference is unavailable on every row (rapl: no powercap)" in r.no_recommendation
    )
    r = _report(
        [_cell("a:cpu", "fp32", 0.95, 10.0, energy=2.0), _cell("b:cpu", "fp32", 0.95, 5.0, energy=3.0)],
        objective="energy",
    )
    assert r.recommendation.best.device == "a:cpu" and "more energy" in r.recommendation.runner_up.why
    r = _report([_cell("a:cpu", "int8", 0.80, 1.0)])
    assert (
        r.recommendation is None
        and "no row is within the accuracy budget of 1%: the smallest drop is +15.00 points" in r.no_recommendation
    )


# -- slow: a real browser, a real detector -------------------------------------------------------------


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            capture_output=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("chromium")
    if not found:
        pytest.skip(
            "Debian's chromium is not installed and `apt-get install -y chromium` could not install it "
            "(needs root and a package mirror)"
        )
    return found


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(digits_report, tmp_path):
    from PIL import Image

    browser = _chromium()
    page = digits_report.write_html(tmp_path / "port.html")
    shot = tmp_path / "port.png"
    run = subprocess.run(
        [browser, *CHROMIUM_FLAGS, "--window-size=1400,1100", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1100, 1400)
    rec_box = np.all(np.abs(pixels - (230, 244, 230)) <= 3, axis=-1)  # the recommendation's green box (#e6f4e6)
    assert rec_box.sum() > 20_000
    ring = np.all(np.abs(pixels - (34, 170, 34)) <= 40, axis=-1)  # the ring and label marking it on the plot (#2a2)
    assert ring.sum() > 100
    box_rows = np.where(rec_box.sum(axis=1) > 300)[
        0
    ]  # rows the box spans (anti-aliased text elsewhere can match a few pixels)
    assert ring[box_rows.max() :].any()  # the ring is drawn below the box, in the plot
    keep = os.environ.get("NNPORT_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def _detector():
    corpus = pytest.importorskip("nnport.conformance.corpus")
    try:
        return corpus.fetch(corpus.get("real/nudenet/320n"))
    except corpus.CorpusUnavailable as exc:
        pytest.skip(str(exc))


def _photos(folder, count, seed):
    import matplotlib
    from PIL import Image, ImageEnhance, ImageOps

    root = Path(matplotlib.get_data_path()) / "sample_data"
    photos = [Image.open(root / n).convert("RGB") for n in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % 2]
        s = rng.uniform(0.5, 1.0)
        w, h = int(photo.width * s), int(photo.height * s)
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        img = photo.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        ImageEnhance.Brightness(img).enhance(rng.uniform(0.6, 1.4)).save(folder / f"photo_{i:03d}.jpg", quality=92)
    return folder


@pytest.mark.slow
def test_real_detector_on_photos(tmp_path):
    model = _detector()
    images, cal = _photos(tmp_path / "images", 6, seed=2), _photos(tmp_path / "calibration", 12, seed=1)
    report = port(
        model,
        images,
        devices=["onnxruntime:cpu"],
        preprocess="yolo",
        calibration=cal,
        shapes={"images": (1, 3, 320, 320)},
        **FAST,
    )
    assert report.metric == "cosine" and report.data.kind == "images"
    int8 = report.cell("onnxruntime:cpu", "int8")
    assert int8.status == "ok" and [a.label for a in int8.accuracy] == ["output0", "output0[:,0:4]", "output0[:,4:22]"]
    assert all(a.cosine > 0.95 for a in int8.accuracy)
    assert report.recommendation is not None
    assert (
        math.isfinite(int8.latency_p50_ms)
        and int8.size.size_bytes < report.cell("onnxruntime:cpu", "fp32").size.size_bytes / 3
    )
