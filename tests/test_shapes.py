"""``shapes=`` / ``--input-shapes`` and lazy shape specialisation, on the real runtimes.

The models are built here with the open dims real exports have (symbolic
batch, height, width; a Conv whose rank only a static shape reveals), and
every answer is checked against ONNX Runtime on the same feeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import nnport
from nnport import InputError, UnsupportedModel
from nnport.shapes import fix_shapes, parse_input_shapes

CPU_BACKENDS = ["onnxruntime:cpu", "openvino:CPU", "ncnn:cpu"]


def _usable(device: str) -> bool:
    backend = device.split(":")[0]
    return any(s.name == backend and s.status == "available" for s in nnport.backends())


def conv_model(ir_version: int | None = None) -> onnx.ModelProto:
    """[batch, 3, height, width] -> Conv 3x3 -> Relu: a detector backbone's first layer, dims open."""
    rng = np.random.default_rng(0)
    w = nh.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32), "w")
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["y"])]
    graph = h.make_graph(
        nodes,
        "conv_dyn",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 3, "height", "width"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", 8, "height", "width"])],
        [w],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def dynamic_rank_model() -> onnx.ModelProto:
    """A Conv whose input rank comes from a Slice of Shape(x) that depends on a dim's value.

    OpenVINO's ONNX frontend refuses it while ``x`` is dynamic ("The input
    data tensor's rank has to be known"), as it refused two real exports.
    """
    rng = np.random.default_rng(1)
    inits = [
        nh.from_array((rng.standard_normal((8, 4, 3)) * 0.2).astype(np.float32), "w"),
        nh.from_array(np.array([0], np.int64), "zero"),
        nh.from_array(np.array(0, np.int64), "i0"),
        nh.from_array(np.array([2], np.int64), "two"),
    ]
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        h.make_node("Unsqueeze", ["b", "zero"], ["b1"]),
        h.make_node("Add", ["b1", "two"], ["e"]),
        h.make_node("Slice", ["s", "zero", "e"], ["sl"]),
        h.make_node("Reshape", ["x", "sl"], ["r"]),
        h.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1]),
    ]
    graph = h.make_graph(
        nodes,
        "dyn_rank",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4, "len"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", 8, "len"])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def two_input_model() -> onnx.ModelProto:
    """Two inputs sharing the symbol ``seq``: fixing one fixes the other."""
    graph = h.make_graph(
        [h.make_node("Add", ["a", "b"], ["y"])],
        "two_in",
        [h.make_tensor_value_info("a", T.FLOAT, ["batch", "seq"]), h.make_tensor_value_info("b", T.FLOAT, [1, "seq"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", "seq"])],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def reference(model, feeds):
    return nnport.compile(model, "onnxruntime:cpu", fallback=False).run(feeds)


def feeds_of(shape, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


# -- parsing and validation ------------------------------------------------------------------


def test_parse_input_shapes_cli_form():
    assert parse_input_shapes("images:1x3x640x640,mask:1x16") == {"images": (1, 3, 640, 640), "mask": (1, 16)}
    assert parse_input_shapes(["a:2x3", "b:4"]) == {"a": (2, 3), "b": (4,)}
    assert parse_input_shapes("input:0:1x3x224x224") == {"input:0": (1, 3, 224, 224)}  # TensorFlow-style names
    assert parse_input_shapes("scalar:") == {"scalar": ()}
    assert parse_input_shapes(None) == {}


@pytest.mark.parametrize("bad", ["images", "images:1x3xh", ":1x3", "a:1x2,a:1x3"])
def test_parse_input_shapes_rejects(bad):
    with pytest.raises(InputError):
        parse_input_shapes(bad)


def test_options_shapes_are_normalised_and_keyed():
    a = nnport.CompileOptions(shapes={"x": [1, 3, 8, 8]})
    assert a.shapes == {"x": (1, 3, 8, 8)}
    assert a.key() != nnport.CompileOptions().key() != nnport.CompileOptions(shapes={"x": (1, 3, 9, 9)}).key()
    assert nnport.CompileOptions(shapes={}).key() == nnport.CompileOptions().key()
    with pytest.raises(InputError, match="positive"):
        nnport.CompileOptions(shapes={"x": (1, 3, 0, 8)})
    with pytest.raises(InputError, match="integers"):
        nnport.CompileOptions(shapes={"x": (1, 3, 8.5, 8)})


@pytest.mark.parametrize(
    "shapes, message",
    [
        ({"z": (1, 3, 8, 8)}, r"unknown input\(s\) \['z'\].*x: float32\[batch, 3, height, width\]"),
        ({"x": (1, 3, 8)}, r"rank 3, but the model declares x: float32\[batch, 3, height, width\]"),
        ({"x": (1, 4, 8, 8)}, r"axis 1 is fixed at 3"),
        ({"x": (1, 3, -8, 8)}, r"positive"),
    ],
)
def test_bad_shapes_are_input_errors_naming_the_input(shapes, message):
    with pytest.raises(InputError, match=message):
        nnport.compile(conv_model(), "onnxruntime:cpu", shapes=shapes)


def test_one_symbol_two_sizes_is_refused():
    with pytest.raises(InputError, match="'seq' is 4 in shapes"):
        fix_shapes(nnport.load(two_input_model()), {"a": (2, 4), "b": (1, 5)})


def test_fix_shapes_propagates_symbols_and_infers_outputs():
    model = nnport.load(two_input_model())
    fixed = fix_shapes(model, {"a": (2, 5)})
    assert [s.shape for s in fixed.inputs] == [(2, 5), (1, 5)]  # b shares 'seq'
    assert fixed.outputs[0].shape == (2, 5)
    assert fixed.hash != model.hash and fixed.metadata["source_hash"] == model.hash
    assert fix_shapes(model, {"a": (2, 5)}) is fixed  # memoised
    assert fix_shapes(fixed, {"a": (2, 5)}) is fixed  # idempotent on a static model
    conv = fix_shapes(nnport.load(conv_model()), {"x": (1, 3, 32, 48)})
    assert conv.outputs[0].shape == (1, 8, 32, 48)  # onnx shape inference made the output static


# -- shapes= on every backend -----------------------------------------------------------------


@pytest.mark.parametrize("device", CPU_BACKENDS)
def test_shapes_compile_static_and_agree(device):
    if not _usable(device):
        pytest.skip(f"{device} is not usable here")
    model = conv_model()
    compiled = nnport.compile(model, device, fallback=False, shapes={"x": (1, 3, 24, 40)})
    assert compiled.inputs[0].shape == (1, 3, 24, 40)
    assert "specialized_lazily" not in compiled.info
    feeds = feeds_of((1, 3, 24, 40))
    got = compiled.run(feeds)["y"]
    np.testing.assert_allclose(got, reference(model, feeds)["y"], rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match=r"expected \[1, 3, 24, 40\]"):  # not a silent reconversion
        compiled.run(feeds_of((1, 3, 16, 16)))


# -- lazy specialisation ------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNPORT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("ir_version", [None, 9])
def test_ncnn_converts_each_feed_shape_on_first_use(cache_dir, ir_version):
    if not _usable("ncnn:cpu"):
        pytest.skip("ncnn is not usable here")
    model = conv_model(ir_version)  # None: whatever this onnx writes (IR 14 segfaulted pnnx's bundled ORT)
    compiled = nnport.compile(model, "ncnn:cpu", fallback=False)
    assert "height" in compiled.info["specialized_lazily"]
    assert compiled.info["specializations"] == []
    for shape in [(1, 3, 32, 48), (2, 3, 16, 16), (1, 3, 32, 48)]:
        feeds = feeds_of(shape, seed=shape[2])
        got = compiled.run(feeds)["y"]
        assert got.shape == (shape[0], 8, *shape[2:])
        np.testing.assert_allclose(got, reference(model, feeds)["y"], rtol=1e-4, atol=1e-5)
    done = compiled.info["specializations"]
    # batch 2 reuses the 16x16 conversion's per-sample loop: two conversions for three calls
    assert [d["shapes"] for d in done] == [{"x[2]": 32, "x[3]": 48}, {"x[2]": 16, "x[3]": 16}]
    m = nnport.measure(
        compiled, {"x": feeds_of((1, 3, 16, 16))["x"]}, min_iterations=3, min_duration_s=0.01, warmup=1, energy=False
    )
    assert m.latency_p50_ms > 0


def test_specialisations_are_cached_on_disk_across_processes(cache_dir, tmp_path):
    if not _usable("ncnn:cpu"):
        pytest.skip("ncnn is not usable here")
    path = tmp_path / "conv.onnx"
    onnx.save(conv_model(9), path)
    script = (
        "import json, numpy as np, nnport\n"
        f"c = nnport.compile({str(path)!r}, 'ncnn:cpu', fallback=False)\n"
        "c.run(x=np.ones((1, 3, 20, 28), np.float32))\n"
        "print(json.dumps(c.info['specializations']))\n"
    )
    env = {**os.environ, "NNPORT_CACHE_DIR": str(cache_dir)}
    runs = [
        json.loads(
            subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0][0]["cache_hit"] is False
    assert runs[1][0]["cache_hit"] is True


def test_specialisations_in_memory_are_bounded(cache_dir):
    if not _usable("ncnn:cpu"):
        pytest.skip("ncnn is not usable here")
    compiled = nnport.compile(conv_model(9), "ncnn:cpu", fallback=False, extra={"max_specializations": 1})
    for size in (8, 12, 8):
        compiled.run(feeds_of((1, 3, size, size)))
    assert len(compiled.native.loaded) == 1
    assert len(compiled.info["specializations"]) == 3  # 8 was evicted, then converted again (a disk-cache hit)
    assert compiled.info["specializations"][2]["cache_hit"] is True


def test_ncnn_cache_evicts_least_recently_used(tmp_path, monkeypatch):
    from nnport.plugins import _ncnn_convert as conv

    for i, name in enumerate(["old", "mid", "new"]):
        entry = tmp_path / name
        entry.mkdir()
        (entry / "meta.json").write_text("{}")
        os.utime(entry / "meta.json", (1000 + i, 1000 + i))
    monkeypatch.setenv("NNPORT_NCNN_CACHE_MAX_ENTRIES", "2")
    removed = conv.prune(tmp_path)
    assert [p.name for p in removed] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid", "new"]


@pytest.mark.parametrize("device", ["openvino:CPU", "ncnn:cpu"])
def test_dynamic_rank_graph_runs_lazily_and_with_shapes(device, cache_dir):
    if not _usable(device):
        pytest.skip(f"{device} is not usable here")
    model = dynamic_rank_model()
    feeds = feeds_of((1, 4, 10))
    expected = reference(model, feeds)["y"]
    lazy = nnport.compile(model, device, fallback=False)
    assert "specialized_lazily" in lazy.info
    np.testing.assert_allclose(lazy.run(feeds)["y"], expected, rtol=1e-4, atol=1e-5)
    static = nnport.compile(model, device, fallback=False, shapes={"x": (1, 4, 10)})
    assert "specialized_lazily" not in static.info
    np.testing.assert_allclose(static.run(feeds)["y"], expected, rtol=1e-4, atol=1e-5)


def test_openvino_still_refuses_at_compile_what_no_shape_can_fix():
    """A refusal that a static shape does not cure stays a compile-time refusal, so selection falls back."""
    if not _usable("openvino:CPU"):
        pytest.skip("openvino is not usable here")
    graph = h.make_graph(
        [h.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")],
        "custom",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", 4])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedModel):
        nnport.compile(nnport.load(model, check=False), "openvino:CPU", fallback=False)


def test_ncnn_refuses_integer_outputs_at_compile_even_when_dims_are_open():
    if not _usable("ncnn:cpu"):
        pytest.skip("ncnn is not usable here")
    graph = h.make_graph(
        [h.make_node("Add", ["x", "x"], ["y"])],
        "ints",
        [h.make_tensor_value_info("x", T.INT64, ["batch", "seq"])],
        [h.make_tensor_value_info("y", T.INT64, ["batch", "seq"])],
    )
    with pytest.raises(UnsupportedModel, match="float32"):
        nnport.compile(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), "ncnn:cpu", fallback=False)


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_input_shapes(tmp_path, capsys):
    from nnport.cli import main

    path = tmp_path / "conv.onnx"
    onnx.save(conv_model(9), path)
    assert main(["run", str(path), "-d", "onnxruntime:cpu", "--input-shapes", "x:1x3x20x30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outputs"]["y"]["shape"] == [1, 8, 20, 30]
    assert main(["run", str(path), "-d", "onnxruntime:cpu", "--input-shapes", "x:1x3x20"]) == 2
    assert "rank 3, but the model declares x" in capsys.readouterr().err


def test_shapes_fall_back_to_the_graph_as_shipped_when_only_the_static_graph_fails():
    """shapes= is never worse than no shapes: a runtime failing on the static rewrite gets the model as shipped, feeds
    pinned."""
    from fakes import install

    class StaticRefusing(nnport.Backend):
        name = "staticrefusing"

        def devices(self):
            return [nnport.Device("staticrefusing:cpu", "staticrefusing", "cpu")]

        def compile(self, model, device, options):
            if not any(s.is_dynamic for s in model.inputs):
                raise nnport.CompileError("this runtime fails on static graphs")
            return nnport.CompiledModel(self, model, device, options)

        def execute(self, compiled, binding):
            binding.outputs = {"y": np.maximum(binding.inputs["x"], 0)}

    install(StaticRefusing, builtins=True)  # ONNX Runtime stays the reference of the check below
    compiled = nnport.compile(conv_model(9), "staticrefusing:cpu", fallback=False, shapes={"x": (1, 3, 4, 4)})
    assert "shapes_fallback" in compiled.info
    assert compiled.inputs[0].shape == (1, 3, 4, 4)
    with pytest.raises(InputError):
        compiled.run(feeds_of((1, 3, 5, 5)))
    assert compiled.run(feeds_of((1, 3, 4, 4)))["y"].shape == (1, 3, 4, 4)
