"""Benchmark: int8 / fp16 against fp32 on ONNX Runtime CPU and OpenVINO CPU.

    /tmp/venv/bin/python benchmarks/bench_compress.py [--models light_resnet50 cnn] [--samples 32] [--duration 5]

For each model: int8 static QDQ (calibrated on seeds 5000.., evaluated on
held-out seeds 0..N-1; asymmetric uint8 activations, the default, and
symmetric int8 activations, the form TensorRT needs) and fp16, each compiled on every device next to the
fp32 model; the accuracy delta against the fp32 reference and the fp32/int8
latency ratio, timed interleaved in one run (``nnport.compress_report.report``).
OpenVINO runs the QDQ file nnport writes ("onnx" rows) and, where its plugin
supports it, its own NNCF int8 ("native" rows).

Why the ``light_*`` models get new weights: the onnx wheel ships them with
every weight generated as the constant 0.02 (``ConstantOfShape``), so every
class gets the same score (softmax = 0.001 everywhere) and top-1 agreement
would be decided by rounding noise.  ``realistic_weights`` gives them seeded
He-normal, zero-mean filters and then, like LSUV initialisation, rescales each
Conv/Gemm output channel to zero mean and unit variance on a few images (a
trained network's activations are normalised like this by its BatchNorms), so
that activations neither vanish nor explode through 50 layers and different
inputs pick different classes.  The architecture and every operator are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import nnport
from nnport import compress, compress_report, zoo
from nnport.data import random_feeds

CAL_SEED = 5000
NORM_SEED = 9000


def realistic_weights(proto: Any, *, seed: int = 0, images: int = 16, branch_gain: float = 0.5) -> Any:
    """``proto`` with seeded, activation-normalised weights (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    rng = np.random.default_rng(seed)
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in g.node:
        for idx, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, idx))
    values: dict[str, np.ndarray] = {}
    kept = []
    for node in g.node:  # constant weights -> initializers
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            values[node.output[0]] = np.zeros(tuple(int(v) for v in inits[node.input[0]]), np.float32)
        else:
            kept.append(node)
    values.update({k: v for k, v in inits.items() if v.dtype == np.float32})
    for node in kept:
        if node.op_type in ("Conv", "Gemm"):
            w = values[node.input[1]]
            if node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute):
                w = w.T
            fan_in = int(np.prod(w.shape[1:]))
            new = rng.standard_normal(w.shape) * np.sqrt(2.0 / fan_in)
            new -= new.reshape(w.shape[0], -1).mean(axis=1).reshape((-1,) + (1,) * (w.ndim - 1))
            if node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute):
                new = new.T
            values[node.input[1]] = new.astype(np.float32)
            if len(node.input) > 2:
                values[node.input[2]] = np.zeros_like(values[node.input[2]])
        elif node.op_type == "BatchNormalization":
            c = values[node.input[1]].shape
            # The last BatchNorm of a residual branch gets a small scale, as in trained ResNets
            # (and "zero-init" residuals): the blocks stay near identity instead of chaotic.
            gain = branch_gain if _feeds_residual_branch(node, consumers) else 1.0
            values[node.input[1]] = (gain * (1 + 0.1 * rng.standard_normal(c))).astype(np.float32)  # scale
            values[node.input[2]] = (0.1 * rng.standard_normal(c)).astype(np.float32)  # bias
            values[node.input[3]] = np.zeros(c, np.float32)  # mean
            values[node.input[4]] = np.ones(c, np.float32)  # var
    del g.node[:]
    g.node.extend(kept)
    used = {name for node in kept for name in node.input}
    new_inits = [numpy_helper.from_array(v, k) for k, v in values.items() if k in used]
    new_inits += [i for i in g.initializer if i.name in used and i.name not in values]
    del g.initializer[:]
    g.initializer.extend(new_inits)
    names = {i.name for i in g.initializer}
    inputs = [
        i for i in g.input if i.name not in names and i.name in used
    ]  # IR-3 models list weights (and dropped shapes) as inputs
    del g.input[:]
    g.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)

    return _calibrate_classifier(model, seed=seed, images=images)


def _calibrate_classifier(model: Any, *, seed: int, images: int) -> Any:
    """Give the classifier layer (the last Conv/Gemm before the output Softmax) per-class
    zero-mean, unit-variance scores over a few images, as a trained classifier's logits have:
    with random weights one class otherwise wins for every input.  Features are untouched,
    so the int8 error reaching the scores is the network's own."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    node = producer.get(g.output[0].name)
    while node is not None and node.op_type not in ("Conv", "Gemm"):
        node = producer.get(node.input[0])
    if node is None or len(node.input) < 3:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.output[0]))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    spec = nnport.load(model).inputs
    scores = []
    for i in range(images):
        out = session.run([node.output[0]], random_feeds(spec, seed=NORM_SEED + i))[0]
        scores.append(out.reshape(out.shape[0], out.shape[1], -1).mean(axis=2))
    scores = np.concatenate(scores)
    mean, std = scores.mean(axis=0), scores.std(axis=0) + 1e-6
    weights = {i.name: i for i in g.initializer}
    w = numpy_helper.to_array(weights[node.input[1]])
    b = numpy_helper.to_array(weights[node.input[2]])
    trans_b = node.op_type == "Conv" or any(a.name == "transB" and a.i for a in node.attribute)
    shape = (-1,) + (1,) * (w.ndim - 1) if trans_b else (1, -1)
    weights[node.input[1]].CopyFrom(numpy_helper.from_array((w / std.reshape(shape)).astype(np.float32), node.input[1]))
    weights[node.input[2]].CopyFrom(numpy_helper.from_array(((b - mean) / std).astype(np.float32), node.input[2]))
    return model


def _feeds_residual_branch(node: Any, consumers: dict[str, list[tuple[Any, int]]]) -> bool:
    """A BatchNorm whose output goes straight into a residual Sum/Add and that is not the shortcut's projection."""
    users = consumers.get(node.output[0], [])
    return any(u.op_type in ("Sum", "Add") for u, _ in users) and "branch1" not in node.output[0]


def load_model(name: str, seed: int) -> Any:
    if name.startswith("light_"):
        import onnx

        proto = realistic_weights(onnx.load(str(zoo.light_path(name))), seed=seed)
        proto.graph.name = name
        return nnport.load(proto)
    return nnport.load(_calibrate_classifier(zoo.build(name), seed=seed, images=16))


def noise_control(model: Any, feeds: list[dict[str, np.ndarray]], relative: float = 0.01) -> float | None:
    """fp32 top-1 agreement with itself when inputs get Gaussian noise of ``relative`` x their std.

    A yardstick for the int8 figures: a synthetic classifier whose top-1 flips
    under 1% input noise will flip under int8 rounding too, trained or not.
    """
    compiled = nnport.compile(model, "onnxruntime:cpu", fallback=False)
    rng = np.random.default_rng(77)
    clean = [compiled.run(f) for f in feeds]
    noisy = [
        compiled.run({k: (v + relative * v.std() * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in f.items()})
        for f in feeds
    ]
    delta = compress_report.accuracy_delta(clean, noisy)[0]
    return delta.top1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["light_resnet50", "light_squeezenet", "cnn"])
    parser.add_argument("--devices", nargs="*", default=["onnxruntime:cpu", "openvino:CPU"])
    parser.add_argument("--samples", type=int, default=32, help="held-out evaluation inputs (seeds 0..N-1)")
    parser.add_argument("--calibration", type=int, default=32, help="calibration inputs (seeds 5000..)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of interleaved timing per device and path")
    parser.add_argument("--precisions", nargs="*", default=["int8", "fp16"])
    parser.add_argument(
        "--activations",
        nargs="*",
        default=["uint8", "int8"],
        help="int8 activation types to compare (int8 is the TensorRT form)",
    )
    parser.add_argument("--json", help="write all reports to this JSON file")
    args = parser.parse_args(argv)

    flags = compress.cpu_int8_features()
    print(f"cpu: {compress._cpu_model()}; " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in flags.items()))
    print(
        f"versions: onnxruntime {_version('onnxruntime')}, openvino {_version('openvino')}, nncf {_version('nncf')}\n"
    )
    results = []
    for name in args.models:
        t0 = time.perf_counter()
        model = load_model(name, seed=0)
        cal = [random_feeds(model.inputs, seed=CAL_SEED + i) for i in range(args.calibration)]
        held_out = [random_feeds(model.inputs, seed=i) for i in range(args.samples)]
        control = noise_control(model, held_out)
        print(
            f"== {name}: prepared in {time.perf_counter() - t0:.1f}s; fp32 top-1 agreement with itself "
            "under 1% input noise: "
            f"{'-' if control is None else f'{100 * control:.0f}%'}"
        )
        variants = [(p, a) for p in args.precisions for a in (args.activations if p == "int8" else [None])]
        for precision, activations in variants:
            t0 = time.perf_counter()
            native = (
                precision != "int8" or activations == args.activations[0]
            )  # a backend's own int8 is the same for every variant
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs = {"activations": activations} if activations else {}
                packed = compress.quantize(model, precision, cal if precision == "int8" else None, **kwargs)
                quantize_s = time.perf_counter() - t0
                result = compress_report.report(
                    model,
                    packed,
                    args.devices,
                    precision=precision,
                    calibration=cal,
                    native=native,
                    eval_feeds=held_out,
                    min_duration_s=args.duration,
                )
            label = f"{precision}" + (f", {activations} activations" if activations else "")
            print(f"-- {label}: conversion {quantize_s:.1f}s")
            print(result.format())
            print()
            results.append(
                {
                    "model": name,
                    "precision": precision,
                    "activations": activations,
                    "conversion_s": quantize_s,
                    "fp32_noise_control_top1": control,
                    **result.to_dict(),
                }
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
