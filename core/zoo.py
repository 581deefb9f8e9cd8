"""A built-in model zoo: small ONNX models generated in code, deterministically, and one trained model.

No download is ever needed: the demo, the tests and the conformance suite build
these with ``onnx.helper`` and seeded weights, so the same name always gives
the same bytes (and the same model hash).

``digits`` is the exception that makes accuracy mean something: a small CNN
trained on scikit-learn's bundled handwritten digits (``tools/train_digits.py``,
PyTorch, run once), shipped as ``zoo_data/digits.onnx`` with its held-out test
split and a calibration set in ``zoo_data/digits.npz``, so that fp32, fp16 and
int8 are judged against real labels (``labelled("digits")``) and not only
against each other.

``nnport.zoo.names()`` lists them; ``nnport.zoo.build(name)`` returns the
``onnx.ModelProto``; ``nnport.zoo.load(name)`` returns an ``nnport.Model``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
IR_VERSION = 8  # opset 17's IR version: accepted by every runtime nnport supports

_BUILDERS: dict[str, Callable[[], Any]] = {}
DESCRIPTIONS: dict[str, str] = {}


def _model(name: str, description: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def deco(fn: Callable[[], Any]) -> Callable[[], Any]:
        _BUILDERS[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return deco


def names() -> list[str]:
    return list(_BUILDERS)


def build(name: str) -> Any:
    """The ``onnx.ModelProto`` of zoo model ``name``."""
    if name not in _BUILDERS:
        from .errors import ModelLoadError

        raise ModelLoadError(f"unknown zoo model {name!r}; zoo models: {names()}")
    return _BUILDERS[name]()


def load(name: str) -> Any:
    from .model import load as load_model

    return load_model(build(name))


class _Graph:
    """Tiny helper accumulating nodes and seeded initializers."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def weight(self, name: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        from onnx import numpy_helper

        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        std = scale if scale is not None else (2.0 / max(fan_in, 1)) ** 0.5
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * std).astype(np.float32), name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self.count += 1
        out = out or f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.count}", **attrs))
        return out

    def finish(self, name: str, inputs: list[Any], outputs: list[Any]) -> Any:
        from onnx import helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nnport.zoo")
        model.ir_version = IR_VERSION
        return model


def _vi(name: str, shape: list[Any]) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


@_model("mlp", "3-layer perceptron: Gemm/Relu/Gemm/Relu/Gemm/Softmax, input x[1,64] -> probs[1,10]")
def mlp() -> Any:
    g = _Graph(seed=1)
    h = g.node("Gemm", ["x", g.weight("w1", (128, 64)), g.const("b1", np.zeros(128, np.float32))], transB=1)
    h = g.node("Relu", [h])
    h = g.node("Gemm", [h, g.weight("w2", (64, 128)), g.const("b2", np.full(64, 0.01, np.float32))], transB=1)
    h = g.node("Relu", [h])
    h = g.node("Gemm", [h, g.weight("w3", (10, 64)), g.const("b3", np.zeros(10, np.float32))], "logits", transB=1)
    g.node("Softmax", [h], "probs", axis=-1)
    return g.finish("mlp", [_vi("x", [1, 64])], [_vi("probs", [1, 10])])


@_model("mlp_dynamic", "the MLP with a symbolic batch dimension: x[batch,64] -> probs[batch,10]")
def mlp_dynamic() -> Any:
    model = mlp()
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    model.graph.name = "mlp_dynamic"
    return model


@_model(
    "cnn",
    "small CNN: Conv/BatchNorm/Relu/MaxPool x2, GlobalAveragePool, Gemm, Softmax; image[1,3,32,32] -> probs[1,10]",
)
def cnn() -> Any:
    g = _Graph(seed=2)
    h = "image"
    channels = 3
    for i, out_ch in enumerate((16, 32), start=1):
        h = g.node(
            "Conv",
            [h, g.weight(f"conv{i}.w", (out_ch, channels, 3, 3)), g.const(f"conv{i}.b", np.zeros(out_ch, np.float32))],
            pads=[1, 1, 1, 1],
        )
        h = g.node(
            "BatchNormalization",
            [
                h,
                g.const(f"bn{i}.scale", (1 + 0.1 * g.rng.standard_normal(out_ch)).astype(np.float32)),
                g.const(f"bn{i}.bias", (0.1 * g.rng.standard_normal(out_ch)).astype(np.float32)),
                g.const(f"bn{i}.mean", (0.1 * g.rng.standard_normal(out_ch)).astype(np.float32)),
                g.const(f"bn{i}.var", (1 + 0.1 * g.rng.random(out_ch)).astype(np.float32)),
            ],
            epsilon=1e-5,
        )
        h = g.node("Relu", [h])
        h = g.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
        channels = out_ch
    h = g.node("GlobalAveragePool", [h])
    h = g.node("Flatten", [h], axis=1)
    h = g.node(
        "Gemm", [h, g.weight("fc.w", (10, channels)), g.const("fc.b", np.zeros(10, np.float32))], "logits", transB=1
    )
    g.node("Softmax", [h], "probs", axis=-1)
    return g.finish("cnn", [_vi("image", [1, 3, 32, 32])], [_vi("probs", [1, 10])])


@_model(
    "attention",
    "transformer encoder block: LayerNorm, single-head attention, residual, GELU MLP; tokens[1,16,32] -> "
    "hidden[1,16,32]",
)
def attention() -> Any:
    g = _Graph(seed=3)
    d, t = 32, 16
    ones = g.const("ln.g", np.ones(d, np.float32))
    zeros = g.const("ln.b", np.zeros(d, np.float32))
    x = g.node("LayerNormalization", ["tokens", ones, zeros], axis=-1, epsilon=1e-5)
    q = g.node("MatMul", [x, g.weight("wq", (d, d), scale=d**-0.5)])
    k = g.node("MatMul", [x, g.weight("wk", (d, d), scale=d**-0.5)])
    v = g.node("MatMul", [x, g.weight("wv", (d, d), scale=d**-0.5)])
    kt = g.node("Transpose", [k], perm=[0, 2, 1])
    scores = g.node("MatMul", [q, kt])
    scores = g.node("Mul", [scores, g.const("scale", np.array(d**-0.5, np.float32))])
    probs = g.node("Softmax", [scores], axis=-1)
    ctx = g.node("MatMul", [probs, v])
    proj = g.node("MatMul", [ctx, g.weight("wo", (d, d), scale=d**-0.5)])
    h = g.node("Add", ["tokens", proj])
    h2 = g.node("MatMul", [h, g.weight("w_ff1", (d, 2 * d), scale=d**-0.5)])
    # GELU written out (Erf form), as exporters emit it before opset 20
    half = g.node("Mul", [h2, g.const("half", np.array(0.5, np.float32))])
    erf = g.node("Erf", [g.node("Mul", [h2, g.const("inv_sqrt2", np.array(2**-0.5, np.float32))])])
    gelu = g.node("Mul", [half, g.node("Add", [erf, g.const("one", np.array(1.0, np.float32))])])
    ff = g.node("MatMul", [gelu, g.weight("w_ff2", (2 * d, d), scale=(2 * d) ** -0.5)])
    g.node("Add", [h, ff], "hidden")
    return g.finish("attention", [_vi("tokens", [1, t, d])], [_vi("hidden", [1, t, d])])


# -- a trained model, with labelled test data ------------------------------------------------

DATA_DIR = Path(__file__).parent / "zoo_data"
"""Where the trained zoo models and their data live (shipped as package data)."""


@_model(
    "digits",
    "CNN trained on scikit-learn's handwritten digits (tools/train_digits.py): Conv/Relu x3, MaxPool x2, Gemm; "
    "image[batch,1,8,8] (pixels/16) -> logits[batch,10]",
)
def digits() -> Any:
    import onnx

    return onnx.load(str(DATA_DIR / "digits.onnx"))


@dataclass(frozen=True)
class Labelled:
    """A zoo model's held-out test split with its labels, and calibration inputs drawn from its training split.

    ``feeds`` is one batched feed dict (every test sample along axis 0);
    ``labels`` the true class of each; ``calibration`` a list of one-sample feed
    dicts for int8, disjoint from the test split.
    """

    model: str
    feeds: dict[str, np.ndarray]
    labels: np.ndarray
    calibration: list[dict[str, np.ndarray]]
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def labelled_names() -> list[str]:
    """Zoo models that come with labelled test data."""
    return ["digits"]


def labelled(name: str) -> Labelled:
    """The labelled test data of zoo model ``name`` (see ``labelled_names``)."""
    if name != "digits":
        from .errors import ModelLoadError

        raise ModelLoadError(f"zoo model {name!r} has no labelled test data; these do: {labelled_names()}")
    with np.load(DATA_DIR / "digits.npz", allow_pickle=False) as data:
        images, labels, cal = data["test_images"], data["test_labels"], data["calibration_images"]
    return Labelled(
        model=name,
        feeds={"image": np.ascontiguousarray(images)},
        labels=labels,
        calibration=[{"image": np.ascontiguousarray(cal[i : i + 1])} for i in range(len(cal))],
        source="scikit-learn load_digits, 20% held-out split (stratified, random_state=0), never trained on",
    )


# -- real architectures shipped inside the onnx wheel ---------------------------------------


def light_dir() -> Any:
    """Directory of the ``light_*`` models in the installed onnx wheel.

    They are real architectures (resnet50, squeezenet, densenet121, inception,
    shufflenet, vgg19, ...) whose weights are generated in the graph, so the
    files are small and need no download.
    """
    from pathlib import Path

    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_names() -> list[str]:
    """Names of the real-architecture models (``light_resnet50``...), sorted."""
    d = light_dir()
    return sorted(p.stem for p in d.glob("light_*.onnx")) if d.is_dir() else []


def light_path(name: str) -> Any:
    path = light_dir() / f"{name}.onnx"
    if not path.exists():
        from .errors import ModelLoadError

        raise ModelLoadError(f"unknown real-architecture model {name!r}; available: {light_names()}")
    return path


def load_any(name: str) -> Any:
    """An ``nnport.Model`` for a zoo name or a ``light_*`` name."""
    if name.startswith("light_"):
        from .model import load as load_model

        return load_model(light_path(name))
    return load(name)


@dataclass(frozen=True)
class ExportedData:
    """Where ``export_labelled`` wrote a labelled zoo model's data: what ``nnport port`` takes."""

    data: Path
    labels: Path
    calibration: Path

    def port_args(self) -> list[str]:
        """``--data ... --labels ... --calibration ...`` for ``nnport port``."""
        return ["--data", str(self.data), "--labels", str(self.labels), "--calibration", str(self.calibration)]


def export_labelled(name: str, directory: Any) -> ExportedData:
    """Write zoo model ``name``'s held-out test split, labels and calibration set as files.

    ``<directory>/test/`` holds one ``.npz`` per sample (keyed by input name, in
    label order), ``<directory>/test-labels.txt`` one class per line, and
    ``<directory>/calibration/`` the calibration samples: the folders
    ``nnport port MODEL --data ... --labels ... --calibration ...`` reads.
    """
    from .calibration import save_samples

    labelled_data = labelled(name)
    root = Path(directory)
    test, cal = root / "test", root / "calibration"
    for folder in (test, cal):  # a re-export never mixes in files of an earlier one
        for stale in folder.glob("sample_*.npz") if folder.is_dir() else ():
            stale.unlink()
    samples = [{k: v[i : i + 1] for k, v in labelled_data.feeds.items()} for i in range(len(labelled_data))]
    save_samples(test, samples)
    save_samples(cal, labelled_data.calibration)
    labels = root / "test-labels.txt"
    labels.write_text("".join(f"{int(x)}\n" for x in labelled_data.labels))
    return ExportedData(test, labels, cal)
