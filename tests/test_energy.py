"""Energy meters: the hook, the built-in RAPL/NVML/hwmon meters, and failure handling.

RAPL and hwmon parsing and wrap-around are core logic tested on fake sysfs
trees (the meters take a root path); the measurements they bracket run on the
real ONNX Runtime backend.  On this machine no meter can be read, so the
real-hardware tests check that every meter says why.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import nnport
from nnport import hookimpl, zoo
from nnport.energy import (
    EnergyMeter,
    EnergySession,
    HwmonMeter,
    MeterError,
    NvmlMeter,
    RaplMeter,
    collect_meters,
    counter_delta,
    integrate,
    meter_status,
)
from nnport.manager import get_plugin_manager

pytest.importorskip("onnxruntime")

FAST = nnport.MeasureSettings(warmup=2, min_iterations=20, min_duration_s=0.05)
BUILTIN = {"rapl", "nvml", "hwmon"}


@pytest.fixture(scope="module")
def cnn():
    return zoo.load("cnn")


def compiled_cnn(model):
    return nnport.compile(model, "onnxruntime:cpu", fallback=False, threads=1)


class ConstantMeter(EnergyMeter):
    """A meter plugin reporting a fixed reading (it stands in for a lab power meter)."""

    name = "bench-supply"
    kinds = ("cpu", "gpu", "npu")
    priority = 100

    def __init__(self, joules=2.5, fail_on_stop=False):
        self.joules = joules
        self.fail_on_stop = fail_on_stop
        self.started = self.stopped = 0

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1
        if self.fail_on_stop:
            raise MeterError("the supply stopped answering on its serial port")
        return self.joules


class MeterPlugin:
    def __init__(self, *meters):
        self.meters = meters
        self.calls = 0

    @hookimpl
    def nnport_energy_meters(self, register):
        self.calls += 1
        for m in self.meters:
            register(m)


# -- the hook ----------------------------------------------------------------------------------


def test_hook_nnport_energy_meters(cnn):
    """A plugin's meter brackets the timed run and supplies the headline energy figure."""
    meter = ConstantMeter(joules=2.5)
    plugin = MeterPlugin(meter)
    get_plugin_manager().register(plugin, "supply")
    compiled = compiled_cnn(cnn)
    m = nnport.measure(compiled, settings=FAST)
    assert plugin.calls == 1 and meter.started == 1 and meter.stopped == 1
    assert m.energy_j == 2.5 and m.energy_meter == "bench-supply"
    assert m.energy_per_inference_mj == pytest.approx(2.5e3 / m.inferences)
    assert m.avg_power_w == pytest.approx(2.5 / m.duration_s)
    d = m.to_dict()
    assert d["energy"] == "measured" and d["energy_unavailable_reasons"] == {}
    assert d["energy_per_inference_mj"] == pytest.approx(2.5e3 / m.inferences)
    # the built-in meters were offered too: each either read or gave its reason
    names = set(d["energy_readings_j"]) | set(m.energy_reasons)
    assert BUILTIN <= names


def test_register_rejects_what_is_not_a_meter():
    class Bad:
        @hookimpl
        def nnport_energy_meters(self, register):
            register("not a meter")

    get_plugin_manager().register(Bad(), "bad-meters")
    meters, reasons = collect_meters()
    assert {type(x) for x in meters} >= {RaplMeter, NvmlMeter, HwmonMeter}
    assert "TypeError" in reasons["plugin bad-meters"] and "EnergyMeter" in reasons["plugin bad-meters"]


def test_energy_unavailable_here_says_why_for_each_meter(cnn):
    """On a machine without readable meters the result says so, meter by meter (never a number)."""
    m = nnport.measure(compiled_cnn(cnn), settings=FAST)
    readable = {row["meter"] for row in meter_status() if row["usable"]}
    if m.energy_j is None:
        assert not readable & {"rapl", "hwmon"}  # a CPU run: only these cover cpu
        assert BUILTIN <= set(m.energy_reasons)
        assert all(isinstance(r, str) and len(r) > 10 for r in m.energy_reasons.values())
        assert m.to_dict()["energy"] == "unavailable"
        assert m.energy_per_inference_mj is None and m.avg_power_w is None
        assert "rapl:" in m.energy_unavailable and "nvml:" in m.energy_unavailable
    else:
        assert m.energy_meter in readable and m.energy_j >= 0


def test_rapl_reason_on_this_machine_matches_sysfs():
    reason = RaplMeter().probe()
    root = Path("/sys/class/powercap")
    if not root.exists():
        assert reason is not None and "does not exist" in reason
    elif reason is not None:
        assert str(root) in reason or "RAPL" in reason


def test_nvml_reason_without_driver():
    import importlib.util

    reason = NvmlMeter().probe()
    if importlib.util.find_spec("pynvml") is None:
        assert "nvidia-ml-py is not installed" in reason
    elif not Path("/proc/driver/nvidia").exists():
        assert reason is not None and "NVML" in reason


def test_energy_not_requested(cnn):
    m = nnport.measure(
        compiled_cnn(cnn), settings=FAST.__class__(warmup=1, min_iterations=5, min_duration_s=0.02, energy=False)
    )
    assert m.energy_j is None and "not requested" in m.energy_unavailable


# -- a meter failing mid-run ---------------------------------------------------------------------


def test_meter_failing_mid_run_keeps_the_timing(cnn):
    good = ConstantMeter(joules=1.0)
    good.name = "other"
    good.priority = 1
    bad = ConstantMeter(joules=9.0, fail_on_stop=True)
    get_plugin_manager().register(MeterPlugin(bad, good), "supply")
    m = nnport.measure(compiled_cnn(cnn), settings=FAST)
    assert m.iterations >= 20 and m.latency_p50_ms > 0
    assert "failed during the run" in m.energy_reasons["bench-supply"]
    assert "serial port" in m.energy_reasons["bench-supply"]
    # the failing meter is out; the working one (lower priority) gives the figure
    assert m.energy_meter == "other" and m.energy_j == 1.0


def test_only_meter_failing_mid_run_means_unavailable(cnn):
    get_plugin_manager().register(MeterPlugin(ConstantMeter(fail_on_stop=True)), "supply")
    m = nnport.measure(compiled_cnn(cnn), settings=FAST)
    assert m.iterations >= 20
    assert m.energy_j is None and m.to_dict()["energy"] == "unavailable"
    assert "bench-supply: failed during the run" in m.energy_unavailable


def test_rapl_counter_vanishing_mid_run(tmp_path):
    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 1000, 10**9)})
    meter = RaplMeter(tmp_path, poll_interval_s=3600)
    assert meter.probe() is None
    session = EnergySession([meter], "cpu")
    session.start()
    (tmp_path / "intel-rapl:0" / "energy_uj").unlink()
    result = session.stop()
    assert result.energy_j is None
    assert "failed during the run" in result.reasons["rapl"] and "energy_uj" in result.reasons["rapl"]


def test_poller_error_surfaces_at_stop(tmp_path):
    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 1000, 10**9)})
    meter = RaplMeter(tmp_path, poll_interval_s=0.005)
    assert meter.probe() is None
    meter.start()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("garbage\n")
    time.sleep(0.05)
    with pytest.raises(MeterError, match="polling failed"):
        meter.stop()


# -- RAPL on a fake sysfs tree ----------------------------------------------------------------------


def rapl_tree(root: Path, zones: dict[str, tuple[str, int, int]]) -> None:
    for zone, (name, energy, max_range) in zones.items():
        d = root / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")


def set_energy(root: Path, zone: str, value: int) -> None:
    (root / zone / "energy_uj").write_text(f"{value}\n")


def test_counter_delta_wraps_once():
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(900, 50, 1000) == 150  # 900 -> 1000 -> 0 -> 50
    assert counter_delta(5, 5, 1000) == 0


def test_rapl_sums_packages_and_unwraps(tmp_path):
    rapl_tree(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", 262_000_000_000, 262_143_328_850),
            "intel-rapl:0:0": ("core", 5, 262_143_328_850),  # a sub-zone: part of package-0
            "intel-rapl:1": ("package-1", 1_000_000, 262_143_328_850),
            "intel-rapl:2": ("psys", 7, 262_143_328_850),  # platform zone: not a package
        },
    )
    meter = RaplMeter(tmp_path, poll_interval_s=3600)
    assert meter.probe() is None
    assert [label for label, _ in meter.zones()] == ["package-0", "package-1"]
    assert "package-0" in meter.describe() and "psys" not in meter.describe()
    meter.start()
    # package-0 wraps: 143_328_850 µJ to the top, then 56_671_150 µJ after 0 -> 200 J in all
    set_energy(tmp_path, "intel-rapl:0", 56_671_150)
    set_energy(tmp_path, "intel-rapl:1", 31_000_000)  # +30 J
    set_energy(tmp_path, "intel-rapl:0:0", 10**9)  # ignored
    assert meter.stop() == pytest.approx(230.0)


def test_rapl_polling_catches_more_than_one_wrap(tmp_path):
    """Between two polls at most one wrap happens; several polls unwrap several wraps."""
    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, 1_000_000)})
    meter = RaplMeter(tmp_path, poll_interval_s=3600)
    assert meter.probe() is None
    meter.start()
    for value in (600_000, 100_000, 700_000, 200_000):  # +0.6, +0.5, +0.6, +0.5 J
        set_energy(tmp_path, "intel-rapl:0", value)
        meter.poll()
    set_energy(tmp_path, "intel-rapl:0", 300_000)  # +0.1 J
    assert meter.stop() == pytest.approx(2.3)


def test_rapl_uses_every_top_zone_without_packages(tmp_path):
    rapl_tree(tmp_path, {"intel-rapl:0": ("psys", 0, 10**9)})
    meter = RaplMeter(tmp_path)
    assert [label for label, _ in meter.zones()] == ["psys"]


def test_rapl_reasons(tmp_path):
    assert "does not exist" in RaplMeter(tmp_path / "nope").probe()
    (tmp_path / "empty").mkdir()
    assert "no RAPL zones" in RaplMeter(tmp_path / "empty").probe()
    rapl_tree(tmp_path / "bad", {"intel-rapl:0": ("package-0", 0, 10**9)})
    (tmp_path / "bad" / "intel-rapl:0" / "energy_uj").unlink()
    (tmp_path / "bad" / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable as a file
    reason = RaplMeter(tmp_path / "bad").probe()
    assert "energy_uj" in reason and "cannot be read" in reason
    rapl_tree(tmp_path / "text", {"intel-rapl:0": ("package-0", 0, 10**9)})
    (tmp_path / "text" / "intel-rapl:0" / "max_energy_range_uj").write_text("n/a\n")
    assert "integer" in RaplMeter(tmp_path / "text").probe()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_rapl_permission_denied(tmp_path):
    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, 10**9)})
    (tmp_path / "intel-rapl:0" / "energy_uj").chmod(0)
    reason = RaplMeter(tmp_path).probe()
    assert "permission denied" in reason and "root" in reason


def test_rapl_permission_denied_reason(tmp_path, monkeypatch):
    """As root cannot be denied, the kernel's EACCES on energy_uj (Linux >= 5.10) is simulated."""
    import nnport.energy as energy

    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, 10**9)})
    real = energy._read_int

    def read(path):
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(energy, "_read_int", read)
    reason = RaplMeter(tmp_path).probe()
    assert "permission denied" in reason and "only root may read RAPL counters" in reason


def test_rapl_meter_in_a_real_measurement(tmp_path, cnn):
    """A RAPL tree whose counter moves during the run gives a figure; nothing is invented."""
    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 5_000_000, 10**9)})

    class MovingRapl(RaplMeter):
        name = "rapl-test"

        def stop(self):
            set_energy(tmp_path, "intel-rapl:0", 8_000_000)  # +3 J during the run
            return super().stop()

    class Plugin:
        @hookimpl
        def nnport_energy_meters(self, register):
            register(MovingRapl(tmp_path, poll_interval_s=3600))

    pm = get_plugin_manager()
    pm.register(Plugin(), "fake-rapl")
    m = nnport.measure(compiled_cnn(cnn), settings=FAST)
    assert m.energy_meter == "rapl-test" and m.energy_j == pytest.approx(3.0)
    assert m.energy_readings_j["rapl-test"] == pytest.approx(3.0)
    assert m.energy_per_inference_mj == pytest.approx(3000 / m.inferences)


# -- hwmon on a fake sysfs tree ----------------------------------------------------------------------


def hwmon_dir(root: Path, n: int, name: str, files: dict[str, str]) -> Path:
    d = root / f"hwmon{n}"
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    for f, v in files.items():
        (d / f).write_text(v + "\n")
    return d


def test_hwmon_ina3221_uses_the_total_input_rail(tmp_path):
    hwmon_dir(
        tmp_path,
        0,
        "ina3221",
        {
            "in1_label": "VDD_IN",
            "in1_input": "5000",
            "curr1_input": "1200",  # 6 W
            "in2_label": "VDD_CPU_GPU_CV",
            "in2_input": "5000",
            "curr2_input": "400",
            "in3_label": "VDD_SOC",
            "in3_input": "5000",
            "curr3_input": "300",
        },
    )
    hwmon_dir(tmp_path, 1, "k10temp", {"temp1_input": "45000"})
    meter = HwmonMeter(tmp_path, sample_interval_s=0.005)
    assert meter.probe() is None
    assert [c.label for c in meter.channels] == ["VDD_IN"]
    assert meter.channels[0].watts() == pytest.approx(6.0)
    meter.start()
    time.sleep(0.1)
    joules = meter.stop()
    times = meter._samples.times
    assert len(times) >= 3
    assert joules == pytest.approx(6.0 * (times[-1] - times[0]))
    assert 6.0 * 0.09 <= joules <= 6.0 * 1.0


def test_hwmon_sums_channels_without_a_total_rail(tmp_path):
    hwmon_dir(
        tmp_path, 0, "ina219", {"in0_input": "3", "in1_input": "5100", "curr1_input": "500", "power1_input": "2550000"}
    )
    hwmon_dir(tmp_path, 1, "ina219", {"in1_input": "12000", "curr1_input": "250"})  # 3 W, no power file
    meter = HwmonMeter(tmp_path)
    assert meter.probe() is None
    # hwmon0 reports power directly (its curr/in are the same rail); hwmon1 via mA x mV
    assert [(c.power is not None) for c in meter.channels] == [True, False]
    assert sum(c.watts() for c in meter.channels) == pytest.approx(2.55 + 3.0)


def test_hwmon_skips_gpu_driver_sensors(tmp_path):
    hwmon_dir(tmp_path, 0, "amdgpu", {"power1_average": "35000000"})  # one GPU's power, not the board's
    assert "no hwmon power sensor" in HwmonMeter(tmp_path).probe()
    hwmon_dir(tmp_path, 1, "power_meter", {"power1_average": "120000000"})  # ACPI system power
    meter = HwmonMeter(tmp_path)
    assert meter.probe() is None and [c.sensor for c in meter.channels] == ["power_meter"]
    assert meter.channels[0].watts() == pytest.approx(120.0)


def test_hwmon_reasons(tmp_path):
    assert "does not exist" in HwmonMeter(tmp_path / "none").probe()
    hwmon_dir(tmp_path, 0, "k10temp", {"temp1_input": "40000", "in0_input": "900"})
    assert "no hwmon power sensor" in HwmonMeter(tmp_path).probe()


def test_integrate_is_trapezoidal():
    assert integrate([0.0, 1.0, 3.0], [2.0, 4.0, 4.0]) == pytest.approx(3.0 + 8.0)
    with pytest.raises(MeterError, match="too short"):
        integrate([0.0], [1.0])


# -- headline selection ----------------------------------------------------------------------------


def test_headline_needs_a_meter_covering_the_device_kind():
    gpu_only = ConstantMeter(joules=4.0)
    gpu_only.kinds = ("gpu",)
    session = EnergySession([gpu_only], "cpu")
    session.start()
    result = session.stop()
    assert result.energy_j is None and result.readings_j == {"bench-supply": 4.0}
    assert "do not cover cpu" in result.unavailable


def test_invalid_reading_is_no_reading():
    session = EnergySession([ConstantMeter(joules=float("nan"))], "cpu")
    session.start()
    result = session.stop()
    assert result.energy_j is None and "invalid reading" in result.reasons["bench-supply"]


def test_meters_cli_lists_reasons(capsys):
    from nnport.cli import main

    assert main(["meters"]) == 0
    out = capsys.readouterr().out
    for name in BUILTIN:
        assert name in out
    assert main(["meters", "--json"]) == 0
    rows = {r["meter"]: r for r in json.loads(capsys.readouterr().out)}
    assert BUILTIN <= set(rows)
    for r in rows.values():
        assert r["usable"] == (r["reason"] is None)
        assert (r["reads"] is not None) == r["usable"]


def test_meter_hook_runs_through_pluggy_wrappers_and_argument_subsets():
    calls = []

    class Observer:
        @hookimpl(wrapper=True)
        def nnport_energy_meters(self, register):
            calls.append("wrapped")
            return (yield)

    class NoArguments:
        @hookimpl
        def nnport_energy_meters(self):
            calls.append("no-arguments")

    pm = get_plugin_manager()
    pm.register(Observer(), "observer-meters")
    pm.register(NoArguments(), "no-argument-meters")
    try:
        meters, reasons = collect_meters()
    finally:
        pm.unregister(name="observer-meters")
        pm.unregister(name="no-argument-meters")
    assert "no-arguments" in calls and calls.count("wrapped") >= 2  # around each plugin's implementation
    assert not any("no-argument-meters" in k for k in reasons)
    assert {type(x) for x in meters} >= {RaplMeter, NvmlMeter, HwmonMeter}
