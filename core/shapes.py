"""Fixing a model's symbolic input dimensions: ``CompileOptions.shapes``.

Real exports leave dimensions open (``batch``, ``height``, ``width``,
``sequence``).  Some runtimes need them fixed (pnnx converts static graphs
only), others run faster when they are (OpenVINO reshaped static is ~13%
faster than the same model with dynamic dims), and some cannot even read the
graph until they are (a Conv whose rank comes out of a Reshape).  nnport fixes
them once, in core, before any backend sees the model: the ONNX graph's input
dims are rewritten, every other input that shares a fixed symbol gets the same
size, and ONNX shape inference (with data propagation, so Shape -> Gather ->
Reshape chains resolve) makes the outputs static where it can.  Every backend
then compiles an ordinary static model, and its caches key on that model's
own hash.

``parse_input_shapes`` reads the CLI form ``name:1x3x640x640,other:1x16``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .model import Model
    from .types import TensorSpec

log = logging.getLogger("nnport")

Shapes = Mapping[str, tuple[int, ...]]


def parse_input_shapes(items: str | Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    """``"x:1x3x224x224,mask:1x16"`` (or several such strings) -> ``{"x": (1, 3, 224, 224), ...}``.

    The name is everything before the *last* colon, so TensorFlow-style names
    (``input:0:1x3x224x224``) work.  A scalar input is ``name:`` with no dims.
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            name, sep, dims = part.rpartition(":")
            if not sep or not name:
                raise InputError(f"--input-shapes expects NAME:DIMxDIMx... (e.g. images:1x3x640x640), got {part!r}")
            try:
                shape = tuple(int(d) for d in dims.lower().split("x")) if dims.strip() else ()
            except ValueError:
                raise InputError(
                    f"--input-shapes: dims of {name!r} must be integers joined by 'x' (1x3x640x640), got {dims!r}"
                ) from None
            if name in shapes and shapes[name] != shape:
                raise InputError(f"--input-shapes gives input {name!r} twice: {list(shapes[name])} and {list(shape)}")
            shapes[name] = shape
    return shapes


def normalize(shapes: Mapping[str, Sequence[int]] | None) -> Mapping[str, tuple[int, ...]]:
    """A read-only ``{name: tuple of positive ints}``; raises ``InputError`` on a bad value."""
    if not shapes:
        return MappingProxyType({})
    if not isinstance(shapes, Mapping):
        raise InputError(f"shapes must be a mapping of input name to a shape, got {type(shapes).__name__}")
    fixed: dict[str, tuple[int, ...]] = {}
    for name, dims in shapes.items():
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
            raise InputError(f"shapes[{name!r}] must be a sequence of ints, got {dims!r}")
        out = []
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, (int,)) and not (hasattr(d, "__index__")):
                raise InputError(f"shapes[{name!r}] = {list(dims)}: dims must be integers")
            d = int(d)
            if d <= 0:
                raise InputError(f"shapes[{name!r}] = {list(dims)}: every dim must be positive (got {d})")
            out.append(d)
        fixed[str(name)] = tuple(out)
    return MappingProxyType(dict(sorted(fixed.items())))


def check_against(specs: Sequence[TensorSpec], shapes: Shapes) -> dict[str, int]:
    """Validate ``shapes`` against the model's input specs; return the symbol values they fix.

    Raises ``InputError`` naming the input and what the model declares for an
    unknown input, a rank that disagrees, a dim that contradicts a static one,
    or one symbol given two sizes.
    """
    by_name = {s.name: s for s in specs}
    unknown = [n for n in shapes if n not in by_name]
    if unknown:
        raise InputError(
            f"shapes name unknown input(s) {unknown}; the model's inputs are {{{', '.join(str(s) for s in specs)}}}"
        )
    symbols: dict[str, tuple[int, str]] = {}
    for name, shape in shapes.items():
        spec = by_name[name]
        if len(shape) != len(spec.shape):
            raise InputError(
                f"shapes[{name!r}] = {list(shape)} has rank {len(shape)}, but the model declares {spec} "
                f"(rank {len(spec.shape)})"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int) and want != got:
                raise InputError(
                    f"shapes[{name!r}] = {list(shape)}: axis {axis} is fixed at {want} in the model ({spec})"
                )
            if isinstance(want, str):
                seen = symbols.setdefault(want, (got, name))
                if seen[0] != got:
                    raise InputError(
                        f"dimension {want!r} is {seen[0]} in shapes[{seen[1]!r}] but {got} in shapes[{name!r}]"
                    )
    return {sym: size for sym, (size, _) in symbols.items()}


def fix_shapes(model: Model, shapes: Mapping[str, Sequence[int]] | None) -> Model:
    """``model`` with the given input shapes fixed (a new ``Model``; the original is untouched).

    Inputs not named keep their dims, except symbols shared with a named
    input, which take its size.  Returns ``model`` itself when nothing changes
    (every given shape is already static), so fixing is idempotent.  Native
    formats (IR, ncnn) are not rewritten: their backends take ``options.shapes``.
    """
    shapes = normalize(shapes)
    if not shapes:
        return model
    check_against(model.inputs, shapes)
    if model.format != "onnx":
        return model
    by_name = {s.name: s for s in model.inputs}
    sizes = {
        (name, axis): size
        for name, shape in shapes.items()
        for axis, size in enumerate(shape)
        if not isinstance(by_name[name].shape[axis], int)
    }
    fixed = fix_axes(model, sizes)
    if fixed is not model:
        fixed.metadata["fixed_shapes"] = {k: list(v) for k, v in shapes.items()}
        fixed.metadata["_shapes_source"] = model  # compiled instead where a runtime fails on the static graph only
    return fixed


def fix_axes(model: Model, sizes: Mapping[tuple[str, int], int]) -> Model:
    """``model`` with input axes ``(input name, axis)`` fixed at the given sizes.

    A symbol fixed on one axis takes the same size everywhere it appears (other
    inputs, outputs).  The result is memoised on ``model``, so specialising the
    same shapes again costs a dict lookup.
    """
    by_name = {s.name: s for s in model.inputs}
    symbols: dict[str, int] = {}
    for (name, axis), size in sizes.items():
        dim = by_name[name].shape[axis]
        if isinstance(dim, str):
            if symbols.setdefault(dim, size) != size:
                raise InputError(f"dimension {dim!r} cannot be both {symbols[dim]} and {size}")
    if not sizes:
        return model
    memo = model.metadata.setdefault("_fixed_axes", {})
    key = tuple(sorted(sizes.items()))
    cached: Model | None = memo.get(key)
    if cached is None:
        cached = _rewrite(model, sizes, symbols)
        memo[key] = cached
    return cached


def _rewrite(model: Model, sizes: Mapping[tuple[str, int], int], symbols: Mapping[str, int]) -> Model:
    import onnx

    from .model import load

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    initializers = {i.name for i in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            size = sizes.get((value.name, axis))
            if size is None and dim.HasField("dim_param"):
                size = symbols.get(dim.dim_param)
            if size is not None:
                dim.Clear()
                dim.dim_value = size
    for value in proto.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in symbols:
                size = symbols[dim.dim_param]
                dim.Clear()
                dim.dim_value = size
    proto = _infer(proto, model.name)
    fixed = load(proto, check=False)
    object.__setattr__(fixed, "name", model.name)
    fixed.metadata["source_hash"] = model.hash
    return fixed


def _infer(proto: Any, name: str) -> Any:
    """Shape inference with data propagation; output dims it resolves become static.

    Inference only adds information: a dim it cannot resolve stays as it was.
    Should onnx's inference fail on a graph (a custom domain, an op newer than
    this onnx), the rewritten inputs alone are kept: every runtime infers
    shapes again from its inputs.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises several kinds here
        log.info(
            "nnport: shape inference failed on %s after fixing shapes (%s); using the rewritten inputs only", name, exc
        )
        return proto
    known = {v.name: v for v in inferred.graph.value_info}
    known.update({v.name: v for v in inferred.graph.output})
    for value in proto.graph.output:
        found = known.get(value.name)
        if found is None or not found.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        new = found.type.tensor_type.shape.dim
        if not value.type.tensor_type.HasField("shape") or len(dims) == 0 and len(new) > 0:
            value.type.tensor_type.shape.CopyFrom(found.type.tensor_type.shape)
            continue
        if len(new) != len(dims):
            continue
        for old, inf in zip(dims, new):
            if not old.HasField("dim_value") and inf.HasField("dim_value") and inf.dim_value > 0:
                old.Clear()
                old.dim_value = inf.dim_value
    return proto


def signature(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> tuple[tuple[int, ...], ...]:
    """The feeds' shapes in input order: the key of a shape specialisation."""
    return tuple(tuple(feeds[s.name].shape) for s in specs)


def describe(shapes: Mapping[str, Sequence[int]]) -> str:
    """``name:1x3x640x640,other:1x16``: the CLI form, for messages and reports."""
    return ",".join(f"{k}:{'x'.join(str(d) for d in v)}" for k, v in shapes.items())
