"""Calibration data for int8: where it comes from and how it is checked.

Static int8 quantization picks each activation's scale from the values the
model sees on representative inputs, so the inputs decide the accuracy.
``calibration_feeds`` accepts the three forms nnport documents:

* a directory (or one file) of ``.npz`` files, each one feed dict keyed by input
  name, or ``.npy`` files for a single-input model (one sample each, or a stack
  of samples along a leading axis);
* an iterable of feed dicts (a list, a generator, a ``torch`` data loader
  already turned into numpy);
* ``"random"``: seeded synthetic inputs, allowed with a warning because scales
  fitted to noise rarely fit real data.

Every sample is checked against the model's inputs before any runtime sees it,
and one ``InputError`` names the sample and every mismatch, so that a bad file
fails here and not deep inside a quantizer.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .compiled import feed_problems
from .data import save_arrays
from .errors import InputError
from .types import TensorSpec

RANDOM = "random"
DEFAULT_RANDOM_SAMPLES = 16
RANDOM_SEED_BASE = 1_000_000
"""Random calibration samples use seeds from here on, far from the evaluation seeds (0, 1, ...)."""

CALIBRATION_OPTIONS = (
    "a directory of .npy/.npz files (CLI: --calibration DIR)",
    "an iterable of feed dicts {input name: numpy array}",
    "'random' (synthetic inputs; accuracy will suffer)",
)


class RandomCalibrationWarning(UserWarning):
    """Calibrating on synthetic inputs: int8 scales will not fit real data."""


def missing_calibration_message(what: str = "int8 static quantization") -> str:
    """The one message for 'no calibration data', naming every accepted form."""
    return (
        f"{what} needs calibration data: pass calibration= one of "
        + "; ".join(CALIBRATION_OPTIONS)
        + ". Models made mostly of MatMul (transformers, MLPs) can use dynamic quantization instead, which needs none "
        "(nnport.compress.quantize(..., method='dynamic'), CLI --method dynamic, "
        "or CompileOptions(extra={'int8_method': 'dynamic'}))"
    )


def calibration_feeds(
    source: Any,
    specs: Sequence[TensorSpec],
    *,
    samples: int | None = None,
    seed: int = RANDOM_SEED_BASE,
) -> list[dict[str, np.ndarray]]:
    """Load and validate calibration samples for a model with inputs ``specs``.

    ``samples`` caps how many are used (and sets how many ``"random"`` makes,
    default 16).  Raises ``InputError`` when ``source`` is None, empty, of an
    unknown form, or when any sample does not match the inputs.
    """
    if source is None:
        raise InputError(missing_calibration_message())
    if isinstance(source, str) and source.strip().lower() == RANDOM:
        count = samples or DEFAULT_RANDOM_SAMPLES
        warnings.warn(
            f"calibrating int8 on {count} random inputs: scales fitted to synthetic data rarely fit real inputs, "
            "so accuracy will suffer; pass representative data for a real deployment",
            RandomCalibrationWarning,
            stacklevel=2,
        )
        return random_samples(specs, count, seed=seed)
    if isinstance(source, (str, Path)):
        feeds = _from_path(Path(source), specs)
    elif isinstance(source, Mapping):
        feeds = [dict(source)]
    elif isinstance(source, Iterable) and not isinstance(source, (bytes, bytearray, np.ndarray)):
        feeds = []
        for i, item in enumerate(source):
            if not isinstance(item, Mapping):
                raise InputError(
                    f"calibration sample {i} is a {type(item).__name__}; expected a feed dict {{input "
                    f"name: numpy array}} "
                    f"for inputs {_expected(specs)}"
                )
            feeds.append(dict(item))
            if samples is not None and len(feeds) >= samples:
                break
    else:
        raise InputError(
            f"calibration data of type {type(source).__name__} is not understood; expected one of: "
            + "; ".join(CALIBRATION_OPTIONS)
        )
    if samples is not None:
        feeds = feeds[:samples]
    if not feeds:
        raise InputError(f"calibration data {_short(source)} holds no samples; " + missing_calibration_message())
    for i, feed in enumerate(feeds):
        validate_sample(feed, specs, where=f"calibration sample {i}" + _origin(feed))
    return [{k: v for k, v in f.items() if not k.startswith("__")} for f in feeds]


def random_samples(
    specs: Sequence[TensorSpec], count: int, *, seed: int = RANDOM_SEED_BASE
) -> list[dict[str, np.ndarray]]:
    """``count`` seeded feed dicts (seeds ``seed``, ``seed+1``, ...), image-like for image inputs."""
    from .data import random_feeds

    return [random_feeds(specs, seed=seed + i) for i in range(count)]


def validate_sample(feed: Mapping[str, Any], specs: Sequence[TensorSpec], *, where: str = "calibration sample") -> None:
    """Raise ``InputError`` naming ``where`` unless ``feed`` matches ``specs`` (names, dtypes, ranks, fixed dims)."""
    clean = {k: v for k, v in feed.items() if not k.startswith("__")}
    names = {s.name for s in specs}
    ok = clean.keys() == names
    if ok:
        for spec in specs:
            value = clean[spec.name]
            if not isinstance(value, np.ndarray) or value.dtype != spec.dtype or not spec.accepts_shape(value.shape):
                ok = False
                break
    if not ok:
        raise InputError(f"{where} does not match the model's inputs: {feed_problems(specs, clean)}")


def fingerprint(feeds: Sequence[Mapping[str, np.ndarray]]) -> str:
    """A digest of calibration samples (names, dtypes, shapes, bytes): part of int8 cache keys."""
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            a = np.ascontiguousarray(feed[name])
            digest.update(f"{name}|{a.dtype}|{a.shape}|".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()[:16]


# -- files -------------------------------------------------------------------------------


def _from_path(path: Path, specs: Sequence[TensorSpec]) -> list[dict[str, np.ndarray]]:
    if not path.exists():
        raise InputError(
            f"calibration path {str(path)!r} does not exist; expected one of: " + "; ".join(CALIBRATION_OPTIONS)
        )
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npy", ".npz")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise InputError(f"calibration directory {str(path)!r} holds no .npy or .npz files")
    feeds: list[dict[str, np.ndarray]] = []
    for file in files:
        feeds.extend(_from_file(file, specs))
    return feeds


def _from_file(file: Path, specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    suffix = file.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(file, allow_pickle=False) as data:
                return [{**{k: data[k] for k in data.files}, "__file": file.name}]
        if suffix == ".npy":
            array = np.load(file, allow_pickle=False)
        else:
            raise InputError(f"calibration file {str(file)!r} is neither .npy nor .npz")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read calibration file {str(file)!r}: {exc}") from exc
    if len(specs) != 1:
        raise InputError(
            f"calibration file {file.name!r} is a .npy array, but the model has {len(specs)} inputs "
            f"{_expected(specs)}: store each sample as a .npz keyed by input name"
        )
    spec = specs[0]
    if array.ndim == len(spec.shape) + 1:  # a stack of samples
        return [{spec.name: np.ascontiguousarray(a), "__file": f"{file.name}[{i}]"} for i, a in enumerate(array)]
    if array.ndim == len(spec.shape) and spec.shape and spec.shape[0] == 1 and array.shape[0] > 1:
        # a batch saved for a batch-1 model: one sample per row
        return [
            {spec.name: np.ascontiguousarray(array[i : i + 1]), "__file": f"{file.name}[{i}]"}
            for i in range(array.shape[0])
        ]
    return [{spec.name: array, "__file": file.name}]


def _origin(feed: Mapping[str, Any]) -> str:
    origin = feed.get("__file")
    return f" ({origin})" if origin else ""


def _expected(specs: Sequence[TensorSpec]) -> str:
    return "{" + ", ".join(str(s) for s in specs) + "}"


def _short(source: Any) -> str:
    text = repr(source)
    return text if len(text) < 60 else text[:57] + "..."


def save_samples(
    directory: str | Path, samples: Sequence[Mapping[str, np.ndarray]], prefix: str = "sample"
) -> list[Path]:
    """Write ``samples`` (feed dicts) to ``directory`` in the format read here: one ``.npz`` per sample.

    Files are named ``<prefix>_00000.npz``, ... so that sorted file-name order is
    the samples' order (what ``nnport port --labels`` relies on).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(max(len(samples) - 1, 0))))
    paths = []
    for i, sample in enumerate(samples):
        path = out / f"{prefix}_{i:0{width}d}.npz"
        save_arrays(path, {k: np.ascontiguousarray(v) for k, v in sample.items()})
        paths.append(path)
    return paths
