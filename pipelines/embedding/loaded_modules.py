"""The modules a worker process has loaded: one copy per module fingerprint, loaded on first use."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.hub import loading
from pipelines.hub.resolver import ResolvedModule


@dataclasses.dataclass
class LoadedModule:
    """A loaded module and its bound signature (the module object keeps the signature alive)."""

    module: Any
    call: Callable[[dict[str, Any]], dict[str, np.ndarray]]


_LOADED: dict[str, Any] = {}
_LOADED_LOCK = threading.Lock()


def load_module(resolved: ResolvedModule) -> Any:
    """Loads a resolved module once per process, keyed by its content fingerprint.

    When the launcher has to load the module to describe it (its description
    is not cached yet), the in-process runner's workers reuse that copy
    instead of loading a second one.
    """
    with _LOADED_LOCK:
        if resolved.fingerprint not in _LOADED:
            _LOADED[resolved.fingerprint] = loading.load(resolved.path)
        return _LOADED[resolved.fingerprint]


class LazyModule:
    """A worker's model, loaded on first use: a worker that gets no rows never loads it.

    It offers what `LoadedModule` does (`module`, `call`). The first use runs
    `load` once, under a lock, whichever thread comes first; the others wait
    for it. A load that fails raises to its caller and is tried again on the
    next use (a retried bundle).
    """

    def __init__(self, load: Callable[[], LoadedModule]):
        self._load = load
        self._lock = threading.Lock()
        self._model: LoadedModule | None = None

    @property
    def loaded(self) -> bool:
        """Whether the module has been loaded."""
        return self._model is not None

    def get(self) -> LoadedModule:
        """The loaded module, loading it first if needed."""
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    @property
    def module(self) -> Any:
        """The loaded module object (loading it first if needed)."""
        return self.get().module

    def call(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Calls the bound signature (loading the module on the first call)."""
        return self.get().call(inputs)


def ensure_loaded(model: LoadedModule | LazyModule) -> LoadedModule:
    """The loaded module behind a `HubModelHandler.load_model` result, loading it now if it is not yet.

    `run_inference` starts with it, so that the load happens before any input
    tensor is built (the first of which imports TensorFlow: part of the load)
    and so that a load that fails fails the bundle, rather than each row's call.
    """
    return model.get() if isinstance(model, LazyModule) else model
