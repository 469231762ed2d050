"""Registering this package's resolvers with `tensorflow_hub`, so `hub.load(handle)` uses the same cache."""

from __future__ import annotations

from pipelines.hub.registry import RESOLVERS, resolve


class _TfHubAdapter:
    """Adapts our resolvers to tensorflow_hub's registry protocol (returns a path)."""

    def is_supported(self, handle: str) -> bool:
        return any(r.is_supported(handle) for r in RESOLVERS)

    def __call__(self, handle: str) -> str:
        return resolve(handle).path


_registered = False


def register_with_tfhub() -> None:
    """Makes `hub.load`/`hub.resolve`/`hub.KerasLayer` resolve handles through this package's resolvers."""
    global _registered
    if _registered:
        return
    # tensorflow_hub is imported here, not at the top: its import pulls in TensorFlow and tf_keras.
    from tensorflow_hub import registry

    registry.resolver.add_implementation(_TfHubAdapter())
    _registered = True
