"""Loading a local module directory (TF2 SavedModel or TF1 Hub format) with TensorFlow."""

from __future__ import annotations

import importlib
import os
from typing import Any

from pipelines.hub.errors import ModuleError
from pipelines.hub.module_dirs import module_format


def import_tf() -> Any:
    """Imports TensorFlow with tensorflow_text's ops registered, and returns it.

    A module whose graph uses tensorflow_text ops (e.g. an in-graph tokenizer)
    only loads once those ops are registered ("Op type not registered" otherwise).
    """
    # TensorFlow is imported here, not at the top, to keep it out of light import paths (DAG files, config checks).
    import tensorflow as tf

    importlib.import_module("tensorflow_text")
    return tf


def load(path: str) -> Any:
    """Loads a local module directory (TF2 SavedModel or TF1 Hub format).

    It does what `hub.load(path)` does for a local directory (TF1 Hub-format
    modules with the empty tag set; the result's `_is_hub_module_v1` set, as
    `hub.KerasLayer` reads it), without importing `tensorflow_hub`, whose
    import pulls in tf_keras and pkg_resources that loading does not need.

    Args:
      path: a resolved, local module directory (see `registry.resolve`).

    Returns:
      The loaded object (`.signatures`, and for reusable modules `__call__`,
      `variables`, `trainable_variables`).

    Raises:
      ModuleError: the directory could not be loaded as a module.
    """
    tf = import_tf()
    is_hub_module_v1 = module_format(path) == "tf1_hub"
    try:
        if not any(os.path.isfile(os.path.join(path, name)) for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise ValueError(f"{path!r} contains neither saved_model.pb nor saved_model.pbtxt.")
        loaded = tf.compat.v1.saved_model.load_v2(path, tags=[] if is_hub_module_v1 else None)
    except Exception as e:  # TensorFlow raises many unrelated types here.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModuleError(f"Module at {path!r} could not be loaded: {type(e).__name__}: {first_line}") from e
    loaded._is_hub_module_v1 = is_hub_module_v1
    return loaded
