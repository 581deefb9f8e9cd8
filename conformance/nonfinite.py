"""The ``nonfinite/`` conformance group: NaN and +/-Inf inputs.

A camera with a dead pixel, a division by a zero variance upstream, an fp16
overflow: real inputs are not always finite, and runtimes disagree on what an
operator does with a non-finite value.  The comparator requires NaN and Inf at
the same positions with the same signs (specs/conformance.md section 3) and
names the positions that differ, so a runtime that silently turns a NaN into a
finite number (or the reverse) fails with the places it did so.

* ``cnn_one_nan_pixel``: a small CNN (Conv, Relu, MaxPool, Conv, Relu,
  GlobalAveragePool, Gemm) on an image with one NaN pixel.  The specification
  propagates it: every convolution window that covers the pixel is NaN, so are
  the pooled cells over them and every logit.  The pooled feature map is an
  output too, so the report says where the NaN went missing.
* ``maxpool_nan``: MaxPool alone on the same kind of input (which operator does it).
* ``relu_inf``, ``max_inf``, ``softmax_inf``: +/-Inf into Relu, Max and Softmax
  (-Inf logits are probability 0; an +Inf logit makes its row NaN by the
  formula, inf/inf).

Feeds are stored with the case (seeded, with the non-finite values placed), and
the reference is the usual one: ONNX Runtime, itself judged by the oracle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .cases import Case, _w, single_op
from .op_variants import _node, graph_model

NAN_PIXEL = (0, 1, 7, 9)
"""Where the NaN sits in the CNN's 1x3x16x16 input (batch, channel, row, column)."""


def _image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    from nnport.data import image_like

    return image_like(shape, np.random.default_rng(seed))


def _cnn() -> Any:
    nodes = [
        _node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        _node("Relu", ["c1"], ["r1"]),
        _node("MaxPool", ["r1"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        _node("Conv", ["pool", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        _node("Relu", ["c2"], ["r2"]),
        _node("GlobalAveragePool", ["r2"], ["gap"]),
        _node("Flatten", ["gap"], ["flat"]),
        _node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
    ]
    inits = {
        "w1": _w(41, (8, 3, 3, 3)),
        "b1": _w(42, (8,), 0.1),
        "w2": _w(43, (16, 8, 3, 3)),
        "b2": _w(44, (16,), 0.1),
        "w3": _w(45, (10, 16)),
        "b3": _w(46, (10,), 0.1),
    }
    return graph_model(nodes, [("x", (1, 3, 16, 16))], ["logits", "c1"], opset=13, inits=inits, name="cnn_nan")


def _nan_image() -> dict[str, np.ndarray]:
    x = _image((1, 3, 16, 16), 40)
    x[NAN_PIXEL] = np.nan
    return {"x": x}


def _maxpool_nan_feeds() -> dict[str, np.ndarray]:
    x = np.random.default_rng(47).standard_normal((1, 2, 8, 8)).astype(np.float32)
    x[0, 0, 2:4, 2:4] = np.nan  # one whole 2x2 window: its maximum is NaN whichever element a kernel returns
    x[0, 1, 4:6, 6:8] = np.nan
    return {"x": x}


def _with_infs(shape: tuple[int, ...], seed: int, spots: dict[tuple[int, ...], float]) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-3, 3, shape).astype(np.float32)
    for where, value in spots.items():
        x[where] = value
    return x


def _relu_feeds() -> dict[str, np.ndarray]:
    return {
        "x": _with_infs(
            (2, 4, 6),
            48,
            {
                (0, 0, 0): np.inf,
                (0, 1, 3): -np.inf,
                (1, 3, 5): np.inf,
                (1, 2, 2): -np.inf,
                (0, 2, 4): np.nan,
                (1, 0, 1): np.nan,
            },
        )
    }


def _max_feeds() -> dict[str, np.ndarray]:
    a = _with_infs((3, 8), 49, {(0, 1): np.inf, (1, 2): -np.inf, (2, 3): -np.inf})
    b = _with_infs((3, 8), 50, {(0, 1): -np.inf, (1, 2): -np.inf, (2, 5): np.inf})
    return {"a": a, "b": b}


def _softmax_feeds() -> dict[str, np.ndarray]:
    x = _with_infs((4, 10), 51, {(0, 2): -np.inf, (0, 7): -np.inf, (1, 0): -np.inf, (2, 4): np.inf})
    x[3, :] = -np.inf
    x[3, 6] = 1.0  # a row with one finite logit: probability 1 there
    return {"x": x}


def nonfinite_cases() -> list[Case]:
    return [
        Case(
            "nonfinite/cnn_one_nan_pixel",
            _cnn,
            "small CNN, one NaN pixel in the image: the specification propagates it to every logit",
            feeds=_nan_image,
        ),
        Case(
            "nonfinite/maxpool_nan_window",
            lambda: single_op("MaxPool", [("x", (1, 2, 8, 8))], ["y"], opset=12, kernel_shape=[2, 2], strides=[2, 2]),
            "MaxPool with a window of NaN",
            feeds=_maxpool_nan_feeds,
        ),
        Case(
            "nonfinite/relu_inf_nan",
            lambda: single_op("Relu", [("x", (2, 4, 6))], ["y"], opset=14),
            "Relu of +/-Inf and NaN",
            feeds=_relu_feeds,
        ),
        Case(
            "nonfinite/max_inf",
            lambda: single_op("Max", [("a", (3, 8)), ("b", (3, 8))], ["y"], opset=13),
            "Max with +/-Inf operands",
            feeds=_max_feeds,
        ),
        Case(
            "nonfinite/softmax_inf",
            lambda: single_op("Softmax", [("x", (4, 10))], ["y"], opset=13, axis=-1),
            "Softmax with -Inf logits (masked), a +Inf logit, a row of -Inf but one",
            feeds=_softmax_feeds,
        ),
    ]
