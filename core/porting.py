"""``nnport.port``: choose a device and a precision for a model, with every figure side by side.

Porting a trained model to an edge device means choosing a device, adapting
the model to its runtime, compressing it, then testing speed, accuracy against
the original, memory and power.  ``port`` does each step with nnport's own
parts and puts the results in one table, one row per device x precision:

* compiled or not, and why not (``nnport.compile``, ``fallback=False``): cold
  in an empty compile cache, then warm from that cache;
* accuracy against the fp32 reference (ONNX Runtime on CPU) on the data, per
  output and per part of a joined output (``nnport.compress.accuracy_delta``,
  the compression report's maths), and with labels top-1/top-5 against them;
* latency p50/p99 and throughput (``nnport.measure``), peak memory, energy per
  inference or ``unavailable`` with the meters' reasons;
* size on disk of the artefact the backend runs (the ONNX or quantized ONNX
  file, ncnn's param+bin, OpenVINO's int8 IR...), saying which.

Then a ``Recommendation``: the best row for the objective (``latency``,
``throughput``, ``energy`` or ``size``) among those within the accuracy budget,
with the runner-up and why it lost.  A row that fails says where and why, and
the rest goes on; Ctrl-C returns the partial report (``interrupted=True``).

Data: a folder of samples in the calibration format (one ``.npz`` per sample
keyed by input name, sorted by file name; ``.npy`` for a single-input model)
with labels (``.npy``, or text with one integer class per line), an image folder
with ``preprocess="imagenet"|"yolo"|"none"``, or nothing: seeded realistic
random data, and accuracy then means agreement with fp32 only.

The report renders itself (``format()``, ``to_html()``, ``to_dict()``): the CLI
(``nnport port``) only parses, calls ``port`` and prints.
"""

from __future__ import annotations

import gc
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .compress_report import AccuracyDelta, accuracy_delta
from .errors import BackendUnavailable, DeviceNotFound, InputError, NnportError, UnsupportedPrecision
from .model import Model, load
from .types import Device, TensorSpec

SCHEMA = "nnport.port/1"
OBJECTIVES = ("latency", "throughput", "energy", "size")
PRECISIONS = ("fp32", "fp16", "int8")
PREPROCESS = ("imagenet", "yolo", "none")
REFERENCE_DEVICE = "onnxruntime:cpu"
SAMPLE_SUFFIXES = (".npz", ".npy")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
RANDOM_SAMPLES = 16
DEFAULT_IMAGE_SIZE = {"imagenet": 224, "yolo": 640, "none": 224}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
YOLO_PAD = 114
HELD_OUT_MAX = 64
CLOSE = 0.05
"""Two figures within 5% of each other are a tie on a shared machine: the report says so."""

STATUSES = ("ok", "unsupported", "error", "interrupted", "not run")
METRICS = {
    "labels": "top-1 accuracy against the labels",
    "agreement": "top-1 agreement with the fp32 reference (no labels: agreement, not accuracy)",
    "cosine": "lowest cosine similarity to the fp32 reference over every output and part (agreement, not accuracy)",
}


class PortDataWarning(UserWarning):
    """The evaluation data cannot measure accuracy (random inputs), or was split for calibration."""


# -- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artefact:
    """What a backend runs, on disk: ``what`` it is, its ``files`` and their total ``size_bytes``."""

    what: str
    size_bytes: int | None
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelScore:
    """Top-1 (and top-5 where there are more than 5 classes) accuracy against the labels."""

    output: str
    total: int
    top1_correct: int
    top5_correct: int | None

    @property
    def top1(self) -> float:
        return self.top1_correct / self.total if self.total else float("nan")

    @property
    def top5(self) -> float | None:
        return None if self.top5_correct is None or not self.total else self.top5_correct / self.total


@dataclass
class PortCell:
    """One device x precision: compiled or why not, accuracy, speed, memory, energy, size, compile times.

    ``status``: ``ok``; ``unsupported`` (the backend refused the precision: ``reason``
    is its message); ``error`` (``stage`` says where: compile, accuracy or measure;
    figures obtained before it are kept); ``interrupted`` (Ctrl-C during this row);
    ``not run`` (Ctrl-C before it).  ``score`` is the report's accuracy metric
    (``PortReport.metric``) as a fraction, ``accuracy_drop`` the reference's score
    minus it (percentage points / 100; negative when the row does better).
    """

    device: str
    backend: str
    precision: str
    status: str = "not run"
    stage: str | None = None
    reason: str | None = None
    accuracy: list[AccuracyDelta] = field(default_factory=list)
    labels: LabelScore | None = None
    score: float | None = None
    accuracy_drop: float | None = None
    within_budget: bool | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    throughput_ips: float | None = None
    throughput_scenario: str | None = None
    iterations: int | None = None
    latency_cv_percent: float | None = None
    peak_rss_mib: float | None = None
    compile_rss_added_mib: float | None = None
    inference_rss_added_mib: float | None = None
    energy_per_inference_mj: float | None = None
    energy_meter: str | None = None
    energy_unavailable: str | None = None
    size: Artefact | None = None
    compile_cold_s: float | None = None
    compile_warm_s: float | None = None
    compile_warm_cache_hit: bool | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.device} {self.precision}"

    @property
    def measured(self) -> bool:
        return self.status == "ok" and self.latency_p50_ms is not None and self.score is not None

    def figure(self, objective: str) -> float | None:
        """The value ``objective`` ranks by (lower is better, throughput negated); None when unknown."""
        if objective == "latency":
            return self.latency_p50_ms
        if objective == "throughput":
            return None if self.throughput_ips is None else -self.throughput_ips
        if objective == "energy":
            return self.energy_per_inference_mj
        if objective == "size":
            return None if self.size is None or self.size.size_bytes is None else float(self.size.size_bytes)
        raise InputError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["accuracy"] = [{**asdict(a), "label": a.label} for a in self.accuracy]
        if self.labels is not None:
            data["labels"] = {**asdict(self.labels), "top1": self.labels.top1, "top5": self.labels.top5}
        data["info"] = _jsonable(self.info)
        return data


@dataclass(frozen=True)
class Choice:
    """A recommended (or runner-up) device x precision and why."""

    device: str
    precision: str
    why: str


@dataclass(frozen=True)
class Recommendation:
    """The best row for the objective within the accuracy budget, the runner-up, and rows ruled out."""

    objective: str
    best: Choice
    runner_up: Choice | None
    over_budget: tuple[str, ...] = ()
    """Rows better for the objective than ``best`` but over the accuracy budget, each with its drop."""


@dataclass(frozen=True)
class PortData:
    """What the rows were evaluated on."""

    kind: str  # "samples" | "images" | "random" | "feeds"
    source: str | None
    samples: int
    files: tuple[str, ...]
    labels: str | None
    preprocess: str | None
    calibration: str
    shapes: Mapping[str, tuple[int, ...]]
    warnings: tuple[str, ...] = ()


@dataclass
class PortReport:
    """The result of ``nnport.port``: the table, the recommendation and what they rest on."""

    model: str
    model_hash: str
    objective: str
    max_accuracy_drop: float
    metric: str
    reference_device: str
    reference_score: float | None
    data: PortData
    cells: list[PortCell] = field(default_factory=list)
    recommendation: Recommendation | None = None
    no_recommendation: str | None = None
    skipped_devices: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    wall_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def metric_text(self) -> str:
        return METRICS[self.metric]

    def cell(self, device: str, precision: str) -> PortCell:
        for c in self.cells:
            if c.device == device and c.precision == precision:
                return c
        raise KeyError(f"no row {device} {precision}; rows: {[c.label for c in self.cells]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "model_hash": self.model_hash,
            "objective": self.objective,
            "max_accuracy_drop": self.max_accuracy_drop,
            "metric": self.metric,
            "metric_text": self.metric_text,
            "reference_device": self.reference_device,
            "reference_score": self.reference_score,
            "data": _jsonable(asdict(self.data)),
            "recommendation": _jsonable(asdict(self.recommendation)) if self.recommendation else None,
            "no_recommendation": self.no_recommendation,
            "skipped_devices": dict(self.skipped_devices),
            "interrupted": self.interrupted,
            "wall_s": self.wall_s,
            "settings": _jsonable(self.settings),
            "context": _jsonable(self.context),
            "notes": list(self.notes),
            "cells": [c.to_dict() for c in self.cells],
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        return out

    def format(self) -> str:
        """The terminal report: the table, the recommendation, per-output accuracy, notes."""
        from .port_render import text_report

        return text_report(self)

    def to_html(self) -> str:
        """A self-contained HTML page: the table and a Pareto plot (latency against accuracy)."""
        from .port_render import html_report

        return html_report(self)

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.write_text(self.to_html())
        return out


@dataclass(frozen=True)
class PortProgress:
    """What ``port`` is doing, for a progress display: row ``index`` of ``total``, its ``stage``.

    Stages: ``reference`` (index 0), ``compile``, ``warm compile``, ``accuracy``,
    ``measure`` (with ``elapsed_s``/``target_s``/``inferences``), ``done`` (with the
    finished ``cell``).
    """

    index: int
    total: int
    device: str
    precision: str
    stage: str
    elapsed_s: float | None = None
    target_s: float | None = None
    inferences: int | None = None
    cell: PortCell | None = None


Progress = Callable[[PortProgress], None]


# -- the workflow -------------------------------------------------------------------------------


def _emit_stage(emit: Callable[..., None], index: int, total: int, cell: PortCell, stage: str, **kw: Any) -> None:
    emit(PortProgress(index, total, cell.device, cell.precision, stage, **kw))


def port(
    model: Any,
    data: Any = None,
    labels: Any = None,
    *,
    devices: Sequence[str | Device] | None = None,
    precisions: Sequence[str] = PRECISIONS,
    calibration: Any = None,
    max_accuracy_drop: float = 0.01,
    objective: str = "latency",
    preprocess: str | None = None,
    label_output: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    threads: int | None = None,
    warmup: int = 10,
    min_iterations: int = 50,
    min_duration_s: float = 1.0,
    max_duration_s: float | None = None,
    reference_device: str = REFERENCE_DEVICE,
    progress: Progress | None = None,
) -> PortReport:
    """Compile, check and measure ``model`` on every device x precision; returns a ``PortReport``.

    ``data``: a folder of ``.npz`` samples (calibration format) or of images (with
    ``preprocess``), a list of feed dicts, or None (seeded random data, with a
    ``PortDataWarning``: accuracy then means agreement).  ``labels``: a ``.npy`` or
    text file (one integer class per line, in the samples' order) or an array; the
    class is the argmax of ``label_output`` (default: the only output).
    ``devices``: ids, backend names or kinds (default: every usable device).
    ``calibration`` (int8): a folder of samples or of images (preprocessed as the
    data), a list of feed dicts or ``"random"``; without it, the last fifth of
    ``data`` (at most 64 samples) is held out for calibration and not evaluated.  ``max_accuracy_drop``: a fraction
    (0.01 = 1 point of top-1,
    or 1% of agreement).  ``shapes`` fixes symbolic input dims (default: from the
    first sample).  The measurement: ``warmup`` runs, then at least
    ``min_iterations`` and ``min_duration_s`` (at most ``max_duration_s``, default
    10 x ``min_duration_s``).

    Raises ``InputError`` for bad arguments or data that does not match the model
    (naming the input and the file) before any row runs.  A row that fails keeps
    its reason and the rest goes on; KeyboardInterrupt returns the partial report.
    """
    from . import compile as nn_compile
    from .measuring import host_context

    start = time.perf_counter()
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")
    precisions = _check_precisions(precisions)
    if (
        isinstance(max_accuracy_drop, bool)
        or not isinstance(max_accuracy_drop, (int, float))
        or not 0 <= max_accuracy_drop <= 1
    ):
        raise InputError(f"max_accuracy_drop must be a fraction between 0 and 1 (0.01 = 1%), got {max_accuracy_drop!r}")
    if preprocess is not None and preprocess not in PREPROCESS:
        raise InputError(f"unknown preprocess {preprocess!r}; choose one of {list(PREPROCESS)}")
    source = load(model)
    if source.format != "onnx":
        raise InputError(
            "nnport port takes an ONNX model (the fp32 original it compresses and compares against); "
            f"{source.name!r} is {source.format}"
        )
    if label_output is not None and label_output not in [o.name for o in source.outputs]:
        raise InputError(
            f"--label-output {label_output!r} is not an output of {source.name!r}; outputs: "
            f"{[o.name for o in source.outputs]}"
        )
    evaluation = load_data(
        source, data, labels, preprocess=preprocess, shapes=shapes, calibration=calibration, int8="int8" in precisions
    )
    label_name = _label_output(source, label_output, evaluation.labels is not None)
    device_list, skipped = _devices(devices)
    settings_info = {
        "precisions": list(precisions),
        "devices": [d.id for d in device_list],
        "threads": threads,
        "warmup": warmup,
        "min_iterations": min_iterations,
        "min_duration_s": min_duration_s,
        "max_duration_s": max_duration_s or 10 * min_duration_s,
        "label_output": label_name,
    }
    total = len(device_list) * len(precisions)

    def emit(event: PortProgress) -> None:
        if progress is not None:
            progress(event)

    emit(PortProgress(0, total, reference_device, "fp32", "reference"))
    reference = nn_compile(source, reference_device, fallback=False, shapes=evaluation.shapes, threads=threads)
    expected = [reference.run(f) for f in evaluation.feeds]
    del reference
    metric = (
        "labels" if evaluation.labels is not None else "agreement" if _is_classifier(expected, label_name) else "cosine"
    )
    if evaluation.labels is not None:
        _check_label_count(expected, label_name, evaluation)
    report = PortReport(
        model=source.name,
        model_hash=source.hash,
        objective=objective,
        max_accuracy_drop=float(max_accuracy_drop),
        metric=metric,
        reference_device=reference_device,
        reference_score=_label_score(expected, label_name, evaluation.labels).top1
        if evaluation.labels is not None and label_name is not None
        else 1.0,
        data=evaluation.info,
        skipped_devices=skipped,
        settings=settings_info,
        context=host_context(),
    )
    segments = _segments(source, evaluation.feeds[0], report)
    job = _Job(
        source,
        evaluation,
        expected,
        segments,
        label_name,
        report,
        threads,
        objective,
        warmup,
        min_iterations,
        min_duration_s,
        max_duration_s,
    )
    report.cells = [PortCell(device=d.id, backend=d.backend, precision=p) for d in device_list for p in precisions]
    with tempfile.TemporaryDirectory(prefix="nnport-port-") as tmp:
        try:
            for index, cell in enumerate(report.cells, 1):
                emit(PortProgress(index, total, cell.device, cell.precision, "compile"))
                job.run(cell, Path(tmp) / f"row{index}", partial(_emit_stage, emit, index, total, cell))
                emit(PortProgress(index, total, cell.device, cell.precision, "done", cell=cell))
        except KeyboardInterrupt:
            report.interrupted = True
            for c in report.cells:
                if c.status == "not run":
                    c.reason = "not run: interrupted (Ctrl-C) before this row"
            done = sum(1 for c in report.cells if c.status not in ("not run", "interrupted"))
            report.notes.append(f"interrupted (Ctrl-C) after {done} of {total} rows: the report is partial")
    recommend(report)
    report.wall_s = time.perf_counter() - start
    return report


class _Job:
    """What every row shares: the model, the data, the reference outputs, the settings."""

    def __init__(
        self,
        source: Model,
        evaluation: Evaluation,
        expected: list[dict[str, np.ndarray]],
        segments: Mapping[str, Any],
        label_name: str | None,
        report: PortReport,
        threads: int | None,
        objective: str,
        warmup: int,
        min_iterations: int,
        min_duration_s: float,
        max_duration_s: float | None,
    ) -> None:
        self.source = source
        self.evaluation = evaluation
        self.expected = expected
        self.segments = segments
        self.label_name = label_name
        self.report = report
        self.threads = threads
        self.objective = objective
        self.warmup = warmup
        self.min_iterations = min_iterations
        self.min_duration_s = min_duration_s
        self.max_duration_s = max_duration_s or 10 * min_duration_s

    def run(self, cell: PortCell, cache: Path, emit: Callable[..., None]) -> None:
        """Fill ``cell``: compile cold and warm, accuracy, measurement; a failure stops the row, not the run."""
        from . import compile as nn_compile
        from .measuring import MemoryWatch

        started = time.perf_counter()
        calibration = self.evaluation.calibration if cell.precision == "int8" else None
        options: dict[str, Any] = dict(
            precision=cell.precision,
            calibration=calibration,
            shapes=self.evaluation.shapes,
            threads=self.threads,
            cache_dir=str(cache),
        )
        compiled = None
        cell.stage = "compile"
        try:
            watch = MemoryWatch()
            watch.start()
            compiled = nn_compile(self.source, cell.device, fallback=False, **options)
            cell.compile_rss_added_mib = watch.stop().added_mib
            cell.compile_cold_s = compiled.compile_time_s
            if compiled.cache_hit:
                cell.warnings.append("the cold compile hit a cache: compile_cold_s is not a cold figure")
            cell.size = artefact(compiled, self.source)
            cell.info = _compile_info(compiled)
            cell.stage = "warm compile"
            emit("warm compile")
            try:
                warm = nn_compile(self.source, cell.device, fallback=False, **options)
                cell.compile_warm_s, cell.compile_warm_cache_hit = warm.compile_time_s, warm.cache_hit
                reused = (
                    (warm.info.get("int8") or {}).get("from_cache")
                    if isinstance(warm.info.get("int8"), Mapping)
                    else None
                )
                if warm.cache_hit is False and reused:
                    cell.warnings.append(
                        f"warm compile: the quantized model came from the cache, but {cell.backend} "
                        "compiled it again (no compiled-model cache hit)"
                    )
                elif warm.cache_hit is False:
                    cell.warnings.append(
                        f"warm compile: {cell.backend} did not reuse its cache (a second full compile)"
                    )
                del warm
                gc.collect()
            except NnportError as exc:
                cell.warnings.append(f"warm compile failed: {exc}")
            cell.stage = "accuracy"
            emit("accuracy")
            got = [compiled.run(f) for f in self.evaluation.feeds]
            cell.accuracy = accuracy_delta(self.expected, got, self.segments)
            if self.evaluation.labels is not None and self.label_name is not None:
                cell.labels = _label_score(got, self.label_name, self.evaluation.labels)
            cell.score = self._score(cell)
            if cell.score is not None and self.report.reference_score is not None:
                cell.accuracy_drop = self.report.reference_score - cell.score
                cell.within_budget = cell.accuracy_drop <= self.report.max_accuracy_drop + 1e-9
            del got
            cell.stage = "measure"
            emit("measure", elapsed_s=0.0, target_s=self.min_duration_s, inferences=0)
            self._measure(cell, compiled, emit)
            cell.status, cell.stage = "ok", None
        except KeyboardInterrupt:
            cell.status = "interrupted"
            cell.reason = f"interrupted (Ctrl-C) during {cell.stage}"
            raise
        except UnsupportedPrecision as exc:
            cell.status, cell.reason = "unsupported", str(exc)
        except Exception as exc:  # a runtime that fails mid-way: this row says why, the others go on
            cell.status = "error"
            cell.reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, NnportError) else str(exc)
        finally:
            del compiled
            gc.collect()
            cell.seconds = time.perf_counter() - started

    def _score(self, cell: PortCell) -> float | None:
        metric = self.report.metric
        if metric == "labels":
            return cell.labels.top1 if cell.labels is not None else None
        if metric == "agreement":
            for a in cell.accuracy:
                if a.output == self.label_name and a.part is None:
                    return a.top1
            return None
        return min((a.cosine for a in cell.accuracy), default=None)

    def _measure(self, cell: PortCell, compiled: Any, emit: Callable[..., None]) -> None:
        from .api import measure as nn_measure
        from .measuring import MeasureSettings

        def bar(done: int, elapsed: float, target: float) -> None:
            emit("measure", elapsed_s=elapsed, target_s=target, inferences=done)

        settings = MeasureSettings(
            warmup=self.warmup,
            min_iterations=self.min_iterations,
            min_duration_s=self.min_duration_s,
            max_duration_s=self.max_duration_s,
            energy=True,
            progress=bar,
        )
        m = nn_measure(compiled, self.evaluation.feeds[0], settings)
        stats = m.stats()
        cell.latency_p50_ms = stats["latency_p50_ms"]
        cell.latency_p99_ms = stats["latency_p99_ms"]
        cell.throughput_ips = m.throughput_ips
        cell.throughput_scenario = "single-stream"
        cell.iterations = m.iterations
        cell.peak_rss_mib = m.peak_rss_mib
        cell.inference_rss_added_mib = m.inference_rss_added_mib
        cell.energy_per_inference_mj = m.energy_per_inference_mj
        cell.energy_meter = m.energy_meter
        cell.energy_unavailable = m.energy_unavailable
        cell.latency_cv_percent = stats["latency_cv_percent"]
        cell.warnings += [
            w for w in m.warnings if not w.startswith(("only ", "unstable run"))
        ]  # both summarised by the report
        if self.objective == "throughput":
            streams = _usable_cores()
            if streams > 1:
                emit("measure", elapsed_s=0.0, target_s=self.min_duration_s, inferences=0)
                multi = MeasureSettings(
                    warmup=self.warmup,
                    min_iterations=self.min_iterations,
                    min_duration_s=self.min_duration_s,
                    max_duration_s=self.max_duration_s,
                    scenario="multi-stream",
                    streams=streams,
                    energy=False,
                    progress=bar,
                )
                mm = nn_measure(compiled, self.evaluation.feeds[0], multi)
                cell.throughput_ips = mm.throughput_ips
                cell.throughput_scenario = f"multi-stream x{streams}"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_precisions(precisions: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(precisions, str):
        precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise InputError(f"unknown precision(s) {unknown or list(precisions)}; choose from {list(PRECISIONS)}")
    return tuple(dict.fromkeys(precisions))


def _devices(specs: Sequence[str | Device] | None) -> tuple[list[Device], dict[str, str]]:
    """Concrete devices for the specs (default: every usable one) and the unusable ones with why."""
    from . import devices as all_devices
    from .manager import get_plugin_manager
    from .selection import candidates

    skipped: dict[str, str] = {}
    found: list[Device] = []
    if not specs:
        for d in all_devices(include_unavailable=True):
            if d.available:
                found.append(d)
            else:
                skipped[d.id] = d.reason or "unusable"
    else:
        pm = get_plugin_manager()
        for spec in specs:
            try:
                for d in candidates(pm, spec):
                    if d not in found:
                        found.append(d)
            except BackendUnavailable as exc:
                skipped[spec.id if isinstance(spec, Device) else str(spec)] = str(exc)
    if not found:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no device is registered"
        raise DeviceNotFound(f"no usable device to port to ({why}); see `nnport devices --all`")
    return found, skipped


def _label_output(model: Model, name: str | None, labelled: bool) -> str | None:
    outputs = [o.name for o in model.outputs]
    if name is not None:
        return name
    if len(outputs) == 1:
        return outputs[0]
    if labelled:
        raise InputError(
            f"the model has several outputs {outputs}: name the one whose argmax is the class with --label-output NAME"
        )
    return None


def _rows(array: np.ndarray) -> np.ndarray | None:
    """``[samples, classes]`` scores of a classifier output (trailing 1-dims dropped), else None."""
    shape = list(array.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) == 1 and shape[0] >= 2:
        shape = [1, shape[0]]
    if len(shape) != 2 or shape[1] < 2:
        return None
    return array.reshape(shape)


def _is_classifier(outputs: Sequence[Mapping[str, np.ndarray]], name: str | None) -> bool:
    return name is not None and all(_rows(np.asarray(o[name])) is not None for o in outputs)


def _check_label_count(expected: Sequence[Mapping[str, np.ndarray]], name: str | None, evaluation: Evaluation) -> None:
    assert evaluation.labels is not None
    if name is None or not _is_classifier(expected, name):
        shape = list(np.asarray(expected[0][name]).shape) if name else None
        raise InputError(
            f"labels need a classifier output [samples, classes]; output {name!r} has shape {shape}: name "
            "another with --label-output"
        )
    rows = sum(_rows(np.asarray(o[name])).shape[0] for o in expected)  # type: ignore[union-attr]
    if rows != len(evaluation.labels):
        raise InputError(
            f"the labels ({evaluation.info.labels}) hold {len(evaluation.labels)} classes but the data gives {rows} "
            f"predictions ({len(evaluation.feeds)} evaluated samples{evaluation.held_out_text}): one label "
            "per sample, in the samples' order"
        )


def _label_score(outputs: Sequence[Mapping[str, np.ndarray]], name: str, labels: np.ndarray) -> LabelScore:
    scores = np.concatenate([_rows(np.asarray(o[name], dtype=np.float64)) for o in outputs])
    top1 = int(np.sum(scores.argmax(axis=1) == labels))
    top5 = None
    if scores.shape[1] > 5:
        best5 = np.argsort(-scores, axis=1)[:, :5]
        top5 = int(np.sum([label in row for label, row in zip(labels, best5)]))
    return LabelScore(output=name, total=len(labels), top1_correct=top1, top5_correct=top5)


def _segments(source: Model, feed: Mapping[str, np.ndarray], report: PortReport) -> Mapping[str, Any]:
    """The parts of each Concat-made output (a detector's boxes and scores), judged one by one."""
    try:
        from .ranges import output_segments

        return output_segments(source.proto, feed)
    except Exception as exc:
        report.notes.append(
            f"per-part accuracy unavailable: could not trace the outputs' Concat parts ({type(exc).__name__}: {exc})"
        )
        return {}


def _compile_info(compiled: Any) -> dict[str, Any]:
    """What the backend said about a converted compile: precision hints, int8 method, layers kept float."""
    keep = (
        "int8",
        "compression",
        "inference_precision",
        "precision_mode",
        "fp16_arithmetic",
        "shapes_fallback",
        "specialized_lazily",
        "quantized_model",
    )
    info = {}
    for key in keep:
        if key in compiled.info:
            value = compiled.info[key]
            if key == "compression" and isinstance(value, Mapping):
                value = {k: v for k, v in value.items() if k not in ("mixed_ranges",)}
            info[key] = _jsonable(value)
    return info


# -- the artefact on disk ---------------------------------------------------------------------


ARTEFACT_KEYS: tuple[tuple[str, str], ...] = (
    ("ncnn_param", "ncnn param + bin (converted by pnnx)"),
    ("mnn_model", "MNN model (converted by MNNConvert)"),
    ("tflite", "TensorFlow Lite flatbuffer (converted by onnx2tf)"),
    ("engine_cache", "TensorRT serialized engine"),
)
"""``compiled.info`` keys naming the converted file a backend runs, and what that file is."""


def artefact(compiled: Any, source: Model) -> Artefact:
    """What ``compiled`` runs, on disk: a converted file the backend names, else the ONNX it was given.

    Read from ``compiled.info``: ``compressed_model`` (the fp16/int8 ONNX that
    ONNX Runtime runs), ``int8["stored_ir"]`` (OpenVINO's NNCF-quantized IR, kept
    when a ``cache_dir`` is given), ``ncnn_param`` (plus the ``.bin`` beside it),
    ``mnn_model``, ``tflite``, ``engine_cache``.  Otherwise the model given to
    the backend, which converts it in memory (OpenVINO fp32/fp16).
    """
    info = compiled.info
    compressed = info.get("compressed_model")
    if isinstance(compressed, Model):
        precision = (info.get("compression") or {}).get("precision", compiled.options.precision)
        what = "int8 QDQ ONNX (nnport.compress)" if precision == "int8" else f"{precision} ONNX (nnport.compress)"
        return Artefact(what, len(compressed.serialized()))
    int8 = info.get("int8")
    if isinstance(int8, Mapping) and int8.get("stored_ir"):
        xml = Path(int8["stored_ir"])
        files = [xml, xml.with_suffix(".bin")]
        if all(f.is_file() for f in files):
            return Artefact(
                "OpenVINO int8 IR xml + bin (NNCF)", sum(f.stat().st_size for f in files), tuple(f.name for f in files)
            )
    for key, what in ARTEFACT_KEYS:
        value = info.get(key)
        if not value:
            continue
        path = Path(str(value))
        files = [path, path.with_suffix(".bin")] if key == "ncnn_param" else [path]
        if all(f.is_file() for f in files):
            return Artefact(what, sum(f.stat().st_size for f in files), tuple(f.name for f in files))
    given = compiled.model
    size = (
        len(given.serialized()) if given.format == "onnx" else (Path(given.path).stat().st_size if given.path else None)
    )
    note = ""
    if compiled.options.precision != "fp32" and given.format == "onnx":
        note = f", converted to {compiled.options.precision} in memory at load"
    return Artefact(f"the {given.format.upper()} model given to {compiled.device.backend}{note}", size)


# -- data ---------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Loaded, validated evaluation data: samples, labels, int8 calibration, the shapes fixed."""

    feeds: list[dict[str, np.ndarray]]
    labels: np.ndarray | None
    calibration: list[dict[str, np.ndarray]] | None
    shapes: dict[str, tuple[int, ...]]
    info: PortData
    held_out: int = 0

    @property
    def held_out_text(self) -> str:
        return f", after holding out {self.held_out} for int8 calibration" if self.held_out else ""


def load_data(
    model: Model,
    data: Any,
    labels: Any = None,
    *,
    preprocess: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: Any = None,
    int8: bool = True,
    random_count: int = RANDOM_SAMPLES,
) -> Evaluation:
    """Read and check ``port``'s data: every sample matches the model's inputs, labels match the samples.

    Raises ``InputError`` naming the input and the file of a sample that does
    not match, and one naming both counts when the labels do not match.
    """
    from .shapes import fix_shapes, normalize

    given = {k: tuple(v) for k, v in normalize(shapes).items()}
    notes: list[str] = []
    files: list[str] = []
    if data is None:
        if labels is not None:
            raise InputError("labels need data: pass --data DIR with the samples the labels belong to")
        if preprocess is not None:
            raise InputError("--preprocess applies to an image folder given with --data")
        fixed = _random_shapes(model.inputs, given)
        from .data import random_feeds

        feeds = [random_feeds(model.inputs, seed=i, shapes=fixed) for i in range(random_count)]
        kind, where = "random", None
        notes.append(
            f"no data: {random_count} seeded random inputs (image-like where the input looks like an image); "
            "accuracy then means agreement with fp32 on those inputs only, not accuracy on real data"
        )
    elif isinstance(data, (str, os.PathLike)):
        folder = Path(data)
        if not folder.is_dir():
            raise InputError(f"data folder {str(folder)!r} does not exist or is not a folder")
        entries = sorted(p for p in folder.iterdir() if p.is_file())
        samples = [p for p in entries if p.suffix.lower() in SAMPLE_SUFFIXES]
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if samples and images:
            raise InputError(
                f"data folder {str(folder)!r} mixes sample files (.npz/.npy) and images; keep one kind per folder"
            )
        if samples:
            if preprocess is not None:
                raise InputError(
                    f"--preprocess applies to image folders; {str(folder)!r} holds .npz/.npy samples, fed as they are"
                )
            feeds, files = _read_samples(samples, model.inputs)
            kind = "samples"
        elif images:
            if preprocess is None:
                raise InputError(
                    f"{str(folder)!r} is an image folder: say how to turn images into the model's input "
                    f"with --preprocess {'|'.join(PREPROCESS)}"
                )
            feeds, files, image_note = _read_images(images, model.inputs, preprocess, given)
            notes += image_note
            kind = "images"
        else:
            raise InputError(
                f"data folder {str(folder)!r} holds no .npz/.npy samples and no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        where = str(folder)
    elif (
        isinstance(data, Sequence)
        and not isinstance(data, (bytes, np.ndarray))
        and all(isinstance(f, Mapping) for f in data)
    ):
        feeds = [{k: v for k, v in f.items()} for f in data]
        files = [f"feeds[{i}]" for i in range(len(feeds))]
        kind, where = "feeds", None
    else:
        raise InputError(
            f"data must be a folder of samples or images, or a list of feed dicts; got {type(data).__name__}"
        )
    if not feeds:
        raise InputError("the data holds no samples")
    if kind != "random":
        fixed = dict(given)
        first = feeds[0]
        derived = {}
        for spec in model.inputs:
            if spec.is_dynamic and spec.name not in fixed and isinstance(first.get(spec.name), np.ndarray):
                derived[spec.name] = tuple(int(d) for d in first[spec.name].shape)
        if derived:
            fixed.update(derived)
            notes.append(
                f"symbolic input dims fixed from the first sample ({files[0]}): "
                + ", ".join(f"{k} {list(v)}" for k, v in derived.items())
            )
    specs = fix_shapes(model, fixed).inputs if fixed else model.inputs
    if kind != "random":
        _validate(feeds, files, specs, derived_from=files[0] if fixed != given else None)
    label_array, label_source = (None, None)
    if labels is not None:
        label_array, label_source = read_labels(labels)
        _precheck_labels(label_array, label_source, feeds, specs, where or "the feeds given")
    held_out = 0
    cal_text = "no int8 row"
    cal: list[dict[str, np.ndarray]] | None = None
    if int8:
        cal_images = _image_files(calibration)
        if cal_images:
            if preprocess is None:
                raise InputError(
                    f"calibration folder {str(calibration)!r} holds images: say how to turn them into the "
                    f"model's input with --preprocess {'|'.join(PREPROCESS)}"
                )
            cal, _, _ = _read_images(cal_images, model.inputs, preprocess, fixed)
            cal_text = f"{len(cal)} images from {calibration}, --preprocess {preprocess}"
        elif calibration is not None:
            from .calibration import calibration_feeds

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # 'random' calibration: said in the report instead
                cal = calibration_feeds(calibration, specs)
            cal_text = f"{len(cal)} samples from {_describe_source(calibration)}"
            if isinstance(calibration, str) and calibration.strip().lower() == "random":
                notes.append(
                    "int8 calibrated on random inputs: scales fitted to noise rarely fit real data, so "
                    "int8 rows may look worse than they would be"
                )
        elif kind == "random":
            from .calibration import RANDOM_SEED_BASE
            from .data import random_feeds

            cal = [random_feeds(model.inputs, seed=RANDOM_SEED_BASE + i, shapes=fixed) for i in range(random_count)]
            cal_text = f"{random_count} other random inputs (seeds from {RANDOM_SEED_BASE})"
        elif len(feeds) >= 2:
            held_out = max(1, min(HELD_OUT_MAX, len(feeds) // 5))
            cal = feeds[-held_out:]
            feeds = feeds[:-held_out]
            if label_array is not None:
                label_array = label_array[:-held_out]
            cal_text = f"the last {held_out} samples of the data ({files[-held_out]} on), held out: not evaluated"
            notes.append(
                f"no calibration data given: the last {held_out} of {len(files)} samples calibrate int8 "
                f"and every row is evaluated on the other {len(feeds)}"
            )
            files = files[:-held_out]
        else:
            cal = list(feeds)
            cal_text = "the one data sample (also evaluated: int8 accuracy is optimistic)"
            notes.append("one sample and no calibration data: int8 is calibrated on the sample it is evaluated on")
    info = PortData(
        kind=kind,
        source=where,
        samples=len(feeds),
        files=tuple(files),
        labels=label_source,
        preprocess=preprocess,
        calibration=cal_text,
        shapes={k: tuple(v) for k, v in fixed.items()},
        warnings=tuple(notes),
    )
    if kind == "random":
        warnings.warn(notes[0], PortDataWarning, stacklevel=3)
    return Evaluation(feeds, label_array, cal, dict(fixed), info, held_out)


def _image_files(source: Any) -> list[Path]:
    """The images of a calibration folder that holds images and no samples, else []."""
    if not isinstance(source, (str, os.PathLike)) or not Path(source).is_dir():
        return []
    entries = sorted(p for p in Path(source).iterdir() if p.is_file())
    if any(p.suffix.lower() in SAMPLE_SUFFIXES for p in entries):
        return []
    return [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]


def _describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"the {type(source).__name__} given"


def _random_shapes(specs: Sequence[TensorSpec], given: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Shapes for random data: ``given``, else the spec's with a symbolic leading (batch) dim set to 1."""
    shapes = {}
    for spec in specs:
        if spec.name in given:
            shapes[spec.name] = tuple(given[spec.name])
            continue
        open_axes = [i for i, d in enumerate(spec.shape) if not isinstance(d, int) and i > 0]
        if open_axes:
            raise InputError(
                f"input {spec.name!r} {list(spec.shape)} has open dims beyond the batch: random data needs its shape; "
                "pass --input-shapes "
                f"{spec.name}:{'x'.join(str(d) if isinstance(d, int) else '?' for d in spec.shape)} with "
                "numbers, or --data"
            )
        shapes[spec.name] = spec.concrete_shape()
    return shapes


def _read_samples(files: Sequence[Path], specs: Sequence[TensorSpec]) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    """One feed dict per ``.npz`` (keyed by input name), or per ``.npy`` for a single-input model."""
    feeds: list[dict[str, np.ndarray]] = []
    names: list[str] = []
    for file in files:
        try:
            if file.suffix.lower() == ".npz":
                with np.load(file, allow_pickle=False) as data:
                    feeds.append({k: data[k] for k in data.files})
            else:
                if len(specs) != 1:
                    raise InputError(
                        f"data file {str(file)!r} is a .npy array, but the model has {len(specs)} inputs "
                        f"{[s.name for s in specs]}: "
                        "store each sample as a .npz keyed by input name"
                    )
                feeds.append({specs[0].name: np.load(file, allow_pickle=False)})
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read data file {str(file)!r}: {type(exc).__name__}: {exc}") from exc
        names.append(file.name)
    return feeds, names


def _validate(
    feeds: Sequence[Mapping[str, Any]], files: Sequence[str], specs: Sequence[TensorSpec], derived_from: str | None
) -> None:
    """``InputError`` naming the file and the input of the first sample that does not match ``specs``."""
    from .compiled import feed_problems

    names = {s.name for s in specs}
    for feed, file in zip(feeds, files):
        ok = set(feed) == names and all(
            isinstance(feed[s.name], np.ndarray)
            and feed[s.name].dtype == s.dtype
            and s.accepts_shape(feed[s.name].shape)
            for s in specs
        )
        if not ok:
            hint = (
                f" (symbolic dims were fixed from the first sample, {derived_from}: every sample must have "
                "the same shapes)"
                if derived_from
                else ""
            )
            raise InputError(f"data file {file} does not match the model's inputs: {feed_problems(specs, feed)}{hint}")


def read_labels(labels: Any) -> tuple[np.ndarray, str]:
    """Labels from a ``.npy`` file, a text file (one integer class id per line) or an array; and where from."""
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise InputError(f"labels file {str(path)!r} does not exist")
        if path.suffix.lower() == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise InputError(f"cannot read labels file {str(path)!r} as .npy: {exc}") from exc
        else:
            values = []
            for number, line in enumerate(path.read_text().splitlines(), 1):
                text = line.strip()
                if not text:
                    continue
                try:
                    values.append(int(text))
                except ValueError:
                    raise InputError(
                        f"labels file {str(path)!r} line {number}: {text!r} is not an integer class id (one per line)"
                    ) from None
            array = np.asarray(values, dtype=np.int64)
        where = str(path)
    else:
        array = np.asarray(labels)
        where = f"{len(array)} labels given"
    array = np.asarray(array)
    if array.ndim == 2 and 1 in array.shape:  # a column or a row of ids
        array = array.reshape(-1)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise InputError(
            f"labels ({where}) must be one integer class id per sample; got {array.dtype}{list(array.shape)}"
        )
    return array.astype(np.int64), where


def _precheck_labels(
    labels: np.ndarray, source: str, feeds: Sequence[Mapping[str, np.ndarray]], specs: Sequence[TensorSpec], where: str
) -> None:
    """Before anything runs: one label per sample, where every sample holds one (a leading dim of 1).

    Samples holding a batch are checked after the reference run, against its predictions.
    """
    first = specs[0].name
    if all(f[first].ndim < 2 or f[first].shape[0] == 1 for f in feeds) and len(labels) != len(feeds):
        raise InputError(
            f"the labels ({source}) hold {len(labels)} classes but the data ({where}) holds {len(feeds)} samples: "
            "one label per sample, in sorted file-name order"
        )


# -- images -------------------------------------------------------------------------------------


def _read_images(
    files: Sequence[Path], specs: Sequence[TensorSpec], mode: str, given: Mapping[str, tuple[int, ...]]
) -> tuple[list[dict[str, np.ndarray]], list[str], list[str]]:
    images = [s for s in specs if len(s.shape) == 4]
    if len(specs) != 1 or not images:
        raise InputError(
            "an image folder feeds a model with one image input (4-D); this model has inputs "
            f"{[str(s) for s in specs]}: "
            "give a folder of .npz samples keyed by input name instead"
        )
    spec = specs[0]
    shape, layout, note = image_shape(spec, mode, given.get(spec.name))
    try:
        from PIL import Image  # noqa: F401  (Pillow comes with matplotlib: nnport[plot])
    except ImportError as exc:
        raise InputError(f"reading images needs Pillow (pip install pillow, or nnport[plot]): {exc}") from exc
    feeds = [{spec.name: preprocess_image(f, spec.dtype, shape, layout, mode)} for f in files]
    notes = [
        f"{len(files)} images, --preprocess {mode}: {PREPROCESS_TEXT[mode]}, to {spec.name} {list(shape)} ({layout})"
    ]
    if note:
        notes.append(note)
    return feeds, [f.name for f in files], notes


PREPROCESS_TEXT = {
    "imagenet": "shorter side resized to size/0.875, centre crop, RGB/255, ImageNet mean/std",
    "yolo": "letterbox (aspect kept, padded with grey 114), RGB/255",
    "none": "resized to the input size, RGB, pixel values 0-255",
}


def image_shape(spec: TensorSpec, mode: str, given: Sequence[int] | None) -> tuple[tuple[int, ...], str, str | None]:
    """(the input shape images are made into, ``NCHW``/``NHWC``, a note when a default size was taken)."""
    dims = list(given) if given is not None else list(spec.shape)
    if len(dims) != 4:
        raise InputError(f"input {spec.name!r} {list(spec.shape)} is not 4-D: it cannot take images")
    if dims[1] in (1, 3):
        layout, c_axis, hw = "NCHW", 1, (2, 3)
    elif dims[3] in (1, 3):
        layout, c_axis, hw = "NHWC", 3, (1, 2)
    elif not isinstance(dims[1], int):
        layout, c_axis, hw = "NCHW", 1, (2, 3)
    else:
        raise InputError(
            f"input {spec.name!r} {list(spec.shape)} has neither 1 nor 3 channels on axis 1 or 3: it cannot take images"
        )
    note = None
    if not isinstance(dims[0], int):
        dims[0] = 1
    elif dims[0] != 1:
        raise InputError(
            f"input {spec.name!r} {list(spec.shape)} takes a batch of {dims[0]}: an image folder makes one "
            "image per sample"
        )
    if not isinstance(dims[c_axis], int):
        dims[c_axis] = 3
    if any(not isinstance(dims[a], int) for a in hw):
        size = DEFAULT_IMAGE_SIZE[mode]
        for a in hw:
            if not isinstance(dims[a], int):
                dims[a] = size
        note = (
            f"input {spec.name!r} {list(spec.shape)} has an open image size: {size}x{size} taken ({mode}'s "
            "usual size); pass --input-shapes to choose"
        )
    return tuple(int(d) for d in dims if d is not None), layout, note


def preprocess_image(path: Path, dtype: np.dtype, shape: Sequence[int], layout: str, mode: str) -> np.ndarray:
    """One image file as a model input of ``shape`` (batch 1) and ``dtype``.

    ``imagenet``: shorter side to size/0.875, centre crop, RGB/255, ImageNet
    mean/std.  ``yolo``: letterbox (aspect kept, grey 114 padding, centred),
    RGB/255.  ``none``: resized to the input size, values 0-255.  A uint8 input
    gets the uint8 pixels (no scaling, no normalisation).
    """
    from PIL import Image

    _, a, b, c = shape
    channels, (h, w) = (a, (b, c)) if layout == "NCHW" else (c, (a, b))
    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if channels == 1 else "RGB")
    except Exception as exc:
        raise InputError(f"cannot read image {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    if mode == "imagenet":
        scale = max(h, w) / 0.875 / min(img.size)
        img = img.resize(
            (max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.Resampling.BILINEAR
        )
        left, top = (img.width - w) // 2, (img.height - h) // 2
        img = img.crop((left, top, left + w, top + h))
    elif mode == "yolo":
        r = min(h / img.height, w / img.width)
        nw, nh = max(1, round(img.width * r)), max(1, round(img.height * r))
        canvas = Image.new(img.mode, (w, h), YOLO_PAD if channels == 1 else (YOLO_PAD,) * 3)
        canvas.paste(img.resize((nw, nh), Image.Resampling.BILINEAR), ((w - nw) // 2, (h - nh) // 2))
        img = canvas
    else:
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if np.dtype(dtype) == np.uint8:
        array: np.ndarray = pixels
    else:
        array = pixels.astype(np.float32)
        if mode in ("imagenet", "yolo"):
            array /= 255.0
        if mode == "imagenet":
            mean = np.asarray(IMAGENET_MEAN if channels == 3 else [np.mean(IMAGENET_MEAN)], np.float32)
            std = np.asarray(IMAGENET_STD if channels == 3 else [np.mean(IMAGENET_STD)], np.float32)
            array = (array - mean) / std
        array = array.astype(dtype)
    if layout == "NCHW":
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array[None])


# -- the recommendation -------------------------------------------------------------------------


UNITS = {"latency": "p50 latency", "throughput": "throughput", "energy": "energy per inference", "size": "size on disk"}


def recommend(report: PortReport) -> None:
    """Set ``report.recommendation`` (or ``no_recommendation`` with why) from the measured rows."""
    objective = report.objective
    measured = [c for c in report.cells if c.measured]
    if not measured:
        report.no_recommendation = "no row was measured" + (
            ": interrupted before the first finished"
            if report.interrupted
            else ": every device x precision failed or was refused (see each row's reason)"
        )
        return
    ranked = [c for c in measured if c.figure(objective) is not None]
    if not ranked:
        why = "; ".join(sorted({c.energy_unavailable or "?" for c in measured}))
        report.no_recommendation = (
            f"energy per inference is unavailable on every row ({why}): nothing to rank by energy; choose "
            "--objective latency, throughput or size"
        )
        return
    ranked.sort(key=lambda c: (c.figure(objective) or 0.0, c.accuracy_drop or 0.0))
    within = [c for c in ranked if c.within_budget]
    if not within:
        best_drop = min(ranked, key=lambda c: c.accuracy_drop if c.accuracy_drop is not None else math.inf)
        report.no_recommendation = (
            f"no row is within the accuracy budget of {_pct(report.max_accuracy_drop)}: the smallest drop is "
            f"{drop_text(report, best_drop.accuracy_drop)} ({best_drop.label}); raise --max-accuracy-drop "
            "or improve the calibration data"
        )
        return
    best = within[0]
    better_out = [c for c in ranked[: ranked.index(best)] if not c.within_budget]
    over = tuple(
        f"{c.label}: {describe_figure(objective, c)}, but {_accuracy_text(report, c, drop=False)} drops "
        f"{drop_text(report, c.accuracy_drop)} below the reference (budget "
        f"{_pct(report.max_accuracy_drop)})"
        for c in better_out
    )
    if len(within) > 1:
        runner = within[1]
        best_why = (
            f"best {UNITS[objective]} ({describe_figure(objective, best)}) of {len(within)} rows within the "
            f"{_pct(report.max_accuracy_drop)} accuracy budget; {_accuracy_text(report, best)}"
        )
        runner_up = Choice(runner.device, runner.precision, _runner_up_why(report, best, runner))
    else:
        best_why = (
            f"the only row within the {_pct(report.max_accuracy_drop)} accuracy budget "
            f"({describe_figure(objective, best)}); {_accuracy_text(report, best)}"
        )
        runner_up = None
    report.recommendation = Recommendation(objective, Choice(best.device, best.precision, best_why), runner_up, over)


def describe_figure(objective: str, cell: PortCell) -> str:
    if objective == "latency":
        return f"p50 {_ms(cell.latency_p50_ms)}"
    if objective == "throughput":
        return f"{cell.throughput_ips:.4g} inferences/s ({cell.throughput_scenario})"
    if objective == "energy":
        return f"{cell.energy_per_inference_mj:.4g} mJ/inference"
    return f"{format_size(cell.size.size_bytes if cell.size else None)} ({cell.size.what if cell.size else '?'})"


def _runner_up_why(report: PortReport, best: PortCell, runner: PortCell) -> str:
    objective = report.objective
    a, b = abs(best.figure(objective) or 0.0), abs(runner.figure(objective) or 0.0)
    if objective == "throughput":
        ratio = a / b if b else math.inf
        compare = f"{ratio:.2f}x less throughput ({describe_figure(objective, runner)})"
    else:
        ratio = b / a if a else math.inf
        word = {"latency": "slower", "energy": "more energy", "size": "larger"}[objective]
        compare = f"{ratio:.2f}x {word} ({describe_figure(objective, runner)})"
    text = f"{compare}; {_accuracy_text(report, runner)}"
    if ratio - 1 < CLOSE and objective in ("latency", "throughput", "energy"):
        text += (
            f"; within {CLOSE:.0%} of the recommendation: a tie on this machine (measure longer, or on the "
            "target device, to separate them)"
        )
    return text


def _accuracy_text(report: PortReport, cell: PortCell, drop: bool = True) -> str:
    name = {"labels": "top-1", "agreement": "top-1 agreement", "cosine": "min cosine"}[report.metric]
    value = (
        f"{100 * cell.score:.2f}%"
        if report.metric != "cosine" and cell.score is not None
        else f"{cell.score:.5f}"
        if cell.score is not None
        else "-"
    )
    return f"{name} {value}" + (f" (drop {drop_text(report, cell.accuracy_drop)})" if drop else "")


def drop_text(report: PortReport, drop: float | None) -> str:
    """A drop in the metric's unit: points of top-1 (labels, agreement), or percent of cosine."""
    if drop is None:
        return "-"
    if report.metric == "cosine":
        return f"{100 * drop:.2f}%" if abs(drop) >= 5e-5 else "0%"
    return _pts(drop)


# -- formatting helpers (shared with port_render) ----------------------------------------------


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _pts(drop: float | None) -> str:
    if drop is None:
        return "-"
    return f"{100 * drop:+.2f} points" if abs(drop) >= 5e-5 else "0 points"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} ms"


def format_size(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e3:.1f} kB"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def parse_drop(text: str) -> float:
    """``"1%"``, ``"0.5%"`` or ``"1"`` (percent) -> a fraction; ``InputError`` otherwise."""
    raw = str(text).strip()
    number = raw[:-1].strip() if raw.endswith("%") else raw
    try:
        value = float(number)
    except ValueError:
        raise InputError(f"--max-accuracy-drop takes a percentage such as 1% or 0.5%, got {text!r}") from None
    if not 0 <= value <= 100 or not math.isfinite(value):
        raise InputError(f"--max-accuracy-drop must be between 0% and 100%, got {text!r}")
    return value / 100.0
