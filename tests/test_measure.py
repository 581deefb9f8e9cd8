"""``nnport.measure``: the timing loop, scenarios, statistics, memory, context and bad input.

Everything runs on the real ONNX Runtime backend with zoo models; speed is
never asserted (benchmarks/bench_measure.py measures it), only what the loop
does: how many calls, on which bindings, what the figures are computed from.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import nnport
from nnport import InputError, MeasurementError, MeasureSettings, hookimpl, zoo
from nnport.manager import get_plugin_manager
from nnport.measuring import Measurement, MemoryWatch, latency_stats, stability_warnings

ort = pytest.importorskip("onnxruntime")

FAST = MeasureSettings(warmup=3, min_iterations=30, min_duration_s=0.05)


@pytest.fixture(scope="module")
def models():
    return {name: zoo.load(name) for name in ("cnn", "mlp", "mlp_dynamic")}


def ort_compile(model, **kw):
    return nnport.compile(model, "onnxruntime:cpu", fallback=False, threads=1, **kw)


class Counting:
    """Wraps the real backend's ``execute`` on one instance, recording calls, threads and bindings."""

    def __init__(self, compiled, fail_after: int | None = None):
        self.backend = compiled.backend
        self.real = type(self.backend).execute
        self.calls = 0
        self.bindings: set[int] = set()
        self.threads: set[int] = set()
        self.shapes: set[tuple] = set()
        self.fail_after = fail_after
        self.lock = threading.Lock()

    def __enter__(self):
        def execute(compiled, binding):
            with self.lock:
                self.calls += 1
                n = self.calls
                self.bindings.add(id(binding))
                self.threads.add(threading.get_ident())
                self.shapes.update(tuple(a.shape) for a in binding.inputs.values())
            if self.fail_after is not None and n > self.fail_after:
                compiled.native = None  # the device is gone: the runtime call now fails
            self.real(self.backend, compiled, binding)

        self.backend.execute = execute
        return self

    def __exit__(self, *exc):
        del self.backend.execute


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"min_iterations": 0}, "min_iterations"),
        ({"min_iterations": -5}, "min_iterations"),
        ({"min_iterations": 2.5}, "min_iterations"),
        ({"min_iterations": True}, "min_iterations"),
        ({"warmup": -1}, "warmup"),
        ({"min_duration_s": 0}, "min_duration_s"),
        ({"min_duration_s": -1.0}, "min_duration_s"),
        ({"min_duration_s": float("nan")}, "min_duration_s"),
        ({"min_duration_s": float("inf")}, "min_duration_s"),
        ({"max_duration_s": 0}, "max_duration_s"),
        ({"min_duration_s": 2.0, "max_duration_s": 1.0}, "shorter"),
        ({"scenario": "server"}, "scenario"),
        ({"streams": 0, "scenario": "multi-stream"}, "streams"),
        ({"streams": 2}, "single-stream"),
        ({"batch": 0}, "batch"),
        ({"cv_threshold": 0}, "cv_threshold"),
    ],
)
def test_bad_settings_are_measurement_errors(fields, match):
    with pytest.raises(MeasurementError, match=match):
        MeasureSettings(**fields)


def test_bad_settings_through_measure(models):
    compiled = ort_compile(models["mlp"])
    with pytest.raises(MeasurementError, match="min_iterations"):
        nnport.measure(compiled, min_iterations=0)
    assert isinstance(MeasurementError("x"), nnport.NnportError)


# -- statistics ----------------------------------------------------------------------------------


def test_latency_stats_by_hand():
    s = latency_stats([4.0, 1.0, 3.0, 2.0])
    assert s["latency_min_ms"] == 1.0 and s["latency_max_ms"] == 4.0
    assert s["latency_mean_ms"] == 2.5
    assert s["latency_p50_ms"] == 2.5  # linear interpolation between 2 and 3
    assert s["latency_p90_ms"] == pytest.approx(3.7)
    assert s["latency_stdev_ms"] == pytest.approx(math.sqrt(5 / 3))  # sample stdev (n - 1)
    assert s["latency_cv_percent"] == pytest.approx(100 * math.sqrt(5 / 3) / 2.5)
    with pytest.raises(MeasurementError):
        latency_stats([])


def test_unstable_run_warns():
    steady = Measurement(device="d", backend="b", scenario="single-stream", samples_ms=[1.0] * 200, duration_s=0.2)
    assert stability_warnings(steady, MeasureSettings()) == []
    noisy = Measurement(
        device="d", backend="b", scenario="single-stream", samples_ms=[1.0] * 190 + [5.0] * 10, duration_s=0.2
    )
    warnings = stability_warnings(noisy, MeasureSettings())
    assert len(warnings) == 1 and "unstable" in warnings[0] and "coefficient of variation" in warnings[0]
    assert stability_warnings(noisy, MeasureSettings(cv_threshold=2.0)) == []
    few = Measurement(device="d", backend="b", scenario="single-stream", samples_ms=[1.0] * 10, duration_s=0.01)
    assert any("only 10 timed iterations" in w for w in stability_warnings(few, MeasureSettings()))


# -- single-stream ---------------------------------------------------------------------------------


def test_single_stream_loop_calls_execute_directly(models):
    compiled = ort_compile(models["cnn"])
    hooked = []

    class Tracer:
        @hookimpl(wrapper=True)
        def nnport_execute(self, backend, compiled, binding):
            hooked.append(1)
            return (yield)

    get_plugin_manager().register(Tracer(), "tracer")
    with Counting(compiled) as counting:
        m = nnport.measure(compiled, settings=FAST)
    assert hooked == []  # the loop never goes through the pluggy hook
    assert counting.calls == FAST.warmup + m.iterations
    assert len(counting.bindings) == 1 and len(counting.threads) == 1
    assert m.iterations >= FAST.min_iterations and m.duration_s >= FAST.min_duration_s
    assert len(m.samples_ms) == m.iterations and all(x > 0 for x in m.samples_ms)
    # the window covers the samples (plus the loop's own bookkeeping)
    assert sum(m.samples_ms) / 1e3 <= m.duration_s
    assert m.throughput_ips == pytest.approx(m.inferences / m.duration_s)
    assert m.device == "onnxruntime:cpu" and m.backend == "onnxruntime" and m.model == "cnn"


def test_iterations_floor_beats_duration(models):
    compiled = ort_compile(models["mlp"])
    m = nnport.measure(compiled, settings=MeasureSettings(warmup=0, min_iterations=500, min_duration_s=0.001))
    assert m.iterations >= 500


def test_max_duration_caps_the_run(models):
    compiled = ort_compile(models["cnn"])
    m = nnport.measure(
        compiled, settings=MeasureSettings(warmup=0, min_iterations=10**9, min_duration_s=0.05, max_duration_s=0.1)
    )
    assert 1 <= m.iterations < 10**9
    assert 0.1 <= m.duration_s < 1.0


def test_result_dict_carries_units(models):
    compiled = ort_compile(models["cnn"])
    d = nnport.measure(compiled, settings=FAST).to_dict()
    s = (
        d["latency_min_ms"],
        d["latency_p50_ms"],
        d["latency_p90_ms"],
        d["latency_p95_ms"],
        d["latency_p99_ms"],
        d["latency_max_ms"],
    )
    assert list(s) == sorted(s)
    assert d["latency_min_ms"] <= d["latency_mean_ms"] <= d["latency_max_ms"]
    assert len(d["samples_ms"]) == d["iterations"]
    units = ("_ms", "_s", "_mib", "_mj", "_w", "_j", "_ips", "_percent")
    counts = ("iterations", "inferences", "streams", "batch", "warmup_iterations")
    for key, value in d.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in counts:
            assert key.endswith(units), f"{key} has no unit suffix"
    assert d["peak_rss_mib"] > 0 and d["inference_rss_added_mib"] >= 0
    assert d["compile_cold_s"] == compiled.compile_time_s


def test_context_is_recorded(models):
    compiled = ort_compile(models["cnn"])
    ctx = nnport.measure(compiled, settings=FAST).context
    assert ctx["runtime_versions"] == {"onnxruntime": ort.__version__}
    assert ctx["threads"] == 1 and ctx["precision"] == "fp32"
    assert ctx["nnport_version"] == nnport.__version__
    assert ctx["cpu_model"] and ctx["cpu_cores_logical"] >= 1
    assert ctx["model_hash"] == models["cnn"].hash
    assert ctx["settings"]["min_iterations"] == FAST.min_iterations


def test_warm_compile_time_from_the_cache(models, tmp_path):
    ort_compile(models["cnn"], cache_dir=str(tmp_path))
    warm = ort_compile(models["cnn"], cache_dir=str(tmp_path))
    assert warm.cache_hit is True
    m = nnport.measure(warm, settings=FAST)
    assert m.compile_warm_s == warm.compile_time_s and m.compile_warm_cache_hit is True and m.compile_cold_s is None


def test_given_inputs_are_the_ones_timed(models):
    compiled = ort_compile(models["mlp"])
    feeds = {"x": np.full((1, 64), 0.25, np.float32)}
    seen = []

    class Spy:
        @hookimpl(wrapper=True)
        def nnport_allocate(self, backend, compiled, shapes):
            binding = yield
            seen.append(binding)
            return binding

    get_plugin_manager().register(Spy(), "spy")
    nnport.measure(compiled, feeds, settings=FAST)
    assert len(seen) == 1 and seen[0].inputs["x"] is feeds["x"]
    np.testing.assert_allclose(seen[0].outputs["probs"], compiled.run(feeds)["probs"])


def test_progress_is_reported(models):
    compiled = ort_compile(models["mlp"])
    reports = []
    settings = MeasureSettings(warmup=0, min_iterations=1, min_duration_s=0.7, progress=lambda *a: reports.append(a))
    m = nnport.measure(compiled, settings=settings)
    assert reports, "a 0.7 s run reports progress at least once"
    done, elapsed, target = reports[-1]
    assert 0 < done <= m.inferences and 0 < elapsed <= m.duration_s and target == 0.7


# -- multi-stream and offline ----------------------------------------------------------------------


def test_multi_stream_each_thread_has_its_own_binding(models):
    compiled = ort_compile(models["cnn"])
    allocated = []

    class Spy:
        @hookimpl(wrapper=True)
        def nnport_allocate(self, backend, compiled, shapes):
            binding = yield
            allocated.append(binding)
            return binding

    get_plugin_manager().register(Spy(), "spy")
    settings = MeasureSettings(warmup=2, min_iterations=40, min_duration_s=0.05, scenario="multi-stream", streams=2)
    with Counting(compiled) as counting:
        m = nnport.measure(compiled, settings=settings)
    assert len(allocated) == 2  # one per stream, through the hook
    assert counting.bindings == {id(b) for b in allocated}
    assert len(counting.threads) == 2
    assert m.streams == 2 and len(m.stream_samples_ms) == 2
    assert all(len(s) >= 20 for s in m.stream_samples_ms)
    assert m.iterations == sum(len(s) for s in m.stream_samples_ms)
    assert counting.calls == 2 * settings.warmup + m.iterations
    d = m.to_dict()
    assert len(d["stream_latency_p50_ms"]) == 2 and len(d["stream_throughput_ips"]) == 2
    assert d["throughput_ips"] == pytest.approx(m.iterations / m.duration_s)
    assert max(m.stream_durations_s) == pytest.approx(m.duration_s)


def test_offline_batch_on_a_dynamic_model(models):
    compiled = ort_compile(models["mlp_dynamic"])
    settings = MeasureSettings(warmup=1, min_iterations=20, min_duration_s=0.05, scenario="offline", batch=4)
    with Counting(compiled) as counting:
        m = nnport.measure(compiled, settings=settings)
    assert counting.shapes == {(4, 64)}
    assert m.batch == 4 and m.inferences == 4 * m.iterations
    assert m.throughput_ips == pytest.approx(4 * m.iterations / m.duration_s)


def test_offline_batch_on_a_fixed_model_is_refused(models):
    compiled = ort_compile(models["cnn"])
    with pytest.raises(MeasurementError, match="batch is fixed") as info:
        nnport.measure(compiled, scenario="offline", batch=8, min_duration_s=0.05)
    assert "'image' [1, 3, 32, 32]" in str(info.value)


def test_batch_must_match_given_inputs(models):
    compiled = ort_compile(models["mlp_dynamic"])
    feeds = {"x": np.zeros((3, 64), np.float32)}
    with pytest.raises(MeasurementError, match="batch is 1"):
        nnport.measure(compiled, feeds, settings=FAST)
    m = nnport.measure(
        compiled,
        feeds,
        settings=MeasureSettings(warmup=1, min_iterations=5, min_duration_s=0.02, scenario="offline", batch=3),
    )
    assert m.inferences == 3 * m.iterations


# -- bad input and failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "feeds, match",
    [
        ({"y": np.zeros((1, 64), np.float32)}, "missing input"),
        ({"x": np.zeros((1, 64), np.float64)}, "dtype float64"),
        ({"x": np.zeros((1, 63), np.float32)}, "x"),
        ({"x": np.zeros((64,), np.float32)}, "x"),
    ],
)
def test_inputs_not_matching_the_model(models, feeds, match):
    compiled = ort_compile(models["mlp"])
    with pytest.raises(InputError, match=match):
        nnport.measure(compiled, feeds, settings=FAST)


def test_device_failing_mid_run(models):
    compiled = ort_compile(models["cnn"])
    with Counting(compiled, fail_after=10), pytest.raises(MeasurementError) as info:
        nnport.measure(compiled, settings=FAST)
    text = str(info.value)
    assert "onnxruntime:cpu" in text and "timed iteration 8" in text  # 3 warm-up + 7 good timed runs
    assert isinstance(info.value.__cause__, nnport.ExecutionError)


def test_device_failing_during_warmup(models):
    compiled = ort_compile(models["cnn"])
    with Counting(compiled, fail_after=1), pytest.raises(MeasurementError, match="warm-up run 2"):
        nnport.measure(compiled, settings=FAST)


def test_device_failing_mid_run_in_multi_stream(models):
    compiled = ort_compile(models["cnn"])
    settings = MeasureSettings(warmup=1, min_iterations=10**6, min_duration_s=5.0, scenario="multi-stream", streams=2)
    with Counting(compiled, fail_after=20), pytest.raises(MeasurementError, match="stream"):
        nnport.measure(compiled, settings=settings)
    # both threads ended: nothing keeps running after the error
    assert not [t for t in threading.enumerate() if t.name.startswith("nnport-stream-")]


# -- memory ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_watch_sees_an_allocation():
    watch = MemoryWatch()
    watch.start()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    del block
    result = watch.stop()
    assert result.added_mib >= 190 and result.peak_rss_mib >= 190
    watch.start()  # a new window: the earlier peak is forgotten where clear_refs works
    result = watch.stop()
    if watch.reset:
        assert result.added_mib < 50
    else:
        assert result.added_mib is None and "clear_refs" in result.note
