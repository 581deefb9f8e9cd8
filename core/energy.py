"""Energy meters: the seed workflow's power test, as plugins.

A meter reads a hardware energy counter or power sensor around a timed run.
Meters come from the ``nnport_energy_meters(register)`` hook; this module is
the core plugin that registers the built-in ones:

* ``rapl``: Intel/AMD RAPL package counters under ``/sys/class/powercap``
  (``energy_uj``, wrapping at ``max_energy_range_uj``; polled so a wrap between
  two reads is never lost);
* ``nvml``: NVIDIA GPUs' total-energy counter through ``nvidia-ml-py``
  (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since driver load);
* ``hwmon``: Linux hwmon power sensors (``power*_input``/``power*_average``, µW)
  and current x voltage pairs (``curr*_input`` mA x ``in*_input`` mV), as the
  INA219/INA3221 boards of Jetson and Raspberry Pi expose them, integrated
  over time from samples.

Each meter says why it cannot measure (``probe()`` returns the reason); the
measurement then reports ``energy: unavailable`` with every meter's reason.
Nothing is ever estimated: no reading, no number.  specs/measurement.md states
which meter's figure becomes the headline one.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .manager import NnportPluginManager


class MeterError(RuntimeError):
    """A meter could not be read during a run; the message is the reason shown to the user."""


class EnergyMeter:
    """Base class of an energy meter.

    Subclasses set ``name`` (shown in results and reasons) and ``kinds`` (the
    device kinds whose energy the meter covers: RAPL packages cover ``cpu``,
    NVML covers ``gpu``, a board's input rail covers everything), and implement
    ``probe``, ``start`` and ``stop``.  A meter instance measures one run at a
    time; the hook is called anew for every measurement, so each run gets
    fresh instances.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ("cpu", "gpu", "npu")
    priority: ClassVar[int] = 0
    """Higher wins the headline figure among working meters covering the device's kind."""

    def probe(self) -> str | None:
        """None when the meter can be read here, else one line saying why not."""
        return None

    def start(self) -> None:
        """Begin measuring (read counters, start a sampler)."""
        raise NotImplementedError

    def stop(self) -> float:
        """Stop measuring; return the joules consumed since ``start``.  Raise on failure."""
        raise NotImplementedError

    def describe(self) -> str:
        """What the meter reads (zones, GPUs, sensor channels), for results and reports."""
        return self.name


class _Poller:
    """A daemon thread calling ``fn`` every ``interval_s`` until stopped.

    An exception in ``fn`` stops the polling and is kept, so that ``stop()``
    can re-raise it as the meter's failure.
    """

    def __init__(self, fn: Callable[[], None], interval_s: float, name: str) -> None:
        self._fn = fn
        self._interval = interval_s
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"nnport-meter-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._fn()
            except BaseException as exc:  # kept and re-raised by the meter's stop()
                self.error = exc
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _unreadable(path: Path, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return f"{path} is not readable by this user (permission denied)"
    return f"{path} cannot be read: {exc.strerror or exc}"


# -- RAPL -------------------------------------------------------------------------------------


class RaplMeter(EnergyMeter):
    """RAPL package energy from the Linux powercap interface.

    Reads the top-level zones (``intel-rapl:0``, ``intel-rapl:1``; AMD Zen
    exposes its RAPL under the same driver) whose ``name`` starts with
    ``package`` (all top-level zones if none does) and sums them.  Sub-zones
    (core, uncore, dram) are parts of, or beside, a package and are not added.
    ``energy_uj`` counts up to ``max_energy_range_uj`` and wraps to 0; the
    counters are polled every ``poll_interval_s`` so that at most one wrap
    happens between two reads (some AMD counters wrap within a minute).
    """

    name = "rapl"
    kinds = ("cpu",)
    priority = 10

    ZONE = re.compile(r"^[a-z]+-rapl:\d+$")

    def __init__(self, root: str | Path = "/sys/class/powercap", poll_interval_s: float = 1.0) -> None:
        self.root = Path(root)
        self.poll_interval_s = poll_interval_s
        self._zones: list[tuple[str, Path, int]] = []
        self._last: list[int] = []
        self._total_uj = 0
        self._lock = threading.Lock()
        self._poller: _Poller | None = None

    def zones(self) -> list[tuple[str, Path]]:
        """(zone name, zone directory) of the zones this meter sums."""
        if not self.root.is_dir():
            return []
        top = []
        for d in sorted(self.root.iterdir()):
            if not self.ZONE.match(d.name):
                continue
            try:
                label = (d / "name").read_text().strip()
            except OSError:
                label = d.name
            top.append((label, d))
        packages = [z for z in top if z[0].startswith("package")]
        return packages or top

    def probe(self) -> str | None:
        if not self.root.exists():
            return f"{self.root} does not exist (the kernel exposes no powercap/RAPL interface here)"
        try:
            zones = self.zones()
        except OSError as exc:
            return _unreadable(self.root, exc)
        if not zones:
            return f"no RAPL zones (intel-rapl:N) under {self.root}"
        found = []
        for label, d in zones:
            for f in ("energy_uj", "max_energy_range_uj"):
                try:
                    _read_int(d / f)
                except OSError as exc:
                    hint = (
                        " (since Linux 5.10 only root may read RAPL counters: run as root or make energy_uj readable)"
                        if isinstance(exc, PermissionError)
                        else ""
                    )
                    return _unreadable(d / f, exc) + hint
                except ValueError:
                    return f"{d / f} does not hold an integer"
            found.append((label, d, _read_int(d / "max_energy_range_uj")))
        self._zones = found
        return None

    def describe(self) -> str:
        zones = [(label, d) for label, d, _ in self._zones] or self.zones()
        return "RAPL " + " + ".join(f"{label} ({d.name})" for label, d in zones)

    def start(self) -> None:
        if not self._zones:
            reason = self.probe()
            if reason:
                raise MeterError(reason)
        self._total_uj = 0
        self._last = [self._read(d) for _, d, _ in self._zones]
        self._poller = _Poller(self.poll, self.poll_interval_s, self.name)
        self._poller.start()

    def _read(self, zone: Path) -> int:
        try:
            return _read_int(zone / "energy_uj")
        except (OSError, ValueError) as exc:
            raise MeterError(f"reading {zone / 'energy_uj'} failed: {exc}") from exc

    def poll(self) -> None:
        """Add the energy since the last read, unwrapping counters that passed their maximum."""
        with self._lock:
            for i, (_, d, max_range) in enumerate(self._zones):
                now = self._read(d)
                self._total_uj += counter_delta(self._last[i], now, max_range)
                self._last[i] = now

    def stop(self) -> float:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.stop()
            if poller.error is not None:
                raise MeterError(f"polling failed: {poller.error}") from poller.error
        self.poll()
        return self._total_uj / 1e6


def counter_delta(before: int, after: int, max_range: int) -> int:
    """Increase of a counter that wraps to 0 after ``max_range``: at most one wrap assumed."""
    if after >= before:
        return after - before
    return (max_range - before) + after


# -- NVML -------------------------------------------------------------------------------------


class NvmlMeter(EnergyMeter):
    """NVIDIA GPU energy from NVML's total-energy counter (Volta and newer).

    Sums every NVIDIA GPU in the machine (NVML ignores ``CUDA_VISIBLE_DEVICES``),
    idle ones included: the figure is the GPUs' energy during the run.
    """

    name = "nvml"
    kinds = ("gpu",)
    priority = 10

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._start: list[int] = []
        self._names: list[str] = []

    def probe(self) -> str | None:
        if importlib.util.find_spec("pynvml") is None:
            return "nvidia-ml-py is not installed (pip install 'nnport[measure]')"
        import pynvml

        try:
            pynvml.nvmlInit()
        except Exception as exc:
            return f"NVML cannot be initialised: {exc} (no NVIDIA driver here)"
        reason = None
        try:
            count = pynvml.nvmlDeviceGetCount()
            if count == 0:
                reason = "NVML sees no NVIDIA GPU"
            handles, names = [], []
            for i in range(count):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                try:
                    pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
                except Exception as exc:
                    reason = f"GPU {i} has no total-energy counter ({exc}; it needs a Volta or newer GPU)"
                    break
                handles.append(h)
                name = pynvml.nvmlDeviceGetName(h)
                names.append(name.decode() if isinstance(name, bytes) else str(name))
        except Exception as exc:
            reason = f"NVML query failed: {exc}"
        if reason is not None:
            self._shutdown()
            return reason
        self._handles, self._names = handles, names
        return None

    def _shutdown(self) -> None:
        """Balance ``nvmlInit`` (NVML counts them)."""
        try:
            import pynvml

            pynvml.nvmlShutdown()
        except Exception:
            pass

    def describe(self) -> str:
        return "NVML total energy of " + (", ".join(f"GPU {i} {n}" for i, n in enumerate(self._names)) or "NVIDIA GPUs")

    def _read(self) -> list[int]:
        import pynvml

        try:
            return [int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles]
        except Exception as exc:
            raise MeterError(f"NVML energy read failed: {exc}") from exc

    def start(self) -> None:
        if not self._handles:
            reason = self.probe()
            if reason:
                raise MeterError(reason)
        self._start = self._read()

    def stop(self) -> float:
        try:
            end = self._read()
        finally:
            self._handles = []
            self._shutdown()
        return sum(e - s for s, e in zip(self._start, end)) / 1e3


# -- hwmon ------------------------------------------------------------------------------------


@dataclass
class PowerChannel:
    """One hwmon power source: a power file (µW), or a current (mA) and voltage (mV) pair."""

    sensor: str
    label: str
    power: Path | None = None
    current: Path | None = None
    voltage: Path | None = None

    def watts(self) -> float:
        if self.power is not None:
            return _read_int(self.power) / 1e6
        assert self.current is not None and self.voltage is not None
        return _read_int(self.current) * _read_int(self.voltage) / 1e6  # mA x mV = µW


GPU_SENSORS = frozenset({"amdgpu", "radeon", "nouveau", "i915", "xe"})
"""hwmon sensors of GPU drivers: they measure one GPU, not the board, so the board meter skips them."""

TOTAL_RAIL = re.compile(r"(^|_)(VIN|[A-Z0-9]*_IN)$|total", re.I)
"""Channel labels naming a board's total input rail (Jetson ``VDD_IN``, ``POM_5V_IN``)."""


@dataclass
class _Samples:
    times: list[float] = field(default_factory=list)
    watts: list[float] = field(default_factory=list)


class HwmonMeter(EnergyMeter):
    """Power sensors of the Linux hwmon class, integrated over the run.

    Channels: ``power<N>_input``/``power<N>_average`` (µW), else a
    ``curr<N>_input`` (mA) with the ``in<N>_input`` (mV) of the same index, as
    INA219/INA3221 drivers expose them.  When a channel's label names a total
    input rail (``VDD_IN``, ``POM_5V_IN``) only such channels are summed, since
    the others are parts of it; otherwise every channel is summed.  GPU
    drivers' sensors (amdgpu, nouveau, i915...) measure one GPU, not the
    board, and are skipped.  Sampled
    every ``sample_interval_s`` by a thread; energy is the trapezoidal
    integral of the summed power.
    """

    name = "hwmon"
    kinds = ("cpu", "gpu", "npu")
    priority = 5

    def __init__(self, root: str | Path = "/sys/class/hwmon", sample_interval_s: float = 0.01) -> None:
        self.root = Path(root)
        self.sample_interval_s = sample_interval_s
        self.channels: list[PowerChannel] = []
        self._samples = _Samples()
        self._poller: _Poller | None = None

    def discover(self) -> list[PowerChannel]:
        found: list[PowerChannel] = []
        for d in sorted(self.root.iterdir()):
            try:
                sensor = (d / "name").read_text().strip()
            except OSError:
                sensor = d.name
            if sensor in GPU_SENSORS:
                continue
            files = {p.name for p in d.iterdir()}
            powers = []
            for f in sorted(files):
                m = re.fullmatch(r"power(\d+)_(input|average)", f)
                if m and not (m.group(2) == "average" and f"power{m.group(1)}_input" in files):
                    powers.append(PowerChannel(sensor, _label(d, f"power{m.group(1)}") or f"{d.name}/{f}", power=d / f))
            if powers:  # a sensor reporting power directly: its curr/in files are the same rails
                found += powers
                continue
            for f in sorted(files):
                m = re.fullmatch(r"curr(\d+)_input", f)
                if m and f"in{m.group(1)}_input" in files:
                    n = m.group(1)
                    label = _label(d, f"curr{n}") or _label(d, f"in{n}") or f"{d.name}/curr{n}"
                    found.append(PowerChannel(sensor, label, current=d / f, voltage=d / f"in{n}_input"))
        totals = [c for c in found if TOTAL_RAIL.search(c.label)]
        return totals or found

    def probe(self) -> str | None:
        if not self.root.exists():
            return f"{self.root} does not exist (no Linux hwmon sensors here)"
        try:
            channels = self.discover()
        except OSError as exc:
            return _unreadable(self.root, exc)
        if not channels:
            return (
                "no hwmon power sensor (power*_input, or curr*_input with in*_input as on INA219/INA3221) "
                f"under {self.root}"
            )
        for c in channels:
            try:
                c.watts()
            except OSError as exc:
                return _unreadable(c.power or c.current or self.root, exc)
            except ValueError as exc:
                return f"hwmon channel {c.label} does not hold integers: {exc}"
        self.channels = channels
        return None

    def describe(self) -> str:
        return "hwmon " + " + ".join(f"{c.sensor}:{c.label}" for c in self.channels)

    def sample(self) -> None:
        try:
            watts = sum(c.watts() for c in self.channels)
        except (OSError, ValueError) as exc:
            raise MeterError(f"reading hwmon sensors failed: {exc}") from exc
        self._samples.times.append(time.perf_counter())
        self._samples.watts.append(watts)

    def start(self) -> None:
        if not self.channels:
            reason = self.probe()
            if reason:
                raise MeterError(reason)
        self._samples = _Samples()
        self.sample()
        self._poller = _Poller(self.sample, self.sample_interval_s, self.name)
        self._poller.start()

    def stop(self) -> float:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.stop()
            if poller.error is not None:
                raise MeterError(f"sampling failed: {poller.error}") from poller.error
        self.sample()
        return integrate(self._samples.times, self._samples.watts)


def _label(d: Path, stem: str) -> str | None:
    try:
        return (d / f"{stem}_label").read_text().strip() or None
    except OSError:
        return None


def integrate(times: list[float], watts: list[float]) -> float:
    """Trapezoidal integral of power samples (s, W) in joules."""
    if len(times) < 2:
        raise MeterError("fewer than two power samples: the run was too short to integrate")
    return sum((t1 - t0) * (w0 + w1) / 2 for t0, t1, w0, w1 in zip(times, times[1:], watts, watts[1:]))


# -- running meters around a measurement ---------------------------------------------------------


@dataclass
class EnergyResult:
    """Energy of one run: the headline figure, every meter's reading, and why others failed.

    ``energy_j`` is None exactly when no meter covering the device's kind
    produced a reading; ``unavailable`` then says why, meter by meter.
    """

    energy_j: float | None = None
    meter: str | None = None
    meter_description: str | None = None
    readings_j: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.energy_j is not None

    @property
    def unavailable(self) -> str | None:
        if self.available:
            return None
        if not self.reasons:
            return "no energy meter is registered"
        return "; ".join(f"{name}: {why}" for name, why in self.reasons.items())


def collect_meters(pm: NnportPluginManager | None = None) -> tuple[list[EnergyMeter], dict[str, str]]:
    """Fresh meter instances from every ``nnport_energy_meters`` implementation.

    Returns (meters, reasons): a plugin whose implementation raises, or that
    registers something that is not an ``EnergyMeter``, gets a reason instead.
    """
    if pm is None:
        from .manager import get_plugin_manager

        pm = get_plugin_manager()
    meters: list[EnergyMeter] = []
    reasons: dict[str, str] = {}

    def register(meter: EnergyMeter) -> None:
        if not isinstance(meter, EnergyMeter):
            raise TypeError(f"register() expects an nnport.energy.EnergyMeter instance, got {meter!r}")
        meters.append(meter)

    for plugin, call in pm.per_plugin("nnport_energy_meters"):
        try:
            call(register=register)
        except Exception as exc:
            reasons[f"plugin {plugin}"] = f"registering meters failed: {type(exc).__name__}: {exc}"
    return meters, reasons


class EnergySession:
    """Starts every usable meter before a run and stops them after it.

    A meter that fails to probe, start or stop gets a reason instead of a
    reading; it never stops the measurement.  The headline figure comes from
    the highest-priority working meter whose ``kinds`` include the device's.
    """

    def __init__(self, meters: Iterable[EnergyMeter], device_kind: str, reasons: dict[str, str] | None = None) -> None:
        self.device_kind = device_kind
        self.reasons: dict[str, str] = dict(reasons or {})
        self.running: list[EnergyMeter] = []
        self._meters = list(meters)

    def start(self) -> None:
        for meter in self._meters:
            try:
                reason = meter.probe()
            except Exception as exc:
                reason = f"probe failed: {type(exc).__name__}: {exc}"
            if reason:
                self.reasons[meter.name] = reason
                continue
            try:
                meter.start()
            except Exception as exc:
                self.reasons[meter.name] = f"could not start: {exc}"
                continue
            self.running.append(meter)

    def stop(self) -> EnergyResult:
        result = EnergyResult(reasons=self.reasons)
        working: list[EnergyMeter] = []
        for meter in self.running:
            try:
                joules = float(meter.stop())
            except Exception as exc:
                self.reasons[meter.name] = f"failed during the run: {exc}"
                continue
            if not joules >= 0:  # NaN or negative: a broken reading is no reading
                self.reasons[meter.name] = f"gave an invalid reading ({joules!r} J)"
                continue
            result.readings_j[meter.name] = joules
            working.append(meter)
        self.running = []
        covering = [m for m in working if self.device_kind in m.kinds]
        if covering:
            best = max(covering, key=lambda m: m.priority)
            result.energy_j = result.readings_j[best.name]
            result.meter = best.name
            result.meter_description = best.describe()
        elif working:
            names = ", ".join(m.name for m in working)
            result.reasons.setdefault("(headline)", f"working meter(s) {names} do not cover {self.device_kind} devices")
        return result

    def abort(self) -> None:
        """Stop meters after a failed run, ignoring their errors."""
        for meter in self.running:
            try:
                meter.stop()
            except Exception:
                pass
        self.running = []


def meter_status(pm: NnportPluginManager | None = None) -> list[dict[str, Any]]:
    """Every registered meter with ``usable`` and its reason (``nnport meters``)."""
    meters, reasons = collect_meters(pm)
    rows = []
    for meter in meters:
        try:
            reason = meter.probe()
        except Exception as exc:
            reason = f"probe failed: {type(exc).__name__}: {exc}"
        rows.append(
            {
                "meter": meter.name,
                "kinds": list(meter.kinds),
                "usable": reason is None,
                "reason": reason,
                "reads": meter.describe() if reason is None else None,
            }
        )
    rows += [
        {"meter": name, "kinds": [], "usable": False, "reason": why, "reads": None} for name, why in reasons.items()
    ]
    return rows


# -- the core plugin ----------------------------------------------------------------------------


@hookimpl
def nnport_energy_meters(register: Callable[[EnergyMeter], None]) -> None:
    register(RaplMeter())
    register(NvmlMeter())
    register(HwmonMeter())
