"""Device selection and fallback, with fake backends (core logic only)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import nnport
from fakes import install, make_backend
from nnport import zoo
from nnport.data import random_feeds


@pytest.fixture
def mlp():
    return zoo.load("mlp")


def test_auto_prefers_npu_then_gpu_then_cpu_then_priority(mlp):
    cpu_hi = make_backend("cpuhi", kinds=("cpu",), priority=90)
    cpu_lo = make_backend("cpulo", kinds=("cpu",), priority=10)
    gpu = make_backend("gpux", kinds=("gpu",), priority=1)
    npu = make_backend("npux", kinds=("npu",), priority=1)
    install(cpu_lo, gpu, cpu_hi, npu)
    assert [d.id for d in nnport.devices()] == ["npux:npu", "gpux:gpu", "cpuhi:cpu", "cpulo:cpu"]
    assert nnport.compile(mlp).device.id == "npux:npu"


def test_kind_backend_and_id_specs(mlp):
    a = make_backend("alpha", kinds=("cpu", "gpu"), priority=50)
    b = make_backend("beta", kinds=("cpu",), priority=60)
    install(a, b)
    assert nnport.compile(mlp, "gpu").device.id == "alpha:gpu"
    assert nnport.compile(mlp, "cpu").device.id == "beta:cpu"
    assert nnport.compile(mlp, "alpha").device.id == "alpha:cpu"  # backend's own order
    assert nnport.compile(mlp, "ALPHA:GPU").device.id == "alpha:gpu"  # ids are case-insensitive
    assert nnport.compile(mlp, "alpha:gpu").device.kind == "gpu"
    assert nnport.compile(mlp, ["beta", "alpha:gpu"]).device.id == "beta:cpu"


def test_unknown_device_lists_what_exists(mlp):
    install(make_backend("alpha"))
    with pytest.raises(nnport.DeviceNotFound, match=r"alpha:cpu"):
        nnport.compile(mlp, "nosuch")
    with pytest.raises(nnport.DeviceNotFound, match=r"alpha devices: \['alpha:cpu'\]"):
        nnport.compile(mlp, "alpha:npu7")
    with pytest.raises(nnport.DeviceNotFound, match="no available npu device"):
        nnport.compile(mlp, "npu")


def test_unavailable_backend_gives_its_reason(mlp):
    install(make_backend("gone", unavailable="the gone SDK is not installed"), make_backend("here"))
    with pytest.raises(nnport.BackendUnavailable, match="the gone SDK is not installed"):
        nnport.compile(mlp, "gone")
    # in a list, an unusable entry is skipped
    assert nnport.compile(mlp, ["gone", "here"]).device.id == "here:cpu"
    statuses = {b.name: b for b in nnport.backends()}
    assert statuses["gone"].status == "unavailable" and "not installed" in statuses["gone"].reason
    assert statuses["here"].status == "available"


def test_fallback_records_attempts_and_logs(mlp, caplog):
    bad = make_backend("bad", priority=99, fail=nnport.UnsupportedModel)
    good = make_backend("good", priority=1)
    install(bad, good)
    with caplog.at_level(logging.INFO, logger="nnport"):
        compiled = nnport.compile(mlp, "auto")
    assert compiled.device.id == "good:cpu"
    assert [d for d, _ in compiled.attempts] == ["bad:cpu"]
    assert isinstance(compiled.attempts[0][1], nnport.UnsupportedModel)
    assert "bad:cpu could not compile" in caplog.text
    out = compiled.run(random_feeds(compiled.inputs))
    assert out["probs"].shape == (1, 10)


def test_no_fallback_raises_first_failure(mlp):
    good = make_backend("good")
    install(make_backend("bad", priority=99, fail=nnport.UnsupportedModel), good)
    with pytest.raises(nnport.UnsupportedModel, match="bad cannot compile"):
        nnport.compile(mlp, "auto", fallback=False)
    assert good.calls == []  # the next candidate was never tried


def test_plugin_bug_is_wrapped_as_compile_error(mlp):
    install(make_backend("buggy", priority=99, fail=ZeroDivisionError), make_backend("good"))
    compiled = nnport.compile(mlp)
    err = compiled.attempts[0][1]
    assert isinstance(err, nnport.CompileError) and isinstance(err.__cause__, ZeroDivisionError)
    assert "buggy:cpu" in str(err)


def test_every_candidate_failing_lists_all_attempts(mlp):
    install(make_backend("b1", fail=nnport.UnsupportedModel), make_backend("b2", fail=nnport.CompileError))
    with pytest.raises(nnport.NoDeviceCouldCompile) as info:
        nnport.compile(mlp)
    assert [d for d, _ in info.value.attempts] == ["b1:cpu", "b2:cpu"]
    assert "b1 cannot compile" in str(info.value) and "b2 cannot compile" in str(info.value)


def test_fastest_policy_measures_keeps_and_remembers_the_fastest(mlp, tmp_path, monkeypatch):
    monkeypatch.setenv("NNPORT_CACHE_DIR", str(tmp_path))
    slow = make_backend("slowpoke", priority=99, delay_s=0.004)
    fast = make_backend("quick", priority=1)
    install(slow, fast)
    compiled = nnport.compile(mlp, ["slowpoke", "quick"], policy="fastest")
    assert compiled.device.id == "quick:cpu"
    timings = compiled.info["fastest_policy"]
    assert timings["slowpoke:cpu"] > timings["quick:cpu"]
    assert (tmp_path / "fastest.json").exists()
    slow.calls.clear()
    again = nnport.compile(mlp, ["slowpoke", "quick"], policy="fastest")
    assert again.device.id == "quick:cpu" and again.info["fastest_policy_cached"] is True
    assert slow.calls == []  # remembered: no re-measurement


def test_options_as_keywords(mlp):
    install(make_backend("alpha"))
    compiled = nnport.compile(mlp, "alpha", threads=2, precision="fp16")
    assert compiled.options.threads == 2 and compiled.options.precision == "fp16"
    with pytest.raises(ValueError, match="precision must be one of"):
        nnport.compile(mlp, "alpha", precision="fp8")


def test_compiled_model_reports_its_device_and_runs(mlp):
    install(make_backend("alpha"))
    compiled = nnport.compile(mlp, "alpha")
    assert compiled.device.backend == "alpha"
    feeds = random_feeds(compiled.inputs, seed=3)
    a = compiled.run(feeds)
    b = compiled(**feeds)
    np.testing.assert_array_equal(a["probs"], b["probs"])


# -- one device id, one backend (issue 13, item 4) -------------------------------------------------


def _squatter(name, ids, backend=None):
    """A backend listing ``ids`` (which may be outside its own namespace)."""
    cls = make_backend(name)

    def devices(self):
        return [nnport.Device(id=i, backend=backend or self.name, kind="cpu") for i in ids]

    cls.devices = devices
    return cls


def test_device_id_in_another_backends_namespace_is_a_broken_row_naming_both(mlp):
    owner = make_backend("owner", priority=1)
    copy = _squatter("copycat", ["owner:cpu"])
    install(owner, copy)
    rows = {r.name: r for r in nnport.backends()}  # probe only: nothing listed yet, nothing known
    assert rows["copycat"].status == "available"
    rows = {r.name: r for r in nnport.backends(check_devices=True)}
    assert rows["copycat"].status == "broken" and rows["owner"].status == "available"
    assert "device id 'owner:cpu' is not copycat:<local id>" in rows["copycat"].reason
    assert "belong to backend 'owner'" in rows["copycat"].reason
    # never a silent winner: the id is the owner's, the copy is used nowhere
    assert nnport.compile(mlp, "owner:cpu").device.backend == "owner"
    assert type(nnport.compile(mlp, "owner:cpu").backend).name == "owner"
    with pytest.raises(nnport.DeviceIdConflict, match="backend 'copycat' is broken"):
        nnport.compile(mlp, "copycat")
    assert [d.backend for d in nnport.devices()] == ["owner"]
    assert nnport.compile(mlp, "auto").device.id == "owner:cpu"


@pytest.mark.parametrize(
    "ids, backend, expected",
    [
        (["vend"], None, "device id 'vend' is not vend:<local id>"),
        (["vend:"], None, "device id 'vend:' is not vend:<local id>"),
        (["other:npu"], None, "device id 'other:npu' is not vend:<local id>"),
        (["vend:a", "VEND:A"], None, "device id 'VEND:A' is listed twice"),
        (["vend:a"], "elsewhere", "device 'vend:a' says backend='elsewhere'"),
    ],
)
def test_device_ids_are_checked_by_the_core(mlp, ids, backend, expected):
    install(_squatter("vend", ids, backend))
    with pytest.raises(nnport.DeviceIdConflict) as info:
        nnport.devices("vend")
    assert expected in str(info.value)
    assert {r.name: r for r in nnport.backends()}["vend"].status == "broken"  # found once: listed as broken


def test_backend_names_are_unique_regardless_of_case():
    from fakes import BackendPlugin
    from nnport.manager import create_plugin_manager

    pm = create_plugin_manager(builtins=False, entrypoints=False, blocked=[])
    pm.register(BackendPlugin(make_backend("acme")), "first")
    pm.register(BackendPlugin(make_backend("ACME")), "second")
    pm.register(BackendPlugin(make_backend("bad:name")), "third")
    assert list(pm.registered_backends()) == ["acme"]
    broken = {b.name: b.error for b in pm.broken}
    assert "already registered by plugin 'first'" in broken["second"]
    assert "cannot be a device id prefix" in broken["third"]
