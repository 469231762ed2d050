"""What makes a directory a TF Hub module, and which of the two formats it is in."""

from __future__ import annotations

import os

from pipelines.hub.errors import HandleError

TF2_MARKER = "saved_model.pb"
TF1_HUB_MARKER = "tfhub_module.pb"


def is_module_dir(path: str) -> bool:
    """Returns True if `path` holds a TF2 SavedModel or a TF1 Hub-format module."""
    return os.path.isfile(os.path.join(path, TF2_MARKER)) or os.path.isfile(os.path.join(path, TF1_HUB_MARKER))


def require_module_dir(path: str, handle: str) -> None:
    """Raises HandleError unless `path` is a module directory, listing what it holds instead.

    Args:
      path: the local directory the handle resolved to.
      handle: how to name the module in the message (redacted by the caller).

    Raises:
      HandleError: `path` has neither marker file.
    """
    if is_module_dir(path):
        return
    try:
        listing = sorted(os.listdir(path))[:20]
    except OSError:
        listing = []
    raise HandleError(
        f"{handle!r} is not a TF Hub module: it has neither {TF2_MARKER} (TF2 SavedModel) "
        f"nor {TF1_HUB_MARKER} (TF1 Hub format). Found: {listing or 'nothing'}."
    )


def module_format(path: str) -> str:
    """Returns "tf1_hub" for a TF1 Hub-format module directory, else "tf2"."""
    return "tf1_hub" if os.path.isfile(os.path.join(path, TF1_HUB_MARKER)) else "tf2"
