"""``nnport debug`` (first diverging node) and ``nnport reduce`` (minimal failing model).

Deliberately faulty vendor backends (tests/debug_backends.py) check that the
search names exactly the node that is wrong and that reduce keeps it; real
backends check "no divergence" where they agree, and a real divergence
(OpenVINO's Softmax-11, see conformance/xfail/openvino.toml) end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import nnport
from fakes import install, make_backend
from nnport import hookimpl, zoo
from nnport.cli import main
from nnport.conformance import debug, reduce
from nnport.conformance._graph import Graph
from nnport.conformance.cases import materialize_light
from nnport.conformance.compare import ToleranceError

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")


@pytest.fixture
def faulty(monkeypatch):
    """The faulty backends, here and in trial worker processes (NNPORT_PLUGINS + PYTHONPATH)."""
    monkeypatch.setenv("NNPORT_PLUGINS", "debug_backends")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))
    return monkeypatch


def usable(device: str) -> bool:
    try:
        nnport.selection.candidates(nnport.get_plugin_manager(), device)
    except nnport.NnportError:
        return False
    return True


def needs(device: str):
    return pytest.mark.skipif(not usable(device), reason=f"{device} is not usable here")


def chain(n: int = 12, opset: int = 17) -> onnx.ModelProto:
    """x -> MatMul -> Tanh -> Sigmoid -> MatMul -> ... (node names n<i>_<op>)."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", 1, [8, 8], (rng.standard_normal(64) * 0.5).astype(np.float32).tolist())
    nodes, prev = [], "x"
    for i in range(n):
        op = ["MatMul", "Tanh", "Sigmoid"][i % 3]
        out = "y" if i == n - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [prev, "w"] if op == "MatMul" else [prev], [out], name=f"n{i}_{op}"))
        prev = out
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", 1, [1, 8])],
        [helper.make_tensor_value_info("y", 1, [1, 8])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def softmax11() -> onnx.ModelProto:
    """OpenVINO applies Softmax-11 over `axis` alone (opset-13 semantics): a real divergence at node 'softmax11'."""
    c = helper.make_tensor("c", 1, [8], np.linspace(-1, 1, 8).astype(np.float32).tolist())
    nodes = [
        helper.make_node("Mul", ["x", "c"], ["a"], name="scale"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Softmax", ["b"], ["s"], name="softmax11", axis=1),
        helper.make_node("Add", ["s", "c"], ["t"], name="add"),
        helper.make_node("Tanh", ["t"], ["y"], name="tanh"),
    ]
    graph = helper.make_graph(
        nodes,
        "softmax11",
        [helper.make_tensor_value_info("x", 1, [2, 4, 8])],
        [helper.make_tensor_value_info("y", 1, [2, 4, 8])],
        [c],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    return model


def squeezenet() -> onnx.ModelProto:
    return materialize_light(onnx.load(str(zoo.light_path("light_squeezenet"))))


# -- the hook --------------------------------------------------------------------------


def test_hook_nnport_intermediates():
    alpha = make_backend("alpha")
    pm = install(alpha)
    model = nnport.load(chain(3))
    dev = nnport.devices("alpha")[0]
    feeds = {"x": np.ones((1, 8), np.float32)}
    kw = dict(
        backend=pm.backend("alpha"),
        model=model,
        device=dev,
        options=nnport.CompileOptions(),
        tensors=["t0"],
        feeds=feeds,
    )
    assert pm.hook.nnport_intermediates(**kw) is None  # the default asks the backend, whose base offers nothing
    assert nnport.Backend.intermediates(pm.backend("alpha"), model, dev, nnport.CompileOptions(), ["t0"], feeds) is None

    class Passing:
        @hookimpl
        def nnport_intermediates(self, tensors):
            return None  # not handled: the next implementation runs

    class Tracing:
        @hookimpl
        def nnport_intermediates(self, model, tensors, feeds):
            from onnx.reference import ReferenceEvaluator

            return dict(zip(tensors, ReferenceEvaluator(model.proto).run(list(tensors), dict(feeds))))

    pm.register(Tracing(), "tracing")
    pm.register(Passing(), "passing")
    got = pm.hook.nnport_intermediates(**kw)
    np.testing.assert_allclose(
        got["t0"], np.ones((1, 8), np.float32) @ onnx.numpy_helper.to_array(model.proto.graph.initializer[0]), rtol=1e-6
    )


@needs("onnxruntime:cpu")
def test_onnxruntime_exposes_intermediates():
    model = nnport.load(chain(6))
    pm = nnport.get_plugin_manager()
    dev = nnport.selection.candidates(pm, "onnxruntime:cpu")[0]
    assert pm.backend("onnxruntime").capabilities(dev).intermediates
    got = pm.hook.nnport_intermediates(
        backend=pm.backend("onnxruntime"),
        model=model,
        device=dev,
        options=nnport.CompileOptions(),
        tensors=["t1", "t3", "nonexistent"],
        feeds={"x": np.ones((1, 8), np.float32)},
    )
    assert set(got) == {"t1", "t3"}  # a name the graph does not compute is left out


# -- cutting the graph ---------------------------------------------------------------------


def test_cut_keeps_subgraph_reads_and_freezes_non_float_tensors():
    """A cut after an If keeps what its branches read from the outer scope; an index tensor cut away becomes a
    constant."""
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["a", "two"], ["r"])], "then", [], [helper.make_tensor_value_info("r", 1, [1, 4])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["r"])], "else", [], [helper.make_tensor_value_info("r", 1, [1, 4])]
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("ReduceSum", ["a"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["b"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Tanh", ["b"], ["y"], name="tanh"),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.float32(2.0), "two"),
        onnx.numpy_helper.from_array(np.float32(0.0), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", 1, [1, 4])],
        [helper.make_tensor_value_info("y", 1, [1, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = Graph(model)
    assert "a" in g.reads[3]  # the If reads `a` through its branches
    session = debug.prepare(model, feeds={"x": np.array([[1, -2, 3, -4]], np.float32)})
    assert session.candidates == ["a", "s", "b", "y"]  # float tensors computed from the input; `cond` (bool) is not one
    sub = g.submodel(["b"], (), session.values)
    onnx.checker.check_model(sub)
    assert [n.name for n in sub.graph.node] == ["relu", "sum", "gt", "if"]
    # cut before the If: `a` (float data) becomes an input, `cond` (bool) a constant
    sub = g.submodel(["y"], ["a", "cond"], session.values)
    onnx.checker.check_model(sub)
    assert [n.name for n in sub.graph.node] == ["if", "tanh"]
    assert [i.name for i in sub.graph.input] == ["a"] and [
        i.name for i in sub.graph.initializer if i.name == "cond"
    ] == ["cond"]
    import onnxruntime as ort

    out = ort.InferenceSession(sub.SerializeToString()).run(None, {"a": session.values["a"]})[0]
    np.testing.assert_allclose(out, session.values["y"], rtol=1e-6)


# -- debug with a deliberately wrong vendor backend ----------------------------------------


def test_debug_names_the_one_wrong_node_in_process(faulty):
    faulty.setenv("NNPORT_FAKE_REWRITE", "n7_Tanh:Softsign")
    report = debug.first_divergence(chain(), "rewrite:cpu", isolate=False)
    assert report.status == "diverges" and report.exit_code == 1
    assert report.node.name == "n7_Tanh" and report.node.op_type == "Tanh" and report.node.found_by == "cut"
    assert report.fast_path == "not offered"
    assert all(c.passed for c in report.node.input_checks) and not all(c.passed for c in report.node.outputs)
    assert report.compiles <= 1 + int(np.ceil(np.log2(12))) + 1
    out = report.node.outputs[0]
    assert out.device_stats is not None and out.reference_stats is not None and out.result.max_abs_error > 0.1


@pytest.mark.skipif(not usable("onnxruntime:cpu"), reason="needs onnxruntime")
def test_debug_names_a_rewritten_relu_in_a_branchy_real_architecture(faulty):
    """light_squeezenet (fire modules: parallel branches joined by Concat): one Relu of one branch made LeakyRelu."""
    faulty.setenv("NNPORT_FAKE_REWRITE", "n23:LeakyRelu")
    report = debug.first_divergence(squeezenet(), "rewrite:cpu", isolate=False)
    assert report.status == "diverges", report.message
    assert report.node.name == "n23" and report.node.op_type == "Relu"
    assert report.compiles <= 1 + int(np.ceil(np.log2(report.positions))) + 1
    html = debug.to_html(report)
    assert "<svg" in html and "n23" in html


def test_debug_in_an_isolated_worker_finds_the_same_node(faulty):
    faulty.setenv("NNPORT_FAKE_REWRITE", "n5_Sigmoid:HardSigmoid")
    report = debug.first_divergence(chain(), "rewrite:cpu")  # isolate=True: trials in a worker process
    assert report.node is not None and report.node.name == "n5_Sigmoid"


def test_tolerances_are_the_callers(faulty):
    faulty.setenv("NNPORT_FAKE_REWRITE", "n7_Tanh:Softsign")
    report = debug.first_divergence(chain(), "rewrite:cpu", isolate=False, atol=1.0)
    assert report.status == "agrees" and report.exit_code == 0 and "largest error" in report.message
    assert "atol=1 " in report.tolerance
    # a per-tensor mapping may name intermediates; an unknown name is a ToleranceError
    report = debug.first_divergence(chain(), "rewrite:cpu", isolate=False, atol={"": 1.0, "t7": 1e-6})
    assert report.status == "agrees"  # t7 alone is strict, but the whole model's output agrees at 1.0
    with pytest.raises(ToleranceError):
        debug.first_divergence(chain(), "rewrite:cpu", isolate=False, atol={"t77": 1e-3})


def test_reference_that_cannot_run_the_model_is_a_clear_error(faulty):
    model = chain(3)
    model.graph.node[1].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(debug.DebugError, match="the reference .* cannot run"):
        debug.first_divergence(model, "rewrite:cpu", isolate=False)


def test_device_that_refuses_the_whole_model(faulty):
    faulty.setenv("NNPORT_FAKE_REFUSE_OP", "Sigmoid")
    report = debug.first_divergence(chain(), "refuseop:cpu", isolate=False)
    assert report.status == "failed" and report.exit_code == 1 and "reduce --mode compile" in report.message


# -- reduce -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["bisect", "linear"])
def test_reduce_mismatch_keeps_the_wrong_node(faulty, tmp_path, strategy):
    faulty.setenv("NNPORT_FAKE_REWRITE", "n7_Tanh:Softsign")
    result = reduce.reduce(chain(), "rewrite:cpu", isolate=False, strategy=strategy, out_dir=tmp_path)
    assert result.status == "reduced" and result.exit_code == 0
    assert "n7_Tanh" in result.node_names and result.nodes_after <= 3
    reduced = onnx.load(str(tmp_path / "reduced.onnx"))
    onnx.checker.check_model(reduced)
    assert "n7_Tanh" in [n.name for n in reduced.graph.node]
    with np.load(tmp_path / "inputs.npz") as data:
        assert set(data.files) == {i.name for i in reduced.graph.input}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["nodes_after"] == result.nodes_after and report["trials"]
    if strategy == "bisect":
        assert len(result.trials) < 20


def test_reduce_compile_mode_isolates_the_refused_op(faulty, tmp_path):
    faulty.setenv("NNPORT_FAKE_REFUSE_OP", "Sigmoid")
    result = reduce.reduce(chain(), "refuseop:cpu", mode="compile", isolate=False, out_dir=tmp_path)
    assert result.status == "reduced" and result.op_types == ("Sigmoid",)
    assert "no Sigmoid layer" in result.failure
    # --match: a failure whose message does not match is not "the same failure"
    result = reduce.reduce(chain(), "refuseop:cpu", mode="compile", isolate=False, match="out of memory")
    assert result.status == "not-reproduced" and result.exit_code == 1


def test_reduce_crash_mode_isolates_the_aborting_op(faulty, tmp_path):
    """Each trial in a worker process: abort() is a trial result, a hang a timeout, and the search goes on."""
    faulty.setenv("NNPORT_FAKE_ABORT_OP", "Sigmoid")
    faulty.setenv("NNPORT_FAKE_HANG_OP", "Tanh")
    start = time.perf_counter()
    result = reduce.reduce(chain(6), "abortop:cpu", mode="crash", out_dir=tmp_path, timeout_s=4)
    assert result.status == "reduced" and result.nodes_after <= 3 and "Sigmoid" in result.op_types
    assert "SIGABRT" in result.failure
    assert sum(t.status == "crash" for t in result.trials) >= 2
    assert any(t.status == "timeout" and not t.failed for t in result.trials)
    print(f"crash reduce: {len(result.trials)} trials, {time.perf_counter() - start:.1f} s")


def test_reduce_freezes_constants_and_shape_arithmetic(faulty):
    """Constant nodes become initializers and Shape arithmetic a frozen value: the reduced model is the failing node
    alone."""
    i64 = lambda name, v: onnx.numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Shape", ["a"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "zero", "one"], ["s0"], name="first_dim"),
        helper.make_node("Concat", ["s0", "minus1"], ["target"], name="target", axis=0),
        helper.make_node("Constant", [], ["k"], name="k", value=onnx.numpy_helper.from_array(np.float32(0.5))),
        helper.make_node("Add", ["a", "k"], ["b"], name="add"),
        helper.make_node("Reshape", ["b", "target"], ["c"], name="reshape"),
        helper.make_node("Tanh", ["c"], ["y"], name="tanh"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", 1, [2, 3, 2])],
        [helper.make_tensor_value_info("y", 1, [2, 6])],
        [i64("zero", [0]), i64("one", [1]), i64("minus1", [-1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    faulty.setenv("NNPORT_FAKE_REFUSE_OP", "Reshape")
    result = reduce.reduce(model, "refuseop:cpu", mode="compile", isolate=False)
    assert result.node_names == ("reshape",)
    assert [i.name for i in result.proto.graph.input] == ["b"] and "target" in {
        i.name for i in result.proto.graph.initializer
    }
    faulty.setenv("NNPORT_FAKE_REFUSE_OP", "Add")
    result = reduce.reduce(model, "refuseop:cpu", mode="compile", isolate=False)
    assert result.node_names == ("add",) and "k" in {i.name for i in result.proto.graph.initializer}


def test_reduce_of_a_model_that_does_not_fail_says_so(faulty):
    faulty.setenv("NNPORT_FAKE_REWRITE", "")
    result = reduce.reduce(chain(), "rewrite:cpu", isolate=False)
    assert result.status == "not-reproduced" and result.exit_code == 1 and "does not reproduce" in result.message


def test_a_hanging_trial_is_a_timeout_result(faulty):
    from nnport.conformance.trial import TrialRunner

    faulty.setenv("NNPORT_FAKE_REWRITE", "")
    with TrialRunner("rewrite:cpu", timeout_s=0.001) as runner:
        result = runner.run(chain(3), {"x": np.ones((1, 8), np.float32)})
    assert result.status == "timeout"


# -- real backends -------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["onnxruntime:cpu", "openvino:CPU", "ncnn:cpu"])
def test_real_backends_that_agree_say_no_divergence(device):
    if not usable(device):
        pytest.skip(f"{device} is not usable here")
    report = debug.first_divergence(chain(), device, isolate=False)
    assert report.status == "agrees" and report.exit_code == 0, report.message
    assert "no divergence above tolerance" in report.message and report.largest_error is not None
    expected_fast = {"onnxruntime:cpu": "used", "openvino:CPU": "used", "ncnn:cpu": "not offered"}[device]
    assert report.fast_path.startswith(expected_fast)


@needs("openvino:CPU")
def test_openvino_softmax11_is_found_by_the_fast_path_and_confirmed_by_cutting(tmp_path):
    report = debug.first_divergence(softmax11(), "openvino:CPU", isolate=False)
    assert report.status == "diverges"
    assert report.node.name == "softmax11" and report.node.found_by == "fast+cut"
    assert report.node.attributes == {"axis": 1}
    assert report.compiles == 4  # whole model, fast path, and the two cuts that confirm it
    # reduce to the Softmax alone; the repro script uses OpenVINO's own API and reproduces the mismatch
    result = reduce.reduce(softmax11(), "openvino:CPU", isolate=False, out_dir=tmp_path)
    assert result.op_types == ("Softmax",)
    script = (tmp_path / "repro.py").read_text()
    assert "import openvino" in script and "nnport" not in script.split('"""')[2]
    run = subprocess.run([sys.executable, str(tmp_path / "repro.py")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "MISMATCH" in run.stdout, run.stdout + run.stderr


def gelu_tanh():
    from nnport.conformance import cases

    case = cases.get("op/GELU/composed_tanh_opset13")
    model = case.model()
    return model, case.inputs(model)


@needs("ncnn:cpu")
def test_ncnn_real_divergence_pow_of_negative_bases_in_tanh_gelu():
    """The composed tanh-GELU (0.5x(1+tanh(c(x+0.044715x^3)))) is wrong on ncnn; its conversion check refuses it unless
    told not to.  The cut path (ncnn renames every tensor; a cut tensor is simply an output) names the first node:
    ``Pow(x, 3)`` returns ~2.4e38 for the negative half of the inputs."""
    model, feeds = gelu_tanh()
    assert (
        debug.first_divergence(model, "ncnn:cpu", feeds=feeds, isolate=False).status == "failed"
    )  # the plugin's own check refuses
    report = debug.first_divergence(model, "ncnn:cpu", feeds=feeds, isolate=False, extra={"ncnn_verify": False})
    assert report.status == "diverges" and report.node.name == "Pow_0" and report.node.op_type == "Pow"
    assert report.node.found_by == "cut" and report.fast_path == "not offered"
    assert report.compiles <= 1 + int(np.ceil(np.log2(report.positions)))
    out = report.node.outputs[0]
    assert not out.passed and out.result.mismatches > 0.4 * out.result.elements and out.device_stats.max > 1e30


@pytest.mark.slow
@needs("ncnn:cpu")
def test_slow_ncnn_reduce_pow_and_its_repro_with_ncnn_alone(tmp_path):
    model, feeds = gelu_tanh()
    result = reduce.reduce(model, "ncnn:cpu", feeds=feeds, extra={"ncnn_verify": False}, out_dir=tmp_path)
    assert result.op_types == ("Pow",)
    run = subprocess.run(
        [sys.executable, str(tmp_path / "repro.py")], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert "MISMATCH" in run.stdout and run.returncode == 1, run.stdout + run.stderr


# -- the CLI -------------------------------------------------------------------------------


def test_cli_debug_json_html_and_exit_codes(faulty, tmp_path, capsys):
    model = tmp_path / "chain.onnx"
    onnx.save(chain(), str(model))
    faulty.setenv("NNPORT_FAKE_REWRITE", "n7_Tanh:Softsign")
    html = tmp_path / "debug.html"
    code = main(["debug", str(model), "-d", "rewrite:cpu", "--in-process", "-q", "--json", "--html", str(html)])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["status"] == "diverges" and data["node"]["name"] == "n7_Tanh"
    assert "<svg" in html.read_text()
    code = main(["debug", str(model), "-d", "rewrite:cpu", "--in-process", "-q", "--atol", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "no divergence above tolerance" in out
    code = main(["debug", str(model), "-d", "rewrite:cpu", "--in-process", "-q", "--atol", "t77:1"])
    assert code == 2 and "t77" in capsys.readouterr().err


def test_cli_reduce_writes_the_files(faulty, tmp_path, capsys):
    model = tmp_path / "chain.onnx"
    onnx.save(chain(), str(model))
    np.save(tmp_path / "x.npy", np.full((1, 8), 0.5, np.float32))
    faulty.setenv("NNPORT_FAKE_REFUSE_OP", "Sigmoid")
    out = tmp_path / "out"
    code = main(
        [
            "reduce",
            str(model),
            "-d",
            "refuseop:cpu",
            "--mode",
            "compile",
            "--out",
            str(out),
            "--in-process",
            "-q",
            "--input",
            f"x={tmp_path / 'x.npy'}",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "1 of 12 node(s)" in text
    assert {p.name for p in out.iterdir()} == {
        "reduced.onnx",
        "inputs.npz",
        "reference_outputs.npz",
        "repro.py",
        "report.json",
    }


# -- slow: real-architecture models ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("device", ["onnxruntime:cpu", "openvino:CPU", "ncnn:cpu"])
def test_slow_light_resnet50(device):
    """Real architecture: OpenVINO and ncnn agree with ONNX Runtime, and ONNX Runtime with the oracle (onnx.reference
    with conformance/oracle.py's kernels: its stock BatchNormalization-9 took momentum as training mode)."""
    if not usable(device):
        pytest.skip(f"{device} is not usable here")
    model = materialize_light(onnx.load(str(zoo.light_path("light_resnet50"))))
    report = debug.first_divergence(model, device)
    print(
        f"{device}: {report.status}, {report.compiles} compiles, {report.seconds:.1f} s, fast path {report.fast_path}"
    )
    assert report.status == "agrees", report.message
    if device == "onnxruntime:cpu":  # judged by the oracle
        assert report.reference == "onnx.reference"


@pytest.mark.slow
@needs("ncnn:cpu")
def test_slow_ncnn_reduce_compile_on_light_inception_v1(tmp_path):
    """light_inception_v1 (144 nodes): pnnx leaves its 7x7 AveragePool (asymmetric pads) unconverted and ncnn cannot
    load
    the graph; reduce keeps that one node (measured: 16 trials, 110 s on 2 loaded cores), which ONNX Runtime runs."""
    model = materialize_light(onnx.load(str(zoo.light_path("light_inception_v1"))))
    result = reduce.reduce(model, "ncnn:cpu", mode="compile", out_dir=tmp_path)
    print(
        f"{result.nodes_before} -> {result.nodes_after} nodes {result.op_types}, {len(result.trials)} "
        f"trials, {result.seconds:.0f} s"
    )
    assert result.status == "reduced" and result.nodes_after <= 5 and "AveragePool" in result.op_types
    assert reduce._reference_problem(result.proto, result.feeds) == ""
    run = subprocess.run(
        [sys.executable, str(tmp_path / "repro.py")], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert run.returncode != 0 and "AveragePool" in run.stdout + run.stderr


def _corpus_model(model_id: str):
    from nnport.conformance import corpus

    entry = corpus.get(model_id)
    try:
        return entry, corpus.fetch(entry)
    except corpus.CorpusUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
@needs("ncnn:cpu")
def test_slow_ncnn_reduce_compile_on_a_real_model_pnnx_crashes_on(tmp_path):
    """magika (95 nodes, tf2onnx): pnnx segfaults converting it; reduce keeps <= 5 nodes that still make pnnx crash
    and that ONNX Runtime runs (measured: 1 node, `Max(constant, x[2])`, 14 trials)."""
    entry, path = _corpus_model("real/magika/standard_v3_3")
    result = reduce.reduce(path, "ncnn:cpu", mode="compile", feeds=entry.feeds(), out_dir=tmp_path)
    print(
        f"{result.nodes_before} -> {result.nodes_after} nodes {result.op_types}, {len(result.trials)} "
        f"trials, {result.seconds:.0f} s"
    )
    assert result.status == "reduced" and result.nodes_after <= 5 and "exit status -11" in result.failure
    assert reduce._reference_problem(result.proto, result.feeds) == ""


@pytest.mark.slow
@needs("ncnn:cpu")
def test_slow_ncnn_reduce_crash_isolates_the_split_that_segfaults(tmp_path):
    """ncnn's Slice layer from a Split-13 without `split` segfaults (conformance/xfail/ncnn.toml): reduce --mode crash
    isolates the Split, and the repro script crashes with the runtime's own tools."""
    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Split", ["r"], ["a", "b"], name="split", axis=1),
        helper.make_node("Add", ["a", "b"], ["s"], name="add"),
        helper.make_node("Sigmoid", ["s"], ["y"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "split13",
        [helper.make_tensor_value_info("x", 1, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("y", 1, [1, 4, 4, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = reduce.reduce(model, "ncnn:cpu", mode="crash", out_dir=tmp_path)
    assert result.op_types == ("Split",) and "SIGSEGV" in result.failure
    run = subprocess.run(
        [sys.executable, str(tmp_path / "repro.py")], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert run.returncode != 0 and "SIG" in (run.stdout + run.stderr)


@pytest.mark.slow
def test_slow_debug_names_a_sigmoid_made_hardsigmoid_in_a_real_detector(faulty):
    """YOLOv8n (nudenet 320n, 323 nodes, 58 Sigmoids): one SiLU's Sigmoid made HardSigmoid in a vendor backend."""
    entry, path = _corpus_model("real/nudenet/320n")
    faulty.setenv("NNPORT_FAKE_REWRITE", "/model.12/m.0/cv2/act/Sigmoid:HardSigmoid")
    report = debug.first_divergence(path, "rewrite:cpu", feeds=entry.feeds())
    print(f"{report.compiles} compiles, {report.seconds:.1f} s over {report.positions} positions")
    assert report.node is not None and report.node.name == "/model.12/m.0/cv2/act/Sigmoid"
    result = reduce.reduce(path, "rewrite:cpu", feeds=entry.feeds())
    print(f"reduce: {result.nodes_after} nodes {result.op_types}, {len(result.trials)} trials, {result.seconds:.1f} s")
    assert "/model.12/m.0/cv2/act/Sigmoid" in result.node_names and result.nodes_after <= 3
