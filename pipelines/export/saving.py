"""Writing a prepared source as a reusable TF2 SavedModel.

The saved root has the named signatures (each returns a dict; `default`
always present), a `__call__(inputs, training=False)` returning the `default`
output, `variables`, `trainable_variables`, empty `regularization_losses`,
and the lookup tables and assets the source tracks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.export import graph_asserts
from pipelines.export.errors import ExportError
from pipelines.export.sources import DEFAULT_OUTPUT_KEY, DEFAULT_SIGNATURE, Endpoint, PreparedSource, pack_inputs


def _tf():
    # Imported on first use: importing the export tool does not import TensorFlow.
    import tensorflow as tf

    return tf


def save(prepared: PreparedSource, path: str) -> None:
    """Traces the endpoints of `prepared` and writes them as a SavedModel at `path`.

    Checks are traced without AssertGuard conds (`graph_asserts.unguarded_asserts`).

    Raises:
      ExportError: the `default` signature has no `default` output, or the
        SavedModel cannot be written (e.g. a variable or table the source
        does not track).
    """
    with graph_asserts.unguarded_asserts():
        _trace_and_save(prepared, path)


def _signature_function(endpoint: Endpoint) -> Any:
    """A ConcreteFunction with keyword inputs returning a dict, for `tf.saved_model.save(signatures=...)`."""
    tf = _tf()

    def serve(**inputs: Any) -> dict[str, Any]:
        return endpoint.call(inputs, False)

    return tf.function(serve).get_concrete_function(**endpoint.inputs)


def _call_function(endpoint: Endpoint, inference: Any = None) -> Any:
    """The root's `__call__(inputs, training=False)`, traced for both values of `training`.

    Args:
      endpoint: what `__call__` runs.
      inference: the `default` signature's function when it runs the same
        endpoint: `training=False` then calls it instead of tracing the model a
        second time (one copy less of the graph for every load to rebuild).
    """
    tf = _tf()
    names = list(endpoint.inputs)

    def call(inputs: Any, training: bool = False) -> Any:
        by_name = inputs if isinstance(inputs, Mapping) else {names[0]: inputs}
        if not training and inference is not None:
            return inference(**by_name)[DEFAULT_OUTPUT_KEY]
        return endpoint.call(dict(by_name), training)[DEFAULT_OUTPUT_KEY]

    function = tf.function(call)
    spec = pack_inputs(endpoint.inputs)
    for training in (False, True):
        function.get_concrete_function(spec, training=training)
    return function


def _trace_and_save(prepared: PreparedSource, path: str) -> None:
    tf = _tf()
    signatures = {name: _signature_function(e) for name, e in prepared.signatures.items()}
    outputs = signatures[DEFAULT_SIGNATURE].structured_outputs
    if DEFAULT_OUTPUT_KEY not in outputs:
        raise ExportError(
            f"The {DEFAULT_SIGNATURE!r} signature returns {sorted(outputs)} without a {DEFAULT_OUTPUT_KEY!r} key."
        )
    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = list(prepared.variables)
    root.trainable_variables = list(prepared.trainable_variables)
    root.regularization_losses = []
    root.resources = list(prepared.resources)
    shared = prepared.call is prepared.signatures[DEFAULT_SIGNATURE]
    root.__call__ = _call_function(prepared.call, signatures[DEFAULT_SIGNATURE] if shared else None)
    try:
        tf.saved_model.save(root, path, signatures=signatures)
    except (AssertionError, TypeError, ValueError) as e:  # e.g. a variable or table the source does not track
        raise ExportError(f"The SavedModel could not be written: {type(e).__name__}: {e}") from e
