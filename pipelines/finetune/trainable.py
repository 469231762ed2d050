"""Whether a module can be fine-tuned, and on what: the kind of input it takes, the random ops it cannot seed."""

from __future__ import annotations

import dataclasses
import os

from pipelines.export.random_ops import STATEFUL_RANDOM_OPS
from pipelines.finetune.errors import FinetuneError
from pipelines.hub import module_info
from pipelines.hub.redaction import redact


@dataclasses.dataclass(frozen=True)
class ModuleInput:
    """What a module's `default` signature takes: the data kind and the shape of one example."""

    kind: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of an image module's input; None for text."""
        return (self.shape[0], self.shape[1]) if self.kind == "image" else None


def module_input(info: module_info.ModuleInfo) -> ModuleInput:
    """Classifies a module's `default` input as text (`[N]` string) or image (`[N, H, W, 3]` float).

    Raises:
      FinetuneError: the module cannot be fine-tuned (not trainable, or another input).
    """
    if not info.trainable:
        raise FinetuneError(
            f"Module {redact(info.handle)!r} is not a reusable module with trainable variables; "
            "re-export it with `python -m pipelines.export` first."
        )
    signature = info.signature(module_info.DEFAULT_SIGNATURE)
    if len(signature.inputs) == 1:
        spec = signature.inputs[0]
        if spec.dtype == "string" and spec.shape == (None,):
            return ModuleInput("text", (), spec.dtype)
        if spec.dtype.startswith("float") and len(spec.shape) == 4 and spec.shape[3] == 3:
            height, width = spec.shape[1], spec.shape[2]
            if height is None or width is None:
                raise FinetuneError(
                    f"Module {redact(info.handle)!r} takes images of any size; "
                    "fine-tuning needs a module with a fixed input height and width."
                )
            return ModuleInput("image", (height, width, 3), spec.dtype)
    inputs = ", ".join(f"{t.name}: {t.dtype}{list(t.shape)}" for t in signature.inputs)
    raise FinetuneError(
        f"Module {redact(info.handle)!r} default signature takes ({inputs}); fine-tuning supports texts "
        "(string [N]) and images (float [N, H, W, 3])."
    )


def unseeded_random_ops(path: str) -> list[str]:
    """Names of the stateful random ops without a seed in a SavedModel's graph and functions.

    Such ops (typically dropout in a module traced without a global seed) cannot
    be made deterministic from outside, and TensorFlow refuses to run them when
    op determinism is enabled.
    """
    # TensorFlow's protos: imported here to keep TensorFlow out of this module's import.
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    found = []
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        for node in [*graph.node, *(n for function in graph.library.function for n in function.node_def)]:
            if node.op in STATEFUL_RANDOM_OPS and node.attr["seed"].i == 0 and node.attr["seed2"].i == 0:
                found.append(node.name)
    return found
