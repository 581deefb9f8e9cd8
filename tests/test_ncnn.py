"""The ncnn plugin against the real ncnn + pnnx, with ONNX Runtime as the reference.

Parity: every zoo model and every onnx-wheel ``light_*`` model that pnnx
converts, on ``ncnn:cpu`` and on each Vulkan device (Mesa's lavapipe on a
machine without a GPU), fp32 max abs error <= 1e-5 x the reference output's
max abs value.  Vulkan on a software rasterizer is held to the same 1e-5 (it
computes in fp32 on the CPU; observed errors are near 1e-7 relative); a real
GPU gets 1e-4, because shaders may evaluate exp/erf/tanh with approximations
that differ from the CPU's by a few ulps more.

Guards: float64 (a segfault inside ncnn without the guard), non-contiguous
arrays (garbage without it), a first layer that works in place (a segfault
without the clone), outputs that outlive their ncnn memory, batch, wrong names.

Conversions are cached in one session-scoped directory, so each model goes
through pnnx once per test session; the slowest conversions (pnnx spends
15-30 s folding the big generated weights of alexnet, zfnet512 and vgg19) and
the large models on lavapipe are marked ``slow``.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import nnport
import nnport.zoo
from nnport.data import random_feeds
from nnport.errors import CompileError, InputError, NoDeviceCouldCompile, UnsupportedModel, UnsupportedPrecision
from nnport.plugins import _ncnn_convert as convert_mod  # noqa: E402
from nnport.plugins import ncnn as ncnn_plugin  # noqa: E402
from nnport.types import TensorSpec

if ncnn_plugin.NcnnBackend.probe() is not None:  # pragma: no cover - depends on the machine
    pytest.skip(f"ncnn backend unavailable: {ncnn_plugin.NcnnBackend.probe()}", allow_module_level=True)

import ncnn  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

with ncnn_plugin.quiet_stderr():
    GPU_COUNT = ncnn.get_gpu_count()
VULKAN_IDS = [f"ncnn:vulkan:{i}" for i in range(GPU_COUNT)]

# Models pnnx cannot take, with pnnx's/ncnn's reason (checked strictly: a fix shows up as XPASS).
NOT_CONVERTED = {
    "light_inception_v1": "pnnx leaves AveragePool (7x7, asymmetric pads [0,0,1,1]) unconverted; "
    "ncnn has no 'AveragePool' layer",
}
SLOW_CPU = {"light_bvlc_alexnet", "light_zfnet512", "light_vgg19"}
FAST_VULKAN = {"mlp", "mlp_dynamic", "cnn", "attention", "light_squeezenet", "light_shufflenet"}
ALL_MODELS = nnport.zoo.names() + nnport.zoo.light_names()


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    """The marker says "run with -m slow": honour it even where addopts does not deselect."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")


@pytest.fixture(scope="session")
def ncnn_cache(tmp_path_factory) -> str:
    """One conversion cache for the whole session: every model meets pnnx once."""
    return str(tmp_path_factory.mktemp("ncnn-cache"))


_REFERENCES: dict[str, tuple[dict, dict]] = {}


def reference(name: str) -> tuple[dict, dict]:
    """(feeds, ONNX Runtime outputs) for a zoo/light model, computed once per session."""
    if name not in _REFERENCES:
        model = nnport.zoo.load_any(name)
        feeds = random_feeds(model.inputs, seed=0)
        _REFERENCES[name] = (feeds, nnport.compile(model, "onnxruntime:cpu").run(feeds))
    return _REFERENCES[name]


def max_rel_error(got: dict, want: dict) -> float:
    worst = 0.0
    for name, ref in want.items():
        assert got[name].shape == ref.shape, f"{name}: shape {got[name].shape} != reference {ref.shape}"
        assert got[name].dtype == ref.dtype
        scale = max(float(np.max(np.abs(ref))), 1e-30)
        worst = max(worst, float(np.max(np.abs(got[name].astype(np.float64) - ref))) / scale)
    return worst


def parity_params(device_ids: list[str], vulkan: bool) -> list:
    params = []
    for name in ALL_MODELS:
        for dev in device_ids:
            marks = []
            if name in NOT_CONVERTED:
                marks.append(pytest.mark.xfail(raises=UnsupportedModel, strict=True, reason=NOT_CONVERTED[name]))
            elif name in SLOW_CPU or (vulkan and name not in FAST_VULKAN):
                marks.append(pytest.mark.slow)
            if vulkan:
                marks.append(pytest.mark.vulkan)
            params.append(pytest.param(name, dev, marks=marks, id=f"{name}-{dev}"))
    return params


def tolerance(device: nnport.Device) -> float:
    if device.id == "ncnn:cpu" or device.properties.get("software_rasterizer"):
        return 1e-5
    return 1e-4


# -- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, device_id", parity_params(["ncnn:cpu"], vulkan=False))
def test_cpu_parity_with_onnxruntime(name, device_id, ncnn_cache):
    feeds, want = reference(name)
    compiled = nnport.compile(nnport.zoo.load_any(name), device_id, cache_dir=ncnn_cache, fallback=False)
    assert compiled.device.id == device_id
    got = compiled.run(feeds)
    assert list(got) == list(want)
    assert max_rel_error(got, want) <= tolerance(compiled.device)


@pytest.mark.skipif(GPU_COUNT == 0, reason="no Vulkan device (install libvulkan1 + mesa-vulkan-drivers for lavapipe)")
@pytest.mark.parametrize("name, device_id", parity_params(VULKAN_IDS or ["ncnn:vulkan:0"], vulkan=True))
def test_vulkan_parity_with_onnxruntime(name, device_id, ncnn_cache):
    feeds, want = reference(name)
    compiled = nnport.compile(nnport.zoo.load_any(name), device_id, cache_dir=ncnn_cache, fallback=False)
    opt = compiled.native.net.opt
    assert opt.use_vulkan_compute
    assert (opt.use_fp16_storage, opt.use_fp16_arithmetic, opt.use_fp16_packed) == (False, False, False)
    got = compiled.run(feeds)
    assert max_rel_error(got, want) <= tolerance(compiled.device)


def randomized(name: str, seed: int = 0) -> nnport.Model:
    """A light_* model with seeded random weights instead of the constant 0.02.

    The onnx wheel generates every weight as 0.02 (``ConstantOfShape``), so every
    class scores the same and the softmax is 0.001 everywhere: parity on those
    outputs says little.  Here conv/gemm weights are N(0, 1/fan_in) and 1-D
    parameters (biases, BatchNorm scale/mean/var) U(0.5, 1.5), so the outputs
    differ per class and per input; the architecture and operators are kept.
    """
    import onnx

    proto = onnx.load(str(nnport.zoo.light_path(name)))
    rng = np.random.default_rng(seed)
    shapes = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    kept = []
    for node in proto.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            if len(shape) > 1:
                w = rng.standard_normal(shape) / np.sqrt(max(int(np.prod(shape[1:])), 1))
            else:
                w = rng.uniform(0.5, 1.5, shape)
            proto.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), node.output[0]))
        else:
            kept.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    proto.ir_version = max(proto.ir_version, 4)  # initializers that are not graph inputs
    proto.graph.name = f"{name}_randomized"
    return nnport.load(proto)


RANDOMIZED = ["light_squeezenet", "light_shufflenet", "light_resnet50", "light_densenet121", "light_inception_v2"]


@pytest.mark.parametrize(
    "name, device_id",
    [
        pytest.param(n, d, id=f"{n}-{d}", marks=[pytest.mark.slow] if n != "light_squeezenet" else [])
        for n in RANDOMIZED
        for d in ["ncnn:cpu", *VULKAN_IDS]
    ],
)
def test_randomized_weights_parity(name, device_id, ncnn_cache):
    """Real architectures with informative outputs: same tolerance, and the same top-1."""
    model = randomized(name)
    feeds = random_feeds(model.inputs, seed=0)
    want = nnport.compile(model, "onnxruntime:cpu").run(feeds)
    compiled = nnport.compile(model, device_id, cache_dir=ncnn_cache, fallback=False)
    got = compiled.run(feeds)
    assert max_rel_error(got, want) <= tolerance(compiled.device)
    for key, ref in want.items():
        assert float(np.std(ref)) > 0  # informative: not the uniform softmax of the constant weights
        assert got[key].reshape(-1).argmax() == ref.reshape(-1).argmax()


def test_unconvertible_model_carries_the_reason_and_falls_back(ncnn_cache):
    model = nnport.zoo.load_any("light_inception_v1")
    with pytest.raises(UnsupportedModel, match="AveragePool"):
        nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    compiled = nnport.compile(model, ["ncnn", "onnxruntime"], cache_dir=ncnn_cache)
    assert compiled.device.backend == "onnxruntime"
    assert compiled.attempts and all(dev.startswith("ncnn:") for dev, _ in compiled.attempts)
    assert all(isinstance(err, UnsupportedModel) and "AveragePool" in str(err) for _, err in compiled.attempts)


def test_pnnx_failure_carries_pnnx_message(ncnn_cache):
    node = helper.make_node("MyOp", ["x"], ["y"], domain="custom.ops")
    graph = helper.make_graph([node], "custom", [_vi("x", [1, 8])], [_vi("y", [1, 8])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.ops", 1)])
    proto.ir_version = 8
    model = nnport.load(proto, check=False)
    with pytest.raises(UnsupportedModel, match="pnnx cannot convert.*MyOp"):
        nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    with pytest.raises(NoDeviceCouldCompile):  # onnxruntime cannot run it either; the ncnn error is kept
        nnport.compile(model, ["ncnn:cpu", "onnxruntime"], cache_dir=ncnn_cache)


def test_opset_below_13_softmax_is_upgraded_not_wrong(ncnn_cache):
    """light_squeezenet (opset 9): pnnx applies old Softmax to one axis; nnport upgrades first."""
    feeds, want = reference("light_squeezenet")
    compiled = nnport.compile(nnport.zoo.load_any("light_squeezenet"), "ncnn:cpu", cache_dir=ncnn_cache)
    assert compiled.info["upgraded_opset"] == "9 -> 13"
    assert "verified" in compiled.info["verified"]
    assert max_rel_error(compiled.run(feeds), want) <= 1e-5


def test_verification_rejects_a_wrong_conversion(ncnn_cache, monkeypatch):
    """Without the opset upgrade pnnx gets squeezenet's Softmax wrong: verification must refuse it."""
    monkeypatch.setattr(convert_mod, "UPGRADE_OPSET", 0)
    monkeypatch.setattr(convert_mod, "CONVERTER_VERSION", "test-no-upgrade")
    with pytest.raises(UnsupportedModel, match="disagrees with ONNX Runtime"):
        nnport.compile(nnport.zoo.load_any("light_squeezenet"), "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)


# -- devices and probe -------------------------------------------------------------------------


def test_probe_imports_neither_ncnn_nor_pnnx():
    code = textwrap.dedent(
        """
        import sys
        from nnport.plugins.ncnn import NcnnBackend
        assert NcnnBackend.probe() is None, NcnnBackend.probe()
        bad = [m for m in ("ncnn", "pnnx", "torch") if m in sys.modules]
        assert not bad, bad
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_probe_names_the_missing_pnnx(monkeypatch):
    real = convert_mod.importlib.util.find_spec
    monkeypatch.setattr(
        convert_mod.importlib.util, "find_spec", lambda name, *a: None if name == "pnnx" else real(name, *a)
    )
    assert "pip install --no-deps pnnx" in ncnn_plugin.NcnnBackend.probe()


def test_devices_cpu_and_vulkan():
    devices = {d.id: d for d in nnport.devices("ncnn", include_unavailable=True)}
    assert devices["ncnn:cpu"].kind == "cpu" and devices["ncnn:cpu"].available
    with ncnn_plugin.quiet_stderr():
        count = ncnn.get_gpu_count()
    if count == 0:
        assert not devices["ncnn:vulkan"].available and "Vulkan" in devices["ncnn:vulkan"].reason
    for index in range(count):
        dev = devices[f"ncnn:vulkan:{index}"]
        info = ncnn.get_gpu_info(index)
        software = info.type() == 3 or "llvmpipe" in info.device_name().lower()
        assert dev.properties["software_rasterizer"] is software
        assert dev.kind == ("cpu" if software else "gpu")
        assert dev.name == info.device_name()


def test_without_vulkan_the_device_is_listed_unavailable():
    """A real Vulkan loader with no driver (the ICD list points nowhere) finds no device."""
    code = textwrap.dedent(
        """
        import json, nnport
        print(json.dumps([d.to_dict() for d in nnport.devices("ncnn", include_unavailable=True)]))
        """
    )
    env = {**os.environ, "VK_ICD_FILENAMES": "/nonexistent/icd.json", "VK_DRIVER_FILES": "/nonexistent/icd.json"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    import json

    devices = {d["id"]: d for d in json.loads(out.stdout.strip().splitlines()[-1])}
    assert devices["ncnn:cpu"]["available"]
    assert devices["ncnn:vulkan"]["available"] is False
    assert "no Vulkan device" in devices["ncnn:vulkan"]["reason"]


# -- options -----------------------------------------------------------------------------------


def test_fp32_turns_fp16_off_and_threads_apply(ncnn_cache):
    compiled = nnport.compile(nnport.zoo.load("cnn"), "ncnn:cpu", cache_dir=ncnn_cache, threads=1)
    opt = compiled.native.net.opt
    assert (opt.use_fp16_storage, opt.use_fp16_arithmetic, opt.use_fp16_packed) == (False, False, False)
    assert opt.num_threads == 1
    assert not opt.use_vulkan_compute


def test_fp16_precision(ncnn_cache):
    feeds, want = reference("cnn")
    compiled = nnport.compile(nnport.zoo.load("cnn"), "ncnn:cpu", cache_dir=ncnn_cache, precision="fp16")
    opt = compiled.native.net.opt
    assert opt.use_fp16_storage and opt.use_fp16_arithmetic and opt.use_fp16_packed
    err = max_rel_error(compiled.run(feeds), want)
    assert err <= 1e-2


def test_measure_times_the_guarded_execute(cnn_compiled):
    m = nnport.measure(cnn_compiled, warmup=1, min_iterations=5, min_duration_s=0.01)
    assert m.device == "ncnn:cpu" and m.iterations >= 5 and all(s > 0 for s in m.samples_ms)


def test_int8_is_refused_with_the_reason(ncnn_cache):
    with pytest.raises(UnsupportedPrecision, match="ncnn2table.*ncnn2int8"):
        nnport.compile(nnport.zoo.load("cnn"), "ncnn:cpu", cache_dir=ncnn_cache, precision="int8", fallback=False)


def test_int8_tools_are_not_in_the_wheels():
    """The claim behind the int8 refusal: no ncnn2table/ncnn2int8 in either wheel."""
    from importlib.metadata import files

    shipped = [str(f) for dist in ("ncnn", "pnnx") for f in (files(dist) or [])]
    assert shipped
    assert not [f for f in shipped if "ncnn2table" in f or "ncnn2int8" in f]


# -- conversion cache ----------------------------------------------------------------------------


def test_second_compile_skips_pnnx(tmp_path, monkeypatch):
    model = nnport.zoo.load("mlp")
    first = nnport.compile(model, "ncnn:cpu", cache_dir=str(tmp_path))
    assert first.cache_hit is False and first.info["pnnx_seconds"] > 0

    def no_pnnx(*args, **kwargs):
        raise AssertionError(f"pnnx ran on a cache hit: {args}")

    monkeypatch.setattr(convert_mod.subprocess, "run", no_pnnx)
    second = nnport.compile(model, "ncnn:cpu", cache_dir=str(tmp_path))
    assert second.cache_hit is True
    feeds = random_feeds(model.inputs, seed=1)
    np.testing.assert_array_equal(first.run(feeds)["probs"], second.run(feeds)["probs"])
    assert len(list((tmp_path / "ncnn").iterdir())) == 1
    # a different precision is a different entry: pnnx must run (and here it cannot)
    with pytest.raises(CompileError, match="pnnx ran"):
        nnport.compile(model, "ncnn:cpu", cache_dir=str(tmp_path), precision="fp16", fallback=False)


def test_damaged_cache_entry_is_converted_again(tmp_path):
    model = nnport.zoo.load("mlp")
    first = nnport.compile(model, "ncnn:cpu", cache_dir=str(tmp_path))
    entry = Path(first.info["ncnn_param"]).parent
    (entry / "meta.json").write_text("{not json")
    (entry / "model.ncnn.bin").unlink()
    again = nnport.compile(model, "ncnn:cpu", cache_dir=str(tmp_path))
    assert again.cache_hit is False
    feeds = random_feeds(model.inputs, seed=2)
    np.testing.assert_array_equal(first.run(feeds)["probs"], again.run(feeds)["probs"])
    assert nnport.compile(model, "ncnn:cpu", cache_dir=str(tmp_path)).cache_hit is True


def test_cache_dir_defaults_to_nnport_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNPORT_CACHE_DIR", str(tmp_path))
    compiled = nnport.compile(nnport.zoo.load("mlp"), "ncnn:cpu")
    assert Path(compiled.info["ncnn_param"]).is_relative_to(tmp_path / "ncnn")


# -- name mapping --------------------------------------------------------------------------------


def test_multi_io_names_map_back_by_order_and_shape(ncnn_cache):
    """Inputs (zeta, alpha) and outputs (omega, gamma, beta): pnnx calls them in0/in1, out0..out2."""
    nodes = [
        helper.make_node("Add", ["zeta", "alpha"], ["s"]),
        helper.make_node("Mul", ["zeta", "alpha"], ["p"]),
        helper.make_node("Relu", ["s"], ["omega"]),
        helper.make_node("Sigmoid", ["p"], ["beta"]),
        helper.make_node("ReduceSum", ["p"], ["gamma"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "multi",
        [_vi("zeta", [1, 4, 8]), _vi("alpha", [1, 4, 8])],
        [_vi("omega", [1, 4, 8]), _vi("gamma", [1, 1, 1]), _vi("beta", [1, 4, 8])],
    )
    model = nnport.load(_model(graph))
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    assert compiled.info["blobs"] == {"zeta": "in0", "alpha": "in1", "omega": "out0", "gamma": "out1", "beta": "out2"}
    assert [s.name for s in compiled.outputs] == ["omega", "gamma", "beta"]
    feeds = random_feeds(model.inputs, seed=3)
    want = nnport.compile(model, "onnxruntime:cpu").run(feeds)
    assert max_rel_error(compiled.run(feeds), want) <= 1e-5


def test_native_param_bin_model(ncnn_cache, tmp_path):
    source = nnport.compile(nnport.zoo.load("cnn"), "ncnn:cpu", cache_dir=ncnn_cache)
    param = Path(source.info["ncnn_param"])
    (tmp_path / "cnn.param").write_bytes(param.read_bytes())
    (tmp_path / "cnn.bin").write_bytes(param.with_suffix(".bin").read_bytes())
    specs = dict(
        inputs=[TensorSpec("in0", (1, 3, 32, 32), np.float32)], outputs=[TensorSpec("out0", (1, 10), np.float32)]
    )
    native = nnport.compile(nnport.load(tmp_path / "cnn.param", **specs), "ncnn:cpu")
    feeds, want = reference("cnn")
    got = native.run({"in0": feeds["image"]})
    assert max_rel_error({"probs": got["out0"]}, want) <= 1e-5
    bad = dict(inputs=[TensorSpec("image", (1, 3, 32, 32), np.float32)], outputs=specs["outputs"])
    with pytest.raises(UnsupportedModel, match=r"inputs are \['in0'\]"):
        nnport.compile(nnport.load(tmp_path / "cnn.param", **bad), "ncnn:cpu", fallback=False)


# -- guards ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_compiled(tmp_path_factory):
    return nnport.compile(nnport.zoo.load("cnn"), "ncnn:cpu", cache_dir=str(tmp_path_factory.mktemp("cnn")))


def test_float64_is_refused_on_every_path(cnn_compiled):
    x64 = reference("cnn")[0]["image"].astype(np.float64)
    with pytest.raises(InputError, match="float64.*float32"):
        cnn_compiled.run({"image": x64})
    binding = cnn_compiled.backend.allocate(cnn_compiled)
    binding.inputs["image"] = x64  # edited by hand after allocation
    with pytest.raises(InputError, match="float64"):
        cnn_compiled.backend.execute(cnn_compiled, binding)
    with pytest.raises(InputError, match="float64"):
        nnport.measure(cnn_compiled, inputs={"image": x64}, warmup=0, min_iterations=1, min_duration_s=0.001)
    with pytest.raises(InputError, match="float64"):  # the program itself, beneath the core's checks
        cnn_compiled.native.infer({"image": x64})


def test_non_contiguous_inputs_give_the_right_answer(cnn_compiled):
    feeds, want = reference("cnn")
    x = feeds["image"]
    fortran = np.asfortranarray(x)
    strided = np.repeat(x, 2, axis=3)[..., ::2]
    assert not fortran.flags.c_contiguous and not strided.flags.c_contiguous
    for variant in (fortran, strided):
        assert max_rel_error(cnn_compiled.run({"image": variant}), want) <= 1e-5


def test_in_place_first_layer_neither_crashes_nor_writes_into_the_input(ncnn_cache):
    """Relu first: ncnn works in place on the input blob (a segfault on a wrapped numpy buffer)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["r"], ["y"])]
    model = nnport.load(_model(helper.make_graph(nodes, "relu_first", [_vi("x", [1, 4, 8])], [_vi("y", [1, 4, 8])])))
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    x = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)
    before = x.copy()
    y = compiled.run({"x": x})["y"]
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-np.maximum(before, 0))), rtol=1e-6, atol=1e-6)


def test_staged_input_survives_an_in_place_first_layer_call_after_call(ncnn_cache):
    """The staging Mat is reused every call: an in-place first layer must clone it, never write it.

    Each call's answer must be
    its own input's (no leftovers from the previous call), the caller's arrays
    stay untouched, and after each call only Python holds the staging Mat (the
    extractor released it: refcount 1).
    """
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])]
    model = nnport.load(
        _model(helper.make_graph(nodes, "relu_neg", [_vi("x", [1, 3, 5, 7])], [_vi("y", [1, 3, 5, 7])]))
    )
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    program = compiled.native
    assert program.plan["x"]["staged"]
    assert program.net.layers()[1].support_inplace  # the premise: ReLU works in place
    rng = np.random.default_rng(0)
    for call in range(4):
        x = rng.standard_normal((1, 3, 5, 7)).astype(np.float32)
        if call % 2:
            x = np.asfortranarray(x)  # strided: the staging copy reads strides
        before = x.copy()
        y = compiled.run({"x": x})["y"]
        np.testing.assert_array_equal(x, before)
        np.testing.assert_array_equal(y, -np.maximum(before, 0))
        mat, view = program._tls.stage[0]
        np.testing.assert_array_equal(view, before)  # ReLU ran on a clone, not on the staging Mat
        assert mat.refcount == 1


def test_staged_input_with_padded_channel_step_matches_onnxruntime(ncnn_cache):
    """A convolution first (no in-place layer) on a staging Mat whose channel step ncnn pads, beside ONNX Runtime."""
    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv_odd", [_vi("x", [1, 3, 5, 7])], [_vi("y", [1, 4, 5, 7])], initializer=[weight]
    )
    model = nnport.load(_model(graph))
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    reference_model = nnport.compile(model, "onnxruntime:cpu")
    for seed in range(3):
        feeds = random_feeds(model.inputs, seed=seed)
        assert max_rel_error(compiled.run(feeds), reference_model.run(feeds)) <= 1e-5
    view = compiled.native._tls.stage[0][1]
    assert view.shape == (1, 3, 5, 7) and view.strides[1] == 36 * 4  # ncnn pads each channel: 35 -> 36 floats
    strided = {"x": np.repeat(feeds["x"], 2, axis=3)[..., ::2]}
    assert max_rel_error(compiled.run(strided), reference_model.run(feeds)) <= 1e-5


def test_each_thread_stages_into_its_own_mats(cnn_compiled):
    seen: list[object] = []

    def work() -> None:
        cnn_compiled.run(random_feeds(cnn_compiled.inputs, seed=0))
        seen.append(cnn_compiled.native._tls.stage[0][0])

    for _ in range(2):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    cnn_compiled.run(random_feeds(cnn_compiled.inputs, seed=0))
    mine = cnn_compiled.native._tls.stage[0][0]
    assert len({id(m) for m in (*seen, mine)}) == 3


def test_unrolled_single_io_path_agrees_with_the_general_one(cnn_compiled):
    """One staged input and one output take an unrolled copy of ``_one``: same answer, same guards."""
    program = cnn_compiled.native
    assert program.run_checked is program._sample and program._sample != program._one
    for seed in range(2):
        feeds = random_feeds(cnn_compiled.inputs, seed=seed)
        np.testing.assert_array_equal(program.run_checked(feeds)["probs"], program._one(feeds)["probs"])
    with pytest.raises(InputError, match="float64"):
        program.infer({"image": feeds["image"].astype(np.float64)})


def test_outputs_are_copies_that_outlive_ncnn(ncnn_cache):
    model = nnport.zoo.load("cnn")
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache)
    feeds, want = reference("cnn")
    out = compiled.run(feeds)["probs"]
    root = out
    while isinstance(root.base, np.ndarray):
        root = root.base
    assert root.base is None and root.flags.owndata  # numpy memory, not a view of an ncnn Mat
    kept = out.copy()
    del compiled
    gc.collect()
    for _ in range(5):  # reuse the freed memory
        nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache).run(random_feeds(model.inputs, seed=9))
    np.testing.assert_array_equal(out, kept)


def test_np_array_of_a_mat_copies():
    """The fact the output guard relies on: np.array(mat) owns its data."""
    mat = ncnn.Mat(np.arange(12, dtype=np.float32).reshape(3, 4)).clone()
    copy = np.array(mat)
    view = np.asarray(mat)
    assert copy.flags.owndata
    view[0, 0] = 42.0
    assert copy[0, 0] == 0.0 and np.array(mat)[0, 0] == 42.0


def test_concurrent_runs_each_get_their_own_extractor(cnn_compiled):
    model = nnport.zoo.load("cnn")
    inputs = [random_feeds(model.inputs, seed=s) for s in range(4)]
    expected = [cnn_compiled.run(f)["probs"] for f in inputs]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = cnn_compiled.run(inputs[i])["probs"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], expected[i])


def test_wrong_names_are_input_errors(cnn_compiled):
    x = reference("cnn")[0]["image"]
    with pytest.raises(InputError, match=r"missing input\(s\) \['image'\].*unexpected input\(s\) \['in0'\]"):
        cnn_compiled.run({"in0": x})
    binding = cnn_compiled.backend.allocate(cnn_compiled)
    binding.inputs = {"data": x}
    with pytest.raises(InputError, match="missing"):
        cnn_compiled.backend.execute(cnn_compiled, binding)


# -- batch -----------------------------------------------------------------------------------------


def test_per_sample_graph_loops_over_the_batch(ncnn_cache):
    model = nnport.zoo.load("mlp_dynamic")
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache)
    assert compiled.info["per_sample_batch"] is True
    assert compiled.inputs[0].shape == ("batch", 64)
    reference_model = nnport.compile(model, "onnxruntime:cpu")
    for batch in (1, 3):
        feeds = random_feeds(model.inputs, seed=batch, dim_values={"batch": batch})
        got, want = compiled.run(feeds), reference_model.run(feeds)
        assert got["probs"].shape == (batch, 10)
        assert max_rel_error(got, want) <= 1e-5


def test_per_sample_inputs_must_share_the_batch(ncnn_cache):
    """Two inputs on one symbolic batch: the core checks fixed dims only, the loop checks the batch."""
    nodes = [helper.make_node("Add", ["x", "z"], ["y"])]
    graph = helper.make_graph(nodes, "add2", [_vi("x", ["batch", 4]), _vi("z", ["batch", 4])], [_vi("y", ["batch", 4])])
    model = nnport.load(_model(graph))
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    assert compiled.info["per_sample_batch"] is True
    assert not compiled.info["input_plan"]["x"]["shape_checked_here"]  # the loop pins each sample's shape
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(compiled.run({"x": x, "z": z})["y"], x + z, rtol=1e-6)
    for bad in ({"x": x, "z": z[:2]}, {"x": x[:1], "z": z}):  # the first input's batch above or below the other's
        with pytest.raises(InputError, match="batch sizes differ"):
            compiled.run(bad)


def test_fixed_batch_graph_rejects_other_batches(cnn_compiled):
    x = np.concatenate([reference("cnn")[0]["image"]] * 2)
    with pytest.raises(InputError, match="axis 0 must be 1"):
        cnn_compiled.run({"image": x})


def test_batch_mixing_graph_is_not_looped(ncnn_cache):
    """y = x + sum(x over the batch): symbolic batch in and out, but not per-sample."""
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    graph = helper.make_graph(nodes, "mix", [_vi("x", ["batch", 8])], [_vi("y", ["batch", 8])], initializer=[axes])
    model = nnport.load(_model(graph))
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    assert compiled.info["per_sample_batch"] is False
    assert "not per-sample" in compiled.info["verified"]
    assert compiled.info["input_plan"]["x"]["shape_checked_here"]  # the core lets batch 3 through: the plugin must not
    one = random_feeds(model.inputs, seed=0)
    assert max_rel_error(compiled.run(one), nnport.compile(model, "onnxruntime:cpu").run(one)) <= 1e-5
    with pytest.raises(InputError, match=r"shape \[3, 8\], expected \[1, 8\].*per-sample"):
        compiled.run(random_feeds(model.inputs, seed=0, dim_values={"batch": 3}))


def test_fixed_leading_dim_above_one_runs_per_sample(ncnn_cache):
    """[2,8,16,16]: pnnx takes the 2 for a batch and drops it; nnport runs both samples."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "conv_n2", [_vi("x", [2, 8, 16, 16])], [_vi("y", [2, 16, 16, 16])], initializer=[weight]
    )
    model = nnport.load(_model(graph))
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    assert compiled.native.fixed_n == 2
    feeds = random_feeds(model.inputs, seed=0)
    got, want = compiled.run(feeds), nnport.compile(model, "onnxruntime:cpu").run(feeds)
    assert got["y"].shape == (2, 16, 16, 16)
    assert max_rel_error(got, want) <= 1e-5


def test_graph_ncnn_computes_wrongly_is_refused_at_compile(ncnn_cache):
    """Opset-18 ReduceMean (axes as an input): ncnn returns the unreduced tensor; caught before any run."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph([node], "rmean18", [_vi("x", [2, 16, 10])], [_vi("y", [2, 10])], initializer=[axes])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    model = nnport.load(proto)
    with pytest.raises(UnsupportedModel, match=r"has 320 elements .* expected shape \[2, 10\]"):
        nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)
    assert nnport.compile(model, ["ncnn:cpu", "onnxruntime:cpu"], cache_dir=ncnn_cache).device.id == "onnxruntime:cpu"


def test_symbolic_spatial_dims_convert_at_the_feed_shape_or_given_shapes(ncnn_cache):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "dyn", [_vi("x", [1, 3, "h", "w"])], [_vi("y", [1, 3, "h", "w"])])
    model = nnport.load(_model(graph))
    lazy = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False)  # no backend-specific key needed
    x6 = np.random.default_rng(1).standard_normal((1, 3, 6, 10)).astype(np.float32)
    np.testing.assert_array_equal(lazy.run({"x": x6})["y"], np.maximum(x6, 0))
    assert lazy.info["specializations"][0]["shapes"] == {"x[2]": 6, "x[3]": 10}
    static = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False, shapes={"x": (1, 3, 8, 8)})
    assert static.inputs[0].shape == (1, 3, 8, 8)
    compiled = nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, extra={"ncnn_input_shapes": {"x": [1, 3, 8, 8]}})
    assert compiled.inputs[0].shape == (1, 3, 8, 8)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], np.maximum(x, 0))
    with pytest.raises(CompileError, match="unknown input"):
        nnport.compile(model, "ncnn:cpu", cache_dir=ncnn_cache, fallback=False, extra={"ncnn_input_shapes": {"z": [1]}})


# -- helpers ---------------------------------------------------------------------------------------


def _vi(name: str, shape: list) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(graph: object) -> object:
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto
