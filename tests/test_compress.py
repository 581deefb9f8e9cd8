"""Compression: calibration data, fp16/int8 conversion, ONNX Runtime precisions, the report and the CLI.

Every model here runs on a real runtime (ONNX Runtime; OpenVINO where
installed).  Accuracy thresholds are loose bounds that a broken conversion
(wrong scales, swapped inputs, fp16 overflow) fails by orders of magnitude.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from typing import ClassVar

import numpy as np
import pytest

import nnport
from nnport import compress, compress_report, hookimpl, zoo
from nnport.calibration import RandomCalibrationWarning, calibration_feeds, fingerprint
from nnport.data import random_feeds
from nnport.errors import InputError, NoDeviceCouldCompile, UnsupportedModel, UnsupportedPrecision
from nnport.manager import get_plugin_manager
from nnport.types import Device

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cnn():
    return zoo.load("cnn")


@pytest.fixture(scope="module")
def cal(cnn):
    """Calibration samples (seeds 100..), distinct from the evaluation seeds (0..)."""
    return [random_feeds(cnn.inputs, seed=100 + i) for i in range(8)]


@pytest.fixture(scope="module")
def cnn_int8(cnn, cal):
    return compress.quantize(cnn, "int8", cal)


def _outputs(model, feeds_list, device="onnxruntime:cpu", **options):
    compiled = nnport.compile(model, device, fallback=False, **options)
    return [compiled.run(f) for f in feeds_list]


def _eval(model, n=8):
    return [random_feeds(model.inputs, seed=i) for i in range(n)]


# -- calibration data ----------------------------------------------------------------------


def test_calibration_from_directory_of_npz_and_npy(tmp_path, cnn):
    feeds = _eval(cnn, 3)
    np.savez(tmp_path / "a.npz", image=feeds[0]["image"])
    np.save(tmp_path / "b.npy", feeds[1]["image"])
    np.save(
        tmp_path / "c.npy", np.concatenate([feeds[2]["image"], feeds[0]["image"]])
    )  # a batch of two for a batch-1 model
    (tmp_path / "notes.txt").write_text("ignored")
    got = calibration_feeds(tmp_path, cnn.inputs)
    assert len(got) == 4
    assert all(set(f) == {"image"} and f["image"].shape == (1, 3, 32, 32) for f in got)
    np.testing.assert_array_equal(got[0]["image"], feeds[0]["image"])
    np.testing.assert_array_equal(got[3]["image"], feeds[0]["image"])
    assert len(calibration_feeds(tmp_path, cnn.inputs, samples=2)) == 2


def test_calibration_random_warns_and_avoids_evaluation_seeds(cnn):
    with pytest.warns(RandomCalibrationWarning, match="accuracy will suffer"):
        got = calibration_feeds("random", cnn.inputs, samples=3)
    assert len(got) == 3
    held_out = _eval(cnn, 16)
    assert not any(np.array_equal(g["image"], h["image"]) for g in got for h in held_out)


def test_calibration_iterable_and_generator(cnn, cal):
    assert len(calibration_feeds(iter(cal), cnn.inputs)) == len(cal)
    assert len(calibration_feeds((f for f in cal), cnn.inputs, samples=3)) == 3
    assert fingerprint(cal) == fingerprint(list(cal)) != fingerprint(cal[:-1])


@pytest.mark.parametrize(
    "bad, expected",
    [
        (
            {"img": np.zeros((1, 3, 32, 32), np.float32)},
            r"calibration sample 1 .*missing input\(s\) \['image'\].*unexpected input\(s\) \['img'\]",
        ),
        ({"image": np.zeros((1, 3, 32, 32), np.float64)}, r"calibration sample 1 .*dtype float64, expected float32"),
        (
            {"image": np.zeros((1, 3, 16, 16), np.float32)},
            r"calibration sample 1 .*shape \[1, 3, 16, 16\], expected \[1, 3, 32, 32\]",
        ),
    ],
)
def test_mismatched_calibration_feeds_name_the_problem(cnn, cal, bad, expected):
    with pytest.raises(InputError, match=expected):
        compress.quantize(cnn, "int8", [cal[0], bad])


def test_mismatched_calibration_file_names_the_file(tmp_path, cnn):
    np.save(tmp_path / "bad.npy", np.zeros((3, 32, 32), np.float32))  # rank 3 for a rank-4 input
    np.savez(tmp_path / "z.npz", wrong=np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match=r"bad\.npy"):
        calibration_feeds(tmp_path, cnn.inputs)
    with pytest.raises(InputError, match="does not exist; expected one of: a directory"):
        calibration_feeds(tmp_path / "missing", cnn.inputs)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .npy or .npz"):
        calibration_feeds(tmp_path / "empty", cnn.inputs)


def test_no_calibration_for_int8_names_the_options(cnn):
    options = r"directory of \.npy/\.npz.*iterable of feed dicts.*'random'.*dynamic"
    with pytest.raises(InputError, match=options):
        compress.quantize(cnn, "int8")
    with pytest.raises(InputError, match=options):
        nnport.compile(cnn, "onnxruntime:cpu", precision="int8", fallback=False)


# -- conversion ----------------------------------------------------------------------------


def test_int8_static_is_portable_qdq_and_close_to_fp32(cnn, cnn_int8):
    ops = cnn_int8.operators()
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and not any(op.startswith("QLinear") for op in ops)
    assert compress.compressed_precision(cnn_int8) == "int8" and compress.compressed_precision(cnn) is None
    producer = {o: n.op_type for n in cnn_int8.proto.graph.node for o in n.output}
    assert producer["probs"] == "Softmax"  # the output Softmax stays float: a 1/255 grid would zero small probabilities
    assert cnn_int8.input_names == cnn.input_names and cnn_int8.inputs[0].dtype == np.float32
    assert len(cnn_int8.serialized()) < len(cnn.serialized())
    held_out = _eval(cnn)
    delta = compress_report.accuracy_delta(_outputs(cnn, held_out), _outputs(cnn_int8, held_out))[0]
    assert delta.cosine > 0.99 and delta.max_abs_error < 0.1
    assert delta.top1 is not None and delta.top1 >= 0.75


def test_int8_dynamic_for_attention(tmp_path):
    model = zoo.load("attention")
    q = compress.quantize(model, "int8", method="dynamic")
    assert "MatMulInteger" in q.operators() and "DynamicQuantizeLinear" in q.operators()
    held_out = _eval(model, 4)
    delta = compress_report.accuracy_delta(_outputs(model, held_out), _outputs(q, held_out))[0]
    assert delta.top1 is None  # hidden states, not a classifier
    assert delta.cosine > 0.99


def test_dynamic_on_a_model_without_matmul_says_so():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(
        UnsupportedModel, match=r"dynamic quantization found nothing to quantize.*\['Conv'\].*method='static'"
    ):
        compress.quantize(model, "int8", method="dynamic")


def test_fp16_keeps_fp32_boundary_and_small_error(cnn):
    from onnx import TensorProto

    half = compress.quantize(cnn, "fp16")
    assert [str(s) for s in half.inputs] == [str(s) for s in cnn.inputs]
    assert [str(s) for s in half.outputs] == [str(s) for s in cnn.outputs]
    assert any(t.data_type == TensorProto.FLOAT16 for t in half.proto.graph.initializer)
    assert compress.compressed_precision(half) == "fp16"
    held_out = _eval(cnn, 4)
    delta = compress_report.accuracy_delta(_outputs(cnn, held_out), _outputs(half, held_out))[0]
    assert 0 < delta.max_abs_error < 1e-2 and delta.top1 == 1.0


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_already_quantized_model_is_refused(cnn_int8, precision):
    with pytest.raises(UnsupportedModel, match=r"already int8 \(operators .*QuantizeLinear"):
        compress.quantize(cnn_int8, precision, "random")


def test_already_fp16_model_is_refused(cnn):
    with pytest.raises(UnsupportedModel, match="already fp16"):
        compress.quantize(compress.quantize(cnn, "fp16"), "fp16")


def test_bad_precision_and_method(cnn, cal):
    with pytest.raises(InputError, match=r"precision must be one of \['fp16', 'int8'\]"):
        compress.quantize(cnn, "int4", cal)
    with pytest.raises(InputError, match=r"method must be one of \['static', 'dynamic'\]"):
        compress.quantize(cnn, "int8", cal, method="qat")


# -- ONNX Runtime precisions ---------------------------------------------------------------


def test_onnxruntime_compiles_fp16_and_int8(cnn, cal):
    held_out = _eval(cnn, 4)
    reference = _outputs(cnn, held_out)
    for precision, calibration, bound in (("fp16", None, 1e-2), ("int8", cal, 0.1)):
        compiled = nnport.compile(cnn, "onnxruntime:cpu", precision=precision, calibration=calibration, fallback=False)
        assert compiled.info["compression"]["precision"] == precision
        got = [compiled.run(f) for f in held_out]
        assert compress_report.accuracy_delta(reference, got)[0].max_abs_error < bound
    backend = get_plugin_manager().backend("onnxruntime")
    assert backend.capabilities(nnport.devices("onnxruntime")[0]).precisions == ("fp32", "fp16", "int8")


def test_onnxruntime_int8_dynamic_option():
    model = zoo.load("attention")
    compiled = nnport.compile(
        model, "onnxruntime:cpu", precision="int8", extra={"int8_method": "dynamic"}, fallback=False
    )
    assert compiled.info["compression"]["method"] == "dynamic"
    assert "MatMulInteger" in compiled.info["compressed_model"].operators()


def test_onnxruntime_runs_a_qdq_file_as_given(cnn_int8):
    compiled = nnport.compile(
        cnn_int8, "onnxruntime:cpu", precision="int8", fallback=False
    )  # already int8: no second pass
    assert "compressed_model" not in compiled.info
    compiled.run(_eval(cnn_int8, 1)[0])


def test_onnxruntime_caches_the_converted_model(tmp_path, cnn, cal):
    first = nnport.compile(
        cnn, "onnxruntime:cpu", precision="int8", calibration=cal, cache_dir=tmp_path, fallback=False
    )
    assert "cached" not in first.info["compression"]
    stored = list((tmp_path / "onnxruntime" / "converted").glob("*.onnx"))
    assert len(stored) == 1
    second = nnport.compile(
        cnn, "onnxruntime:cpu", precision="int8", calibration=cal, cache_dir=tmp_path, fallback=False
    )
    assert second.info["compression"]["cached"] is True
    feeds = _eval(cnn, 1)[0]
    np.testing.assert_array_equal(first.run(feeds)["probs"], second.run(feeds)["probs"])
    # other calibration data is another artefact, never a stale hit
    third = nnport.compile(
        cnn, "onnxruntime:cpu", precision="int8", calibration=cal[:4], cache_dir=tmp_path, fallback=False
    )
    assert "cached" not in third.info["compression"]
    assert len(list((tmp_path / "onnxruntime" / "converted").glob("*.onnx"))) == 2


# -- unsupported precision: error listing what the device supports, or fallback ---------------


class _Fp32Only(nnport.Backend):
    """A backend that, like a real one without int8 kernels, refuses other precisions."""

    name: ClassVar[str] = "fp32only"
    vendor: ClassVar[str] = "Test"
    priority: ClassVar[int] = 1000

    def devices(self):
        return [Device(id="fp32only:cpu", backend=self.name, kind="cpu", name="fp32 only")]

    def capabilities(self, device):
        return nnport.Capabilities(precisions=("fp32",))

    def compile(self, model, device, options):
        supported = list(self.capabilities(device).precisions)
        if options.precision not in supported:
            raise UnsupportedPrecision(
                f"precision {options.precision!r} is not supported; supported: {supported}",
                backend=self.name,
                device=device.id,
            )
        from onnx.reference import ReferenceEvaluator

        return nnport.CompiledModel(self, model, device, options, native=ReferenceEvaluator(model.proto))

    def execute(self, compiled, binding):
        outs = compiled.native.run(None, binding.inputs)
        binding.outputs = {s.name: np.asarray(o) for s, o in zip(compiled.outputs, outs)}


class _Fp32OnlyPlugin:
    @hookimpl
    def nnport_register_backends(self, register):
        register(_Fp32Only)


def test_unsupported_precision_falls_back_or_names_supported(cnn, cal):
    get_plugin_manager().register(_Fp32OnlyPlugin(), name="fp32only-test")
    compiled = nnport.compile(cnn, ["fp32only:cpu", "onnxruntime:cpu"], precision="int8", calibration=cal)
    assert compiled.device.id == "onnxruntime:cpu"
    ((dev, err),) = compiled.attempts
    assert dev == "fp32only:cpu" and isinstance(err, UnsupportedPrecision) and "supported: ['fp32']" in str(err)
    with pytest.raises(UnsupportedPrecision, match=r"'int8' is not supported; supported: \['fp32'\]"):
        nnport.compile(cnn, "fp32only:cpu", precision="int8", calibration=cal, fallback=False)
    with pytest.raises(NoDeviceCouldCompile, match="fp32only:cpu"):
        nnport.compile(cnn, ["fp32only:cpu"], precision="fp16")


def test_every_device_honours_or_refuses_each_precision_clearly(cnn, cal):
    """Real backends: a precision either compiles and runs close to fp32, or raises UnsupportedPrecision naming the
    supported ones."""
    feeds = _eval(cnn, 2)
    reference = _outputs(cnn, feeds)
    pm = get_plugin_manager()
    for device in nnport.devices():
        supported = pm.backend(device.backend).capabilities(device).precisions
        for precision in ("fp16", "int8"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    compiled = nnport.compile(cnn, device.id, precision=precision, calibration=cal, fallback=False)
            except UnsupportedPrecision as exc:
                assert precision not in supported, f"{device.id} lists {precision} but refused it: {exc}"
                assert "supported" in str(exc) and all(p in str(exc) for p in supported), str(exc)
                continue
            got = [compiled.run(f) for f in feeds]
            delta = compress_report.accuracy_delta(reference, got)[0]
            assert delta.cosine > 0.98, f"{device.id} {precision}: cosine {delta.cosine}"


# -- metrics, timing, report, CLI ----------------------------------------------------------


def test_accuracy_delta_metrics_by_hand():
    ref = [{"p": np.array([[0.1, 0.7, 0.2, 0.0, 0.0, 0.0]])}, {"p": np.array([[0.5, 0.1, 0.2, 0.1, 0.05, 0.05]])}]
    same = compress_report.accuracy_delta(ref, ref)[0]
    assert (same.max_abs_error, same.mse, same.top1, same.top5, same.reference_classes) == (0.0, 0.0, 1.0, 1.0, 2)
    assert same.cosine == pytest.approx(1.0)
    swapped = [{"p": np.array([[0.7, 0.1, 0.2, 0.0, 0.0, 0.0]])}, ref[1]]
    d = compress_report.accuracy_delta(ref, swapped)[0]
    assert d.top1 == 0.5 and d.top5 == 1.0
    assert d.max_abs_error == pytest.approx(0.6) and d.mse == pytest.approx(2 * 0.36 / 12)
    hidden = compress_report.accuracy_delta([{"h": np.ones((1, 4, 3))}], [{"h": -np.ones((1, 4, 3))}])[0]
    assert hidden.top1 is None and hidden.cosine == pytest.approx(-1.0)


def test_interleaved_latency_times_both(cnn, cnn_int8):
    a = nnport.compile(cnn, "onnxruntime:cpu")
    b = nnport.compile(cnn_int8, "onnxruntime:cpu")
    ta, tb = compress_report.interleaved_latency(a, b, _eval(cnn, 1)[0], warmup=1, min_rounds=5, min_duration_s=0.0)
    assert len(ta) == len(tb) == 5 and all(t > 0 for t in ta + tb)


def test_report_function(cnn, cnn_int8):
    result = compress_report.report(cnn, cnn_int8, ["onnxruntime:cpu"], samples=4, min_duration_s=0.05, min_rounds=3)
    assert result.precision == "int8" and result.method == "static"
    assert result.size_before == len(cnn.serialized()) and result.size_after == len(cnn_int8.serialized())
    (row,) = result.devices
    assert row.status == "ok" and row.device == "onnxruntime:cpu" and row.rounds >= 3
    assert row.speedup == pytest.approx(row.fp32_ms / row.compressed_ms)
    assert row.accuracy[0].output == "probs" and row.accuracy[0].samples == 4
    data = json.loads(json.dumps(result.to_dict()))
    assert data["devices"][0]["accuracy"][0]["cosine"] > 0.99
    text = result.format()
    assert "onnxruntime:cpu" in text and "speedup" in text and "held-out" in text


def test_report_records_a_failing_device(cnn, cnn_int8):
    get_plugin_manager().register(_Fp32OnlyPlugin(), name="fp32only-test")
    result = compress_report.report(
        cnn, cnn_int8, ["fp32only:cpu"], samples=2, min_duration_s=0.0, min_rounds=1, native=True
    )
    # onnx's reference evaluator has no DequantizeLinear for opset 17: the row says so instead of stopping the report
    assert [(r.path, r.status) for r in result.devices] == [("onnx", "error"), ("native", "unsupported")]
    assert "DequantizeLinear" in result.devices[0].error
    assert "supported: ['fp32']" in result.devices[1].error
    assert "unsupported" in result.format()


def test_cli_compress_writes_model_and_report(tmp_path, cnn, cal, capsys):
    from nnport.cli import main

    for i, feed in enumerate(cal[:4]):
        np.savez(tmp_path / f"cal{i}.npz", **feed)
    out, report = tmp_path / "cnn-int8.onnx", tmp_path / "report.json"
    argv = ["compress", "zoo:cnn", "--precision", "int8", "--calibration", str(tmp_path), "--out", str(out)]
    assert main(argv + ["--report", "--eval-samples", "2", "--duration", "0.05", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "compression report: cnn -> int8" in printed and "onnxruntime:cpu" in printed
    written = nnport.load(out)
    assert compress.compressed_precision(written) == "int8" and "QuantizeLinear" in written.operators()
    data = json.loads(report.read_text())
    assert data["compression"]["calibration_samples"] == 4 and data["report"]["devices"][0]["status"] == "ok"


def test_cli_compress_errors(tmp_path, capsys):
    from nnport.cli import main

    assert main(["compress", "zoo:cnn", "--precision", "int8", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "needs calibration data" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_compress_random_warns(tmp_path, capsys):
    from nnport.cli import main

    assert (
        main(["compress", "zoo:mlp", "-p", "int8", "-c", "random", "--samples", "4", "-o", str(tmp_path / "m.onnx")])
        == 0
    )
    assert "accuracy will suffer" in capsys.readouterr().err  # a warning: on stderr


# -- OpenVINO runs the QDQ file nnport writes --------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_openvino_runs_the_qdq_file(cnn, cnn_int8):
    try:
        compiled = nnport.compile(cnn_int8, "openvino:CPU", fallback=False)
    except nnport.errors.DeviceNotFound as exc:  # the plugin is not there (yet)
        pytest.skip(str(exc))
    held_out = _eval(cnn, 4)
    delta = compress_report.accuracy_delta(_outputs(cnn, held_out), [compiled.run(f) for f in held_out])[0]
    assert delta.cosine > 0.99 and delta.top1 >= 0.75


@pytest.mark.parametrize("activations, dtype", [("uint8", np.uint8), ("int8", np.int8)])
def test_activation_types(cnn, cal, activations, dtype):
    """uint8 (default) has zero points; int8 is symmetric (zero point 0), the only Q/DQ form TensorRT takes."""
    from onnx import numpy_helper

    q = (
        compress.quantize(cnn, "int8", cal, activations=activations)
        if activations != "uint8"
        else compress.quantize(cnn, "int8", cal)
    )
    inits = {i.name: numpy_helper.to_array(i) for i in q.proto.graph.initializer}
    quantize_nodes = [n for n in q.proto.graph.node if n.op_type == "QuantizeLinear"]
    zero_points = [inits[n.input[2]] for n in quantize_nodes if n.input[0] not in inits]  # activations, not weights
    assert zero_points and all(z.dtype == dtype for z in zero_points)
    if activations == "int8":
        assert all(not z.any() for z in zero_points)
    assert q.metadata["compression"]["activations"] == activations
    held_out = _eval(cnn, 4)
    assert compress_report.accuracy_delta(_outputs(cnn, held_out), _outputs(q, held_out))[0].cosine > 0.99


def test_opset9_ir3_real_architecture_is_upgraded_and_quantized():
    """light_squeezenet as shipped (opset 9, IR 3, weights from ConstantOfShape): per-channel needs opset 13."""
    model = zoo.load_any("light_squeezenet")
    assert model.opset == 9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomCalibrationWarning)
        q = compress.quantize(model, "int8", "random", samples=2)
    assert q.metadata["compression"]["per_channel"] is True and q.opset >= 13
    assert "QuantizeLinear" in q.operators() and q.input_names == model.input_names
    feeds = _eval(model, 1)
    out = _outputs(q, feeds)[0]
    ref = _outputs(model, feeds)[0]
    # the shipped weights are all 0.02: every class scores the same, int8 included
    np.testing.assert_allclose(out["softmaxout_1"], ref["softmaxout_1"], atol=1e-4)
    half = compress.quantize(model, "fp16")
    np.testing.assert_allclose(_outputs(half, feeds)[0]["softmaxout_1"], ref["softmaxout_1"], atol=1e-4)


def test_quantised_precision_is_decided_in_one_place(cnn_int8, cnn):
    """nnport.precision decides for compress, OpenVINO and TensorRT alike (issue 19, point 6)."""
    from nnport import precision
    from nnport.plugins import _tensorrt_util, openvino

    assert _tensorrt_util.model_precisions is precision.model_precisions
    assert not hasattr(openvino, "QUANTIZED_ONNX_OPS") and not hasattr(compress, "INTEGER_OPS")
    assert openvino._quantized_ops(cnn_int8, None) == precision.quantized_ops(cnn_int8.proto) != []
    assert compress.compressed_precision(cnn_int8.proto) == "int8" == precision.compressed_precision(cnn_int8.proto)
    assert precision.quantized_ops(cnn.proto) == [] and precision.model_precisions(cnn.proto) == frozenset()
    assert {"int8"} <= precision.model_precisions(cnn_int8.proto)


def test_quantize_loads_the_model_once(cnn, monkeypatch):
    """The source Model is used as it is; only the result goes through nnport.load (parse, checker, hash)."""
    import nnport.model

    calls = []
    real = nnport.model._from_proto
    monkeypatch.setattr(nnport.model, "_from_proto", lambda *a, **k: calls.append(1) or real(*a, **k))
    compress.quantize(cnn, "fp16")
    compress.quantize(cnn, "int8", method="dynamic")
    assert len(calls) == 2
