"""What an export starts from: detecting a source's kind, loading it from a path, and reducing it to endpoints.

A source is a Keras 3 or tf_keras model, a `tf.Module` whose signatures are
`tf.function`s with an `input_signature`, a loaded SavedModel (its variables
may have been trained since), a SavedModel directory or `.keras` / `.h5`
file, or a TF1 Hub-format module directory (migrated by
`pipelines.export.tf1_migrate`). `prepare` reduces any of them to
`PreparedSource`: one `Endpoint` per signature, the `__call__` endpoint, and
the variables and resources they use.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pipelines.export import tf1_migrate
from pipelines.export.errors import ExportError
from pipelines.hub import loading, module_dirs, module_info
from pipelines.hub.errors import ModuleError

DEFAULT_SIGNATURE = module_info.DEFAULT_SIGNATURE
DEFAULT_OUTPUT_KEY = module_info.DEFAULT_OUTPUT_KEY
SOURCE_KINDS = ("keras", "tf_keras", "tf_module", "saved_model", "tf1_hub")


@dataclasses.dataclass(frozen=True)
class Signature:
    """An explicit signature: a callable and the specs of its inputs.

    Attributes:
      fn: called as `fn(inputs)` or, if it has a `training` parameter,
        `fn(inputs, training=<bool>)`; `inputs` is a tensor when there is one
        input, else a dict keyed by input name. Returns a tensor or a dict of
        tensors. Every variable and resource it uses must be tracked by the
        export's `source`.
      inputs: input name -> `tf.TensorSpec`.
    """

    fn: Callable[..., Any]
    inputs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One function to export: `call(inputs_by_name, training) -> outputs_by_key`."""

    call: Callable[[dict[str, Any], bool], dict[str, Any]]
    inputs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PreparedSource:
    """A source reduced to what gets saved: endpoints plus the state they use."""

    kind: str
    description: str
    signatures: dict[str, Endpoint]
    call: Endpoint
    variables: list[Any]
    trainable_variables: list[Any]
    resources: list[Any]
    # A migrated TF1 module: what the manifest records about it, and its check against the TF1 module itself.
    source_info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source_check: Callable[[Mapping[str, Mapping[str, Any]], float], dict[str, Any]] | None = None


def _tf():
    # Imported on first use: importing the export tool does not import TensorFlow.
    import tensorflow as tf

    return tf


def _is_instance(obj: Any, module_name: str, class_name: str) -> bool:
    """isinstance check that never imports `module_name` (an object of it implies it is imported)."""
    module = sys.modules.get(module_name)
    return module is not None and isinstance(obj, getattr(module, class_name))


def _is_keras3_model(obj: Any) -> bool:
    return _is_instance(obj, "keras", "Model")


def _is_tf_keras_model(obj: Any) -> bool:
    return _is_instance(obj, "tf_keras", "Model")


def _is_loaded_saved_model(obj: Any) -> bool:
    tf = _tf()
    return isinstance(obj, tf.__internal__.tracking.Trackable) and isinstance(getattr(obj, "signatures", None), Mapping)


def source_kind(source: Any) -> str:
    """Returns the kind of an in-memory source, one of `SOURCE_KINDS`.

    Raises:
      ExportError: `source` is none of the supported kinds.
    """
    if tf1_migrate.is_migrated(source):
        return "tf1_hub"
    if _is_keras3_model(source):
        return "keras"
    if _is_tf_keras_model(source):
        return "tf_keras"
    if isinstance(source, _tf().Module):
        return "tf_module"
    if _is_loaded_saved_model(source):
        return "saved_model"
    raise ExportError(
        f"Cannot export a {type(source).__module__}.{type(source).__qualname__}: expected a Keras 3 or tf_keras "
        "model, a tf.Module, a loaded SavedModel, or a path to a SavedModel directory or .keras/.h5 file."
    )


def load_source(path: str) -> Any:
    """Loads a model file or SavedModel directory for export.

    Args:
      path: a SavedModel directory (TF2, loaded with `loading.load`), a TF1
        Hub-format module directory (migrated with `tf1_migrate.migrate`), a
        `.keras` file (Keras 3) or a `.h5` file (tf_keras).

    Raises:
      ExportError: the path does not exist, is not one of those, or cannot be loaded.
    """
    if os.path.isdir(path):
        if not module_dirs.is_module_dir(path):
            raise ExportError(f"Source {path!r} is a directory but not a SavedModel (no saved_model.pb).")
        if tf1_migrate.is_tf1_hub_module(path):
            try:
                return tf1_migrate.migrate(path)
            except tf1_migrate.MigrationError as e:
                raise ExportError(f"TF1 Hub module {path!r} cannot be migrated: {e}") from e
        try:
            return loading.load(path)
        except ModuleError as e:
            raise ExportError(str(e)) from e
    if not os.path.exists(path):
        raise ExportError(f"Source {path!r} does not exist.")
    if path.endswith(".keras"):
        import keras as loader
    elif path.endswith(".h5"):
        import tf_keras as loader
    else:
        raise ExportError(f"Source {path!r} is a file but not a .keras or .h5 model (nor a SavedModel directory).")
    try:
        return loader.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many unrelated types for unreadable files.
        raise ExportError(f"Source {path!r} could not be loaded as a Keras model: {type(e).__name__}: {e}") from e


def pack_inputs(tensors: Mapping[str, Any]) -> Any:
    """The call convention of exported functions: one input as a tensor, several as a dict."""
    return next(iter(tensors.values())) if len(tensors) == 1 else dict(tensors)


def _as_outputs(result: Any) -> dict[str, Any]:
    if isinstance(result, Mapping):
        return {str(k): v for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        raise ExportError(
            "A signature returned a list/tuple of outputs; return a tensor or a dict of named tensors instead."
        )
    return {DEFAULT_OUTPUT_KEY: result}


def _accepts_training(fn: Any) -> bool:
    try:
        return "training" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _spec(shape: Any, dtype: Any, name: str) -> Any:
    tf = _tf()
    return tf.TensorSpec(tf.TensorShape(shape), tf.as_dtype(dtype), name=name)


def _explicit_endpoint(signature: Signature) -> Endpoint:
    fn = signature.fn
    inputs = {name: _spec(s.shape, s.dtype, name) for name, s in signature.inputs.items()}
    if not inputs:
        raise ExportError("A Signature needs at least one input spec.")
    if _accepts_training(fn):
        return Endpoint(lambda x, training: _as_outputs(fn(pack_inputs(x), training=training)), inputs)
    return Endpoint(lambda x, training: _as_outputs(fn(pack_inputs(x))), inputs)


def _keras_endpoint(model: Any) -> Endpoint:
    tensors = getattr(model, "inputs", None)
    if not tensors:
        raise ExportError(
            f"Keras model {model.name!r} has no defined inputs (subclassed or unbuilt); build it from "
            "keras.Input(...) or pass signatures={'default': Signature(fn, inputs)}."
        )
    inputs = {}
    for tensor in tensors:
        name = tensor.name.split(":")[0]
        inputs[name] = _spec(tensor.shape, tensor.dtype, name)
    return Endpoint(lambda x, training: _as_outputs(model(pack_inputs(x), training=training)), inputs)


def _function_endpoint(fn: Any) -> Endpoint:
    """A tf.function with an input_signature; a `training` parameter is fed a Python bool."""
    if fn.input_signature is None:
        raise ExportError(f"tf.function {fn.name!r} has no input_signature; give it one so it can be exported.")
    params = list(inspect.signature(fn).parameters)
    specs = dict(zip(params, fn.input_signature))
    inputs = {name: _spec(s.shape, s.dtype, name) for name, s in specs.items() if name != "training"}
    names = list(inputs)  # positional order; the dict a caller passes may be ordered differently
    if "training" in params:
        return Endpoint(lambda x, training: _as_outputs(fn(*[x[n] for n in names], training=training)), inputs)
    return Endpoint(lambda x, training: _as_outputs(fn(*[x[n] for n in names])), inputs)


def _concrete_endpoint(fn: Any) -> Endpoint:
    """A signature-style ConcreteFunction (keyword inputs), e.g. from a loaded SavedModel's `.signatures`."""
    args, kwargs = fn.structured_input_signature
    if args or not kwargs:
        raise ExportError(
            "A ConcreteFunction signature must take named (keyword) inputs only, like a loaded SavedModel's "
            "`.signatures`; pass the tf.function itself instead."
        )
    inputs = {name: _spec(s.shape, s.dtype, name) for name, s in kwargs.items()}
    return Endpoint(lambda x, training: _as_outputs(fn(**x)), inputs)


def _endpoint(obj: Any) -> Endpoint:
    """Normalizes anything accepted as a signature to an `Endpoint`."""
    tf = _tf()
    if isinstance(obj, Signature):
        return _explicit_endpoint(obj)
    if _is_keras3_model(obj) or _is_tf_keras_model(obj):
        return _keras_endpoint(obj)
    if isinstance(obj, tf.types.experimental.ConcreteFunction):
        return _concrete_endpoint(obj)
    if isinstance(obj, tf.types.experimental.PolymorphicFunction):
        return _function_endpoint(obj)
    raise ExportError(
        f"Unsupported signature {type(obj).__qualname__}: expected a Keras model, a tf.function with an "
        "input_signature, a signature ConcreteFunction, or export.Signature(fn, inputs)."
    )


def _default_signatures(source: Any, kind: str) -> dict[str, Any]:
    """The signatures a source exports when none are given."""
    if kind in ("keras", "tf_keras"):
        return {DEFAULT_SIGNATURE: source}
    if kind == "tf_module":
        call = getattr(source, "__call__", None)  # noqa: B004 (its input_signature is read, not its callability)
        if getattr(call, "input_signature", None) is None:
            raise ExportError(
                f"tf.Module {type(source).__qualname__} has no tf.function __call__ with an input_signature; pass "
                "signatures={'default': module.some_tf_function, ...}."
            )
        return {DEFAULT_SIGNATURE: call}
    if kind == "tf1_hub":
        return {name: Signature(source.signature_fn(name), source.input_specs(name)) for name in source.signature_names}
    signatures = dict(source.signatures)
    if DEFAULT_SIGNATURE not in signatures and "serving_default" in signatures:
        signatures[DEFAULT_SIGNATURE] = signatures.pop("serving_default")
    return signatures


def _call_endpoint(source: Any, kind: str, default: Endpoint) -> Endpoint:
    """The endpoint behind the exported `__call__`: the default signature, or a reusable source's own call."""
    if kind == "saved_model" and callable(source) and _accepts_training(source.__call__):
        return _explicit_endpoint(Signature(source.__call__, default.inputs))
    return default


def _unwrap_variable(variable: Any) -> Any:
    """A Keras 3 variable's backing tf.Variable; tf.Variables pass through."""
    tf = _tf()
    return variable if isinstance(variable, tf.Variable) else variable.value


def _state(source: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """Variables, trainable variables and resources (lookup tables, assets) of a source."""
    tf = _tf()
    from tensorflow.saved_model.experimental import TrackableResource

    variables = getattr(source, "variables", None)
    if variables is None:  # A non-reusable SavedModel: what its signatures capture.
        variables = list({id(v): v for fn in source.signatures.values() for v in fn.variables}.values())
    variables = [_unwrap_variable(v) for v in variables]
    trainable = getattr(source, "trainable_variables", None)
    trainable = [v for v in variables if v.trainable] if trainable is None else [_unwrap_variable(v) for v in trainable]
    resources = [
        d
        for d in tf.train.TrackableView(source).descendants()
        if isinstance(d, (TrackableResource, tf.saved_model.Asset))
    ]
    return variables, trainable, resources


def _describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    label = getattr(source, "name", None)
    cls = f"{type(source).__module__}.{type(source).__qualname__}"
    return f"{cls} {label!r}" if isinstance(label, str) else cls


def prepare(source: Any, signatures: Mapping[str, Any] | None, description: str | None) -> PreparedSource:
    """Loads `source` if it is a path and reduces it to its endpoints and state.

    Args:
      source: an in-memory source or a path (see the module docstring).
      signatures: signature name -> Keras model, tf.function with an
        input_signature, signature ConcreteFunction or `Signature`; None for
        the source's own (see `pipelines.export.export_module`).
      description: how the manifest describes the source; None for its path
        or class and name.

    Raises:
      ExportError: the source or a signature cannot be exported, or there is
        no `default` signature.
    """
    obj = load_source(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else source
    kind = source_kind(obj)
    endpoints = {name: _endpoint(s) for name, s in (signatures or _default_signatures(obj, kind)).items()}
    if DEFAULT_SIGNATURE not in endpoints:
        raise ExportError(
            f"Signatures {sorted(endpoints)} have no {DEFAULT_SIGNATURE!r} signature; a hub module must have one."
        )
    variables, trainable, resources = _state(obj)
    return PreparedSource(
        kind=kind,
        description=description or _describe_source(source),
        signatures=endpoints,
        call=_call_endpoint(obj, kind, endpoints[DEFAULT_SIGNATURE]),
        variables=variables,
        trainable_variables=trainable,
        resources=resources,
        source_info=obj.source_record() if kind == "tf1_hub" else {},
        source_check=obj.verify if kind == "tf1_hub" else None,
    )
