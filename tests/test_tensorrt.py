"""TensorRT backend: the pure decisions everywhere, the engine path where a GPU and TensorRT exist.

Most machines nnport is developed on have neither an NVIDIA GPU nor TensorRT
(its wheels download from NVIDIA's index).  So the decisions that need no GPU
(probe reasons, option mapping, optimization profiles, precision policy,
dtype mapping, parser-error translation, engine cache keys, stage-time
summaries) are plain functions tested here with real inputs; the engine tests
at the bottom skip with ``probe()``'s exact reason when TensorRT or a GPU is
absent.  No fake ``tensorrt`` module is used anywhere.
"""

from __future__ import annotations

import enum
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

import nnport
from nnport import zoo
from nnport.data import random_feeds
from nnport.errors import (
    BackendUnavailable,
    CompileError,
    ExecutionError,
    InputError,
    UnsupportedModel,
    UnsupportedPrecision,
)
from nnport.plugins import _tensorrt_util as util
from nnport.plugins.tensorrt import TensorRTBackend, _driver_status, _libcuda
from nnport.types import CompileOptions, Device, TensorSpec

PROBE = TensorRTBackend.probe()


@pytest.fixture
def trt_ready():
    """Skip with probe()'s precise reason unless TensorRT and a CUDA GPU are usable."""
    if PROBE is not None:
        pytest.skip(PROBE)


def _device(index: int = 0, cc: str = "8.9", name: str = "NVIDIA GeForce RTX 4090") -> Device:
    return Device(
        id=f"tensorrt:cuda:{index}",
        backend="tensorrt",
        kind="gpu",
        name=name,
        properties={"index": index, "compute_capability": cc},
    )


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> nnport.Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return nnport.load(proto)


def _fp16_model() -> nnport.Model:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])
    return _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])


def _qdq_model() -> nnport.Model:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("zp", TensorProto.INT8, [], [0])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
        helper.make_node("Relu", ["dq"], ["y"]),
    ]
    return _model(nodes, [x], [y], [scale, zp])


# -- probe -------------------------------------------------------------------------------------


def test_backend_identity():
    assert (TensorRTBackend.name, TensorRTBackend.vendor, TensorRTBackend.priority) == ("tensorrt", "NVIDIA", 100)
    caps = TensorRTBackend().capabilities(_device())
    assert caps.precisions == ("fp32", "fp16", "int8") and caps.dynamic_shapes
    assert any("strongly typed" in n for n in caps.notes)


def test_probe_says_tensorrt_is_missing_and_how_to_install_it():
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the missing-module reason cannot occur")
    assert PROBE == util.probe_reason(has_tensorrt=False)
    assert PROBE.startswith("the tensorrt package is not installed")
    assert "pip install tensorrt" in PROBE and "pypi.nvidia.com" in PROBE


NO_DRIVER = util.DriverStatus(error="libcuda.so.1: cannot open shared object file")
OK_DRIVER = util.DriverStatus(library="libcuda.so.1", version=12040, init_result=0, device_count=2)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(has_tensorrt=False, has_cuda_python=False, driver=NO_DRIVER), "the tensorrt package is not installed"),
        (dict(has_tensorrt=True, has_cuda_python=False, driver=NO_DRIVER), "cuda-python is not installed"),
        (
            dict(has_tensorrt=True, driver=NO_DRIVER),
            "no NVIDIA driver: the CUDA driver library (libcuda) was not found (libcuda.so.1: cannot open",
        ),
        (dict(has_tensorrt=True, driver=None), "no NVIDIA driver"),
        (
            dict(
                has_tensorrt=True,
                driver=util.DriverStatus(library="libcuda.so.1", version=11080, init_result=0, device_count=1),
                required_major=12,
                required_by="tensorrt-cu12",
            ),
            "the NVIDIA driver is too old: it supports CUDA 11.8, but tensorrt-cu12 needs CUDA 12.x",
        ),
        (
            dict(has_tensorrt=True, driver=util.DriverStatus(library="libcuda.so.1", version=12040, init_result=100)),
            "cuInit failed: no CUDA device was found (CUDA_ERROR_NO_DEVICE)",
        ),
        (
            dict(has_tensorrt=True, driver=util.DriverStatus(library="libcuda.so.1", version=12040, init_result=999)),
            "CUDA_ERROR_UNKNOWN",
        ),
        (
            dict(
                has_tensorrt=True,
                driver=util.DriverStatus(library="libcuda.so.1", version=12040, init_result=0, device_count=0),
            ),
            "no CUDA device: the NVIDIA driver reports 0 GPUs",
        ),
        (
            dict(has_tensorrt=True, driver=util.DriverStatus(library="libcuda.so", error="missing symbol: cuInit")),
            "could not be used: missing symbol",
        ),
        (dict(has_tensorrt=True, driver=OK_DRIVER, required_major=12, required_by="tensorrt-cu12"), None),
        (dict(has_tensorrt=True, driver=OK_DRIVER, required_major=None), None),
    ],
)
def test_probe_reason_names_the_first_thing_to_fix(kwargs, expected):
    reason = util.probe_reason(**kwargs)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


def test_driver_newer_than_required_is_fine_but_older_major_is_not():
    ok = util.DriverStatus(library="libcuda.so.1", version=13010, init_result=0, device_count=1)
    assert util.probe_reason(has_tensorrt=True, driver=ok, required_major=12, required_by="x") is None
    old = util.DriverStatus(library="libcuda.so.1", version=12090, init_result=0, device_count=1)
    assert "CUDA 12.9" in util.probe_reason(
        has_tensorrt=True, driver=old, required_major=13, required_by="tensorrt-cu13"
    )


def test_this_machines_driver_status_is_consistent_with_libcuda():
    """The real ctypes path: where libcuda is absent the reason says so; where present it was queried."""
    lib, name, why = _libcuda()
    status = _driver_status()
    if lib is None:
        assert status.library is None and status.error == why
        assert util.probe_reason(has_tensorrt=True, driver=status).startswith("no NVIDIA driver")
    else:
        assert status.library == name and (status.init_result is not None or status.error)


@pytest.mark.parametrize(
    "dists, expected",
    [
        ({"tensorrt": "10.3.0", "tensorrt-cu12": "10.3.0", "tensorrt_cu12_libs": "10.3.0"}, (12, "tensorrt-cu12")),
        ({"tensorrt_cu13_libs": "11.0.0", "cuda-python": "12.6.0"}, (13, "tensorrt_cu13_libs")),
        ({"tensorrt-cu12": "10.9", "cuda-bindings": "13.0.1"}, (13, "cuda-bindings 13.0.1")),
        ({"tensorrt": "10.0.1"}, (None, "")),
        ({}, (None, "")),
        ({"cuda-python": "not-a-version"}, (None, "")),
    ],
)
def test_required_cuda_major_from_installed_wheels(dists, expected):
    assert util.required_cuda_major(dists) == expected


def test_cuda_versions_and_cuinit_codes_read_as_words():
    assert [util.format_cuda_version(v) for v in (12040, 11080, 13000, 12090)] == ["12.4", "11.8", "13.0", "12.9"]
    assert "CUDA_ERROR_NO_DEVICE" in util.cu_result_reason(100)
    assert "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH" in util.cu_result_reason(803, "cuDeviceGetCount")
    assert util.cu_result_reason(803, "cuDeviceGetCount").startswith("cuDeviceGetCount failed")
    assert util.cu_result_reason(12345) == "cuInit failed with CUresult 12345"


def test_cuda_result_unpacks_and_translates_errors():
    CudaError = enum.IntEnum(
        "cudaError_t", {"cudaSuccess": 0, "cudaErrorMemoryAllocation": 2, "cudaErrorInvalidValue": 1}
    )
    assert util.cuda_result((CudaError.cudaSuccess,), "cudaStreamSynchronize") is None
    assert util.cuda_result((CudaError.cudaSuccess, 1234), "cudaMalloc") == 1234
    assert util.cuda_result((0, 1, 2), "x") == (1, 2)
    with pytest.raises(
        ExecutionError, match=r"CUDA cudaMalloc\(64\) failed: cudaErrorMemoryAllocation \(2\) \(out of GPU memory\)"
    ):
        util.cuda_result((CudaError.cudaErrorMemoryAllocation, 0), "cudaMalloc(64)")
    with pytest.raises(ExecutionError, match=r"cudaMemcpyAsync failed: error 1 \(1\)"):
        util.cuda_result((1,), "cudaMemcpyAsync")
    with pytest.raises(ExecutionError, match="expected a"):
        util.cuda_result(None, "cudaFree")


def test_real_cuda_python_api_surface_and_error_translation():
    """Against NVIDIA's real cuda-python (where installed): the calls the backend makes exist, and a
    failing call (no driver / no GPU here) becomes an ExecutionError naming the call and the CUDA error."""
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python >= 12.6 is not installed")
    from nnport.plugins.tensorrt import _cudart

    rt = _cudart()
    for name in (
        "cudaSetDevice",
        "cudaMalloc",
        "cudaFree",
        "cudaMemcpyAsync",
        "cudaStreamCreate",
        "cudaStreamSynchronize",
        "cudaStreamDestroy",
        "cudaEventCreate",
        "cudaEventRecord",
        "cudaEventElapsedTime",
        "cudaEventDestroy",
    ):
        assert callable(getattr(rt, name)), name
    assert (
        int(rt.cudaMemcpyKind.cudaMemcpyHostToDevice.value) == 1
        and int(rt.cudaMemcpyKind.cudaMemcpyDeviceToHost.value) == 2
    )
    assert int(rt.cudaStream_t()) == 0  # execute_async_v3 gets int(stream)
    result = rt.cudaGetDeviceCount()
    if int(result[0].value) == 0:
        assert util.cuda_result(result, "cudaGetDeviceCount") >= 1
    else:
        with pytest.raises(
            ExecutionError, match=rf"CUDA cudaGetDeviceCount failed: {result[0].name} \({int(result[0].value)}\)"
        ):
            util.cuda_result(result, "cudaGetDeviceCount")


# -- options -----------------------------------------------------------------------------------


def test_builder_settings_map_options():
    specs = zoo.load("mlp").inputs
    s = util.builder_settings(CompileOptions(extra={"workspace_mb": 512, "builder_optimization_level": 5}), specs)
    assert s.workspace_bytes == 512 << 20 and s.optimization_level == 5 and s.profile == {} and s.notes == ()
    s = util.builder_settings(CompileOptions(extra={"workspace_mb": 0.5}), specs)
    assert s.workspace_bytes == 1 << 19
    d = util.builder_settings(CompileOptions(), specs)
    assert d.workspace_bytes is None and d.optimization_level is None
    noted = util.builder_settings(CompileOptions(threads=4, hint="throughput"), specs)
    assert any("threads=4 ignored" in n for n in noted.notes) and any("throughput" in n for n in noted.notes)


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"workspace_mb": -1}, "workspace_mb"),
        ({"workspace_mb": "big"}, "workspace_mb"),
        ({"workspace_mb": True}, "workspace_mb"),
        ({"workspace_mb": math.inf}, "workspace_mb"),
        ({"builder_optimization_level": 6}, "0..5"),
        ({"builder_optimization_level": 2.5}, "0..5"),
    ],
)
def test_builder_settings_reject_bad_values(extra, match):
    with pytest.raises(CompileError, match=match):
        util.builder_settings(CompileOptions(extra=extra), zoo.load("mlp").inputs)


# -- optimization profiles --------------------------------------------------------------------------

DYN = (TensorSpec("x", ("batch", 64), np.float32),)


def test_static_model_needs_no_profile():
    assert util.derive_profile(zoo.load("mlp").inputs, {}) == {}
    # a shape given for a static input must equal it, and adds nothing
    assert util.derive_profile(zoo.load("mlp").inputs, {"shapes": {"x": [1, 64]}}) == {}
    with pytest.raises(CompileError, match=r"has 2 at axis 0, but the model fixes it to 1"):
        util.derive_profile(zoo.load("mlp").inputs, {"shapes": {"x": [2, 64]}})


def test_default_profile_for_dynamic_dims():
    lo, opt, hi = util.DEFAULT_DYNAMIC_RANGE
    assert util.derive_profile(zoo.load("mlp_dynamic").inputs, {}) == {"x": ((lo, 64), (opt, 64), (hi, 64))}
    unnamed = (TensorSpec("img", (None, 3, None, None), np.float32),)
    p = util.derive_profile(unnamed, {})["img"]
    assert p.min == (lo, 3, lo, lo) and p.max == (hi, 3, hi, hi)


def test_profile_from_dims_shapes_and_explicit_ranges():
    assert util.derive_profile(DYN, {"dims": {"batch": 8}}) == {"x": ((8, 64), (8, 64), (8, 64))}
    assert util.derive_profile(DYN, {"dims": {"batch": [1, 4, 16]}}) == {"x": ((1, 64), (4, 64), (16, 64))}
    assert util.derive_profile(DYN, {"shapes": {"x": (4, 64)}}) == {"x": ((4, 64), (4, 64), (4, 64))}
    given = {"min": [1, 64], "opt": [8, 64], "max": [16, 64]}
    assert util.derive_profile(DYN, {"profile": {"x": given}}) == {"x": ((1, 64), (8, 64), (16, 64))}
    assert util.derive_profile(DYN, {"profile": {"x": [[1, 64], [2, 64], [3, 64]]}})["x"].opt == (2, 64)
    # the per-input profile wins over the symbol
    assert util.derive_profile(DYN, {"profile": {"x": given}, "dims": {"batch": 2}})["x"].max == (16, 64)


def test_shared_symbol_gets_one_range_in_every_input():
    specs = (
        TensorSpec("a", ("batch", 3), np.float32),
        TensorSpec("b", ("batch", "seq"), np.int64),
        TensorSpec("c", (5,), np.float32),
    )
    p = util.derive_profile(specs, {"dims": {"batch": [2, 4, 8], "seq": 7}})
    assert set(p) == {"a", "b"}
    assert p["a"] == ((2, 3), (4, 3), (8, 3)) and p["b"] == ((2, 7), (4, 7), (8, 7))


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"shapes": {"y": [1, 64]}}, r"unknown input\(s\) \['y'\]; the model's inputs are \['x'\]"),
        ({"profile": {"nope": [[1], [1], [1]]}}, r"unknown input\(s\) \['nope'\]"),
        ({"dims": {"seq": 4}}, r"unknown dimension\(s\) \['seq'\]; the model's symbolic dimensions are \['batch'\]"),
        ({"shapes": {"x": [4]}}, r"has rank 1, expected rank 2"),
        ({"shapes": {"x": [4, 32]}}, r"has 32 at axis 1, but the model fixes it to 64"),
        ({"shapes": {"x": [0, 64]}}, r"integers >= 1"),
        ({"shapes": {"x": "4,64"}}, r"sequence of integers"),
        ({"shapes": {"x": [2.5, 64]}}, r"integers >= 1"),
        (
            {"profile": {"x": {"min": [4, 64], "opt": [2, 64], "max": [8, 64]}}},
            r"min <= opt <= max .* axis 0 has min 4, opt 2, max 8",
        ),
        ({"profile": {"x": {"min": [1, 64], "max": [8, 64]}}}, r"missing \['opt'\]"),
        ({"profile": {"x": {"min": [1, 64], "opt": [1, 64], "max": [8, 64], "best": [1, 64]}}}, r"unknown \['best'\]"),
        ({"profile": {"x": [1, 8, 16]}}, r"\{'min': shape"),
        (
            {"profile": {"x": [[1, 64], [2, 64], [3, 64]]}, "shapes": {"x": [1, 64]}},
            r"both extra\['profile'\] and extra\['shapes'\]",
        ),
        ({"dims": {"batch": [8, 4, 16]}}, r"min <= opt <= max"),
        ({"dims": {"batch": 0}}, r">= 1"),
        ({"dims": {"batch": "many"}}, r"an integer or \[min, opt, max\]"),
        ({"shapes": [[1, 64]]}, r"extra\['shapes'\] must be a mapping"),
    ],
)
def test_profile_errors_name_the_input_and_the_problem(extra, match):
    with pytest.raises(CompileError, match=match) as info:
        util.derive_profile(DYN, extra)
    assert "backend 'tensorrt'" in str(info.value)


def test_profile_violation_message():
    p = util.ProfileShapes((1, 64), (1, 64), (32, 64))
    assert util.profile_violation("x", (1, 64), p) is None
    assert util.profile_violation("x", (32, 64), p) is None
    msg = util.profile_violation("x", (33, 64), p)
    assert "input 'x' has shape [33, 64]" in msg and "min [1, 64], max [32, 64]" in msg and "'profile'" in msg
    assert util.profile_violation("x", (4,), p) is not None


# -- precision ---------------------------------------------------------------------------------------


def test_model_precisions_tell_fp32_fp16_qdq_and_qoperator_apart():
    assert util.model_precisions(zoo.load("mlp").proto) == frozenset()
    assert util.model_precisions(zoo.load("cnn").proto) == frozenset()
    assert util.model_precisions(_fp16_model().proto) == {"fp16"}
    assert util.model_precisions(_qdq_model().proto) == {"int8"}
    a = helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 2])
    b = helper.make_tensor_value_info("b", TensorProto.UINT8, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [2, 2])
    qop = _model([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], [a, b], [y])
    assert util.model_precisions(qop.proto) == {"qoperator"}


def test_model_precisions_see_casts_and_subgraphs():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    casts = _model(
        [
            helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT),
        ],
        [x],
        [y],
    )
    assert util.model_precisions(casts.proto) == {"fp16"}
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    out16 = helper.make_tensor_value_info("o", TensorProto.FLOAT16, [2])
    then_g = helper.make_graph([helper.make_node("Cast", ["x"], ["o"], to=TensorProto.FLOAT16)], "then", [], [out16])
    else_g = helper.make_graph([helper.make_node("Cast", ["x"], ["o"], to=TensorProto.FLOAT16)], "else", [], [out16])
    outer = helper.make_tensor_value_info("r", TensorProto.FLOAT16, [2])
    branchy = _model([helper.make_node("If", ["c"], ["r"], then_branch=then_g, else_branch=else_g)], [cond, x], [outer])
    assert "fp16" in util.model_precisions(branchy.proto)
    # the main graph of a plain fp32 model has no fp16 anywhere
    assert "fp16" not in util.model_precisions(zoo.load("attention").proto)


def test_precision_policy_is_strongly_typed():
    assert util.precision_problem("fp32", frozenset()) is None
    assert util.precision_problem("fp32", {"fp16", "int8"}) is None
    assert util.precision_problem("fp16", {"fp16"}) is None
    assert util.precision_problem("int8", {"int8", "fp16"}) is None
    fp16 = util.precision_problem("fp16", frozenset())
    assert "nnport compress" in fp16 and "strongly typed" in fp16 and "BuilderFlag.FP16" in fp16
    int8 = util.precision_problem("int8", {"fp16"})
    assert "Q/DQ" in int8 and "nnport compress" in int8 and "calibrators" in int8
    assert "QOperator" in util.precision_problem("int8", {"qoperator"})
    assert "QOperator" in util.precision_problem("int8", {"qoperator", "int8"})  # MatMulInteger would fail the parser
    assert "unknown precision" in util.precision_problem("int4", frozenset())


def test_what_nnport_compress_writes_is_what_a_strongly_typed_build_takes():
    """fp16 and static (Q/DQ) int8 from nnport.compress pass the precision policy; dynamic int8
    (MatMulInteger, which TensorRT's parser lacks) is refused with the reason."""
    compress = pytest.importorskip("nnport.compress")
    pytest.importorskip("onnxruntime.quantization")
    mlp = zoo.load("mlp")
    fp16 = compress.quantize(mlp, "fp16")
    assert util.precision_problem("fp16", util.model_precisions(fp16.proto)) is None
    with pytest.warns(Warning):
        qdq = compress.quantize(mlp, "int8", calibration="random", activations="int8")
    assert util.precision_problem("int8", util.model_precisions(qdq.proto)) is None
    with pytest.warns(Warning):
        asymmetric = compress.quantize(mlp, "int8", calibration="random")  # uint8 activations: ORT's fast default
    assert "--activations int8" in util.precision_problem("int8", util.model_precisions(asymmetric.proto))
    dynamic = compress.quantize(mlp, "int8", method="dynamic")
    assert "QOperator" in util.precision_problem("int8", util.model_precisions(dynamic.proto))
    with pytest.raises(UnsupportedPrecision, match="QOperator"):
        TensorRTBackend().compile(dynamic, _device(), CompileOptions(precision="int8"))


def test_compile_refuses_reduced_precision_on_an_fp32_model_before_touching_tensorrt():
    backend = TensorRTBackend()
    mlp = zoo.load("mlp")
    with pytest.raises(UnsupportedPrecision, match=r"backend 'tensorrt', device 'tensorrt:cuda:0'.*nnport compress"):
        backend.compile(mlp, _device(), CompileOptions(precision="fp16"))
    with pytest.raises(UnsupportedPrecision, match="Q/DQ"):
        backend.compile(mlp, _device(), CompileOptions(precision="int8"))
    with pytest.raises(CompileError, match="workspace_mb"):
        backend.compile(mlp, _device(), CompileOptions(extra={"workspace_mb": -5}))
    with pytest.raises(CompileError, match=r"unknown dimension\(s\) \['batch'\]"):
        backend.compile(mlp, _device(), CompileOptions(extra={"dims": {"batch": 4}}))


def test_compile_without_tensorrt_is_backend_unavailable(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(BackendUnavailable, match="import tensorrt failed"):
        TensorRTBackend().compile(_fp16_model(), _device(), CompileOptions(precision="fp16", cache_dir=str(tmp_path)))
    assert not any(tmp_path.iterdir())


# -- dtypes and parser errors ----------------------------------------------------------------------------


def test_tensorrt_dtypes_map_to_numpy():
    DataType = enum.Enum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8 FP8 BF16 INT64 INT4 FP4")
    expected = {
        "FLOAT": np.float32,
        "HALF": np.float16,
        "INT8": np.int8,
        "INT32": np.int32,
        "BOOL": np.bool_,
        "UINT8": np.uint8,
        "INT64": np.int64,
    }
    for name, dtype in expected.items():
        assert util.numpy_dtype(DataType[name]) == np.dtype(dtype)
        assert util.numpy_dtype(f"DataType.{name}") == np.dtype(dtype)
    for name in ("FP8", "BF16", "INT4", "FP4"):
        with pytest.raises(UnsupportedModel, match=rf"{name} of I/O tensor 'logits' has no numpy equivalent"):
            util.numpy_dtype(DataType[name], "logits")
    with pytest.raises(UnsupportedModel, match="unknown TensorRT data type 'COMPLEX'"):
        util.numpy_dtype("DataType.COMPLEX")


NODES = [("fc1", "Gemm"), ("act", "Relu"), ("head", "CustomTopK")]


def test_parser_error_names_node_and_reason():
    err = util.parser_error(
        [(2, "No importer registered for op: CustomTopK. Attempting to import as plugin.", "UNSUPPORTED_NODE")],
        NODES,
        device="tensorrt:cuda:0",
    )
    assert isinstance(err, UnsupportedModel)
    text = str(err)
    assert text.startswith(
        "backend 'tensorrt', device 'tensorrt:cuda:0': TensorRT's ONNX parser rejected the model (error):"
    )
    assert (
        "node 2 'head' (CustomTopK): No importer registered for op: CustomTopK" in text and "[UNSUPPORTED_NODE]" in text
    )


def test_parser_error_prefers_tensorrt_node_names_and_classifies():
    # TensorRT 10 reports node_name/node_operator itself; those win over the graph lookup
    err = util.parser_error(
        [(0, "Invalid Node - fc1: weights must be constant", "INVALID_NODE", "fc1_trt", "Gemm")], NODES
    )
    assert type(err) is CompileError
    assert "node 0 'fc1_trt' (Gemm): Invalid Node" in str(err)
    # a message saying "unsupported" without a code still means UnsupportedModel (so selection falls back)
    assert isinstance(util.parser_error([(1, "Attribute mode is unsupported")], NODES), UnsupportedModel)
    # graph-level error: no node
    graph = util.parser_error([(-1, "Graph has a cycle", "INVALID_GRAPH")], NODES)
    assert "rejected the model (error): Graph has a cycle [INVALID_GRAPH]" in str(graph) and "node" not in str(graph)
    # node given by name, duplicates merged, count reported
    many = util.parser_error([("act", "bad input"), ("act", "bad input"), (5, "out of range index")], NODES)
    assert (
        "(2 errors)" in str(many) and "node 'act': bad input" in str(many) and "node 5: out of range index" in str(many)
    )
    assert "without an error description" in str(util.parser_error([], NODES))


# -- engine cache ---------------------------------------------------------------------------------------------

BASE = dict(
    model_hash="ab" * 32,
    options_key=CompileOptions().key(),
    trt_version="10.13.0.35",
    compute_capability="8.9",
    gpu_name="NVIDIA L4",
)


def test_engine_cache_key_is_stable_and_depends_on_everything():
    key = util.engine_cache_key(**BASE)
    assert key == util.engine_cache_key(**BASE) and len(key) == 24
    changes = {
        "model_hash": "cd" * 32,
        "options_key": CompileOptions(extra={"dims": {"batch": 8}}).key(),
        "trt_version": "11.0.0.1",
        "compute_capability": "9.0",
        "gpu_name": "NVIDIA H100 80GB HBM3",
    }
    keys = {key}
    for field_name, value in changes.items():
        keys.add(util.engine_cache_key(**{**BASE, field_name: value}))
    assert len(keys) == 1 + len(changes)
    assert CompileOptions(precision="fp16").key() != CompileOptions().key()
    # the GPU name is compared without surrounding whitespace (the driver pads it on some systems)
    assert util.engine_cache_key(**{**BASE, "gpu_name": " NVIDIA L4 "}) == key
    with pytest.raises(ValueError):
        util.engine_cache_key(**{**BASE, "compute_capability": ""})


def test_engine_cache_path(tmp_path):
    p = util.engine_cache_path(tmp_path, "light resnet/50", "k" * 24)
    assert p == tmp_path / "tensorrt" / f"light_resnet_50-{'k' * 24}.engine"
    assert util.engine_cache_path(tmp_path, "", "k").name == "model-k.engine"


# -- measurement ---------------------------------------------------------------------------------------------


def test_stage_times_are_medians_with_units():
    s = util.summarize_stage_times([(0.1, 2.0, 0.05), (0.3, 1.0, 0.07), (0.2, 3.0, 0.06)])
    assert (
        s["h2d_ms"] == pytest.approx(0.2)
        and s["compute_ms"] == pytest.approx(2.0)
        and s["d2h_ms"] == pytest.approx(0.06)
    )
    assert s["gpu_total_ms"] == pytest.approx(2.15) and s["stage_samples"] == 3
    for bad in ([], [(1.0, 2.0)], [(float("nan"), 1.0, 1.0)], [(-0.1, 1.0, 1.0)]):
        with pytest.raises(ValueError):
            util.summarize_stage_times(bad)


# -- where TensorRT or the GPU is absent -------------------------------------------------------------------------


def test_plugin_imports_no_sdk_and_backends_json_gives_the_reason():
    code = (
        "import json, sys, nnport, nnport.plugins.tensorrt as t\n"
        "rows = [r.to_dict() for r in nnport.backends()]\n"
        "print(json.dumps({'rows': rows, 'probe': t.TensorRTBackend.probe(),"
        " 'sdk': sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda'))}))\n"
    )
    env = {**os.environ, "NNPORT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
    data = json.loads(out.stdout)
    assert data["sdk"] == []  # listing backends imported neither tensorrt nor cuda-python
    row = next(r for r in data["rows"] if r["name"] == "tensorrt")
    assert row["vendor"] == "NVIDIA" and row["priority"] == 100
    if PROBE is None:
        assert row["status"] == "available"
    else:
        assert row["status"] == "unavailable" and row["available"] is False and row["reason"] == data["probe"] == PROBE


def test_cli_backends_json_lists_tensorrt_with_its_reason():
    env = {**os.environ, "NNPORT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "nnport", "backends", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    row = next(r for r in json.loads(out.stdout) if r["name"] == "tensorrt")
    assert row["reason"] == PROBE and row["available"] is (PROBE is None)


def test_compile_falls_back_to_onnxruntime_and_records_the_attempt():
    if PROBE is None:
        pytest.skip("TensorRT is usable here, so it would compile the model instead of falling back")
    mlp = zoo.load("mlp")
    compiled = nnport.compile(mlp, ["tensorrt", "onnxruntime"])
    assert compiled.device.id == "onnxruntime:cpu"
    assert [a[0] for a in compiled.attempts] == ["tensorrt"]
    err = compiled.attempts[0][1]
    assert isinstance(err, BackendUnavailable) and err.reason == PROBE
    feeds = random_feeds(mlp.inputs, seed=0)
    assert compiled.run(feeds)["probs"].shape == (1, 10)
    # named alone, tensorrt is an error carrying the same reason
    with pytest.raises(BackendUnavailable) as info:
        nnport.compile(mlp, "tensorrt")
    assert info.value.reason == PROBE
    # "auto" never offers an unusable tensorrt device
    assert all(d.backend != "tensorrt" for d in nnport.devices())


# -- the engine path: needs TensorRT and an NVIDIA GPU -----------------------------------------------------------


def _reference(model, feeds):
    return nnport.compile(model, "onnxruntime:cpu").run(feeds)


def test_devices_have_capability_and_memory(trt_ready):
    devices = nnport.devices("tensorrt")
    assert devices and all(d.id == f"tensorrt:cuda:{i}" for i, d in enumerate(devices))
    for d in devices:
        major, minor = d.properties["compute_capability"].split(".")
        assert int(major) >= 5 and d.properties["memory_bytes"] > 0 and d.name


def test_engine_matches_reference_and_cache_makes_warm_compile_a_deserialize(trt_ready, tmp_path):
    mlp = zoo.load("mlp")
    feeds = random_feeds(mlp.inputs, seed=0)
    cold = nnport.compile(mlp, "tensorrt", cache_dir=str(tmp_path))
    assert cold.cache_hit is False and cold.info["strongly_typed"]
    engines = list((tmp_path / "tensorrt").glob("*.engine"))
    assert len(engines) == 1
    warm = nnport.compile(mlp, "tensorrt", cache_dir=str(tmp_path))
    assert warm.cache_hit is True
    ref = _reference(mlp, feeds)["probs"]
    for c in (cold, warm):
        out = c.run(feeds)["probs"]
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
    first = cold.run(feeds)["probs"]
    cold.run({"x": feeds["x"] * 2})
    np.testing.assert_array_equal(first, cold.run(feeds)["probs"])  # returned arrays belong to the caller


def test_dynamic_batch_within_and_outside_the_profile(trt_ready):
    model = zoo.load("mlp_dynamic")
    compiled = nnport.compile(model, "tensorrt", extra={"dims": {"batch": [1, 4, 8]}})
    assert compiled.info["profile"]["x"] == {"min": [1, 64], "opt": [4, 64], "max": [8, 64]}
    for batch in (1, 3, 8):
        feeds = random_feeds(model.inputs, seed=batch, dim_values={"batch": batch})
        np.testing.assert_allclose(
            compiled.run(feeds)["probs"], _reference(model, feeds)["probs"], rtol=1e-3, atol=1e-4
        )
    big = random_feeds(model.inputs, dim_values={"batch": 9})
    with pytest.raises(InputError, match=r"outside the range the TensorRT engine was built for"):
        compiled.run(big)


def test_unsupported_operator_is_a_parser_error_naming_the_node(trt_ready):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery", domain="com.example")
    proto = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(UnsupportedModel, match="mystery"):
        TensorRTBackend().compile(nnport.load(proto, check=False), nnport.devices("tensorrt")[0], CompileOptions())


def test_fp16_model_builds_with_precision_fp16(trt_ready):
    model = _fp16_model()
    compiled = nnport.compile(model, "tensorrt", precision="fp16")
    x = np.array([[-1, 0.5, 2, -3]], dtype=np.float16)
    out = compiled.run({"x": x})["y"]
    assert out.dtype == np.float16 and np.array_equal(out, np.maximum(x, 0))


def test_measure_reports_h2d_compute_d2h(trt_ready):
    compiled = nnport.compile(zoo.load("cnn"), "tensorrt")
    m = nnport.measure(compiled, warmup=2, min_iterations=10, min_duration_s=0.0)
    d = m.to_dict()
    for key in ("h2d_ms", "compute_ms", "d2h_ms"):
        assert d[key] > 0
    assert d["stage_samples"] >= 10


def test_qdq_int8_model_from_compress_builds_and_stays_close(trt_ready):
    compress = pytest.importorskip("nnport.compress")
    mlp = zoo.load("mlp")
    with pytest.warns(Warning):
        qdq = compress.quantize(mlp, "int8", calibration="random", activations="int8")
    compiled = nnport.compile(qdq, "tensorrt", precision="int8")
    feeds = random_feeds(mlp.inputs, seed=3)
    got, ref = compiled.run(feeds)["probs"], _reference(qdq, feeds)["probs"]
    assert np.argmax(got) == np.argmax(ref) and np.max(np.abs(got - ref)) < 0.05
