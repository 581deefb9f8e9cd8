"""The oracle that judges the reference backend: ``onnx.reference`` with corrected kernels.

ONNX Runtime on CPU is the reference for every other backend, so it is itself
judged against an independent implementation of the ONNX specification: onnx's
``ReferenceEvaluator``.  Some of that evaluator's kernels (onnx 1.23) do not
compute what the specification says, and every model-level row of the
reference backend that uses them was an expected failure of the *oracle*:

* **BatchNormalization** before opset 14: ``BatchNormalization_9`` takes a
  ``momentum`` attribute (the schema's default 0.9, or one that Paddle writes
  out) as training mode and normalises with the batch's own statistics.  The
  specification (opsets 7-9) decides the mode by the outputs: with only ``Y``
  it is inference, ``Y = scale * (X - mean) / sqrt(var + epsilon) + B``;
  ``momentum`` and ``spatial`` never change that output.  Opset 6's
  ``is_test=0`` with a single output is inference too (nothing to train).
* **LRN**: the loop that sums squares runs over ``x.shape[0]`` (the batch)
  instead of the channels, so with batch 1 only channel 0 is normalised.  The
  specification: ``square_sum[n, c, ...] = sum(X[n, i, ...]^2)`` for ``i`` in
  ``[max(0, c - floor((size-1)/2)), min(C-1, c + ceil((size-1)/2))]``,
  ``Y = X / (bias + alpha / size * square_sum) ^ beta``.
* **Softmax, LogSoftmax, Hardmax** before opset 13: the input is coerced to
  2-D at ``axis`` (``[prod(shape[:axis]), prod(shape[axis:])]``) and the
  operator works on the rows; the default ``axis`` is 1.  The evaluator uses
  opset 13's semantics (one axis, default -1) for every opset, so a
  ``[1, 1000, 1, 1]`` classifier output without an ``axis`` attribute became
  all ones.

* **GlobalMaxPool**: reduces axes ``ndim-2`` and ``ndim-1`` whatever the rank,
  which is right for 4-D input only: on ``[N, C, L]`` it takes the maximum over
  the channels too (magika's 1-D CNN stopped the oracle at the next Squeeze).

``KERNELS`` replaces those (``ReferenceEvaluator(model, new_ops=KERNELS)``);
each is checked in ``tests/test_oracle.py`` against a numpy formula written from
the specification and against ONNX Runtime and OpenVINO on single-operator
models.  ``evaluate`` is what the conformance worker, ``nnport compare
--reference onnx.reference`` and ``nnport debug`` use.

Where the oracle cannot run a model (an operator onnx.reference lacks), the
conformance worker judges the reference backend by the agreement of the
independent runtimes instead (``nnport.conformance.worker``, specs/conformance.md
section 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from onnx.reference.op_run import OpRun

ORACLE = "onnx.reference"
"""The oracle's name in results (``Result.reference``)."""


def _opset(op: OpRun) -> int:
    """The default domain's opset the node is evaluated at."""
    opsets = op.run_params.get("opsets") or {}
    version = opsets.get(op.onnx_node.domain or "", opsets.get("", None))
    return int(version) if version is not None else 10**6


def _explicit(op: OpRun) -> set[str]:
    """Attribute names the node itself sets (the evaluator also fills in the newest schema's defaults)."""
    return {a.name for a in op.onnx_node.attribute}


# -- BatchNormalization --------------------------------------------------------------------------


def batchnorm_inference(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float = 1e-5
) -> np.ndarray:
    """``scale * (x - mean) / sqrt(var + epsilon) + bias`` per channel (axis 1), in float64, cast back to ``x``'s dtype.

    Parameters of shape ``[C]`` broadcast over every axis but 1; parameters of shape
    ``x.shape[1:]`` (opset < 9's ``spatial=0``) broadcast over the batch only.
    """
    x64 = x.astype(np.float64)

    def shaped(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if x.ndim >= 2 and p.size == x.shape[1]:
            return p.reshape((1, -1) + (1,) * (x.ndim - 2))
        return p.reshape((1,) + tuple(x.shape[1:]))

    y = shaped(scale) * (x64 - shaped(mean)) / np.sqrt(shaped(var) + float(epsilon)) + shaped(bias)
    return y.astype(x.dtype)


def _batchnorm_training(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    epsilon: float,
    momentum: float,
) -> tuple[np.ndarray, ...]:
    """Training mode (opset 14's ``training_mode=1``, or an old node asking for the statistics outputs)."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    batch_mean = x.astype(np.float64).mean(axis=axes)
    batch_var = x.astype(np.float64).var(axis=axes)
    y = batchnorm_inference(x, scale, bias, batch_mean, batch_var, epsilon)
    running_mean = (np.asarray(mean, np.float64) * momentum + batch_mean * (1 - momentum)).astype(x.dtype)
    running_var = (np.asarray(var, np.float64) * momentum + batch_var * (1 - momentum)).astype(x.dtype)
    return y, running_mean, running_var, batch_mean.astype(x.dtype), batch_var.astype(x.dtype)


class BatchNormalization(OpRun):
    """BatchNormalization at every opset, inference as the specification defines it."""

    op_domain = ""

    def _run(
        self,
        x: np.ndarray,
        scale: np.ndarray,
        bias: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
        epsilon: float | None = None,
        momentum: float | None = None,
        training_mode: int | None = None,
        **_: Any,
    ) -> tuple[np.ndarray, ...]:
        eps = 1e-5 if epsilon is None else float(epsilon)
        outputs = [o for o in self.onnx_node.output if o]
        if _opset(self) >= 14:
            training = bool(training_mode) and "training_mode" in _explicit(self)
        else:
            # Opsets 1-9 ask for training by asking for the statistics outputs (spec: "Output case #1").
            training = len(outputs) > 1
        if not training:
            return (batchnorm_inference(x, scale, bias, mean, var, eps),)
        mom = 0.9 if momentum is None else float(momentum)
        y, running_mean, running_var, saved_mean, saved_var = _batchnorm_training(x, scale, bias, mean, var, eps, mom)
        return (y, running_mean, running_var, saved_mean, saved_var)[: len(self.onnx_node.output)]


# -- LRN -------------------------------------------------------------------------------------------


def lrn(x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> np.ndarray:
    """Local response normalisation across channels (axis 1), as the ONNX specification writes it, in float64."""
    if x.ndim < 3:
        raise ValueError(f"LRN needs an input of rank >= 3 (N x C x D1 ...), got shape {list(x.shape)}")
    x64 = x.astype(np.float64)
    channels = x.shape[1]
    lo, hi = math.floor((size - 1) / 2), math.ceil((size - 1) / 2)
    sq = x64 * x64
    square_sum = np.zeros_like(x64)
    for c in range(channels):
        begin, end = max(0, c - lo), min(channels - 1, c + hi)
        square_sum[:, c] = sq[:, begin : end + 1].sum(axis=1)
    y = x64 / (float(bias) + float(alpha) / size * square_sum) ** float(beta)
    return y.astype(x.dtype)


class LRN(OpRun):
    """LRN summing squares over the channel window (not over the batch)."""

    op_domain = ""

    def _run(
        self,
        x: np.ndarray,
        alpha: float | None = None,
        beta: float | None = None,
        bias: float | None = None,
        size: int | None = None,
        **_: Any,
    ) -> tuple[np.ndarray]:
        if size is None:
            raise ValueError("LRN needs the `size` attribute")
        return (
            lrn(
                x,
                int(size),
                1e-4 if alpha is None else alpha,
                0.75 if beta is None else beta,
                1.0 if bias is None else bias,
            ),
        )


# -- Softmax, LogSoftmax, Hardmax -------------------------------------------------------------------


def _rows(x: np.ndarray, axis: int, opset: int) -> tuple[np.ndarray, int]:
    """The view the operator works on and the axis it reduces: 2-D at ``axis`` before opset 13, else ``x`` itself."""
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis <= max(x.ndim - 1, 0):
        raise ValueError(f"axis {axis} out of range for rank {x.ndim}")
    if opset >= 13:
        return x, axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(outer, -1), 1


def _axis(op: OpRun, axis: int | None) -> int:
    """The node's axis; when it sets none: 1 before opset 13, -1 from 13 on (each opset's default)."""
    if "axis" in _explicit(op) and axis is not None:
        return int(axis)
    return -1 if _opset(op) >= 13 else 1


def softmax(x: np.ndarray, axis: int = -1, opset: int = 13, log: bool = False) -> np.ndarray:
    """Softmax (``log``: LogSoftmax) with each opset's semantics, in float64, cast back to ``x``'s dtype."""
    if x.size == 0:
        return x.copy()
    rows, ax = _rows(x.astype(np.float64), axis, opset)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = rows - rows.max(axis=ax, keepdims=True)
        e = np.exp(shifted)
        total = e.sum(axis=ax, keepdims=True)
        y = shifted - np.log(total) if log else e / total
    return y.reshape(x.shape).astype(x.dtype)


def hardmax(x: np.ndarray, axis: int = -1, opset: int = 13) -> np.ndarray:
    """1 at the first maximum along the axis (2-D rows before opset 13), 0 elsewhere."""
    if x.size == 0:
        return x.copy()
    rows, ax = _rows(x, axis, opset)
    out = np.zeros_like(rows)
    np.put_along_axis(out, np.expand_dims(np.argmax(rows, axis=ax), ax), 1, axis=ax)
    return out.reshape(x.shape)


class Softmax(OpRun):
    """Softmax with opset < 13's 2-D coercion and default axis 1."""

    op_domain = ""

    def _run(self, x: np.ndarray, axis: int | None = None, **_: Any) -> tuple[np.ndarray]:
        return (softmax(x, _axis(self, axis), _opset(self)),)


class LogSoftmax(OpRun):
    """LogSoftmax with opset < 13's 2-D coercion and default axis 1."""

    op_domain = ""

    def _run(self, x: np.ndarray, axis: int | None = None, **_: Any) -> tuple[np.ndarray]:
        return (softmax(x, _axis(self, axis), _opset(self), log=True),)


class Hardmax(OpRun):
    """Hardmax with opset < 13's 2-D coercion and default axis 1."""

    op_domain = ""

    def _run(self, x: np.ndarray, axis: int | None = None, **_: Any) -> tuple[np.ndarray]:
        return (hardmax(x, _axis(self, axis), _opset(self)),)


# -- GlobalMaxPool -------------------------------------------------------------------------------------


def global_max_pool(x: np.ndarray) -> np.ndarray:
    """The maximum over every spatial axis (2 and after), kept as size-1 dims."""
    if x.ndim < 3:
        raise ValueError(f"GlobalMaxPool needs an input of rank >= 3 (N x C x D1 ...), got shape {list(x.shape)}")
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


class GlobalMaxPool(OpRun):
    """GlobalMaxPool over axes 2.. (the stock kernel reduces axes ``ndim-2, ndim-1``: right only for 4-D input)."""

    op_domain = ""

    def _run(self, x: np.ndarray, **_: Any) -> tuple[np.ndarray]:
        return (global_max_pool(x),)


KERNELS: tuple[type[OpRun], ...] = (BatchNormalization, LRN, Softmax, LogSoftmax, Hardmax, GlobalMaxPool)
"""The kernels that replace onnx.reference's own (``new_ops``)."""


def evaluator(model: Any, **kwargs: Any) -> Any:
    """A ``ReferenceEvaluator`` on ``model`` (a ``ModelProto``, path or ``nnport.Model``) with the corrected kernels."""
    from onnx.reference import ReferenceEvaluator

    proto = getattr(model, "proto", model)
    return ReferenceEvaluator(proto, new_ops=list(KERNELS), **kwargs)


def evaluate(model: Any, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """The oracle's outputs ``{name: array}`` for ``feeds`` (every graph output, or ``outputs``)."""
    ev = evaluator(model)
    names = list(outputs) if outputs is not None else list(ev.output_names)
    values = ev.run(names, dict(feeds))
    return {name: np.asarray(v) for name, v in zip(names, values)}
