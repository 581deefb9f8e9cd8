"""The ONNX Runtime reference backend, with the real onnxruntime."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import nnport
from nnport import zoo
from nnport.data import random_feeds

pytest.importorskip("onnxruntime", reason="the onnxruntime wheel is part of the test environment")


def test_cpu_device_is_listed():
    devices = nnport.devices("onnxruntime")
    assert devices[0].id == "onnxruntime:cpu" and devices[0].kind == "cpu"
    assert devices[0].properties["provider"] == "CPUExecutionProvider"


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_matches_onnx_reference_evaluator(name):
    """The reference backend against the independent oracle, onnx.reference."""
    model = zoo.load(name)
    compiled = nnport.compile(model, "onnxruntime:cpu")
    feeds = random_feeds(compiled.inputs, seed=1, dim_values={"batch": 3})
    got = compiled.run(feeds)
    expected = ReferenceEvaluator(model.proto).run(None, feeds)
    assert list(got) == model.output_names
    for value, ref in zip(got.values(), expected):
        assert value.dtype == ref.dtype and value.shape == ref.shape
        np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def test_dynamic_batch():
    compiled = nnport.compile(zoo.load("mlp_dynamic"), "onnxruntime")
    for batch in (1, 4, 7):
        out = compiled.run({"x": np.random.default_rng(batch).standard_normal((batch, 64)).astype(np.float32)})
        assert out["probs"].shape == (batch, 10)
        np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def mlp_compiled():
    return nnport.compile(zoo.load("mlp"), "onnxruntime:cpu")


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({}, r"missing input\(s\) \['x'\]"),
        ({"y": np.zeros((1, 64), np.float32)}, r"missing input\(s\) \['x'\]; unexpected input\(s\) \['y'\]"),
        ({"x": np.zeros((1, 64), np.float64)}, r"input 'x' has dtype float64, expected float32"),
        (
            {"x": np.zeros((1, 63), np.float32)},
            r"input 'x' has shape \[1, 63\], expected \[1, 64\] \(axis 1 must be 64\)",
        ),
        ({"x": np.zeros((64,), np.float32)}, r"input 'x' has rank 1 .*expected rank 2"),
        ({"x": [[0.0] * 64]}, r"input 'x' is a list, expected a numpy array"),
    ],
    ids=["missing", "wrong-name", "dtype", "shape", "rank", "not-array"],
)
def test_bad_feeds_raise_input_error_naming_the_expectation(mlp_compiled, feeds, message):
    with pytest.raises(nnport.InputError, match=message) as info:
        mlp_compiled.run(feeds)
    assert "The model expects {x: float32[1, 64]}" in str(info.value)


def test_non_contiguous_input_is_correct(mlp_compiled):
    base = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
    view = base[:, ::2]  # a strided, non-contiguous view
    assert not view.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(
        mlp_compiled.run({"x": view})["probs"], mlp_compiled.run({"x": np.ascontiguousarray(view)})["probs"]
    )


def test_outputs_belong_to_the_caller(mlp_compiled):
    feeds = random_feeds(mlp_compiled.inputs, seed=1)
    first = mlp_compiled.run(feeds)["probs"]
    keep = first.copy()
    mlp_compiled.run(random_feeds(mlp_compiled.inputs, seed=2))
    np.testing.assert_array_equal(first, keep)


def test_threads_share_one_compiled_model(mlp_compiled):
    feeds = [random_feeds(mlp_compiled.inputs, seed=s) for s in range(4)]
    expected = [mlp_compiled.run(f)["probs"] for f in feeds]
    errors = []

    def worker(i):
        for _ in range(50):
            got = mlp_compiled.run(feeds[i])["probs"]
            if not np.array_equal(got, expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_compile_cache(tmp_path):
    model = zoo.load("cnn")
    cold = nnport.compile(model, "onnxruntime:cpu", cache_dir=tmp_path)
    warm = nnport.compile(model, "onnxruntime:cpu", cache_dir=tmp_path)
    assert cold.cache_hit is False and warm.cache_hit is True
    assert len(list((tmp_path / "onnxruntime").glob("*.onnx"))) == 1
    feeds = random_feeds(model.inputs)
    np.testing.assert_allclose(cold.run(feeds)["probs"], warm.run(feeds)["probs"], rtol=1e-6, atol=1e-7)
    other = nnport.compile(model, "onnxruntime:cpu", cache_dir=tmp_path, threads=1)
    assert other.cache_hit is False  # different options, different key


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_compile_cache_file_is_recompiled(tmp_path, damage):
    """A cached session file cut short (a killed write, a full disk) or overwritten is compiled again."""
    model = zoo.load("cnn")
    nnport.compile(model, "onnxruntime:cpu", cache_dir=tmp_path)
    (path,) = (tmp_path / "onnxruntime").glob("*.onnx")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"\x00not onnx" * 50, "empty": b""}[damage])
    again = nnport.compile(model, "onnxruntime:cpu", cache_dir=tmp_path)
    assert again.cache_hit is False
    feeds = random_feeds(model.inputs)
    reference = nnport.compile(model, "onnxruntime:cpu").run(feeds)["probs"]
    np.testing.assert_allclose(again.run(feeds)["probs"], reference, rtol=1e-6, atol=1e-7)
    assert path.read_bytes() == data  # rewritten whole
    assert nnport.compile(model, "onnxruntime:cpu", cache_dir=tmp_path).cache_hit is True


def test_corrupt_converted_model_cache_is_converted_again(tmp_path):
    model = zoo.load("mlp")
    first = nnport.compile(model, "onnxruntime:cpu", cache_dir=tmp_path, precision="fp16")
    (converted,) = (tmp_path / "onnxruntime" / "converted").glob("*.onnx")
    converted.write_bytes(converted.read_bytes()[:100])
    again = nnport.compile(model, "onnxruntime:cpu", cache_dir=tmp_path / "fresh-sessions", precision="fp16")
    assert again.info["compression"]["precision"] == "fp16"
    feeds = random_feeds(model.inputs)
    np.testing.assert_allclose(again.run(feeds)["probs"], first.run(feeds)["probs"], rtol=1e-3, atol=1e-4)


def test_hot_path_state_is_typed_and_info_is_diagnostics(mlp_compiled):
    from nnport.plugins.onnxruntime import OrtNative

    native = mlp_compiled.native
    assert isinstance(native, OrtNative) and native.output_names == [o.name for o in mlp_compiled.outputs]
    assert not any(k.startswith("_") for k in mlp_compiled.info) and "output_names" not in mlp_compiled.info
    feeds = random_feeds(mlp_compiled.inputs, seed=3)
    np.testing.assert_array_equal(native.run(feeds)["probs"], mlp_compiled.run(feeds)["probs"])


def test_options_are_applied():
    compiled = nnport.compile(
        zoo.load("mlp"), "onnxruntime:cpu", threads=1, extra={"graph_optimization_level": "disabled"}
    )
    assert compiled.native.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(nnport.NoDeviceCouldCompile, match="graph_optimization_level must be one of"):
        nnport.compile(zoo.load("mlp"), "onnxruntime:cpu", extra={"graph_optimization_level": "max"})


def _custom_op_model():
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.vendor.secret")
    graph = helper.make_graph(
        [node],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.vendor.secret", 1)]
    )
    model.ir_version = 8
    return model


def test_unsupported_operator_raises_unsupported_model():
    with pytest.raises(nnport.UnsupportedModel, match="FancyOp"):
        nnport.compile(nnport.load(_custom_op_model(), check=False), "onnxruntime:cpu", fallback=False)


def test_unknown_device_lists_onnxruntime_devices():
    with pytest.raises(nnport.DeviceNotFound, match=r"onnxruntime devices: \['onnxruntime:cpu'"):
        nnport.compile(zoo.load("mlp"), "onnxruntime:cuda:7")


def test_measure_runs_the_real_runtime(mlp_compiled):
    m = nnport.measure(mlp_compiled, settings=nnport.MeasureSettings(warmup=2, min_iterations=20, min_duration_s=0.01))
    assert m.iterations >= 20 and m.device == "onnxruntime:cpu"
    assert 0 < m.latency_p50_ms < 1000


def test_measure_keywords_override_settings(mlp_compiled):
    base = nnport.MeasureSettings(warmup=0, min_iterations=5, min_duration_s=0.01)
    m = nnport.measure(mlp_compiled, settings=base, min_iterations=40)
    assert m.iterations >= 40
    with pytest.raises(nnport.MeasurementError):
        nnport.measure(mlp_compiled, settings=base, min_iterations=0)
