"""The conformance suite: cases, the isolated runner (crash, timeout), expectations, reports, baseline, CLI, pytest
plugin.

Misbehaving backends come from ``tests/test_conformance_plugins.py`` (each
wraps the real ONNX Runtime backend): ``wrong`` perturbs outputs, ``crashing``
aborts on Conv models, ``hanging`` sleeps on Relu models.  Worker processes
load them through ``NNPORT_PLUGINS`` with tests/ on ``PYTHONPATH``.
"""

from __future__ import annotations

import html.parser
import importlib.util
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from nnport import manager
from nnport.conformance import cases as case_mod
from nnport.conformance import reports, runner

TESTS_DIR = str(Path(__file__).parent)
PLUGIN = "test_conformance_plugins"
CASES = ["op/Relu/1x8x12x12_opset13", "op/Conv/k3_s1_p1", "zoo/mlp"]


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    """The marker says "run with -m slow": honour it even where addopts does not deselect."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["NNPORT_PLUGINS"] = PLUGIN
    env["PYTHONPATH"] = os.pathsep.join([TESTS_DIR] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["NNPORT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.update(extra)
    return env


def _with_plugins(fn):
    """Run ``fn`` with a plugin manager that has the test backends, then restore the old one."""
    old = manager.set_plugin_manager(manager.create_plugin_manager(modules=[PLUGIN], entrypoints=False))
    try:
        return fn()
    finally:
        manager.set_plugin_manager(old)


# -- cases ------------------------------------------------------------------------------------


REQUIRED_OPS = {
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Relu",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "GELU",
    "SiLU",
    "HardSwish",
    "Softmax",
    "LayerNormalization",
    "Resize",
    "Concat",
    "Split",
    "Slice",
    "Transpose",
    "Reshape",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "LSTM",
    "GRU",
    # the variants real exports use (nnport.conformance.op_variants)
    "Sub",
    "Div",
    "Pow",
    "Min",
    "Max",
    "Where",
    "Clip",
    "Gather",
    "Expand",
    "Tile",
    "Pad",
    "ReduceMin",
    "ReduceL2",
    "ReduceLogSumExp",
    "InstanceNormalization",
    "GroupNormalization",
    "Erf",
    "Gelu",
    "TopK",
    "CumSum",
    "ArgMax",
    "Sqrt",
    "Log",
    "LpPool",
    "DepthToSpace",
}
DEFAULT_SUITE_MIN = 200
"""Cases per backend in the default suite (specs/conformance.md section 2)."""


def test_default_suite_covers_the_op_set_zoo_and_real_architectures():
    from nnport import zoo

    cases = case_mod.default_cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    ops = {c.id.split("/")[1] for c in cases if c.group == "op"}
    assert REQUIRED_OPS <= ops, REQUIRED_OPS - ops
    assert {f"zoo/{n}" for n in zoo.names()} <= set(ids)
    assert {f"model/{n}" for n in zoo.light_names()} <= set(ids)
    assert len(zoo.light_names()) >= 6
    for c in cases:
        assert c.group in case_mod.GROUPS and c.id.count("/") >= 1, c.id
    # several opsets per operator family where semantics changed
    assert {"op/Softmax/axis-1_2x16x32_opset13", "op/Softmax/axis1_2x4x8_opset11"} <= set(ids)
    assert any("opset18" in i for i in ids if "Reduce" in i) and any("opset13" in i for i in ids if "Reduce" in i)
    assert len(ids) >= DEFAULT_SUITE_MIN, len(ids)
    # non-finite inputs: a NaN pixel into a CNN, +/-Inf into Relu/Max/Softmax
    assert {
        "nonfinite/cnn_one_nan_pixel",
        "nonfinite/relu_inf_nan",
        "nonfinite/max_inf",
        "nonfinite/softmax_inf",
    } <= set(ids)
    nan_feed = case_mod.get("nonfinite/cnn_one_nan_pixel")
    x = nan_feed.inputs(nan_feed.model())["x"]
    assert np.isnan(x).sum() == 1 and np.isfinite(x).sum() == x.size - 1


def test_op_cases_build_valid_models_with_seeded_inputs():
    import onnx

    for case in case_mod.select("op/"):
        model = case.model()  # runs onnx.checker
        onnx.checker.check_model(model.proto, full_check=True)
        a, b = case.inputs(model), case.inputs(model)
        assert a.keys() == {s.name for s in model.inputs}
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        assert all(s.dtype.kind in "fiub" for s in model.outputs), case.id


def test_light_models_get_distinct_seeded_weights_and_logits():
    case = case_mod.get("model/light_squeezenet")
    model = case.model()
    names = model.output_names
    assert len(names) == 2  # softmax output + the logits feeding it
    assert "ConstantOfShape" not in model.operators()
    import nnport

    out = nnport.compile(model, "onnxruntime:cpu").run(case.inputs(model))
    logits = out[names[1]].ravel()
    assert np.std(logits) > 0.1  # classes differ (the wheel's constant weights make them equal)
    assert case.build().SerializeToString() == case.build().SerializeToString()  # deterministic


def test_select_by_glob_substring_and_get():
    assert [c.id for c in case_mod.select("op/Conv/k3_s1_p1")] == ["op/Conv/k3_s1_p1"]
    assert all(c.id.startswith("op/LSTM/") for c in case_mod.select("op/LSTM/*"))
    assert len(case_mod.select(["LSTM", "GRU"])) == 4
    assert case_mod.get("zoo/cnn").id == "zoo/cnn"
    with pytest.raises(KeyError):
        case_mod.get("op/Nope/x")


# -- the runner: statuses with misbehaving backends -----------------------------------------------


@pytest.fixture(scope="module")
def xfail_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("xfail")
    wrong = d / "wrong.toml"
    wrong.write_text('backend = "wrong"\n[xfail]\n"op/Conv/*" = "perturbs everything; listed to test xfail"\n')
    ort = d / "ort.toml"
    ort.write_text('backend = "onnxruntime"\n[xfail]\n"zoo/mlp" = "listed although it passes, to test xpass"\n')
    crash = d / "crashing.toml"
    crash.write_text('backend = "crashing"\n[skip]\n"op/Relu/*" = "skipped by the expectations file"\n')
    return [str(wrong), str(ort), str(crash)]


@pytest.fixture(scope="module")
def report(xfail_files):
    """One run of 3 cases x 4 devices (2 jobs): the statuses the tests below check."""
    cases = case_mod.select(CASES)

    def go():
        targets = runner.resolve_targets(["onnxruntime", "wrong", "crashing", "hanging"])
        return runner.run(
            cases, targets, jobs=2, timeout_s=20, expectations=xfail_files, plugins=[PLUGIN], pythonpath=[TESTS_DIR]
        )

    return _with_plugins(go)


def _status(report, case, device):
    r = report.get(case, device)
    assert r is not None, (case, device)
    return r


def test_reference_backend_passes_against_the_onnx_oracle(report):
    relu = _status(report, CASES[0], "onnxruntime:cpu")
    assert relu.status == "pass" and relu.reference == "onnx.reference"
    assert _status(report, CASES[1], "onnxruntime:cpu").status == "pass"
    assert _status(report, CASES[0], "wrong:cpu").reference == "onnxruntime:cpu"


def test_wrong_backend_fails_conformance(report):
    r = _status(report, CASES[0], "wrong:cpu")
    assert r.status == "fail"
    assert "exceed atol" in r.reason and r.outputs and r.outputs[0]["passed"] is False
    assert _status(report, "zoo/mlp", "wrong:cpu").status == "fail"
    assert not report.ok


def test_expected_failure_becomes_xfail_and_a_passing_one_xpass(report):
    r = _status(report, CASES[1], "wrong:cpu")
    assert r.status == "xfail" and r.observed == "fail" and "listed to test xfail" in r.reason
    x = _status(report, "zoo/mlp", "onnxruntime:cpu")
    assert x.status == "xpass" and x.observed == "pass"


def test_crash_is_a_result_and_the_run_goes_on(report):
    crash = _status(report, CASES[1], "crashing:cpu")
    assert crash.status == "crash"
    assert "SIGABRT" in crash.reason
    # the same backend's next case ran in a fresh worker and passed
    assert _status(report, "zoo/mlp", "crashing:cpu").status == "pass"


def test_skip_table_skips_without_running(report):
    r = _status(report, CASES[0], "crashing:cpu")
    assert r.status == "skip" and "skipped by the expectations file" in r.reason and r.duration_s == 0


def test_hang_becomes_timeout(report):
    r = _status(report, CASES[0], "hanging:cpu")
    assert r.status == "timeout" and "20" in r.reason
    assert 19 < r.duration_s < 60
    assert _status(report, CASES[1], "hanging:cpu").status == "pass"  # Conv model, no Relu: runs


def test_counts_and_matrix_text(report):
    counts = report.counts()
    assert sum(sum(c.values()) for c in counts.values()) == len(CASES) * 4 == len(report.results)
    text = reports.matrix_text(report)
    for word in ("CRASH", "TIMEOUT", "FAIL", "xfail", "XPASS", "skip", "pass"):
        assert word in text
    first = text.splitlines()[0]
    assert "onnxruntime:cpu" in first and "hanging:cpu" in first
    assert "FAILED" in text.splitlines()[-1]


def test_unavailable_backend_is_a_column_of_skips_and_nothing_ran_is_not_ok():
    targets = runner.resolve_targets(["nosuchbackend"])
    assert targets[0].unavailable and "no backend named" in targets[0].unavailable
    rep = runner.run(case_mod.select("op/Relu/"), targets)
    assert rep.results and {r.status for r in rep.results} == {"skip"}
    assert rep.nothing_ran and not rep.ok and rep.untested() == ["nosuchbackend"]
    text = reports.matrix_text(rep)
    assert "nothing ran" in text and text.endswith("FAILED (nothing ran)")
    assert reports.to_json(rep)["ok"] is False and reports.to_json(rep)["nothing_ran"] is True


# -- reports ----------------------------------------------------------------------------------------


def test_json_report_validates_and_round_trips(report, tmp_path):
    path = tmp_path / "r.json"
    reports.write_json(report, path)
    doc = reports.load_json(path)
    assert reports.validate_json(doc) == []
    assert doc["schema"] == reports.SCHEMA and doc["ok"] is False
    assert doc["summary"]["crashing:cpu"]["crash"] == 1
    assert {r["status"] for r in doc["results"]} >= {"pass", "fail", "xfail", "xpass", "skip", "crash", "timeout"}
    assert "onnxruntime" in doc["environment"]["versions"]
    bad = dict(doc, schema="other")
    assert reports.validate_json(bad)


def test_junit_xml_parses_with_one_suite_per_device(report, tmp_path):
    path = tmp_path / "r.xml"
    reports.write_junit(report, path)
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == report.devices
    wrong = next(s for s in suites if s.get("name") == "wrong:cpu")
    assert wrong.get("failures") == "2" and len(wrong.findall("testcase")) == 3
    crashing = next(s for s in suites if s.get("name") == "crashing:cpu")
    assert crashing.get("errors") == "1" and crashing.find("testcase/error").get("type") == "crash"
    assert next(s for s in suites if s.get("name") == "hanging:cpu").find("testcase/error").get("type") == "timeout"


def test_html_report_renders_the_matrix(report, tmp_path):
    path = tmp_path / "r.html"
    reports.write_html(report, path)
    text = path.read_text()

    class Cells(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.classes, self.open = {}, [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "table":
                self.open.append(a.get("id"))
                self.tables[a.get("id")] = 0
            if tag == "tr" and self.open:
                self.tables[self.open[-1]] += 1
            if tag == "td" and a.get("class") and self.open and self.open[-1] == "matrix":
                self.classes.append(a["class"])

        def handle_endtag(self, tag):
            if tag == "table":
                self.open.pop()

    p = Cells()
    p.feed(text)
    assert p.tables["matrix"] == 1 + len(CASES)  # header + one row per case
    assert len(p.classes) == len(CASES) * 4
    assert {"crash", "timeout", "fail", "pass"} <= set(p.classes)
    for case in CASES:
        assert case in text


def test_new_failures_against_a_baseline(report):
    doc = reports.to_json(report)
    assert reports.new_failures(report, doc) == []  # same run: nothing new
    passing = json.loads(json.dumps(doc))
    for r in passing["results"]:
        r["status"] = "pass"
    new = {(r.case, r.device, r.status) for r in reports.new_failures(report, passing)}
    assert (CASES[1], "crashing:cpu", "crash") in new and (CASES[0], "hanging:cpu", "timeout") in new
    assert ("zoo/mlp", "wrong:cpu", "fail") in new
    assert all(s in runner.FAILING for _, _, s in new)


def test_expectation_files_need_reasons(tmp_path):
    from nnport.errors import NnportError

    bad = tmp_path / "bad.toml"
    bad.write_text('[xfail]\n"op/*" = ""\n')
    with pytest.raises(NnportError, match="non-empty reason"):
        runner.load_expectations_file(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('[xfails]\n"op/*" = "x"\n')
    with pytest.raises(NnportError, match="unknown key"):
        runner.load_expectations_file(typo)


def test_shipped_expectation_files_parse_with_reasons():
    files = sorted(runner.XFAIL_DIR.glob("*.toml"))
    assert files, "conformance/xfail/*.toml missing"
    known = {c.id for c in case_mod.default_cases(include_slow=True)}
    known |= {
        c.id for c in case_mod.select("tflite/*")
    }  # LiteRT's opt-in .tflite cases (conformance/xfail/litert.toml)
    for path in files:
        _, exp = runner.load_expectations_file(path)
        for pattern in list(exp.xfail) + list(exp.skip):
            import fnmatch

            case_pattern = pattern.partition("@")[0]  # "case@device" keys name one device
            assert any(fnmatch.fnmatchcase(k, case_pattern) for k in known) or pattern.startswith("node/"), (
                path.name,
                pattern,
            )
        if path.stem == "onnxruntime":
            # The oracle's kernels are corrected (conformance/oracle.py): a row of the reference backend fails for a
            # reason of ONNX Runtime's, never for an oracle defect.
            assert not [k for k, v in exp.xfail.items() if "oracle defect" in v], exp.xfail
    # A row expected to fail says what was measured: a value, a position, a shape or the runtime's own message.
    for backend in ("onnxruntime", "openvino", "ncnn"):
        for key, reason in runner.expectations_for(backend).xfail.items():
            assert len(reason) >= 60 and any(ch.isdigit() for ch in reason), (backend, key, reason)


# -- the command line -------------------------------------------------------------------------------


def _nnport(*args: str, env=None, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nnport", *args], capture_output=True, text=True, env=env or _env(), timeout=timeout
    )


def test_cli_conformance_exit_codes_reports_and_baseline(tmp_path):
    j, x, h = tmp_path / "r.json", tmp_path / "r.xml", tmp_path / "r.html"
    ok = _nnport("conformance", "-b", "onnxruntime", "-k", "zoo/mlp", "-j", "1", "--json", str(j))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = _nnport(
        "conformance",
        "-b",
        "onnxruntime",
        "-b",
        "wrong",
        "-k",
        "zoo/mlp",
        "-k",
        "op/Sigmoid/*",
        "-j",
        "2",
        "--json",
        str(j),
        "--junit",
        str(x),
        "--html",
        str(h),
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "wrong:cpu" in bad.stdout and "FAIL" in bad.stdout
    assert (
        reports.load_json(j)["ok"] is False and ET.parse(x).getroot().tag == "testsuites" and "matrix" in h.read_text()
    )
    # the same failures against a baseline that already had them: exit 0
    same = _nnport(
        "conformance", "-b", "onnxruntime", "-b", "wrong", "-k", "zoo/mlp", "-k", "op/Sigmoid/*", "--baseline", str(j)
    )
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no new failures" in same.stdout
    # a baseline in which they passed: they are new failures, exit 1
    doc = json.loads(j.read_text())
    for r in doc["results"]:
        r["status"] = "pass"
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    regressed = _nnport(
        "conformance", "-b", "onnxruntime", "-b", "wrong", "-k", "zoo/mlp", "-k", "op/Sigmoid/*", "--baseline", str(old)
    )
    wrong_rows = sum(
        1 for r in doc["results"] if r["device"] == "wrong:cpu"
    )  # every wrong:cpu row fails now, passed then
    assert regressed.returncode == 1 and f"{wrong_rows} new failure(s)" in regressed.stdout, regressed.stdout
    usage = _nnport("conformance", "-k", "nothing-matches-this")
    assert usage.returncode == 2 and "no conformance case matches" in usage.stderr


def test_cli_conformance_requested_backend_must_exist_and_something_must_run():
    """Issue 13: a misspelt or missing backend printed "skip" for every case, "OK", and exited 0."""
    unknown = _nnport("conformance", "--backend", "acme:npu0", "--cases", "zoo/*", "-j", "1")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "acme:npu0: no backend named 'acme'" in unknown.stderr and "--allow-unavailable" in unknown.stderr
    bad_device = _nnport("conformance", "--backend", "onnxruntime:npu9", "-k", "zoo/mlp", "-j", "1")
    assert bad_device.returncode == 2 and "no device 'onnxruntime:npu9'" in bad_device.stderr, bad_device.stderr
    # opted in: the column is skips, and a run in which nothing ran is not OK
    allowed = _nnport("conformance", "--backend", "acme:npu0", "--cases", "zoo/*", "-j", "1", "--allow-unavailable")
    assert allowed.returncode == 1, allowed.stdout + allowed.stderr
    assert "FAILED (nothing ran)" in allowed.stdout and "every case was skipped" in allowed.stderr
    # ... while beside a backend that ran, the opted-in column does not fail the run
    mixed = _nnport(
        "conformance", "-b", "onnxruntime", "-b", "acme:npu0", "-k", "zoo/mlp", "-j", "1", "--allow-unavailable"
    )
    assert mixed.returncode == 0, mixed.stdout + mixed.stderr
    assert "no case ran on ['acme:npu0']" in mixed.stdout


def test_cli_conformance_run_wide_tolerances(tmp_path):
    j = tmp_path / "r.json"
    default = _nnport("conformance", "-b", "nudged", "-k", "zoo/cnn", "-j", "1", "--json", str(j))
    assert default.returncode == 0, default.stdout + default.stderr
    assert json.loads(j.read_text())["results"][0]["outputs"][0]["tolerance"].endswith("(fp32 defaults)")
    h = tmp_path / "r.html"
    tight = _nnport(
        "conformance",
        "-b",
        "nudged",
        "-k",
        "zoo/cnn",
        "-j",
        "1",
        "--atol",
        "1e-12",
        "--rtol",
        "1e-12",
        "--json",
        str(j),
        "--html",
        str(h),
    )
    assert tight.returncode == 1, tight.stdout + tight.stderr
    assert (
        "probs: atol=1e-12 rtol=1e-12 (given)" in h.read_text()
        and "tolerances: atol=1e-12, rtol=1e-12 given" in h.read_text()
    )
    doc = json.loads(j.read_text())
    assert doc["environment"]["cpu"].startswith(platform.machine())
    assert doc["tolerances"] == {"atol": 1e-12, "rtol": 1e-12}
    assert (
        doc["results"][0]["status"] == "fail"
        and doc["results"][0]["outputs"][0]["tolerance"] == "atol=1e-12 rtol=1e-12 (given)"
    )
    assert (
        "probs: atol=1e-12 rtol=1e-12 (given)" in tight.stdout
        and "tolerances: atol=1e-12, rtol=1e-12 given" in tight.stdout
    )
    per_output = _nnport("conformance", "-b", "nudged", "-k", "zoo/cnn", "--atol", "probs:1e-3")
    assert per_output.returncode == 2 and "one number for every case" in per_output.stderr


def test_cli_conformance_list():
    out = _nnport("conformance", "--list", "-k", "op/LSTM/*")
    assert out.returncode == 0
    assert out.stdout.split()[0] == "op/LSTM/forward_h16"


def test_cli_compare_exit_codes_and_files(tmp_path):
    ok = _nnport(
        "compare",
        "zoo:mlp",
        "-d",
        "onnxruntime",
        "--save-inputs",
        str(tmp_path / "in.npz"),
        "--save-outputs",
        str(tmp_path / "out.npz"),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all devices agree" in ok.stdout
    with np.load(tmp_path / "out.npz") as data:
        assert {"reference/probs", "onnxruntime:cpu/probs"} <= set(data.files)
    bad = _nnport(
        "compare", "zoo:mlp", "-d", "onnxruntime", "-d", "wrong", "--load-inputs", str(tmp_path / "in.npz"), "--json"
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    doc = json.loads(bad.stdout)
    assert [d["passed"] for d in doc["devices"]] == [True, False] and doc["passed"] is False
    assert doc["devices"][1]["outputs"][0]["max_abs_error"] > 0
    # a loose enough per-output tolerance makes the wrong backend agree
    loose = _nnport(
        "compare", "zoo:mlp", "-d", "wrong", "--atol", "probs:0.1", "--load-inputs", str(tmp_path / "in.npz")
    )
    assert loose.returncode == 0, loose.stdout
    x = np.load(tmp_path / "in.npz")["x"]
    np.save(tmp_path / "x.npy", x)
    named = _nnport("compare", "zoo:mlp", "-d", "onnxruntime", "--input", f"x={tmp_path / 'x.npy'}", "--json")
    assert named.returncode == 0 and json.loads(named.stdout)["inputs"]["x"]["shape"] == [1, 64]
    typo = _nnport("compare", "zoo:mlp", "-d", "onnxruntime", "--atol", "prob:1")
    assert typo.returncode == 2 and "unknown output" in typo.stderr
    missing = _nnport("compare", "zoo:mlp", "-d", "nosuchdevice")
    assert missing.returncode == 1 and "ERROR" in missing.stdout


def test_cli_compare_checks_the_given_tolerance_and_prints_the_effective_one(tmp_path):
    """Issue 13: ``--atol 1e-12 --rtol 1e-12`` said "all devices agree" at 1e-6 of the range (scale_tol overrode it)."""
    default = _nnport("compare", "zoo:cnn", "-d", "nudged")
    assert default.returncode == 0 and "all devices agree" in default.stdout, default.stdout + default.stderr
    assert "(fp32 defaults)" in default.stdout and "scale_tol 5e-05 x max|ref|" in default.stdout
    tight = _nnport("compare", "zoo:cnn", "-d", "nudged", "--atol", "1e-12", "--rtol", "1e-12", "--json")
    assert tight.returncode == 1, tight.stdout + tight.stderr
    out = json.loads(tight.stdout)["devices"][0]["outputs"][0]
    assert out["passed"] is False and out["tolerance"] == "atol=1e-12 rtol=1e-12 (given)" and out["scale_tol"] == 0.0
    assert 0 < out["max_abs_error"] < 1e-5
    floor = _nnport("compare", "zoo:cnn", "-d", "nudged", "--atol", "1e-12", "--rtol", "1e-12", "--scale-tol", "1e-5")
    assert floor.returncode == 0 and "scale_tol 1e-05" in floor.stdout, floor.stdout


def test_parse_tolerances():
    from nnport.conformance.cli import parse_tolerances
    from nnport.errors import NnportError

    assert parse_tolerances([], "--atol") is None
    assert parse_tolerances(["1e-3"], "--atol") == 1e-3
    assert parse_tolerances(["1e-3", "gpu_0/softmax_1:0.5"], "--atol") == {"": 1e-3, "gpu_0/softmax_1": 0.5}
    assert parse_tolerances(["a:b:2"], "--atol") == {"a:b": 2.0}
    with pytest.raises(NnportError):
        parse_tolerances(["x:abc"], "--atol")


# -- the pytest plugin ----------------------------------------------------------------------------------


def test_pytest_plugin_runs_the_suite_with_readable_ids(tmp_path):
    args = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "nnport.conformance",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rA",
        "--nnport-backend",
        "onnxruntime",
        "--nnport-backend",
        "wrong",
        "--nnport-backend",
        "crashing",
        "--nnport-cases",
        "op/Conv/k3_s1_p1",
        "--nnport-cases",
        "zoo/mlp",
    ]
    out = subprocess.run(args, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=240)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "PASSED test_suite.py::test_case[op/Conv/k3_s1_p1@onnxruntime:cpu]" in text
    assert "FAILED test_suite.py::test_case[zoo/mlp@wrong:cpu]" in text
    assert "FAILED test_suite.py::test_case[op/Conv/k3_s1_p1@crashing:cpu]" in text
    assert "crash: the worker process died (signal SIGABRT)" in text
    assert "PASSED test_suite.py::test_case[zoo/mlp@crashing:cpu]" in text
    assert "3 failed, 3 passed" in text


def test_pytest_plugin_unknown_backend_is_a_usage_error_and_all_skipped_fails(tmp_path):
    base = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "nnport.conformance",
        "-p",
        "no:cacheprovider",
        "-q",
        "--nnport-cases",
        "zoo/mlp",
    ]
    unknown = subprocess.run(
        base + ["--nnport-backend", "acme:npu0"], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120
    )
    assert unknown.returncode == 4, unknown.stdout + unknown.stderr  # pytest's usage error, not a column of skips
    assert "acme:npu0: no backend named 'acme'" in unknown.stderr
    allowed = subprocess.run(
        base + ["--nnport-backend", "acme:npu0", "--nnport-allow-unavailable"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert allowed.returncode == 1, allowed.stdout + allowed.stderr
    assert "1 skipped" in allowed.stdout and "nothing was tested" in allowed.stdout


def test_pytest_plugin_without_a_backend_skips(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "nnport.conformance", "-p", "no:cacheprovider", "-q", "-rs"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0 and "pass --nnport-backend" in out.stdout, out.stdout


# -- ONNX backend node tests -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # onnx's own case generators overflow on purpose
def test_onnx_backend_adapter_passes_onnx_backend_test_smoke_subset():
    import unittest

    import onnx.backend.test

    from nnport.conformance.onnx_backend import backend_for

    backend = backend_for("onnxruntime:cpu")
    bt = onnx.backend.test.BackendTest(backend, __name__)
    for name in (
        "test_relu",
        "test_add_bcast",
        "test_conv_with_strides_padding",
        "test_softmax_axis_1",
        "test_gemm_default_no_bias",
    ):
        bt.include(f"^{name}_cpu$")
    suite = unittest.TestSuite()
    for case in bt.test_cases.values():
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    result = unittest.TextTestRunner(stream=open(os.devnull, "w")).run(suite)
    ran = result.testsRun - len(result.skipped)
    assert ran == 5 and result.wasSuccessful(), (result.failures, result.errors)


def test_node_cases_run_in_the_worker_against_stored_outputs():
    from nnport.conformance import onnx_backend, worker

    names = onnx_backend.node_names()
    assert len(names) > 1000 and "test_relu" in names
    assert len(onnx_backend.node_cases(every=100)) == len(names[::100])
    res = worker.run_task({"case": "node/test_relu", "device": "onnxruntime:cpu"})
    assert res["status"] == "pass" and res["reference"] == "stored outputs"
    scalar = worker.run_task({"case": "node/test_blackmanwindow", "device": "onnxruntime:cpu"})  # a numpy-scalar input
    assert scalar["status"] == "pass", scalar["reason"]
    seq = worker.run_task({"case": "node/test_sequence_insert_at_back", "device": "onnxruntime:cpu"})
    assert seq["status"] == "skip" and "could not be built" in seq["reason"]


@pytest.mark.slow
def test_full_default_suite_passes_on_onnxruntime(tmp_path):
    out = _nnport("conformance", "-b", "onnxruntime", "--json", str(tmp_path / "r.json"), timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:]


def test_expectations_parse_without_tomllib(tmp_path, monkeypatch):
    """Python 3.10 has no tomllib: the tomli backport (a 3.10-only dependency) reads the same files."""
    import builtins
    import importlib.util

    from nnport.conformance import runner

    if importlib.util.find_spec("tomli") is None:
        pytest.skip("tomli is not installed here (it is a dependency on Python 3.10 only)")
    real_import = builtins.__import__

    def no_tomllib(name, *args, **kwargs):
        if name == "tomllib":
            raise ModuleNotFoundError("No module named 'tomllib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tomllib)
    assert runner.toml_module().__name__ == "tomli"
    path = tmp_path / "x.toml"
    path.write_text('[xfail]\n"op/Relu/*" = "a reason"\n')
    backend, entries = runner.load_expectations_file(path)
    assert entries is not None


def test_html_cells_are_coloured_by_worst_error_and_baseline_news_are_marked(report, tmp_path):
    """A passing cell's colour says how close it came (worst error relative to max|ref|); figures on hover."""
    text = reports.to_html(report)
    passing = [r for r in report.results if r.status == "pass" and reports.worst_error(r) is not None]
    assert passing
    r = passing[0]
    err, rel, name = reports.worst_error(r)
    assert 0 <= err and 0 <= rel and name in {o["name"] for o in r.outputs}
    assert f'style="background:{reports._heat(rel)}"' in text and "max|err|" in text and "cosine" in text
    assert 'id="new-since-baseline"' not in text
    assert reports._heat(0.0) != reports._heat(0.5)  # exact agreement and a 50% error look different

    doc = json.loads(json.dumps(reports.to_json(report)))
    for row in doc["results"]:
        row["status"] = "pass"  # a baseline in which everything passed: every failure now is new
    new = reports.new_failures(report, doc)
    path = tmp_path / "r.html"
    reports.write_html(report, path, baseline=doc)
    text = path.read_text()
    assert 'id="new-since-baseline"' in text and f"New since the baseline: {len(new)} failure(s)" in text
    assert text.count(' new"') == len(new) and "new since the baseline (was pass)" in text


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_cli_compare_plots_an_error_histogram_per_output(tmp_path):
    out = tmp_path / "errors.png"
    proc = _nnport("compare", "zoo:cnn", "-d", "onnxruntime", "-d", "wrong", "--plot", str(out))
    assert proc.returncode == 1 and f"error histograms written to {out}" in proc.stdout, proc.stdout + proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_cli_compare_plot_without_matplotlib_names_the_extra(monkeypatch, capsys):
    from nnport.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["compare", "zoo:mlp", "-d", "onnxruntime:cpu", "--plot", "x.png"]) == 2
    assert "pip install 'nnport[plot]'" in capsys.readouterr().err
