"""Real ``.tflite`` models from a PyPI wheel, and the ``tflite/`` conformance cases built on them.

``mediapipe==0.10.14``'s wheel ships 14 ``.tflite`` graphs (face, hand, pose,
iris, palm and selfie models; the newest mediapipe ships none).  ``fetch()``
runs ``python -m pip download --no-deps`` for a pinned platform (so any host
gets the same wheel), extracts the ``.tflite`` members of the zip into
``<nnport cache root>/tflite/mediapipe-0.10.14/`` (atomic renames, a lock for
concurrent fetches) and drops the wheel; later calls reuse the files.  Where
the registry cannot be reached it raises ``TfliteModelsUnavailable`` with
pip's message, which the tests and the conformance worker turn into a skip
with that reason.  Nothing is downloaded from a model hub.

``quantized(name)`` derives a fully int8 model with uint8 (or int8) inputs and
outputs from one of the float models, with LiteRT's own calibration and
interface tools (no TensorFlow), in a child process (those tools are native
code that can crash), cached beside the models: a real graph with real
quantised I/O.

Cases (``tflite/<model>``, opt-in like ``node/``: select them with a ``tflite``
pattern) are judged against TFLite's reference kernels, which the conformance
worker picks for every ``.tflite`` model (``worker.reference_for``).  Two
selfie-segmentation models use a MediaPipe custom op that XNNPACK implements
but the reference kernels lack: the reference cannot run them (a skip).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nnport.errors import NnportError

PACKAGE, VERSION = "mediapipe", "0.10.14"
WHEEL_PLATFORM = ("manylinux_2_17_x86_64", "311", "cp", "cp311")
"""(platform, python version, implementation, abi) of the wheel downloaded, whatever the host."""
PIP_TIMEOUT_S = 600.0
OFFLINE_ENV = "NNPORT_CORPUS_OFFLINE"

MODELS: dict[str, str] = {
    "face_detection_short_range": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "face_detection_full_range_sparse": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "face_landmark": "mediapipe/modules/face_landmark/face_landmark.tflite",
    "face_landmark_with_attention": "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
    "hand_landmark_lite": "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
    "hand_landmark_full": "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
    "hand_recrop": "mediapipe/modules/holistic_landmark/hand_recrop.tflite",
    "iris_landmark": "mediapipe/modules/iris_landmark/iris_landmark.tflite",
    "palm_detection_lite": "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
    "palm_detection_full": "mediapipe/modules/palm_detection/palm_detection_full.tflite",
    "pose_detection": "mediapipe/modules/pose_detection/pose_detection.tflite",
    "pose_landmark_full": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
    "selfie_segmentation": "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    "selfie_segmentation_landscape": "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
}
CUSTOM_OP = {"face_landmark_with_attention": "Landmarks2TransformMatrix"}
"""Models that need a MediaPipe custom op LiteRT does not have (refused at compile, naming it)."""


try:  # a wheel that cannot be fetched is the same kind of skip as a corpus model's
    from .corpus import CorpusUnavailable as _Unavailable
except ImportError:  # pragma: no cover - the corpus module absent
    _Unavailable = NnportError  # type: ignore[assignment,misc]


class TfliteModelsUnavailable(_Unavailable):
    """The wheel could not be fetched (no registry, no pip): a skip, with the reason."""


def models_dir() -> Path:
    from nnport.paths import cache_root

    return cache_root() / "tflite" / f"{PACKAGE}-{VERSION}"


def path(name: str) -> Path:
    """The cached ``.tflite`` file of model ``name`` (fetched first if needed)."""
    if name not in MODELS:
        raise KeyError(f"unknown mediapipe model {name!r}; known: {sorted(MODELS)}")
    target = models_dir() / MODELS[name]
    if not target.is_file():
        fetch()
    if not target.is_file():
        raise TfliteModelsUnavailable(f"the {PACKAGE}=={VERSION} wheel has no member {MODELS[name]!r}")
    return target


def fetch() -> Path:
    """Download the wheel once and extract its ``.tflite`` members; returns the models folder."""
    folder = models_dir()
    if all((folder / member).is_file() for member in MODELS.values()):
        return folder
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise TfliteModelsUnavailable(
            f"{folder} is not filled and ${OFFLINE_ENV} forbids downloading {PACKAGE}=={VERSION}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        if all((folder / member).is_file() for member in MODELS.values()):
            return folder
        with tempfile.TemporaryDirectory(prefix=".wheel-", dir=folder) as tmp:
            wheel = _download(Path(tmp))
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    if not info.filename.endswith(".tflite") or ".." in Path(info.filename).parts:
                        continue
                    target = folder / info.filename
                    target.parent.mkdir(parents=True, exist_ok=True)
                    part = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                    with zf.open(info) as src, open(part, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    os.replace(part, target)
    return folder


def _download(into: Path) -> Path:
    platform_, python, implementation, abi = WHEEL_PLATFORM
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
        "--disable-pip-version-check", "--progress-bar", "off", "--platform", platform_, "--python-version", python,
        "--implementation", implementation, "--abi", abi, f"{PACKAGE}=={VERSION}", "-d", str(into),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TfliteModelsUnavailable(
            f"pip download {PACKAGE}=={VERSION} did not finish within {PIP_TIMEOUT_S:.0f} s"
        ) from None
    except OSError as exc:
        raise TfliteModelsUnavailable(f"cannot run pip to download {PACKAGE}=={VERSION}: {exc}") from None
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [
            ln.strip()
            for ln in (proc.stderr or proc.stdout or "").splitlines()
            if ln.strip() and "is ignored" not in ln
        ]
        told = " | ".join(ln for ln in lines if "error" in ln.lower())[-600:] or " | ".join(lines[-3:])[-600:]
        raise TfliteModelsUnavailable(
            f"pip download --no-deps {PACKAGE}=={VERSION} failed (exit status {proc.returncode}): "
            f"{told or 'no message'}"
        )
    return wheels[0]


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- realistic inputs ------------------------------------------------------------------------------


def image_feeds(model: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Image-like inputs (smooth shapes, gradients and a little noise), as MediaPipe feeds them.

    float inputs are in [-1, 1] (MediaPipe's normalisation), uint8 in [0, 255],
    int8 in [-128, 127]; NHWC as the models declare.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in model.inputs:
        shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
        if len(shape) == 4:
            _, h, w, c = shape
            y, x = np.mgrid[0:h, 0:w].astype(np.float32)
            cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.35) * min(h, w)
            disc = (((y - cy) ** 2 + (x - cx) ** 2) < r * r).astype(np.float32)
            channels = [
                0.6 * disc + 0.4 * (x / max(w - 1, 1)) * rng.uniform(0.5, 1),
                0.5 * disc + 0.5 * (y / max(h - 1, 1)),
                0.3 + 0.4 * disc,
            ]
            img = np.stack([channels[i % 3] for i in range(c)], axis=-1)[None]
            unit = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
            unit = np.broadcast_to(unit, shape)
        else:
            unit = rng.uniform(0, 1, shape)
        if spec.dtype == np.uint8:
            feeds[spec.name] = np.round(unit * 255).astype(np.uint8)
        elif spec.dtype == np.int8:
            feeds[spec.name] = (np.round(unit * 255) - 128).astype(np.int8)
        else:
            feeds[spec.name] = (unit * 2 - 1).astype(spec.dtype)
    return feeds


# -- a real graph with real quantised I/O -------------------------------------------------------------

QUANTIZE_SCRIPT = r"""
import sys, numpy as np
from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as cw
from ai_edge_litert import _pywrap_modify_model_interface as mmi
src, dst, io, shape = sys.argv[1], sys.argv[2], sys.argv[3], [int(d) for d in sys.argv[4].split("x")]
data = open(src, "rb").read()
cal = cw.CalibrationWrapper(data, [], [])
cal.Prepare([shape])
rng = np.random.default_rng(7)
for _ in range(8):
    cal.FeedTensor([rng.uniform(-1, 1, shape).astype(np.float32)])
f32, i8, i32 = np.dtype(np.float32).num, np.dtype(np.int8).num, np.dtype(np.int32).num
quantized = cal.QuantizeModel(f32, f32, False, i8, i32, False, False)
tmp = dst + ".float_io.tflite"
open(tmp, "wb").write(quantized)
code = {"uint8": 3, "int8": 9}[io]  # TFLite TensorType
status = mmi.modify_model_interface(tmp, dst, code, code)
sys.exit(0 if status == 0 else 3)
"""


def quantized(name: str = "iris_landmark", io: str = "uint8") -> Path:
    """``name`` fully quantised to int8 with ``io`` ("uint8"/"int8") inputs and outputs (cached).

    Works on models with float32 weights only (``iris_landmark``,
    ``hand_recrop``); LiteRT's quantiser crashes on MediaPipe's float16 ones.
    """
    source = path(name)
    target = models_dir() / "derived" / f"{name}_int8_{io}io.tflite"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from nnport.model import load

    shape = "x".join(str(d) for d in load(source).inputs[0].shape)
    part = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    proc = subprocess.run(
        [sys.executable, "-c", QUANTIZE_SCRIPT, str(source), str(part), io, shape],
        capture_output=True,
        text=True,
        timeout=600,
    )
    for extra in (part, Path(f"{part}.float_io.tflite")):
        if extra != part:
            extra.unlink(missing_ok=True)
    if proc.returncode != 0 or not part.is_file():
        part.unlink(missing_ok=True)
        tail = " ".join((proc.stderr or "").split()[-40:])
        raise TfliteModelsUnavailable(
            f"LiteRT's calibration tools could not quantise {name} (exit status {proc.returncode}): {tail}"
        )
    os.replace(part, target)
    return target


def _load(name: str) -> Any:
    from nnport.model import load

    return load(path(name))


# -- conformance cases ------------------------------------------------------------------------------


def _model_file(name: str) -> str:
    return str(path(name))


def _model_feeds(name: str) -> dict[str, np.ndarray]:
    return image_feeds(_load(name))


def cases() -> list[Any]:
    """One ``tflite/<model>`` case per mediapipe model, fed image-like inputs.

    A quantised model is not a case: XNNPACK's and the reference kernels'
    integer results differ by a few quanta (up to 4 measured on a quantised
    iris_landmark), and integer outputs are compared exactly; the tests check it.
    """
    from .cases import Case

    found = []
    for name in MODELS:
        found.append(
            Case(
                f"tflite/{name}",
                functools.partial(_model_file, name),
                f"{name} from the {PACKAGE}=={VERSION} wheel; judged against TFLite's reference kernels",
                feeds=functools.partial(_model_feeds, name),
                timeout_s=300.0,
                tolerances={"classifier": None},
            )
        )
    return found
