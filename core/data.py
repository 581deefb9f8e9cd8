"""Seeded input data: the one loader that feeds every backend the same arrays.

Inputs decide what a comparison means.  Uniform noise into a vision model gives
near-zero activations whose relative error is rounding noise, so image-like
inputs (4-D, 1 or 3 channels) get smooth, normalised, picture-like data by
default; other floats get uniform values in a range (Polygraphy's
``--val-range``, default [-1, 1]); integers get [0, 10); booleans a coin flip.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .types import TensorSpec

Range = tuple[float, float]


def is_image_like(spec: TensorSpec, shape: Sequence[int]) -> bool:
    return spec.dtype.kind == "f" and len(shape) == 4 and shape[1] in (1, 3) and shape[2] >= 8 and shape[3] >= 8


def image_like(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Smooth random pictures, normalised like ImageNet inputs (mean 0, unit-ish std).

    Low-resolution noise upsampled bilinearly gives regions and edges, as photos
    have, so that convolution features are far from zero and errors are judged
    on realistic activations.
    """
    n, c, h, w = shape
    gh, gw = max(2, h // 8), max(2, w // 8)
    coarse = rng.random((n, c, gh, gw))
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.floor(ys).astype(int).clip(0, gh - 2)
    x0 = np.floor(xs).astype(int).clip(0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = coarse[:, :, y0][:, :, :, x0]
    b = coarse[:, :, y0][:, :, :, x0 + 1]
    cc = coarse[:, :, y0 + 1][:, :, :, x0]
    d = coarse[:, :, y0 + 1][:, :, :, x0 + 1]
    img = (a * (1 - fx) + b * fx) * (1 - fy) + (cc * (1 - fx) + d * fx) * fy
    img = img + 0.05 * rng.standard_normal(img.shape)
    mean, std = 0.45, 0.25
    out: np.ndarray = ((img - mean) / std).astype(np.float32)
    return out


def random_array(
    spec: TensorSpec, shape: Sequence[int], rng: np.random.Generator, value_range: Range | None = None
) -> np.ndarray:
    dtype = spec.dtype
    if dtype.kind == "f":
        if value_range is None and is_image_like(spec, shape):
            return image_like(shape, rng).astype(dtype)
        lo, hi = value_range or (-1.0, 1.0)
        return rng.uniform(lo, hi, size=tuple(shape)).astype(dtype)
    if dtype.kind in "iu":
        lo, hi = value_range or (0, 10)
        return rng.integers(int(lo), int(hi), size=tuple(shape), endpoint=False).astype(dtype)
    if dtype.kind == "b":
        return rng.random(tuple(shape)) < 0.5
    raise InputError(f"cannot generate random data for input {spec.name!r} of dtype {dtype}; pass it explicitly")


def random_feeds(
    specs: Iterable[TensorSpec],
    *,
    seed: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    value_ranges: Mapping[str, Range] | None = None,
    dim_values: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded feeds for ``specs``: identical for every backend given the same seed.

    ``shapes`` fixes whole input shapes; ``dim_values`` sets symbolic dims by
    name (``{"batch": 4}``); other unknown dims are 1.  ``value_ranges`` maps an
    input name (or ``""`` for all) to (low, high).
    """
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    value_ranges = value_ranges or {}
    feeds = {}
    for spec in specs:
        shape = tuple(shapes[spec.name]) if spec.name in shapes else spec.concrete_shape(dim_values)
        rng_range = value_ranges.get(spec.name, value_ranges.get(""))
        feeds[spec.name] = random_array(spec, shape, rng, rng_range)
    return feeds


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> None:
    """Write named arrays to one ``.npz`` file (``numpy.savez``), the form ``--input`` and ``--save-*`` use."""
    np.savez(path, **arrays)
