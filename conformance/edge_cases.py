"""The ``edge/`` conformance group: graph shapes that real exports contain.

Exporters (torch.onnx, tf2onnx, paddle2onnx) routinely write graphs that no
single-operator case exercises, and runtimes get them wrong in ways a value
comparison only catches when the values differ:

* an output that *is* an input: directly (output named like the input), or
  through operators that fold away in inference (``Identity``, ``Dropout``,
  ``Reshape`` to the same shape, ``Cast`` to the same type).  OpenVINO drops
  such a Result's computation and returned uninitialised memory for
  ``x -> Dropout -> Identity -> y`` (issue 12);
* an output that is a constant (an initializer, a ``Constant`` node);
* one tensor listed as two outputs (the same name twice, or an ``Identity``
  alias: torch's export of ``return t, t``);
* an input the graph never uses (converters drop it and shift the others);
* a zero-size dimension (an empty input, an empty ``Slice``);
* outputs (and inputs) whose graph order differs from the node order, with
  equal shapes, so that a positional mix-up is silent unless values differ;
* an output that is also consumed by another node.

Every case states its feeds (integer inputs where a real model has them) and
its expected outputs, computed with numpy, so the verdict does not depend on
any runtime; tolerances are exact (``atol = rtol = 0``): each operator used
(Relu, Neg, Add, Mul by 2, Sub, Abs, Gather, Slice) is exact in float32.  A
backend passes a case or refuses it at compile (``UnsupportedModel``); a
different answer is a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .cases import Case

EXACT = {"atol": 0.0, "rtol": 0.0}
"""Tolerances of every edge case: the answer is exact or wrong."""

OPSET = 13

IO = tuple[str, Any, Sequence[int]]
"""(name, numpy dtype, shape) of a graph input or output."""


def _x(shape: Sequence[int] = (2, 3), offset: float = 2.5) -> np.ndarray:
    """Distinct values of both signs, so Relu/Neg/Abs results differ from each other and from x."""
    return (np.arange(int(np.prod(shape)), dtype=np.float32).reshape(tuple(shape)) - np.float32(offset)).astype(
        np.float32
    )


def _graph(
    name: str,
    nodes: Sequence[Any],
    inputs: Sequence[IO],
    outputs: Sequence[IO],
    inits: Mapping[str, np.ndarray] | None = None,
    opset: int = OPSET,
) -> Any:
    """An ONNX model with fully declared input and output types (as exporters write them)."""
    from onnx import helper, numpy_helper

    def info(item: IO) -> Any:
        n, dtype, shape = item
        return helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape))

    graph = helper.make_graph(
        list(nodes),
        name,
        [info(i) for i in inputs],
        [info(o) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="nnport.conformance.edge")
    model.ir_version = max(helper.find_min_ir_version_for(opsets), 7)
    return model


def _node(op: str, ins: Sequence[str], outs: Sequence[str], **attrs: Any) -> Any:
    from onnx import helper

    return helper.make_node(op, list(ins), list(outs), name=f"{op}_{outs[0]}", **attrs)


def _const(name: str, value: np.ndarray) -> Any:
    from onnx import helper, numpy_helper

    return helper.make_node(
        "Constant", [], [name], name=f"Constant_{name}", value=numpy_helper.from_array(np.asarray(value), name)
    )


_CASES: list[Case] = []


def _case(
    case_id: str,
    description: str,
    feeds: Callable[[], dict[str, np.ndarray]],
    expected: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def deco(build: Callable[[], Any]) -> Callable[[], Any]:
        _CASES.append(
            Case(
                f"edge/{case_id}",
                build,
                description,
                tolerances=dict(EXACT),
                feeds=feeds,
                expected=lambda: expected(feeds()),
            )
        )
        return build

    return deco


F32 = np.float32
I64 = np.int64
I32 = np.int32

# -- an output that is an input -------------------------------------------------------------------


@_case(
    "passthrough/direct",
    "the graph output is the graph input itself (no node)",
    lambda: {"x": _x()},
    lambda f: {"x": f["x"]},
)
def _direct() -> Any:
    return _graph("passthrough_direct", [], [("x", F32, (2, 3))], [("x", F32, (2, 3))])


@_case("passthrough/identity", "x -> Identity -> y", lambda: {"x": _x()}, lambda f: {"y": f["x"]})
def _identity() -> Any:
    return _graph("passthrough_identity", [_node("Identity", ["x"], ["y"])], [("x", F32, (2, 3))], [("y", F32, (2, 3))])


@_case(
    "passthrough/dropout_identity",
    "x -> Dropout -> Identity -> y (issue 12: OpenVINO returned uninitialised memory)",
    lambda: {"x": np.arange(6, dtype=np.float32).reshape(2, 3)},
    lambda f: {"y": f["x"]},
)
def _dropout_identity() -> Any:
    nodes = [_node("Dropout", ["x"], ["d"]), _node("Identity", ["d"], ["y"])]
    return _graph("passthrough_dropout_identity", nodes, [("x", F32, (2, 3))], [("y", F32, (2, 3))])


@_case("passthrough/reshape_same", "x -> Reshape to its own shape -> y", lambda: {"x": _x()}, lambda f: {"y": f["x"]})
def _reshape_same() -> Any:
    nodes = [_node("Reshape", ["x", "shape"], ["y"])]
    return _graph(
        "passthrough_reshape_same",
        nodes,
        [("x", F32, (2, 3))],
        [("y", F32, (2, 3))],
        inits={"shape": np.array([2, 3], I64)},
    )


@_case(
    "passthrough/cast_same", "x -> Cast to float32 (its own type) -> y", lambda: {"x": _x()}, lambda f: {"y": f["x"]}
)
def _cast_same() -> Any:
    return _graph(
        "passthrough_cast_same", [_node("Cast", ["x"], ["y"], to=1)], [("x", F32, (2, 3))], [("y", F32, (2, 3))]
    )


@_case(
    "passthrough/beside_computed",
    "outputs [Relu(x), x]: a computed output and the input itself",
    lambda: {"x": _x()},
    lambda f: {"y": np.maximum(f["x"], 0), "x": f["x"]},
)
def _beside_computed() -> Any:
    return _graph(
        "passthrough_beside_computed",
        [_node("Relu", ["x"], ["y"])],
        [("x", F32, (2, 3))],
        [("y", F32, (2, 3)), ("x", F32, (2, 3))],
    )


_TABLE = (np.arange(40, dtype=np.float32).reshape(10, 4) / 8 - 2).astype(np.float32)


@_case(
    "passthrough/int64_ids",
    "token ids (int64) -> Cast to int64 -> ids_out, beside an embedding Gather of the same ids",
    lambda: {"ids": np.array([[1, 3, 5, 7, 9], [0, 2, 4, 6, 8]], I64)},
    lambda f: {"emb": _TABLE[f["ids"]], "ids_out": f["ids"]},
)
def _int64_ids() -> Any:
    nodes = [_node("Gather", ["table", "ids"], ["emb"], axis=0), _node("Cast", ["ids"], ["ids_out"], to=7)]
    return _graph(
        "passthrough_int64_ids",
        nodes,
        [("ids", I64, (2, 5))],
        [("emb", F32, (2, 5, 4)), ("ids_out", I64, (2, 5))],
        inits={"table": _TABLE},
    )


@_case(
    "passthrough/int32_reshape",
    "int32 x -> Reshape [0, -1] (copy dim 0, infer the rest: its own shape) -> y",
    lambda: {"x": np.arange(-6, 6, dtype=I32).reshape(3, 4)},
    lambda f: {"y": f["x"]},
)
def _int32_reshape() -> Any:
    nodes = [_node("Reshape", ["x", "shape"], ["y"])]
    return _graph(
        "passthrough_int32_reshape",
        nodes,
        [("x", I32, (3, 4))],
        [("y", I32, (3, 4))],
        inits={"shape": np.array([0, -1], I64)},
    )


# -- an output that is a constant ------------------------------------------------------------------

_C = np.array([0.5, -1.25, 3.0], F32)


@_case(
    "constant/initializer",
    "outputs [Relu(x), an initializer]",
    lambda: {"x": _x()},
    lambda f: {"y": np.maximum(f["x"], 0), "c": _C},
)
def _const_initializer() -> Any:
    return _graph(
        "constant_initializer",
        [_node("Relu", ["x"], ["y"])],
        [("x", F32, (2, 3))],
        [("y", F32, (2, 3)), ("c", F32, (3,))],
        inits={"c": _C},
    )


@_case(
    "constant/node",
    "outputs [Neg(x), an int64 Constant node (an exporter's shape tensor)]",
    lambda: {"x": _x()},
    lambda f: {"y": -f["x"], "k": np.array([2, 3], I64)},
)
def _const_node() -> Any:
    nodes = [_node("Neg", ["x"], ["y"]), _const("k", np.array([2, 3], I64))]
    return _graph("constant_node", nodes, [("x", F32, (2, 3))], [("y", F32, (2, 3)), ("k", I64, (2,))])


@_case(
    "constant/only",
    "the only output is a Constant node; the input is unused",
    lambda: {"x": _x()},
    lambda f: {"c": _C},
)
def _const_only() -> Any:
    return _graph("constant_only", [_const("c", _C)], [("x", F32, (2, 3))], [("c", F32, (3,))])


# -- one tensor listed as two outputs ------------------------------------------------------------------


@_case(
    "duplicate/same_name",
    "y = Relu(x) listed twice in the graph outputs",
    lambda: {"x": _x()},
    lambda f: {"y": np.maximum(f["x"], 0)},
)
def _dup_same_name() -> Any:
    return _graph(
        "duplicate_same_name",
        [_node("Relu", ["x"], ["y"])],
        [("x", F32, (2, 3))],
        [("y", F32, (2, 3)), ("y", F32, (2, 3))],
    )


@_case(
    "duplicate/identity_alias",
    "t = Relu(x), u = Identity(t), outputs [t, u] (torch's export of `return t, t`)",
    lambda: {"x": _x()},
    lambda f: {"t": np.maximum(f["x"], 0), "u": np.maximum(f["x"], 0)},
)
def _dup_identity_alias() -> Any:
    nodes = [_node("Relu", ["x"], ["t"]), _node("Identity", ["t"], ["u"])]
    return _graph("duplicate_identity_alias", nodes, [("x", F32, (2, 3))], [("t", F32, (2, 3)), ("u", F32, (2, 3))])


# -- an input the graph never uses --------------------------------------------------------------------


@_case(
    "unused_input/first",
    "inputs [mask (int64, unused), x, extra (float32, unused)]; y = Relu(x)",
    lambda: {"mask": np.array([1, 0, 1], I64), "x": _x(), "extra": np.full((4,), 7.0, F32)},
    lambda f: {"y": np.maximum(f["x"], 0)},
)
def _unused_input() -> Any:
    return _graph(
        "unused_input",
        [_node("Relu", ["x"], ["y"])],
        [("mask", I64, (3,)), ("x", F32, (2, 3)), ("extra", F32, (4,))],
        [("y", F32, (2, 3))],
    )


# -- zero-size dimensions --------------------------------------------------------------------------


@_case(
    "zero_size/input",
    "x has a zero-size leading dim: [0, 4] -> Relu -> y [0, 4]",
    lambda: {"x": np.zeros((0, 4), F32)},
    lambda f: {"y": np.zeros((0, 4), F32)},
)
def _zero_input() -> Any:
    return _graph("zero_size_input", [_node("Relu", ["x"], ["y"])], [("x", F32, (0, 4))], [("y", F32, (0, 4))])


@_case(
    "zero_size/output",
    "an empty Slice of x ([2, 4] -> [0, 4]) beside y = Relu(x)",
    lambda: {"x": _x((2, 4))},
    lambda f: {"e": f["x"][1:1], "y": np.maximum(f["x"], 0)},
)
def _zero_output() -> Any:
    nodes = [_node("Slice", ["x", "starts", "ends", "axes"], ["e"]), _node("Relu", ["x"], ["y"])]
    inits = {"starts": np.array([1], I64), "ends": np.array([1], I64), "axes": np.array([0], I64)}
    return _graph(
        "zero_size_output", nodes, [("x", F32, (2, 4))], [("e", F32, (0, 4)), ("y", F32, (2, 4))], inits=inits
    )


# -- order ------------------------------------------------------------------------------------------


@_case(
    "order/outputs_reversed",
    "nodes compute p = Relu(x), q = Neg(x), r = Add(x, 1); outputs listed [r, q, p], all [2, 3]",
    lambda: {"x": _x()},
    lambda f: {"r": f["x"] + 1, "q": -f["x"], "p": np.maximum(f["x"], 0)},
)
def _outputs_reversed() -> Any:
    nodes = [_node("Relu", ["x"], ["p"]), _node("Neg", ["x"], ["q"]), _node("Add", ["x", "one"], ["r"])]
    outs = [("r", F32, (2, 3)), ("q", F32, (2, 3)), ("p", F32, (2, 3))]
    return _graph("outputs_reversed", nodes, [("x", F32, (2, 3))], outs, inits={"one": np.array(1.0, F32)})


@_case(
    "order/output_names_unsorted",
    "outputs [scores, boxes, anchors]: names in neither node nor alphabetical order, equal shapes",
    lambda: {"x": _x((2, 4))},
    lambda f: {"scores": np.abs(f["x"]), "boxes": f["x"] * 2, "anchors": np.maximum(f["x"], 0)},
)
def _output_names_unsorted() -> Any:
    nodes = [_node("Relu", ["x"], ["anchors"]), _node("Mul", ["x", "two"], ["boxes"]), _node("Abs", ["x"], ["scores"])]
    outs = [("scores", F32, (2, 4)), ("boxes", F32, (2, 4)), ("anchors", F32, (2, 4))]
    return _graph("output_names_unsorted", nodes, [("x", F32, (2, 4))], outs, inits={"two": np.array(2.0, F32)})


@_case(
    "order/inputs_reversed",
    "inputs listed [b, a] with equal shapes, y = Sub(a, b): a positional mix-up flips the sign",
    lambda: {"b": _x(offset=1.0), "a": _x(offset=-3.0) * 2},
    lambda f: {"y": f["a"] - f["b"]},
)
def _inputs_reversed() -> Any:
    return _graph(
        "inputs_reversed",
        [_node("Sub", ["a", "b"], ["y"])],
        [("b", F32, (2, 3)), ("a", F32, (2, 3))],
        [("y", F32, (2, 3))],
    )


# -- an output that another node consumes --------------------------------------------------------------


@_case(
    "consumed/output_then_consumer",
    "t = Relu(x) is an output and feeds y = Add(t, 1); outputs [t, y]",
    lambda: {"x": _x()},
    lambda f: {"t": np.maximum(f["x"], 0), "y": np.maximum(f["x"], 0) + 1},
)
def _consumed() -> Any:
    nodes = [_node("Relu", ["x"], ["t"]), _node("Add", ["t", "one"], ["y"])]
    return _graph(
        "output_consumed",
        nodes,
        [("x", F32, (2, 3))],
        [("t", F32, (2, 3)), ("y", F32, (2, 3))],
        inits={"one": np.array(1.0, F32)},
    )


@_case(
    "consumed/consumer_first",
    "t = Relu(x) feeds y = Mul(t, 2); outputs listed [y, t]",
    lambda: {"x": _x()},
    lambda f: {"y": np.maximum(f["x"], 0) * 2, "t": np.maximum(f["x"], 0)},
)
def _consumer_first() -> Any:
    nodes = [_node("Relu", ["x"], ["t"]), _node("Mul", ["t", "two"], ["y"])]
    return _graph(
        "consumer_first",
        nodes,
        [("x", F32, (2, 3))],
        [("y", F32, (2, 3)), ("t", F32, (2, 3))],
        inits={"two": np.array(2.0, F32)},
    )


# -- all of it at once ---------------------------------------------------------------------------------


@_case(
    "mixed/export_like",
    "inputs [x, unused]; outputs [c (initializer), x (through Dropout), y = Relu(x), y again (Identity), z = Neg(y)]",
    lambda: {"x": _x(), "unused": np.ones((2,), F32)},
    lambda f: {
        "c": _C,
        "x_out": f["x"],
        "y": np.maximum(f["x"], 0),
        "y_copy": np.maximum(f["x"], 0),
        "z": -np.maximum(f["x"], 0),
    },
)
def _mixed() -> Any:
    nodes = [
        _node("Dropout", ["x"], ["x_out"]),
        _node("Relu", ["x"], ["y"]),
        _node("Identity", ["y"], ["y_copy"]),
        _node("Neg", ["y"], ["z"]),
    ]
    outs = [("c", F32, (3,)), ("x_out", F32, (2, 3)), ("y", F32, (2, 3)), ("y_copy", F32, (2, 3)), ("z", F32, (2, 3))]
    return _graph("mixed_export_like", nodes, [("x", F32, (2, 3)), ("unused", F32, (2,))], outs, inits={"c": _C})


def edge_cases() -> list[Case]:
    """The ``edge/`` group, in a stable order."""
    return list(_CASES)
