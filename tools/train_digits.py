"""Train the zoo's ``digits`` CNN on scikit-learn's bundled handwritten digits and export it to ONNX once.

Not part of nnport (nothing imports it) and not run by the tests: it made the
committed files ``core/zoo_data/digits.onnx`` and ``core/zoo_data/digits.npz``.
It needs PyTorch, which nnport never depends on; use a throwaway environment::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 scikit-learn onnx numpy
    /tmp/torchvenv/bin/python tools/train_digits.py

Data: ``sklearn.datasets.load_digits`` (1797 8x8 grey images of the digits
0-9, pixel values 0..16, from the UCI optical-recognition set), scaled to
``image = pixels / 16`` in [0, 1].  Split: ``train_test_split(test_size=0.2,
stratify=labels, random_state=0)`` -> 1437 training and 360 test images.
Training: seeded (torch, numpy), Adam, 60 epochs of mini-batches of 32, each
training image shifted by up to one pixel at random (the digits are centred
but not exactly).  Model: Conv(1->16, 3x3) ReLU, Conv(16->32, 3x3) ReLU,
MaxPool 2, Conv(32->64, 3x3) ReLU, MaxPool 2, Flatten, Linear(256->10):
``image[batch,1,8,8] float32 -> logits[batch,10]``.

Written next to the model, ``digits.npz`` holds what nnport needs without
scikit-learn: ``test_images`` [360,1,8,8] float32 and ``test_labels`` [360]
int64 (the held-out split, never trained on), ``calibration_images``
[128,1,8,8] float32 (training images, for int8 calibration) and the
accuracy PyTorch measured on the test split (``torch_test_accuracy``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
EPOCHS = 60
OPSET = 17
OUT = Path(__file__).resolve().parents[1] / "core" / "zoo_data"


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(64 * 2 * 2, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(image), 1))


def shifted(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in x and y (zero fill)."""
    out = torch.zeros_like(batch)
    for i, (dy, dx) in enumerate(rng.integers(-1, 2, size=(len(batch), 2))):
        src = batch[i, :, max(0, -dy) : 8 - max(0, dy), max(0, -dx) : 8 - max(0, dx)]
        out[i, :, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = src
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=SEED
    )

    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _epoch in range(EPOCHS):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xt)))
        for start in range(0, len(xt), 32):
            idx = order[start : start + 32]
            optimizer.zero_grad()
            loss = loss_fn(model(shifted(xt[idx], rng)), yt[idx])
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        test_acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
        train_acc = float((model(xt).argmax(1).numpy() == y_train).mean())
    print(f"train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f} ({len(y_test)} test images)")

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "digits.onnx"
    torch.onnx.export(
        model,
        (torch.from_numpy(x_test[:1]),),
        str(onnx_path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    import onnx

    proto = onnx.load(str(onnx_path))
    proto.producer_name = "nnport tools/train_digits.py"
    proto.graph.name = "digits"
    proto.doc_string = "CNN trained on scikit-learn's digits (8x8, pixels/16); logits for the digits 0-9"
    meta = proto.metadata_props.add()
    meta.key, meta.value = (
        "nnport.training",
        json.dumps({"seed": SEED, "epochs": EPOCHS, "torch": torch.__version__, "test_accuracy": test_acc}),
    )
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))
    calibration = rng.permutation(len(x_train))[:128]
    np.savez_compressed(
        args.out / "digits.npz",
        test_images=x_test,
        test_labels=y_test,
        calibration_images=x_train[calibration],
        torch_test_accuracy=np.float64(test_acc),
    )
    for name in ("digits.onnx", "digits.npz"):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
