"""More single-operator cases for the ``op/`` group: the variants real exports use.

``nnport.conformance.cases`` registers the core operator set; this module adds
the variants a backend gets wrong in practice, each at the shapes, attributes
and opsets where the semantics or the usual fast path change: Gemm with
transposes and C shapes, MatMul broadcasting, elementwise binary operators with
broadcasting (two runtime inputs, constants, bidirectional), unary math
(inputs kept in each function's domain: Log/Sqrt positive, Asin/Acos in
(-1, 1), Reciprocal away from 0), Clip/Min/Max/Sum/Mean/Where, comparisons,
Gather/Slice/Concat/Split/Transpose/Reshape/Expand/Tile/Pad/Squeeze/Unsqueeze/
DepthToSpace/SpaceToDepth, reductions (every kind, keepdims 0/1, axes as
attribute or input, all axes), pooling (1-D, dilated, asymmetric pads,
auto_pad, ceil mode), ConvTranspose (grouped, dilated, 1-D, output_shape),
Conv (1-D, depthwise multiplier, asymmetric pads, auto_pad, strided+dilated),
InstanceNormalization/LayerNormalization/GroupNormalization, Resize modes, Gelu's
tanh form, TopK, CumSum, ArgMax/ArgMin.

Every case is a recipe (seeded weights, seeded inputs with ``value_ranges`` where
the operator needs a domain), so its id rebuilds the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .cases import Case, _f32, _finish, _i64, _w, single_op

AddCase = Callable[[Case], None]


def graph_model(
    nodes: Sequence[Any],
    inputs: Sequence[tuple[str, Sequence[int]] | tuple[str, Sequence[int], Any]],
    outputs: Sequence[str],
    *,
    opset: int,
    inits: Mapping[str, np.ndarray] | None = None,
    name: str = "case",
) -> Any:
    """A model of several nodes; output types come from ONNX shape inference."""
    from onnx import helper, numpy_helper

    from .cases import _tensor_type

    graph_inputs = []
    for item in inputs:
        dtype = item[2] if len(item) > 2 else np.float32
        graph_inputs.append(helper.make_tensor_value_info(item[0], _tensor_type(dtype), list(item[1])))
    graph = helper.make_graph(
        list(nodes),
        name,
        graph_inputs,
        [helper.make_tensor_value_info(o, 0, None) for o in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )
    return _finish(graph, opset)


def _node(op: str, ins: Sequence[str], outs: Sequence[str], **attrs: Any) -> Any:
    from onnx import helper

    return helper.make_node(op, list(ins), list(outs), **attrs)


def _case(add: AddCase, case_id: str, build: Callable[[], Any], description: str = "", **kw: Any) -> None:
    add(Case(f"op/{case_id}", build, description or case_id, **kw))


# -- Gemm and MatMul ------------------------------------------------------------------------------------


def _linear(add: AddCase) -> None:
    def gemm_trans_a() -> Any:  # A stored transposed: [K, M]
        return single_op(
            "Gemm", [("a", (16, 8))], ["y"], opset=13, inits={"w": _w(21, (16, 12)), "c": _w(22, (12,), 0.1)}, transA=1
        )

    def gemm_no_c() -> Any:
        return single_op("Gemm", [("a", (3, 24))], ["y"], opset=13, inits={"w": _w(23, (10, 24))}, transB=1)

    def gemm_c_matrix() -> Any:
        return single_op(
            "Gemm", [("a", (4, 16))], ["y"], opset=13, inits={"w": _w(24, (16, 6)), "c": _w(25, (4, 6), 0.5)}, beta=0.5
        )

    def gemm_c_scalar_opset9() -> Any:
        return single_op(
            "Gemm",
            [("a", (2, 32))],
            ["y"],
            opset=9,
            inits={"w": _w(26, (8, 32)), "c": _f32([0.25])},
            transB=1,
            alpha=1.5,
        )

    def gemm_runtime_b() -> Any:  # both operands at run time (attention-like exports)
        return single_op("Gemm", [("a", (6, 8)), ("b", (8, 5))], ["y"], opset=13)

    _case(add, "Gemm/transA_k16_m8_n12", gemm_trans_a)
    _case(add, "Gemm/no_c_transB", gemm_no_c)
    _case(add, "Gemm/c_matrix_beta0.5", gemm_c_matrix)
    _case(add, "Gemm/c_scalar_alpha1.5_opset9", gemm_c_scalar_opset9)
    _case(add, "Gemm/runtime_b", gemm_runtime_b)

    for cid, a_shape, b_shape, b_const in [
        ("bcast_3d_x_2d_inputs", (3, 4, 8), (8, 5), False),
        ("bcast_batch1_vs_3", (1, 4, 8), (3, 8, 5), False),
        ("bcast_4d_heads", (2, 4, 6, 8), (1, 4, 8, 6), False),
        ("matrix_x_vector", (4, 8), (8,), True),
        ("vector_x_matrix", (8,), (8, 5), True),
    ]:

        def build(a_shape=a_shape, b_shape=b_shape, b_const=b_const) -> Any:
            if b_const:
                return single_op("MatMul", [("a", a_shape)], ["y"], opset=13, inits={"b": _w(27, b_shape, 0.3)})
            return single_op("MatMul", [("a", a_shape), ("b", b_shape)], ["y"], opset=13)

        _case(add, f"MatMul/{cid}", build)


# -- elementwise binary, variadic, comparisons, Where ------------------------------------------------------


def _binary(add: AddCase) -> None:
    positive = (0.5, 2.0)
    # (op, case id, inputs as (name, shape[, dtype]), initializers, opset, input ranges)
    specs: list[tuple[str, str, list[tuple[Any, ...]], dict[str, np.ndarray], int, dict[str, tuple[float, float]]]] = [
        ("Sub", "two_inputs_bcast", [("a", (2, 3, 4, 5)), ("b", (3, 1, 5))], {}, 14, {}),
        ("Sub", "scalar_const", [("a", (2, 8, 6))], {"b": np.array(0.75, np.float32)}, 14, {}),
        ("Div", "by_input_bcast_row", [("a", (4, 6, 8)), ("b", (8,))], {}, 14, {"b": positive}),
        ("Div", "const_channel", [("a", (1, 4, 5, 5))], {"b": _f32([0.5, 1.5, 2.0, 4.0]).reshape(4, 1, 1)}, 13, {}),
        ("Pow", "square_const", [("a", (2, 16, 8))], {"b": np.array(2.0, np.float32)}, 15, {"a": (-3.0, 3.0)}),
        ("Pow", "positive_base_frac_exp", [("a", (3, 10)), ("b", (10,))], {}, 15, {"a": (0.1, 3.0), "b": (-1.5, 1.5)}),
        ("Add", "bidirectional_bcast", [("a", (4, 1, 6)), ("b", (1, 5, 1))], {}, 14, {}),
        ("Add", "same_shape_opset7", [("a", (2, 3, 8)), ("b", (2, 3, 8))], {}, 7, {}),
        ("Mul", "scalar_const_opset13", [("a", (1, 8, 4, 4))], {"b": np.array(-1.25, np.float32)}, 13, {}),
        ("Mul", "two_inputs_bcast_4d", [("a", (2, 1, 4, 5)), ("b", (1, 3, 1, 5))], {}, 14, {}),
        ("Max", "three_inputs_bcast", [("a", (2, 3, 4)), ("b", (3, 4)), ("c", (4,))], {}, 13, {}),
        ("Min", "two_inputs_bcast", [("a", (2, 3, 4)), ("b", (1, 3, 1))], {}, 13, {}),
        ("Max", "relu_like_zero_const", [("a", (1, 8, 6, 6))], {"b": np.array(0.0, np.float32)}, 13, {}),
        ("Sum", "three_inputs", [("a", (2, 5, 6)), ("b", (2, 5, 6)), ("c", (6,))], {}, 13, {}),
        ("Mean", "two_inputs_bcast", [("a", (3, 4, 5)), ("b", (4, 1))], {}, 13, {}),
        ("Greater", "bcast_bool_out", [("a", (2, 3, 8)), ("b", (8,))], {}, 13, {}),
        ("Equal", "int64_inputs", [("a", (4, 6), np.int64), ("b", (6,), np.int64)], {}, 13, {}),
        ("Less", "const_threshold", [("a", (3, 10))], {"b": np.array(0.1, np.float32)}, 13, {}),
    ]
    for op, cid, inputs, inits, opset, ranges in specs:

        def build(op=op, inputs=inputs, inits=inits, opset=opset) -> Any:
            return single_op(op, inputs, ["y"], opset=opset, inits=inits)

        _case(add, f"{op}/{cid}_opset{opset}" if "opset" not in cid else f"{op}/{cid}", build, value_ranges=ranges)

    def where() -> Any:
        nodes = [_node("Greater", ["a", "b"], ["cond"]), _node("Where", ["cond", "a", "b"], ["y"])]
        return graph_model(nodes, [("a", (2, 4, 6)), ("b", (4, 1))], ["y"], opset=16)

    def where_bool_input() -> Any:
        return single_op("Where", [("c", (3, 1, 5), np.bool_), ("a", (3, 4, 5)), ("b", (5,))], ["y"], opset=16)

    def int_add() -> Any:
        return single_op("Add", [("a", (4, 6), np.int64), ("b", (6,), np.int64)], ["y"], opset=14)

    _case(add, "Where/greater_bcast_opset16", where)
    _case(add, "Where/bool_input_bcast_opset16", where_bool_input)
    _case(add, "Add/int64_bcast_opset14", int_add, value_ranges={"a": (-100, 100), "b": (-100, 100)})


# -- unary math and activations ------------------------------------------------------------------------------


def _unary(add: AddCase) -> None:
    wide = (-4.0, 4.0)
    specs: list[tuple[str, dict[str, Any], int, tuple[float, float], tuple[int, ...]]] = [
        ("Abs", {}, 13, wide, (2, 8, 16)),
        ("Neg", {}, 13, wide, (2, 8, 16)),
        ("Floor", {}, 13, wide, (2, 8, 16)),
        ("Ceil", {}, 13, wide, (2, 8, 16)),
        ("Round", {}, 11, wide, (2, 8, 16)),
        ("Sign", {}, 13, wide, (2, 8, 16)),
        ("Sqrt", {}, 13, (0.01, 9.0), (2, 8, 16)),
        ("Log", {}, 13, (0.05, 20.0), (2, 8, 16)),
        ("Reciprocal", {}, 13, (0.5, 4.0), (2, 8, 16)),
        ("Sin", {}, 7, (-6.0, 6.0), (2, 8, 16)),
        ("Cos", {}, 7, (-6.0, 6.0), (2, 8, 16)),
        ("Atan", {}, 7, wide, (2, 8, 16)),
        ("Asin", {}, 7, (-0.95, 0.95), (2, 8, 16)),
        ("Acos", {}, 7, (-0.95, 0.95), (2, 8, 16)),
        ("Tan", {}, 7, (-1.2, 1.2), (2, 8, 16)),
        ("Softsign", {}, 1, wide, (2, 8, 16)),
        ("Selu", {}, 6, wide, (1, 8, 12, 12)),
        ("Celu", {"alpha": 1.5}, 12, wide, (1, 8, 12, 12)),
        ("ThresholdedRelu", {"alpha": 0.5}, 10, wide, (1, 8, 12, 12)),
        ("Mish", {}, 18, wide, (1, 8, 12, 12)),
        ("Sigmoid", {}, 6, (-8.0, 8.0), (4, 100)),
        ("Tanh", {}, 6, wide, (4, 100)),
        ("Exp", {}, 6, wide, (4, 100)),
        ("Relu", {}, 6, wide, (4, 100)),
        ("LeakyRelu", {"alpha": 0.01}, 16, wide, (1, 8, 12, 12)),
        ("HardSigmoid", {}, 6, wide, (4, 100)),
        ("Gelu", {"approximate": "tanh"}, 20, wide, (1, 8, 12, 12)),
        ("Erf", {}, 9, (-3.0, 3.0), (4, 100)),
    ]
    for op, attrs, opset, rng, shape in specs:

        def build(op=op, attrs=attrs, opset=opset, shape=shape) -> Any:
            return single_op(op, [("x", shape)], ["y"], opset=opset, **attrs)

        tag = "tanh_" if attrs.get("approximate") == "tanh" else ""
        _case(add, f"{op}/{tag}{'x'.join(map(str, shape))}_opset{opset}", build, value_ranges={"x": rng})

    def clip_attrs_opset6() -> Any:
        return single_op("Clip", [("x", (1, 8, 6, 6))], ["y"], opset=6, min=-1.0, max=2.5)

    def clip_min_only() -> Any:
        return single_op("Clip", [("x", (2, 8, 16))], ["y"], opset=13, inits={"lo": np.array(-0.5, np.float32)})

    def clip_max_only() -> Any:
        return single_op(
            "Clip",
            [("x", (2, 8, 16))],
            ["y"],
            opset=13,
            inits={"hi": np.array(1.0, np.float32)},
            node_inputs=["x", "", "hi"],
        )

    def prelu_scalar() -> Any:
        return single_op("PRelu", [("x", (1, 8, 6, 6))], ["y"], opset=16, inits={"slope": np.array([0.2], np.float32)})

    _case(add, "Clip/attrs_opset6", clip_attrs_opset6, value_ranges={"x": (-4.0, 4.0)})
    _case(add, "Clip/min_only_opset13", clip_min_only, value_ranges={"x": (-4.0, 4.0)})
    _case(add, "Clip/max_only_opset13", clip_max_only, value_ranges={"x": (-4.0, 4.0)})
    _case(add, "PRelu/scalar_slope_opset16", prelu_scalar, value_ranges={"x": (-4.0, 4.0)})


# -- data movement --------------------------------------------------------------------------------------------


def _movement(add: AddCase) -> None:
    def gather(shape: tuple[int, ...], indices: np.ndarray, axis: int, opset: int = 13) -> Callable[[], Any]:
        return lambda: single_op("Gather", [("x", shape)], ["y"], opset=opset, inits={"i": indices}, axis=axis)

    _case(add, "Gather/embedding_axis0", gather((20, 16), _i64([3, 0, 19, 7, 7, 12]).reshape(2, 3), 0))
    _case(add, "Gather/axis1_2d_indices", gather((2, 10, 6), _i64([[1, 9], [4, 0]]), 1))
    _case(add, "Gather/negative_indices_axis-1", gather((3, 4, 8), _i64([-1, 0, -8, 3]), -1))
    _case(add, "Gather/scalar_index_axis1_opset11", gather((2, 5, 4), np.array(2, np.int64), 1, 11))

    def gather_runtime_indices() -> Any:
        return single_op("Gather", [("x", (12, 8)), ("i", (5,), np.int64)], ["y"], opset=13, axis=0)

    _case(add, "Gather/runtime_indices", gather_runtime_indices, value_ranges={"i": (0, 12)})

    def slice10() -> Any:
        inits = {"starts": _i64([1, 2]), "ends": _i64([3, 7]), "axes": _i64([0, 2])}
        return single_op(
            "Slice", [("x", (4, 5, 9))], ["y"], opset=10, inits=inits, node_inputs=["x", "starts", "ends", "axes"]
        )

    def slice_no_axes() -> Any:
        inits = {"starts": _i64([0, 1, 2]), "ends": _i64([2, 100, 2**62])}
        return single_op("Slice", [("x", (3, 6, 7))], ["y"], opset=13, inits=inits, node_inputs=["x", "starts", "ends"])

    _case(add, "Slice/axes_input_opset10", slice10)
    _case(add, "Slice/no_axes_clamped_ends", slice_no_axes)

    def concat(shapes: Sequence[tuple[int, ...]], axis: int) -> Callable[[], Any]:
        names = "abcd"
        return lambda: single_op("Concat", [(names[i], s) for i, s in enumerate(shapes)], ["y"], opset=13, axis=axis)

    _case(add, "Concat/axis0_batch", concat([(1, 3, 4), (2, 3, 4)], 0))
    _case(add, "Concat/axis3_four_inputs", concat([(1, 2, 3, 1), (1, 2, 3, 4), (1, 2, 3, 2), (1, 2, 3, 3)], 3))
    _case(
        add,
        "Concat/with_const",
        lambda: single_op("Concat", [("a", (2, 4))], ["y"], opset=13, inits={"b": _w(30, (2, 3), 1.0)}, axis=1),
    )

    def split18_uneven() -> Any:
        return single_op(
            "Split",
            [("x", (2, 10, 3))],
            ["y0", "y1", "y2"],
            opset=18,
            inits={"split": _i64([2, 5, 3])},
            node_inputs=["x", "split"],
            axis=1,
        )

    def split13_last() -> Any:
        return single_op(
            "Split",
            [("x", (3, 4, 12))],
            ["y0", "y1"],
            opset=13,
            inits={"split": _i64([4, 8])},
            node_inputs=["x", "split"],
            axis=-1,
        )

    _case(add, "Split/uneven_input_opset18", split18_uneven)
    _case(add, "Split/last_axis_opset13", split13_last)

    _case(add, "Transpose/default_reverse", lambda: single_op("Transpose", [("x", (2, 3, 4))], ["y"], opset=13))
    _case(
        add,
        "Transpose/5d",
        lambda: single_op("Transpose", [("x", (1, 2, 3, 4, 5))], ["y"], opset=13, perm=[0, 3, 1, 4, 2]),
    )
    _case(
        add,
        "Transpose/nhwc_to_nchw",
        lambda: single_op("Transpose", [("x", (1, 6, 7, 3))], ["y"], opset=13, perm=[0, 3, 1, 2]),
    )

    def reshape(shape: tuple[int, ...], target: Sequence[int], opset: int = 13) -> Callable[[], Any]:
        return lambda: single_op(
            "Reshape", [("x", shape)], ["y"], opset=opset, inits={"shape": _i64(target)}, node_inputs=["x", "shape"]
        )

    _case(add, "Reshape/minus1_middle", reshape((2, 3, 4, 5), [2, -1, 5]))
    _case(add, "Reshape/merge_heads_opset5", reshape((1, 4, 8, 16), [1, 32, 16], 5))
    _case(add, "Reshape/to_rank1", reshape((3, 4, 5), [-1]))

    def expand(shape: tuple[int, ...], target: Sequence[int]) -> Callable[[], Any]:
        return lambda: single_op(
            "Expand", [("x", shape)], ["y"], opset=13, inits={"shape": _i64(target)}, node_inputs=["x", "shape"]
        )

    _case(add, "Expand/col_to_3d", expand((3, 1), [2, 3, 4]))
    _case(add, "Expand/channels_to_4d", expand((1, 4, 1, 1), [2, 4, 3, 3]))
    _case(add, "Expand/ones_in_shape", expand((2, 1, 6), [1, 5, 1]))

    def tile(shape: tuple[int, ...], reps: Sequence[int]) -> Callable[[], Any]:
        return lambda: single_op(
            "Tile", [("x", shape)], ["y"], opset=13, inits={"reps": _i64(reps)}, node_inputs=["x", "reps"]
        )

    _case(add, "Tile/3d_2_1_3", tile((2, 3, 4), [2, 1, 3]))
    _case(add, "Tile/4d_spatial", tile((1, 2, 3, 3), [1, 1, 2, 2]))

    def pad(
        mode: str,
        pads: Sequence[int],
        value: float | None = None,
        opset: int = 13,
        shape: tuple[int, ...] = (1, 3, 6, 6),
    ) -> Callable[[], Any]:
        def build() -> Any:
            if opset < 11:
                attrs: dict[str, Any] = {"mode": mode, "pads": list(pads)}
                if value is not None:
                    attrs["value"] = value
                return single_op("Pad", [("x", shape)], ["y"], opset=opset, **attrs)
            inits = {"pads": _i64(pads)}
            names = ["x", "pads"]
            if value is not None:
                inits["value"] = np.array(value, np.float32)
                names.append("value")
            return single_op("Pad", [("x", shape)], ["y"], opset=opset, inits=inits, node_inputs=names, mode=mode)

        return build

    _case(add, "Pad/constant_0.5_opset13", pad("constant", [0, 0, 1, 2, 0, 0, 2, 1], 0.5))
    _case(add, "Pad/reflect_opset13", pad("reflect", [0, 0, 2, 2, 0, 0, 2, 2]))
    _case(add, "Pad/edge_opset13", pad("edge", [0, 0, 1, 3, 0, 0, 3, 1]))
    _case(add, "Pad/constant_attrs_opset10", pad("constant", [0, 0, 1, 1, 0, 0, 1, 1], 0.0, 10))
    _case(add, "Pad/negative_crop_opset13", pad("constant", [0, 0, -1, 1, 0, 0, 1, -2]))

    def squeeze() -> Any:
        return single_op(
            "Squeeze", [("x", (1, 4, 1, 6))], ["y"], opset=13, inits={"axes": _i64([0, 2])}, node_inputs=["x", "axes"]
        )

    def unsqueeze() -> Any:
        return single_op(
            "Unsqueeze", [("x", (4, 6))], ["y"], opset=13, inits={"axes": _i64([0, -1])}, node_inputs=["x", "axes"]
        )

    def unsqueeze11() -> Any:
        return single_op("Unsqueeze", [("x", (3, 5))], ["y"], opset=11, axes=[1])

    _case(add, "Squeeze/axes_input_opset13", squeeze)
    _case(add, "Unsqueeze/two_axes_opset13", unsqueeze)
    _case(add, "Unsqueeze/attr_opset11", unsqueeze11)
    _case(add, "Flatten/axis0", lambda: single_op("Flatten", [("x", (2, 3, 4))], ["y"], opset=13, axis=0))
    _case(add, "Flatten/default_axis1_opset9", lambda: single_op("Flatten", [("x", (2, 3, 4, 5))], ["y"], opset=9))
    _case(
        add,
        "DepthToSpace/dcr_b2",
        lambda: single_op("DepthToSpace", [("x", (1, 8, 3, 4))], ["y"], opset=13, blocksize=2, mode="DCR"),
    )
    _case(
        add,
        "DepthToSpace/crd_b2",
        lambda: single_op("DepthToSpace", [("x", (1, 8, 3, 4))], ["y"], opset=13, blocksize=2, mode="CRD"),
    )
    _case(
        add, "SpaceToDepth/b2", lambda: single_op("SpaceToDepth", [("x", (1, 3, 6, 8))], ["y"], opset=13, blocksize=2)
    )


# -- reductions ---------------------------------------------------------------------------------------------


def _reductions(add: AddCase) -> None:
    specs = [
        # op, id, shape, axes (None: all), keepdims, opset, value range
        ("ReduceMin", "axes23_keep_opset13", (1, 8, 6, 6), [2, 3], 1, 13, None),
        ("ReduceMin", "axis-1_nokeep_opset18", (2, 5, 7), [-1], 0, 18, None),
        ("ReduceProd", "axis1_keep_opset13", (2, 6, 5), [1], 1, 13, (0.5, 1.5)),
        ("ReduceL2", "axis-1_nokeep_opset13", (3, 4, 16), [-1], 0, 13, None),
        ("ReduceL1", "axes01_keep_opset18", (3, 4, 16), [0, 1], 1, 18, None),
        ("ReduceSumSquare", "axis2_keep_opset13", (2, 4, 10), [2], 1, 13, None),
        ("ReduceLogSumExp", "axis1_nokeep_opset13", (2, 10, 6), [1], 0, 13, (-5.0, 5.0)),
        ("ReduceLogSum", "axis-1_keep_opset18", (4, 12), [-1], 1, 18, (0.1, 3.0)),
        ("ReduceMean", "all_axes_nokeep_opset13", (2, 3, 4, 5), None, 0, 13, None),
        ("ReduceMean", "all_axes_keep_opset18", (2, 3, 8), None, 1, 18, None),
        ("ReduceSum", "axes02_nokeep_opset13", (3, 4, 5), [0, 2], 0, 13, None),
        ("ReduceSum", "axes_attr_opset11", (2, 6, 7), [1], 1, 11, None),
        ("ReduceMax", "axis0_keep_opset13", (4, 3, 5), [0], 1, 13, None),
        ("ReduceMax", "neg_axes_nokeep_opset18", (2, 3, 4, 5), [-1, -3], 0, 18, None),
    ]
    for op, cid, shape, axes, keep, opset, rng in specs:

        def build(op=op, shape=shape, axes=axes, keep=keep, opset=opset) -> Any:
            axes_as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
            if axes is None:
                return single_op(op, [("x", shape)], ["y"], opset=opset, keepdims=keep)
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

        _case(add, f"{op}/{cid}", build, value_ranges={"x": rng} if rng else {})

    for op, cid, shape, axis, keep, opset, extra in [
        ("ArgMax", "axis1_keep_opset13", (2, 10, 5), 1, 1, 13, {}),
        ("ArgMax", "axis-1_nokeep_opset11", (3, 4, 9), -1, 0, 11, {}),
        ("ArgMin", "axis0_nokeep_opset13", (6, 4, 3), 0, 0, 13, {}),
        ("ArgMax", "select_last_index_opset12", (4, 8), 1, 1, 12, {"select_last_index": 1}),
    ]:

        def build_arg_reduce(op=op, shape=shape, axis=axis, keep=keep, opset=opset, extra=extra) -> Any:
            return single_op(op, [("x", shape)], ["y"], opset=opset, axis=axis, keepdims=keep, **extra)

        _case(add, f"{op}/{cid}", build_arg_reduce)

    def topk(k: int, axis: int, largest: int, shape: tuple[int, ...]) -> Callable[[], Any]:
        return lambda: single_op(
            "TopK",
            [("x", shape)],
            ["values", "indices"],
            opset=11,
            inits={"k": _i64([k])},
            node_inputs=["x", "k"],
            axis=axis,
            largest=largest,
            sorted=1,
        )

    _case(add, "TopK/k3_largest_axis-1", topk(3, -1, 1, (2, 4, 10)))
    _case(add, "TopK/k5_smallest_axis1", topk(5, 1, 0, (2, 12, 3)))

    def cumsum(axis: int, exclusive: int, reverse: int) -> Callable[[], Any]:
        return lambda: single_op(
            "CumSum",
            [("x", (2, 6, 5))],
            ["y"],
            opset=14,
            inits={"axis": np.array(axis, np.int64)},
            exclusive=exclusive,
            reverse=reverse,
        )

    _case(add, "CumSum/axis1", cumsum(1, 0, 0))
    _case(add, "CumSum/axis-1_exclusive_reverse", cumsum(-1, 1, 1))


# -- pooling, convolution, normalisation, resize ------------------------------------------------------------------


def _spatial(add: AddCase) -> None:
    pools: list[tuple[str, str, dict[str, Any], tuple[int, ...], int]] = [
        ("MaxPool", "1d_k3_s2", dict(kernel_shape=[3], strides=[2]), (1, 4, 20), 12),
        ("MaxPool", "k3_dilation2", dict(kernel_shape=[3, 3], dilations=[2, 2]), (1, 4, 12, 12), 12),
        (
            "MaxPool",
            "k3_asymmetric_pads",
            dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]),
            (1, 4, 11, 11),
            12,
        ),
        (
            "MaxPool",
            "k2_same_upper",
            dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
            (1, 4, 9, 9),
            12,
        ),
        ("MaxPool", "k3_s2_opset8", dict(kernel_shape=[3, 3], strides=[2, 2]), (1, 4, 13, 13), 8),
        ("AveragePool", "k3_s2_ceil", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), (1, 4, 14, 14), 11),
        ("AveragePool", "1d_k4_s4", dict(kernel_shape=[4], strides=[4]), (2, 3, 16), 11),
        (
            "AveragePool",
            "k3_same_lower_exclude_pad",
            dict(kernel_shape=[3, 3], auto_pad="SAME_LOWER"),
            (1, 4, 8, 8),
            11,
        ),
        ("AveragePool", "k2_s1_opset7", dict(kernel_shape=[2, 2]), (1, 4, 7, 7), 7),
        ("GlobalAveragePool", "1d_4x16", {}, (2, 4, 16), 13),
        ("GlobalMaxPool", "1d_4x16", {}, (2, 4, 16), 13),
        ("LpPool", "p2_k2_s2", dict(kernel_shape=[2, 2], strides=[2, 2], p=2), (1, 4, 8, 8), 11),
    ]
    for op, cid, attrs, shape, opset in pools:

        def build(op=op, attrs=attrs, shape=shape, opset=opset) -> Any:
            return single_op(op, [("x", shape)], ["y"], opset=opset, **attrs)

        _case(add, f"{op}/{cid}", build)

    convs: list[tuple[str, tuple[int, ...], int, tuple[int, ...], dict[str, Any], int]] = [
        # id, input shape, out channels, kernel, attributes, group
        ("1d_k5_s2_p2", (1, 4, 32), 8, (5,), dict(strides=[2], pads=[2, 2]), 1),
        ("dw_multiplier2", (1, 4, 10, 10), 8, (3, 3), dict(pads=[1, 1, 1, 1]), 4),
        ("asymmetric_pads", (1, 3, 9, 9), 4, (3, 3), dict(strides=[2, 2], pads=[0, 0, 1, 1]), 1),
        ("same_upper_s2", (1, 3, 10, 10), 6, (3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER"), 1),
        ("k3_s2_d2", (1, 4, 17, 17), 6, (3, 3), dict(strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2]), 1),
        ("grouped_g4_d3", (1, 8, 16, 16), 8, (3, 3), dict(dilations=[3, 3], pads=[3, 3, 3, 3]), 4),
        ("rect_k1x7", (1, 4, 12, 12), 4, (1, 7), dict(pads=[0, 3, 0, 3]), 1),
    ]
    for cid, shape, oc, k, attrs, group in convs:

        def build_conv(shape=shape, oc=oc, k=k, attrs=attrs, group=group) -> Any:
            inits = {"w": _w(31, (oc, shape[1] // group, *k)), "b": _w(32, (oc,), 0.1)}
            return single_op(
                "Conv", [("x", shape)], ["y"], opset=13, inits=inits, kernel_shape=list(k), group=group, **attrs
            )

        _case(add, f"Conv/{cid}", build_conv)

    deconvs: list[tuple[str, tuple[int, ...], int, tuple[int, ...], dict[str, Any], int]] = [
        (
            "grouped_g2_k3_s2",
            (1, 4, 6, 6),
            6,
            (3, 3),
            dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
            2,
        ),
        ("dilated_d2_k3", (1, 4, 6, 6), 4, (3, 3), dict(dilations=[2, 2]), 1),
        ("1d_k4_s2_p1", (1, 4, 10), 3, (4,), dict(strides=[2], pads=[1, 1]), 1),
        ("output_shape_s2", (1, 4, 5, 5), 4, (3, 3), dict(strides=[2, 2], output_shape=[10, 10]), 1),
        ("no_bias_k2_s2_opset11", (1, 6, 4, 4), 3, (2, 2), dict(strides=[2, 2]), 1),
    ]
    for cid, shape, oc, k, attrs, group in deconvs:

        def build_conv_transpose(shape=shape, oc=oc, k=k, attrs=attrs, group=group, cid=cid) -> Any:
            inits = {"w": _w(33, (shape[1], oc // group, *k))}
            if "no_bias" not in cid:
                inits["b"] = _w(34, (oc,), 0.1)
            return single_op(
                "ConvTranspose",
                [("x", shape)],
                ["y"],
                opset=11 if "opset11" in cid else 13,
                inits=inits,
                kernel_shape=list(k),
                group=group,
                **attrs,
            )

        _case(add, f"ConvTranspose/{cid}", build_conv_transpose)

    def instance_norm(shape: tuple[int, ...]) -> Callable[[], Any]:
        def build() -> Any:
            c = shape[1]
            rng = np.random.default_rng(35)
            inits = {
                "s": (1 + 0.2 * rng.standard_normal(c)).astype(np.float32),
                "b": (0.2 * rng.standard_normal(c)).astype(np.float32),
            }
            return single_op("InstanceNormalization", [("x", shape)], ["y"], opset=6, inits=inits, epsilon=1e-5)

        return build

    _case(add, "InstanceNormalization/2x6x8x8", instance_norm((2, 6, 8, 8)))
    _case(add, "InstanceNormalization/1d_2x4x20", instance_norm((2, 4, 20)))

    def layer_norm(shape: tuple[int, ...], axis: int, bias: bool) -> Callable[[], Any]:
        def build() -> Any:
            norm = shape[axis:]
            rng = np.random.default_rng(36)
            inits = {"g": (1 + 0.1 * rng.standard_normal(norm)).astype(np.float32)}
            if bias:
                inits["b"] = (0.1 * rng.standard_normal(norm)).astype(np.float32)
            return single_op(
                "LayerNormalization", [("x", shape)], ["y"], opset=17, inits=inits, axis=axis, epsilon=1e-5
            )

        return build

    _case(add, "LayerNormalization/no_bias_axis-1", layer_norm((2, 8, 24), -1, False))
    _case(add, "LayerNormalization/axis-2_2x6x4x5", layer_norm((2, 6, 4, 5), -2, True))

    def group_norm(opset: int, groups: int) -> Callable[[], Any]:
        def build() -> Any:
            c = 8
            n = c if opset >= 21 else groups  # opset 18: scale/bias per group; 21: per channel
            rng = np.random.default_rng(37)
            inits = {
                "s": (1 + 0.2 * rng.standard_normal(n)).astype(np.float32),
                "b": (0.2 * rng.standard_normal(n)).astype(np.float32),
            }
            model = single_op(
                "GroupNormalization",
                [("x", (2, c, 5, 5))],
                ["y"],
                opset=opset,
                inits=inits,
                num_groups=groups,
                epsilon=1e-5,
            )
            if not model.graph.output[0].type.tensor_type.elem_type:  # no shape inference for it: y is like x
                model.graph.output[0].type.CopyFrom(model.graph.input[0].type)
            return model

        return build

    _case(
        add, "GroupNormalization/g4_opset21", group_norm(21, 4)
    )  # opset 18's per-group scale is deprecated (the checker refuses it)
    _case(add, "GroupNormalization/g2_opset21", group_norm(21, 2))

    resizes: list[tuple[str, tuple[int, ...], dict[str, Any], list[float] | None, list[int] | None, int]] = [
        (
            "nearest_half_pixel_round_prefer_ceil",
            (1, 3, 5, 5),
            dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil"),
            [1, 1, 2, 2],
            None,
            13,
        ),
        (
            "linear_pytorch_half_pixel_down",
            (1, 3, 12, 12),
            dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
            [1, 1, 0.5, 0.5],
            None,
            13,
        ),
        (
            "nearest_sizes_non_integer",
            (1, 2, 6, 8),
            dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
            None,
            [1, 2, 9, 20],
            13,
        ),
        (
            "linear_asymmetric_x3_opset18",
            (1, 2, 5, 5),
            dict(mode="linear", coordinate_transformation_mode="asymmetric"),
            [1, 1, 3, 3],
            None,
            18,
        ),
        ("nearest_x2_opset10_upsample", (1, 3, 4, 4), dict(mode="nearest"), [1, 1, 2, 2], None, 10),
    ]
    for cid, shape, attrs, scales, sizes, opset in resizes:

        def build_resize(shape=shape, attrs=attrs, scales=scales, sizes=sizes, opset=opset) -> Any:
            if opset == 10:
                return single_op(
                    "Resize",
                    [("x", shape)],
                    ["y"],
                    opset=10,
                    inits={"scales": _f32(scales or [])},
                    node_inputs=["x", "scales"],
                    mode=attrs["mode"],
                )
            inits: dict[str, np.ndarray] = {
                "roi": np.zeros(0, np.float32),
                "scales": _f32(scales) if scales is not None else np.zeros(0, np.float32),
            }
            names = ["x", "roi", "scales"]
            if sizes is not None:
                inits["sizes"] = _i64(sizes)
                names.append("sizes")
            if opset >= 18:  # roi and empty scales may be left out
                names = ["x", "", "scales"] if sizes is None else ["x", "", "", "sizes"]
                inits = {k: v for k, v in inits.items() if k in names}
            return single_op("Resize", [("x", shape)], ["y"], opset=opset, inits=inits, node_inputs=names, **attrs)

        _case(add, f"Resize/{cid}", build_resize)


# -- activations written out in larger graphs, and Softmax variants ------------------------------------------------


def _softmax(add: AddCase) -> None:
    for op, cid, shape, axis, opset in [
        ("Softmax", "axis1_2x5x3x3_opset13", (2, 5, 3, 3), 1, 13),
        ("LogSoftmax", "axis1_2x4x6_opset11", (2, 4, 6), 1, 11),
        ("Softmax", "default_axis_3x8x4_opset11", (3, 8, 4), None, 11),
        ("Hardmax", "axis-1_4x10_opset13", (4, 10), -1, 13),
    ]:

        def build(op=op, shape=shape, axis=axis, opset=opset) -> Any:
            attrs = {} if axis is None else {"axis": axis}
            return single_op(op, [("x", shape)], ["y"], opset=opset, **attrs)

        _case(add, f"{op}/{cid}", build, value_ranges={"x": (-5.0, 5.0)})


def register(add: AddCase) -> None:
    """Add every case of this module through ``add``."""
    for part in (_linear, _binary, _unary, _movement, _reductions, _spatial, _softmax):
        part(add)
