"""Integer inputs into ncnn: token ids and bytes fed as exact float32 values, or refused at compile.

pnnx segfaulted on an ONNX model whose input is int64; ncnn's Mats hold float32.
The plugin converts integer inputs to float32 inputs with a Cast back, turns
embedding lookups (Gather on a table) into an exact one-hot MatMul, and keeps
the caller's integer dtype in the compiled specs.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import nnport
from nnport import InputError, UnsupportedModel

pytestmark = pytest.mark.skipif(
    not any(s.name == "ncnn" and s.status == "available" for s in nnport.backends()), reason="ncnn is not usable here"
)


def embedding_model(dtype: int, rows: int = 1000) -> object:
    rng = np.random.default_rng(0)
    table = nh.from_array(rng.standard_normal((rows, 16)).astype(np.float32), "table")
    w = nh.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w")
    nodes = [
        h.make_node("Gather", ["table", "ids"], ["e"], axis=0),
        h.make_node("MatMul", ["e", "w"], ["m"]),
        h.make_node("Tanh", ["m"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "emb",
        [h.make_tensor_value_info("ids", dtype, ["batch", "seq"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", "seq", 4])],
        [table, w],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    return model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNPORT_CACHE_DIR", str(tmp_path))


@pytest.mark.parametrize("dtype, np_dtype", [(T.INT64, np.int64), (T.INT32, np.int32)])
def test_embedding_lookup_agrees_with_onnxruntime(dtype, np_dtype):
    model = embedding_model(dtype, rows=200)
    compiled = nnport.compile(model, "ncnn:cpu", fallback=False)
    assert compiled.inputs[0].dtype == np.dtype(np_dtype)  # callers keep feeding ids
    reference = nnport.compile(model, "onnxruntime:cpu", fallback=False)
    for seq in (12, 5):
        ids = np.random.default_rng(seq).integers(0, 200, (1, seq)).astype(np_dtype)
        ids[0, 0] = 199  # the last row: the one-hot spans the whole table
        np.testing.assert_allclose(compiled.run(ids=ids)["y"], reference.run(ids=ids)["y"], rtol=1e-5, atol=1e-6)


def test_ids_float32_cannot_hold_are_refused():
    model = embedding_model(T.INT64, rows=10)
    compiled = nnport.compile(model, "ncnn:cpu", fallback=False, shapes={"ids": (1, 4)})
    with pytest.raises(InputError, match="2\\*\\*24"):
        compiled.run(ids=np.array([[1, 2, 3, 1 << 25]], np.int64))
    with pytest.raises(InputError, match="int64"):
        compiled.run(ids=np.array([[1, 2, 3, 4]], np.float32))


def test_cast_of_ids_to_float_converts():
    """Byte classifiers cast their int input to float first; that Cast becomes the float input itself."""
    graph = h.make_graph(
        [h.make_node("Cast", ["b"], ["f"], to=T.FLOAT), h.make_node("Mul", ["f", "k"], ["y"])],
        "bytes",
        [h.make_tensor_value_info("b", T.UINT8, [1, 64])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 64])],
        [nh.from_array(np.array(1 / 255, np.float32), "k")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    b = (np.arange(64).reshape(1, 64) * 4).astype(np.uint8)
    got = nnport.compile(model, "ncnn:cpu", fallback=False).run(b=b)["y"]
    np.testing.assert_allclose(got, b.astype(np.float32) / 255, rtol=1e-6)


def test_what_ncnn_cannot_do_with_ids_is_refused_at_compile_not_a_crash():
    """An integer op chain ncnn has no layer for: a clean UnsupportedModel (pnnx used to segfault on int64 inputs)."""
    graph = h.make_graph(
        [h.make_node("Equal", ["b", "k"], ["e"]), h.make_node("Cast", ["e"], ["y"], to=T.FLOAT)],
        "equal",
        [h.make_tensor_value_info("b", T.INT64, [1, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 8])],
        [nh.from_array(np.array(3, np.int64), "k")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(UnsupportedModel):
        nnport.compile(model, "ncnn:cpu", fallback=False)
    assert nnport.compile(model, ["ncnn:cpu", "onnxruntime:cpu"]).device.id == "onnxruntime:cpu"  # selection falls back
