"""Model loading: paths, bytes, protos, malformed input, external data guard."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnport
from nnport import zoo


def test_load_path_bytes_and_proto_agree(tmp_path):
    proto = zoo.build("cnn")
    path = tmp_path / "cnn.onnx"
    onnx.save(proto, path)
    a = nnport.load(path)
    b = nnport.load(path.read_bytes())
    c = nnport.load(proto)
    assert a.hash == b.hash == c.hash
    assert a.name == "cnn" and a.path == path
    assert [str(s) for s in a.inputs] == ["image: float32[1, 3, 32, 32]"]
    assert [s.name for s in a.outputs] == ["probs"]
    assert a.opset == 17
    assert nnport.load(a) is a


def test_zoo_is_deterministic():
    assert nnport.load(zoo.build("mlp")).hash == nnport.load(zoo.build("mlp")).hash
    assert nnport.load(zoo.build("mlp")).hash != nnport.load(zoo.build("mlp_dynamic")).hash


def test_symbolic_dims_are_kept():
    model = zoo.load("mlp_dynamic")
    assert model.inputs[0].shape == ("batch", 64)
    assert model.inputs[0].is_dynamic


def test_missing_file():
    with pytest.raises(nnport.ModelLoadError, match="model file not found: '/no/such/model.onnx'"):
        nnport.load("/no/such/model.onnx")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(nnport.ModelLoadError, match="directory"):
        nnport.load(tmp_path)


@pytest.mark.parametrize("data", [b"", b"this is not onnx at all", None], ids=["empty", "text", "truncated"])
def test_malformed_bytes(data):
    if data is None:
        data = zoo.build("cnn").SerializeToString()[:500]
    with pytest.raises(nnport.ModelLoadError, match="ONNX model|empty"):
        nnport.load(data)


def test_truncated_file(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(zoo.build("mlp").SerializeToString()[:-300])
    with pytest.raises(nnport.ModelLoadError):
        nnport.load(path)


def test_checker_failure_is_reported():
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node, node],
        "dup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(nnport.ModelLoadError, match="onnx.checker"):
        nnport.load(model)


def test_wrong_type_of_source():
    with pytest.raises(nnport.ModelLoadError, match="expected a path"):
        nnport.load(42)


def _model_with_external(tmp_path, location):
    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(
        model,
        tmp_path / "m.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    if location != "weights.bin":
        m = onnx.load(tmp_path / "m.onnx", load_external_data=False)
        for entry in m.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(m, tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def test_external_data_inside_model_dir_loads(tmp_path):
    model = nnport.load(_model_with_external(tmp_path, "weights.bin"))
    compiled = nnport.compile(model, "onnxruntime:cpu")
    out = compiled.run({"x": np.ones((1, 4), np.float32)})["y"]
    np.testing.assert_allclose(out, np.ones((1, 4)) @ np.arange(16).reshape(4, 4))


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd"])
def test_external_data_escaping_model_dir_is_refused(tmp_path, location):
    (tmp_path / "sub").mkdir()
    path = _model_with_external(tmp_path / "sub", "weights.bin")
    (tmp_path / "outside.bin").write_bytes((tmp_path / "sub" / "weights.bin").read_bytes())
    m = onnx.load(path, load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(m, path)
    with pytest.raises(nnport.ModelLoadError, match="escapes the model directory"):
        nnport.load(path)


def test_native_ncnn_needs_specs(tmp_path):
    (tmp_path / "m.param").write_text("7767517\n")
    (tmp_path / "m.bin").write_bytes(b"\0")
    with pytest.raises(nnport.ModelLoadError, match="inputs="):
        nnport.load(tmp_path / "m.param")
    spec = nnport.TensorSpec("in0", (1, 3, 8, 8), np.float32)
    model = nnport.load(tmp_path / "m.param", inputs=[spec], outputs=[spec])
    assert model.format == "ncnn" and model.inputs == (spec,)


def test_native_format_needs_weights(tmp_path):
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(nnport.ModelLoadError, match=r"m\.bin"):
        nnport.load(tmp_path / "m.xml")
