"""Graph edge cases of real exports on every CPU backend (issue 12, item 4).

Every ``edge/`` conformance case (``nnport.conformance.edge_cases``) runs on
``onnxruntime:cpu``, ``openvino:CPU``, ``ncnn:cpu`` and each ``ncnn:vulkan:N``
(Mesa's lavapipe where there is no GPU), through ``nnport.compile``: the
outputs must equal the case's numpy answer exactly (names, order, dtypes,
shapes, values), which itself must equal raw ONNX Runtime's, or the compile
must refuse with a ``CompileError`` (none does today: ``REFUSED`` is empty, so
a new refusal fails here too).  The same graphs handed to the OpenVINO and
ncnn backends directly, without the core's serving layer, must be right or
refused, never wrong.  Then what the layer promises: caller-owned copies, the
hook path, ``measure``, bad input as ``InputError``, untouched models keep the
backend's own hot path, and ``nnport.graph_edges``'s folding rules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnport
import nnport.zoo
from nnport import graph_edges
from nnport.conformance import edge_cases
from nnport.errors import CompileError, InputError, UnsupportedPrecision
from nnport.types import CompileOptions

CASES = edge_cases.edge_cases()
CASE_IDS = [c.id for c in CASES]

REFUSED: dict[tuple[str, str], str] = {}
"""(case id, backend) -> a phrase of the expected refusal; nothing is refused today."""


def _devices() -> list[str]:
    found = []
    for dev in nnport.devices():
        if dev.kind == "cpu" and dev.backend in ("onnxruntime", "openvino", "ncnn"):
            found.append(dev.id)
    return found


DEVICES = _devices()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One conversion cache for the module: each runtime model goes through pnnx once."""
    return str(tmp_path_factory.mktemp("edge-cache"))


def assert_exact(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    assert list(got) == list(want), f"{where}: output names/order {list(got)} != {list(want)}"
    for name, w in want.items():
        g = got[name]
        assert isinstance(g, np.ndarray), f"{where}: {name} is a {type(g).__name__}"
        assert g.dtype == w.dtype and g.shape == w.shape, (
            f"{where}: {name} is {g.dtype}{list(g.shape)}, expected {w.dtype}{list(w.shape)}"
        )
        assert np.array_equal(g, w), f"{where}: {name} = {g.ravel()[:8]} expected {w.ravel()[:8]}"


def _raw_ort(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.serialized(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_expected_answer_is_raw_onnxruntimes(case):
    model = case.model()
    assert_exact(_raw_ort(model, case.feeds()), case.expected(), f"{case.id} raw ONNX Runtime")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_edge_case_is_exact_or_refused_at_compile(case, device, cache):
    model = case.model()
    backend = device.split(":")[0]
    refusal = REFUSED.get((case.id, backend))
    try:
        compiled = nnport.compile(model, device, fallback=False, cache_dir=cache)
    except CompileError as exc:
        assert refusal and refusal in str(exc), f"{case.id} on {device}: unexpected refusal: {exc}"
        return
    assert refusal is None, f"{case.id} on {device} compiled; REFUSED says it should not ({refusal})"
    feeds = case.feeds()
    want = case.expected()
    assert_exact(compiled.run(feeds), want, f"{case.id} on {device}")
    assert_exact(compiled(feeds), want, f"{case.id} on {device} (second call)")
    assert [s.name for s in compiled.outputs] == [s.name for s in model.outputs]
    assert [s.name for s in compiled.inputs] == [s.name for s in model.inputs]
    for spec in compiled.outputs:
        assert spec.dtype == want[spec.name].dtype, (spec, want[spec.name].dtype)
        assert spec.accepts_shape(want[spec.name].shape), (spec, want[spec.name].shape)


@pytest.mark.parametrize("device", [d for d in DEVICES if not d.startswith("onnxruntime")])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backend_alone_is_exact_or_refuses(case, device, cache):
    """The backend's own compile, without the core's serving layer: right, or refused, never wrong."""
    pm = nnport.get_plugin_manager()
    dev = next(d for d in nnport.devices() if d.id == device)
    backend = pm.backend(dev.backend)
    model = case.model()
    try:
        compiled = backend.compile(model, dev, CompileOptions(cache_dir=cache))
    except CompileError as exc:
        assert str(exc).strip(), "a refusal says why"
        return
    assert_exact(compiled.run(case.feeds()), case.expected(), f"{case.id} on {device} without nnport's serving layer")


# -- the reported defect ----------------------------------------------------------------------------


@pytest.mark.skipif("openvino:CPU" not in DEVICES, reason="OpenVINO CPU unavailable")
def test_openvino_dropout_identity_passthrough_returns_the_feed():
    """Issue 12: OpenVINO returned [-1.08e21, 3.1e-41, 0, ...] (its Parameter was renamed 'd' and never bound)."""
    model = _case("edge/passthrough/dropout_identity").model()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for compiled in (
        nnport.compile(model, "openvino:CPU", fallback=False),
        nnport.get_plugin_manager().backend("openvino").compile(model, _device("openvino:CPU"), CompileOptions()),
    ):
        np.testing.assert_array_equal(compiled.run({"x": x})["y"], x)


@pytest.mark.skipif("openvino:CPU" not in DEVICES, reason="OpenVINO CPU unavailable")
def test_openvino_reads_the_file_itself_and_still_binds_by_port(tmp_path):
    """With cache_dir OpenVINO compiles the .onnx file itself: the same port mapping applies."""
    import onnx

    case = next(c for c in CASES if c.id == "edge/mixed/export_like")
    path = tmp_path / "mixed.onnx"
    onnx.save(case.build(), str(path))
    model = nnport.load(path)
    backend = nnport.get_plugin_manager().backend("openvino")
    for _ in range(2):  # cold, then from OpenVINO's cache
        compiled = backend.compile(model, _device("openvino:CPU"), CompileOptions(cache_dir=str(tmp_path / "cache")))
        assert_exact(compiled.run(case.feeds()), case.expected(), "mixed via compile_model(path)")


def _device(device_id: str) -> Any:
    return next(d for d in nnport.devices() if d.id == device_id)


# -- what serving promises -----------------------------------------------------------------------------


def _case(case_id: str) -> Any:
    return next(c for c in CASES if c.id == case_id)


@pytest.mark.parametrize("device", DEVICES)
def test_served_outputs_belong_to_the_caller(device, cache):
    case = _case("edge/mixed/export_like")
    compiled = nnport.compile(case.model(), device, fallback=False, cache_dir=cache)
    feeds = case.feeds()
    first = compiled.run(feeds)
    for name in ("c", "x_out", "y_copy"):
        first[name][...] = 99.0
    assert not np.shares_memory(first["y"], first["y_copy"])
    np.testing.assert_array_equal(feeds["x"], case.feeds()["x"])  # the feed was copied, not handed out
    assert_exact(compiled.run(feeds), case.expected(), f"second run on {device}")  # the constant was copied too


@pytest.mark.parametrize("device", DEVICES)
def test_report_says_what_nnport_served(device, cache):
    compiled = nnport.compile(_case("edge/mixed/export_like").model(), device, fallback=False, cache_dir=cache)
    report = compiled.info["graph_edges"]
    assert set(report["served_by_nnport"]) == {"c", "x_out", "y_copy"}
    assert "Dropout" in report["served_by_nnport"]["x_out"]
    assert report["dropped_inputs"] == ["unused"]
    assert report["runtime_outputs"] == ["y", "z"] and report["runtime_called"]
    assert compiled.backend.name == device.split(":")[0] and compiled.device.id == device


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_stays_an_input_error(device, cache):
    served = nnport.compile(_case("edge/mixed/export_like").model(), device, fallback=False, cache_dir=cache)
    only = nnport.compile(_case("edge/passthrough/dropout_identity").model(), device, fallback=False, cache_dir=cache)
    empty = nnport.compile(_case("edge/zero_size/input").model(), device, fallback=False, cache_dir=cache)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(InputError, match="missing input.*unused"):
        served.run({"x": x})  # an unused input is still an input of the model, as ONNX Runtime requires it
    with pytest.raises(InputError, match="dtype float64"):
        only.run({"x": x.astype(np.float64)})
    with pytest.raises(InputError, match=r"shape \[3, 3\]"):
        only.run({"x": np.zeros((3, 3), np.float32)})
    with pytest.raises(InputError, match="unexpected input"):
        only.run({"x": x, "y": x})
    with pytest.raises(InputError, match=r"axis 0 must be 0"):
        empty.run({"x": np.zeros((3, 4), np.float32)})  # a declared 0 is a fixed dim, as runtimes read it


def test_hook_path_and_measure_complete_the_outputs(cache):
    """With a plugin wrapping nnport_execute, run goes through hooks: served outputs are still there."""
    calls = []

    class Tracer:
        @nnport.hookimpl(wrapper=True)
        def nnport_execute(self, backend, compiled, binding):
            calls.append(compiled.model.name)
            return (yield)

    pm = nnport.get_plugin_manager()
    pm.register(Tracer(), name="edge-tracer")
    case = _case("edge/mixed/export_like")
    for device in DEVICES:
        compiled = nnport.compile(case.model(), device, fallback=False, cache_dir=cache)
        assert_exact(compiled.run(case.feeds()), case.expected(), f"hook path on {device}")
    assert calls and set(calls) == {"mixed_export_like"}
    pm.unregister(name="edge-tracer")
    for case_id in (
        "edge/mixed/export_like",
        "edge/passthrough/dropout_identity",
    ):  # runtime model / nothing left to run
        compiled = nnport.compile(_case(case_id).model(), DEVICES[0], fallback=False, cache_dir=cache)
        m = nnport.measure(compiled, warmup=1, min_iterations=3, min_duration_s=0.01, energy=False)
        assert m.latency_p50_ms > 0
        m = nnport.measure(
            compiled, _case(case_id).feeds(), warmup=1, min_iterations=3, min_duration_s=0.01, energy=False
        )
        assert m.latency_p50_ms > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [("n", 3), (1, "h")], ids=["batch", "height"])
def test_served_outputs_with_symbolic_dims(device, shape, cache):
    """Open dims: ncnn loops a symbolic batch and specialises other dims lazily; serving wraps either."""
    node = edge_cases._node
    model = _model(
        [node("Relu", ["x"], ["y"]), node("Dropout", ["x"], ["d"]), node("Identity", ["d"], ["x_out"])],
        [("x", F32, shape)],
        [("y", F32, shape), ("x_out", F32, shape)],
    )
    compiled = nnport.compile(model, device, fallback=False, cache_dir=cache)
    for size in (2, 3):
        fs = (size, 3) if shape[0] == "n" else (1, size + 3)
        x = np.arange(np.prod(fs), dtype=np.float32).reshape(fs) - 3
        assert_exact(compiled.run({"x": x}), {"y": np.maximum(x, 0), "x_out": x}, f"{device} {fs}")


def test_nothing_to_run_still_checks_the_precision():
    model = _case("edge/passthrough/dropout_identity").model()
    if "ncnn:cpu" in DEVICES:
        with pytest.raises(UnsupportedPrecision):
            nnport.compile(model, "ncnn:cpu", fallback=False, precision="int8")
    compiled = nnport.compile(model, "onnxruntime:cpu", fallback=False)
    assert compiled.native.inner is None and compiled.info["graph_edges"]["runtime_called"] is False


def test_int8_calibration_is_cut_to_the_runtime_inputs():
    """Calibration samples name every model input; the runtime model no longer has the unused one."""
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    model = _model(
        [edge_cases._node("MatMul", ["x", "w"], ["y"])],
        [("mask", I64, (3,)), ("x", F32, (2, 4))],
        [("y", F32, (2, 3))],
        inits={"w": w},
    )
    rng = np.random.default_rng(0)
    samples = [{"mask": np.ones(3, I64), "x": rng.uniform(-1, 1, (2, 4)).astype(np.float32)} for _ in range(8)]
    compiled = nnport.compile(model, "onnxruntime:cpu", fallback=False, precision="int8", calibration=samples)
    assert compiled.info["graph_edges"]["dropped_inputs"] == ["mask"]
    feeds = samples[0]
    np.testing.assert_allclose(compiled.run(feeds)["y"], feeds["x"] @ w, atol=0.05)


def test_a_model_without_edge_cases_keeps_the_backends_own_hot_path():
    """No plan, no proxy: ``run`` calls the backend's ``run`` exactly as before."""
    model = nnport.zoo.load("mlp")
    assert graph_edges.plan(model) is None
    compiled = nnport.compile(model, "onnxruntime:cpu", fallback=False)
    assert type(compiled.backend).__name__ == "OnnxRuntimeBackend"
    assert "graph_edges" not in compiled.info


def test_conformance_worker_judges_edge_cases_exactly():
    from nnport.conformance import worker

    for case in CASES:
        result = worker.run_task({"case": case.id, "device": "onnxruntime:cpu"})
        assert result["status"] == "pass", (case.id, result["reason"])
        assert result["reference"] == "stored outputs"
        assert all(o["atol"] == 0.0 and o["rtol"] == 0.0 for o in result["outputs"]), result["outputs"]


def test_edge_group_is_in_the_default_suite():
    from nnport.conformance import cases

    ids = {c.id for c in cases.default_cases()}
    assert set(CASE_IDS) <= ids and "edge" in cases.GROUPS
    assert len(CASE_IDS) >= 20


# -- the folding rules ------------------------------------------------------------------------------


def _model(nodes, inputs, outputs, inits=None, opset=13):
    return nnport.load(edge_cases._graph("t", nodes, inputs, outputs, inits or {}, opset))


F32, I64 = np.float32, np.int64


@pytest.mark.parametrize(
    ("shape", "target", "allowzero", "same"),
    [
        ([2, 3], [2, 3], False, True),
        ([2, 3], [0, -1], False, True),
        (["n", 3], [0, 3], False, True),
        (["n", 3], [-1, 3], False, True),
        (["n", 3], [0, -1], False, True),
        (["n", 3], [2, 3], False, False),  # provable only when n == 2
        ([2, 3], [3, 2], False, False),
        ([2, 3], [-1, -1], False, False),
        ([0, 3], [0, 3], True, True),
        ([2, 3], [0, 3], True, False),  # allowzero: 0 means zero, not "copy"
        ([0, 3], [-1, 3], False, False),  # -1 with zero elements is ambiguous
        ([2, 3], [6], False, False),
    ],
)
def test_reshape_to_the_same_shape(shape, target, allowzero, same):
    assert graph_edges._same_shape_after_reshape(shape, target, allowzero) is same


def test_what_is_not_served():
    from onnx import helper

    node = edge_cases._node
    x = ("x", F32, (2, 3))
    cast_other = _model([node("Cast", ["x"], ["y"], to=11)], [x], [("y", np.float64, (2, 3))])
    assert graph_edges.plan(cast_other) is None  # a real conversion
    training = _model([node("Dropout", ["x", "", "t"], ["y"])], [x, ("t", np.bool_, ())], [("y", F32, (2, 3))])
    plan = graph_edges.plan(training)
    assert plan is None or all(s.kind == "runtime" for s in plan.outputs)  # training_mode is a feed: not the identity
    not_training = _model(
        [node("Dropout", ["x", "", "t"], ["y"])], [x], [("y", F32, (2, 3))], inits={"t": np.array(False)}
    )
    assert graph_edges.plan(not_training).outputs[0].kind == "input"
    relu = _model([node("Relu", ["x"], ["y"])], [x], [("y", F32, (2, 3))])
    assert graph_edges.plan(relu) is None
    # an input used only inside a subgraph is used
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"])], "then", [], [helper.make_tensor_value_info("a", 1, [2, 3])]
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["b"])], "else", [], [helper.make_tensor_value_info("b", 1, [2, 3])]
    )
    branch = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        [("c", np.bool_, ()), x],
        [("y", F32, (2, 3))],
    )
    assert graph_edges.unused_inputs(branch) == ()


def test_constant_through_folding_ops_and_declared_types():
    node = edge_cases._node
    x = ("x", F32, (2, 3))
    c = np.array([1, 2], I64)
    through = _model(
        [edge_cases._const("k", c), node("Identity", ["k"], ["k2"]), node("Relu", ["x"], ["y"])],
        [x],
        [("y", F32, (2, 3)), ("k2", I64, (2,))],
    )
    plan = graph_edges.plan(through)
    assert [s.kind for s in plan.outputs] == ["runtime", "constant"]
    np.testing.assert_array_equal(plan.outputs[1].value, c)
    assert "Identity" in plan.outputs[1].why
    runtime = plan.runtime
    assert [n.op_type for n in runtime.proto.graph.node] == ["Relu"] and runtime.name == through.name
    assert graph_edges.plan(runtime) is None
