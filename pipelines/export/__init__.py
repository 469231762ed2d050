"""Export any trained model as a verified, versioned, reusable TF Hub module.

`export_module(source, root, name)` turns one of

* a Keras 3 model (`keras.Model`, TensorFlow backend),
* a tf_keras model (`tf_keras.Model`),
* a `tf.Module` whose signatures are `tf.function`s with an `input_signature`,
* an existing SavedModel: a directory path, or an object returned by
  `pipelines.hub.modules.load` / `hub.load` (its variables may have been trained
  since it was loaded), or a `.keras` (Keras 3) / `.h5` (tf_keras) model file,
* a TF1 Hub-format module directory (`tfhub_module.pb`): migrated by
  `pipelines.export.tf1_migrate` into trainable tf.Variables and functions of its
  `{}` graph (`training=False`) and `{"train"}` graph (`training=True`), with
  its tables and assets, and verified against the TF1 module itself on the
  probe inputs before it is written (recorded under `source` in module.json,
  with the TF1 module's format and fingerprint),

into a reusable TF2 SavedModel at `<root>/<name>/<version>/`:

* named signatures, `default` always present. Every signature returns a dict
  (a single tensor becomes `{"default": tensor}`); the `default` signature's
  dict must have a `default` key.
* the root object is callable: `hub.load(path)(inputs, training=False)`
  returns the `default` output tensor of the `default` signature. `inputs` is
  a tensor when that signature has one input, else a dict keyed by input name.
  `training` is a Python bool passed on to the model (dropout etc.); a
  SavedModel source passes it on only if it was itself reusable.
* `variables`, `trainable_variables` and `regularization_losses` (always empty)
  on the root, so `hub.KerasLayer(path, trainable=True)` trains the weights.
* lookup tables and `tf.saved_model.Asset`s the source tracks are saved, their
  files copied into `assets/`, so preprocessing runs in-graph after export.
* `module.json` (see `export_module`) with the content fingerprint of
  `handles.fingerprint_dir`.

Publishing is atomic and verified: the module is written to a hidden
`<root>/<name>/.export-*` directory, reloaded with `modules.load`, and every
signature (and `__call__`) is compared with the in-memory source on probe
inputs. Only if the largest absolute difference is at most `atol` is the
directory renamed to its version; otherwise `ExportVerificationError` is raised
and nothing is published.

`precision="bfloat16"` (`--precision bfloat16`) writes a version whose heavy
ops (matmuls, convolutions) compute in bfloat16 (`pipelines.export.precision`), same
signatures, inputs and outputs; it is verified against the float32 source by
cosine instead (min per output vector >= `min_cosine`, default 0.999; a share
>= `min_agreement` of each other output's elements equal, default all), and
`module.json` records the precision, the probe set and the measured min/mean
cosine and agreement. Exports of one name are serialized by an `fcntl`
lock on `<root>/<name>/.lock` (released by the kernel if the holder dies), so
concurrent exporters get distinct versions and an existing version is never
overwritten. `root` must be a local filesystem; `pack=True` also writes
`<root>/<name>/<version>.tar.gz`, which any http(s)/gs/s3 handle can serve.

CLI: `python -m pipelines.export --source PATH --root ROOT --name NAME
[--version N] [--pack] [--precision bfloat16 [--min-cosine C] [--min-agreement A]]` prints the written path and fingerprint.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pipelines import console
from pipelines.export import graph_asserts, tf1_migrate
from pipelines.export import precision as reduced_precision
from pipelines.hub import archives, handles, locks, modules

DEFAULT_SIGNATURE = modules.DEFAULT_SIGNATURE
DEFAULT_OUTPUT_KEY = modules.DEFAULT_OUTPUT_KEY
DEFAULT_ATOL = 1e-5
PACKAGE = "hub-embed"
SOURCE_KINDS = ("keras", "tf_keras", "tf_module", "saved_model", "tf1_hub")
# Synthetic probe inputs: strings cycle through these; unknown dimensions get PROBE_SIZE.
PROBE_TEXTS = ("The quick brown fox jumps over the lazy dog.", "", "naïve café, 東京 and emoji 🙂", "a")
PROBE_SIZE = 3
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TEMP_PREFIX = ".export-"
_LOCK_NAME = ".lock"
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ExportError(ValueError):
    """An export that cannot be done: bad source, signature, name or version."""


class ExportVerificationError(ExportError):
    """The written module does not reproduce the in-memory model; nothing was published."""


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
class ModuleRef:
    """Identifies a module version, e.g. the parent of a fine-tuned export.

    Attributes:
      handle: the handle it was resolved from (credentials are redacted when written).
      fingerprint: content fingerprint of the module's files.
      name: module name from its manifest, if any.
      version: module version from its manifest, if any.
    """

    handle: str
    fingerprint: str
    name: str | None = None
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "handle": handles.redact(self.handle),
        }


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """A published module version.

    Attributes:
      path: the version directory, `<root>/<name>/<version>`.
      version: the version number.
      fingerprint: `handles.fingerprint_dir(path)`.
      manifest: the contents of its `module.json`.
      tar_path: `<root>/<name>/<version>.tar.gz` when packed, else None.
    """

    path: str
    version: int
    fingerprint: str
    manifest: dict[str, Any]
    tar_path: str | None = None


def module_ref(handle: str) -> ModuleRef:
    """Resolves a module handle and reads its identity (for `export_module(parent=...)`).

    Raises:
      handles.HandleError: the handle cannot be resolved.
    """
    resolved = handles.resolve(handle)
    manifest = modules.read_manifest(resolved.path)
    return ModuleRef(handle, resolved.fingerprint, manifest.get("name"), manifest.get("version"))


# --------------------------------------------------------------------------- layout


def version_dir(root: str, name: str, version: int) -> str:
    """Returns `<root>/<name>/<version>`."""
    return os.path.join(root, name, str(version))


def list_versions(root: str, name: str) -> list[int]:
    """Returns the published versions of `name` under `root`, ascending."""
    try:
        entries = os.listdir(os.path.join(root, name))
    except FileNotFoundError:
        return []
    return sorted(int(e) for e in entries if e.isdigit() and os.path.isdir(os.path.join(root, name, e)))


def latest_version(root: str, name: str) -> int | None:
    """Returns the highest published version of `name`, or None if there is none."""
    versions = list_versions(root, name)
    return versions[-1] if versions else None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.isdigit():
        raise ExportError(
            f"Invalid module name {name!r}: use letters, digits, '.', '_' or '-' (starting with a letter or "
            "digit, not only digits, at most 128 characters)."
        )


def _choose_version(root: str, name: str, version: int | None) -> int:
    """Picks the version to write (caller holds the name lock)."""
    if version is None:
        return (latest_version(root, name) or 0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"Module version must be a positive integer, got {version!r}.")
    if os.path.exists(version_dir(root, name, version)):
        raise ExportError(
            f"Version {version} of module {name!r} already exists at {version_dir(root, name, version)}; "
            "versions are never overwritten (omit the version to write the next one)."
        )
    return version


def _remove_stale_temps(name_dir: str) -> None:
    """Deletes temp dirs of crashed exports (safe: the caller holds the name lock)."""
    for entry in os.listdir(name_dir):
        if entry.startswith(_TEMP_PREFIX):
            shutil.rmtree(os.path.join(name_dir, entry), ignore_errors=True)


# --------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class _Endpoint:
    """One function to export: `call(inputs_by_name, training) -> outputs_by_key`."""

    call: Callable[[dict[str, Any], bool], dict[str, Any]]
    inputs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """A source reduced to what gets saved: endpoints plus the state they use."""

    kind: str
    description: str
    signatures: dict[str, _Endpoint]
    call: _Endpoint
    variables: list[Any]
    trainable_variables: list[Any]
    resources: list[Any]
    # A migrated TF1 module: what the manifest records about it, and its check against the TF1 module itself.
    source_info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source_check: Callable[[Mapping[str, Mapping[str, Any]], float], dict[str, Any]] | None = None


def _tf():
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
      path: a SavedModel directory (TF2, loaded with `modules.load`), a TF1
        Hub-format module directory (migrated with `tf1_migrate.migrate`), a
        `.keras` file (Keras 3) or a `.h5` file (tf_keras).

    Raises:
      ExportError: the path does not exist, is not one of those, or cannot be loaded.
    """
    if os.path.isdir(path):
        if not handles.is_module_dir(path):
            raise ExportError(f"Source {path!r} is a directory but not a SavedModel (no saved_model.pb).")
        if tf1_migrate.is_tf1_hub_module(path):
            try:
                return tf1_migrate.migrate(path)
            except tf1_migrate.MigrationError as e:
                raise ExportError(f"TF1 Hub module {path!r} cannot be migrated: {e}") from e
        try:
            return modules.load(path)
        except modules.ModuleError as e:
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


def _pack_inputs(tensors: Mapping[str, Any]) -> Any:
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


def _explicit_endpoint(signature: Signature) -> _Endpoint:
    fn = signature.fn
    inputs = {name: _spec(s.shape, s.dtype, name) for name, s in signature.inputs.items()}
    if not inputs:
        raise ExportError("A Signature needs at least one input spec.")
    if _accepts_training(fn):
        return _Endpoint(lambda x, training: _as_outputs(fn(_pack_inputs(x), training=training)), inputs)
    return _Endpoint(lambda x, training: _as_outputs(fn(_pack_inputs(x))), inputs)


def _keras_endpoint(model: Any) -> _Endpoint:
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
    return _Endpoint(lambda x, training: _as_outputs(model(_pack_inputs(x), training=training)), inputs)


def _function_endpoint(fn: Any) -> _Endpoint:
    """A tf.function with an input_signature; a `training` parameter is fed a Python bool."""
    if fn.input_signature is None:
        raise ExportError(f"tf.function {fn.name!r} has no input_signature; give it one so it can be exported.")
    params = list(inspect.signature(fn).parameters)
    specs = dict(zip(params, fn.input_signature))
    inputs = {name: _spec(s.shape, s.dtype, name) for name, s in specs.items() if name != "training"}
    names = list(inputs)  # positional order; the dict a caller passes may be ordered differently
    if "training" in params:
        return _Endpoint(lambda x, training: _as_outputs(fn(*[x[n] for n in names], training=training)), inputs)
    return _Endpoint(lambda x, training: _as_outputs(fn(*[x[n] for n in names])), inputs)


def _concrete_endpoint(fn: Any) -> _Endpoint:
    """A signature-style ConcreteFunction (keyword inputs), e.g. from a loaded SavedModel's `.signatures`."""
    args, kwargs = fn.structured_input_signature
    if args or not kwargs:
        raise ExportError(
            "A ConcreteFunction signature must take named (keyword) inputs only, like a loaded SavedModel's "
            "`.signatures`; pass the tf.function itself instead."
        )
    inputs = {name: _spec(s.shape, s.dtype, name) for name, s in kwargs.items()}
    return _Endpoint(lambda x, training: _as_outputs(fn(**x)), inputs)


def _endpoint(obj: Any) -> _Endpoint:
    """Normalizes anything accepted as a signature to an `_Endpoint`."""
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


def _call_endpoint(source: Any, kind: str, default: _Endpoint) -> _Endpoint:
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


def _prepare(source: Any, signatures: Mapping[str, Any] | None, description: str | None) -> _Prepared:
    obj = load_source(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else source
    kind = source_kind(obj)
    endpoints = {name: _endpoint(s) for name, s in (signatures or _default_signatures(obj, kind)).items()}
    if DEFAULT_SIGNATURE not in endpoints:
        raise ExportError(
            f"Signatures {sorted(endpoints)} have no {DEFAULT_SIGNATURE!r} signature; a hub module must have one."
        )
    variables, trainable, resources = _state(obj)
    return _Prepared(
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


# --------------------------------------------------------------------------- saving


def _signature_function(endpoint: _Endpoint) -> Any:
    """A ConcreteFunction with keyword inputs returning a dict, for `tf.saved_model.save(signatures=...)`."""
    tf = _tf()

    def serve(**inputs: Any) -> dict[str, Any]:
        return endpoint.call(inputs, False)

    return tf.function(serve).get_concrete_function(**endpoint.inputs)


def _call_function(endpoint: _Endpoint, inference: Any = None) -> Any:
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
    spec = _pack_inputs(endpoint.inputs)
    for training in (False, True):
        function.get_concrete_function(spec, training=training)
    return function


def _save(prepared: _Prepared, path: str) -> None:
    # Checks traced without AssertGuard conds: a module with ragged ops loads ≈40% faster.
    with graph_asserts.unguarded_asserts():
        _trace_and_save(prepared, path)


def _trace_and_save(prepared: _Prepared, path: str) -> None:
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


# --------------------------------------------------------------------------- verification


def synthetic_probe(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Deterministic probe values for input specs: texts, floats in [0, 1), ints/bools in {0, 1}.

    Unknown dimensions get size `PROBE_SIZE`.

    Raises:
      ExportError: an input of unknown rank or unsupported dtype (pass `probe_inputs`).
    """
    tf = _tf()
    rng = np.random.default_rng(0)
    probe = {}
    for name, spec in inputs.items():
        if spec.shape.rank is None:
            raise ExportError(f"Input {name!r} has unknown rank; pass probe_inputs for it.")
        shape = [PROBE_SIZE if d is None else d for d in spec.shape.as_list()]
        if spec.dtype == tf.string:
            probe[name] = np.resize(np.array(PROBE_TEXTS, dtype=object), shape)
        elif spec.dtype.is_floating:
            probe[name] = rng.random(shape).astype(spec.dtype.as_numpy_dtype)
        elif spec.dtype.is_integer or spec.dtype == tf.bool:
            probe[name] = rng.integers(0, 2, shape).astype(spec.dtype.as_numpy_dtype)
        else:
            raise ExportError(f"No synthetic probe for input {name!r} of dtype {spec.dtype.name}; pass probe_inputs.")
    return probe


def max_abs_diff(expected: Any, actual: Any) -> float:
    """Largest absolute difference (inf for mismatched shapes or unequal non-float values)."""
    a, b = np.asarray(expected), np.asarray(actual)
    if a.shape != b.shape:
        return float("inf")
    if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
        return 0.0 if np.array_equal(a, b) else float("inf")
    if a.size == 0:
        return 0.0
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.max(np.where(np.isnan(a) & np.isnan(b), 0.0, diff)))


def _same_keys(what: str, expected: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    if set(expected) != set(actual):
        raise ExportVerificationError(f"{what}: reloaded outputs {sorted(actual)} differ from {sorted(expected)}.")


def _outputs_side_by_side(
    prepared: _Prepared, loaded: Any, probes: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """(source outputs, reloaded outputs) per signature and for `__call__`, on the probe inputs."""
    tf = _tf()
    pairs = {}
    for name, endpoint in prepared.signatures.items():
        probe = {k: tf.constant(v) for k, v in probes[name].items()}
        expected, actual = endpoint.call(probe, False), loaded.signatures[name](**probe)
        _same_keys(f"Signature {name!r}", expected, actual)
        pairs[name] = (expected, actual)
    call_probe = {k: tf.constant(v) for k, v in probes[DEFAULT_SIGNATURE].items()}
    expected = prepared.call.call(call_probe, False)[DEFAULT_OUTPUT_KEY]
    pairs["__call__"] = ({DEFAULT_OUTPUT_KEY: expected}, {DEFAULT_OUTPUT_KEY: loaded(_pack_inputs(call_probe))})
    return pairs


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How closely a written module must reproduce its source on the probe inputs.

    Attributes:
      precision: the module's compute precision (`pipelines.export.precision.PRECISIONS`).
      atol: float32: the largest absolute difference allowed in any output.
      min_cosine: reduced precision: the smallest cosine allowed between a
        source vector and the module's (`pipelines.export.precision.cosine_stats`).
      min_agreement: reduced precision: the smallest share of equal elements
        in each non-float output (`pipelines.export.precision.agreement`).
    """

    precision: str = reduced_precision.FLOAT32
    atol: float = DEFAULT_ATOL
    min_cosine: float = reduced_precision.DEFAULT_MIN_COSINE
    min_agreement: float = reduced_precision.DEFAULT_MIN_AGREEMENT


def _verify(
    prepared: _Prepared, loaded: Any, probes: Mapping[str, Mapping[str, Any]], tolerance: Tolerance
) -> dict[str, Any]:
    """Compares every reloaded signature and `__call__` with the in-memory source.

    Returns:
      The manifest's `verification` entry: max abs difference per signature
      (and `__call__`); for a reduced precision also the cosine per signature
      and its overall min and mean.

    Raises:
      ExportVerificationError: outside `tolerance`, or different outputs.
    """
    pairs = _outputs_side_by_side(prepared, loaded, probes)
    floats_only = tolerance.precision != reduced_precision.FLOAT32  # then other outputs are compared by agreement
    diffs = {
        name: max((max_abs_diff(e[k], a[k]) for k in e if not floats_only or _is_float(e[k])), default=0.0)
        for name, (e, a) in pairs.items()
    }
    if tolerance.precision == reduced_precision.FLOAT32:
        failed = {k: v for k, v in diffs.items() if not v <= tolerance.atol}
        if failed:
            raise ExportVerificationError(
                f"The reloaded module does not reproduce the model (max abs diff must be <= {tolerance.atol:g}): "
                + ", ".join(f"{k}: {v:.3g}" for k, v in sorted(failed.items()))
            )
        return {"metric": "max_abs_diff", "atol": tolerance.atol, "max_abs_diff": dict(sorted(diffs.items()))}
    cosines, agreements = {}, {}
    for name, (expected, actual) in pairs.items():
        stats = []
        for key in expected:
            if _is_float(expected[key]):
                stats.append(reduced_precision.cosine_stats(expected[key], actual[key]))
            else:
                agreements[f"{name}/{key}"] = reduced_precision.agreement(expected[key], actual[key])
        cosines[name] = _combined(stats)
    low = {k: v["min"] for k, v in cosines.items() if not v["min"] >= tolerance.min_cosine}
    unequal = {k: v for k, v in agreements.items() if not v["share"] >= tolerance.min_agreement}
    if unequal or low:
        hint = (
            (
                " (an integer output computed from scores, such as an argmax, changes where bfloat16 rounds two "
                "close scores to a tie; --min-agreement, or min_agreement=, accepts a share)"
            )
            if unequal
            else ""
        )
        raise ExportVerificationError(
            f"The {tolerance.precision} module does not reproduce its source (min cosine per vector must "
            f"be >= {tolerance.min_cosine:g}, share of equal elements per other output >= {tolerance.min_agreement:g}): "
            + ", ".join(
                [
                    *(f"{k}: min cosine {v:.6f}" for k, v in sorted(low.items())),
                    *(f"{k}: {v['equal']} of {v['elements']} elements equal" for k, v in sorted(unequal.items())),
                ]
            )
            + hint
        )
    overall = _combined(list(cosines.values()))
    return {
        "metric": "cosine",
        "reference": "the source, in memory",
        "min_cosine_required": tolerance.min_cosine,
        "min_cosine": overall["min"],
        "mean_cosine": overall["mean"],
        "cosine": dict(sorted(cosines.items())),
        "min_agreement_required": tolerance.min_agreement,
        "agreement": {k: v["share"] for k, v in sorted(agreements.items())},
        "max_abs_diff": dict(sorted(diffs.items())),
    }


def _check_fraction(name: str, value: Any, zero_allowed: bool) -> None:
    """Raises ExportError unless `value` is a number in [0, 1] (or (0, 1])."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not ((value >= 0 if zero_allowed else value > 0) and value <= 1):
        raise ExportError(f"{name} must be a number in {'[' if zero_allowed else '('}0, 1], got {value!r}.")


def _is_float(value: Any) -> bool:
    return np.issubdtype(np.asarray(value).dtype, np.floating)


def _combined(stats: Sequence[Mapping[str, float | int]]) -> dict[str, float | int]:
    """Min, vector-weighted mean and count over several `pipelines.export.precision.cosine_stats` results."""
    vectors = sum(s["vectors"] for s in stats)
    if not vectors:
        return {"min": 1.0, "mean": 1.0, "vectors": 0}
    mean = sum(s["mean"] * s["vectors"] for s in stats) / vectors
    return {"min": min(s["min"] for s in stats if s["vectors"]), "mean": mean, "vectors": vectors}


def probe_record(probes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the manifest records about the probe inputs: rows and a content hash per signature."""
    record = {}
    for name, inputs in sorted(probes.items()):
        digest = hashlib.sha256()
        rows = 0
        for key, value in sorted(inputs.items()):
            array = np.asarray(value)
            rows = max(rows, array.shape[0] if array.ndim else 1)
            digest.update(f"{key}|{array.dtype.kind}|{array.shape}|".encode())
            if array.dtype.kind in "OSU":
                for item in array.reshape(-1):
                    data = item if isinstance(item, bytes) else str(item).encode("utf-8")
                    digest.update(len(data).to_bytes(8, "little") + data)
            else:
                digest.update(np.ascontiguousarray(array).tobytes())
        record[name] = {"rows": rows, "sha256": digest.hexdigest()}
    return record


def _probes(prepared: _Prepared, probe_inputs: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    given = dict(probe_inputs or {})
    unknown = set(given) - set(prepared.signatures)
    if unknown:
        raise ExportError(
            f"probe_inputs for unknown signatures {sorted(unknown)}; signatures: {sorted(prepared.signatures)}."
        )
    return {
        name: dict(given[name]) if name in given else synthetic_probe(endpoint.inputs)
        for name, endpoint in prepared.signatures.items()
    }


# --------------------------------------------------------------------------- manifest


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=_REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _package_version() -> str | None:
    """The installed package's version, else the one in the source tree's pyproject.toml."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with open(os.path.join(_REPO_DIR, "pyproject.toml"), "rb") as f:
            return tomllib.load(f)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None


def code_version() -> dict[str, Any]:
    """The exporting code: package version, git commit and whether the work tree had local changes."""
    commit = _git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"package": PACKAGE, "version": _package_version(), "git_commit": commit, "git_dirty": dirty}


def _redact_urls(value: Any) -> Any:
    """Drops credentials from every URL-like string in a JSON-like value."""
    if isinstance(value, str):
        return handles.redact(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {str(k): _redact_urls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_urls(v) for v in value]
    return value


def _manifest(
    name: str,
    version: int,
    info: modules.ModuleInfo,
    prepared: _Prepared,
    parent: ModuleRef | None,
    verification: Mapping[str, Any],
    compute: Mapping[str, Any],
    extra: Mapping[str, Any] | None,
    batch_size: int | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "fingerprint": info.fingerprint,
        "format": info.format,
        "reusable": info.reusable,
        "num_variables": info.num_variables,
        "num_trainable_variables": info.num_trainable_variables,
        "signatures": {k: v.to_dict() for k, v in sorted(info.signatures.items())},
        "source": {"kind": prepared.kind, "description": handles.redact(prepared.description), **prepared.source_info},
        "parent": parent.to_dict() if parent else None,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "precision": dict(compute),
        "verification": dict(verification),
        "serving": {"batch_size": batch_size} if batch_size else {},
        "extra": _redact_urls(dict(extra or {})),
    }


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- export


def export_module(
    source: Any,
    root: str,
    name: str,
    *,
    signatures: Mapping[str, Any] | None = None,
    version: int | None = None,
    parent: ModuleRef | None = None,
    probe_inputs: Mapping[str, Mapping[str, Any]] | None = None,
    source_description: str | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    pack: bool = False,
    atol: float = DEFAULT_ATOL,
    precision: str = reduced_precision.FLOAT32,
    min_cosine: float = reduced_precision.DEFAULT_MIN_COSINE,
    min_agreement: float = reduced_precision.DEFAULT_MIN_AGREEMENT,
) -> ExportResult:
    """Exports `source` as a verified, reusable TF Hub module version `<root>/<name>/<version>/`.

    Args:
      source: a Keras 3 or tf_keras model, a `tf.Module`, a loaded SavedModel,
        or a path (SavedModel directory, `.keras` or `.h5` file); see the module
        docstring. It must track every variable and resource its signatures use.
      root: local directory holding all modules.
      name: module name (letters, digits, `.`, `_`, `-`).
      signatures: signature name -> Keras model, tf.function with an
        input_signature, signature ConcreteFunction or `Signature`; must include
        `default`. Defaults: a Keras model is the `default` signature; a
        `tf.Module`'s `__call__` tf.function is; a SavedModel keeps its
        signatures (`serving_default` becomes `default` if there is none).
      version: version to write; must not exist. Default: highest existing + 1.
      parent: the module this one derives from (see `module_ref`), recorded in the manifest.
      probe_inputs: signature name -> {input name: array} used for verification;
        signatures not listed get `synthetic_probe` inputs.
      source_description: how to describe the source in the manifest (default:
        its path or class and name).
      extra_manifest: JSON-serializable data stored under `extra` in the
        manifest (e.g. data hash, hyperparameters, metrics); credentials in URLs
        are redacted.
      batch_size: rows per call the module is best called with, stored as
        `serving.batch_size`; embedding jobs use it unless told otherwise
        (e.g. a module that sorts and chunks its input itself gains from
        large calls). None: no recommendation.
      pack: also write `<root>/<name>/<version>.tar.gz`.
      atol: largest absolute difference allowed by verification (float32).
      precision: the precision the module's heavy ops compute in (one of
        `pipelines.export.precision.PRECISIONS`): "bfloat16" rewrites the written
        SavedModel (`pipelines.export.precision.rewrite_saved_model`) and verifies it
        against the float32 source by cosine instead of `atol`.
      min_cosine: reduced precision: the smallest cosine per output vector
        allowed against the source.
      min_agreement: reduced precision: the smallest share of equal elements
        in each non-float output (ids, masks: 1.0, the default; an argmax of
        scores can flip on near-ties).

    Returns:
      The published version. Its `module.json` holds: name, version,
      fingerprint, format, reusable, num_variables, num_trainable_variables,
      signatures (input/output specs as in `modules.SignatureInfo.to_dict`),
      source {kind, description; for a TF1 Hub module also format, fingerprint,
      tag_sets, training_graph, initializers, attachments and verification
      against it}, parent {name, version, fingerprint, handle}
      or null, created_at (UTC ISO 8601), code_version {package, version,
      git_commit, git_dirty}, precision {compute; for bfloat16 also the ops
      converted}, verification {metric, probe {rows, sha256 per signature},
      max_abs_diff per signature and `__call__` (bfloat16: of float outputs); float32: atol; bfloat16:
      reference (the float32 source, or a bfloat16 one re-exported),
      min_cosine_required, min_cosine, mean_cosine, cosine per signature,
      min_agreement_required, agreement per non-float output}, serving {batch_size} (or {}), extra.

    Raises:
      ExportError: bad source, signatures, name, version or probe inputs.
      ExportVerificationError: the reloaded module does not reproduce the
        source within `atol` (or `min_cosine`). No version is left behind (nor
        on any other error).
    """
    _check_name(name)
    try:
        reduced_precision.check_precision(precision)
    except reduced_precision.PrecisionError as e:
        raise ExportError(str(e)) from e
    _check_fraction("min_cosine", min_cosine, zero_allowed=False)
    _check_fraction("min_agreement", min_agreement, zero_allowed=True)
    tolerance = Tolerance(precision, atol, min_cosine, min_agreement)
    if batch_size is not None and not modules.is_batch_size(batch_size):
        raise ExportError(f"batch_size must be a positive integer, got {batch_size!r}.")
    prepared = _prepare(source, signatures, source_description)
    probes = _probes(prepared, probe_inputs)
    if prepared.source_check is not None:
        prepared = _checked_against_source(prepared, probes, atol)
    name_dir = os.path.join(root, name)
    os.makedirs(name_dir, exist_ok=True)
    with locks.file_lock(os.path.join(name_dir, _LOCK_NAME)):
        _remove_stale_temps(name_dir)
        chosen = _choose_version(root, name, version)
        temp = os.path.join(name_dir, f"{_TEMP_PREFIX}{chosen}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            manifest = _write_verified(
                prepared, temp, name, chosen, probes, parent, tolerance, extra_manifest, batch_size
            )
            final = version_dir(root, name, chosen)
            os.rename(temp, final)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        tar_path = archives.pack_dir(final, f"{final}.tar.gz") if pack else None
    return ExportResult(final, chosen, manifest["fingerprint"], manifest, tar_path)


def _checked_against_source(prepared: _Prepared, probes: Mapping[str, Mapping[str, Any]], atol: float) -> _Prepared:
    """Verifies a migrated TF1 module against the TF1 module itself; records the differences."""
    try:
        result = prepared.source_check(probes, atol)
    except tf1_migrate.SourceMismatchError as e:
        raise ExportVerificationError(str(e)) from e
    info = {**prepared.source_info, "verification": {"atol": atol, **result}}
    return dataclasses.replace(prepared, source_info=info)


def _write_verified(
    prepared: _Prepared,
    path: str,
    name: str,
    version: int,
    probes: Mapping[str, Mapping[str, Any]],
    parent: ModuleRef | None,
    tolerance: Tolerance,
    extra: Mapping[str, Any] | None,
    batch_size: int | None,
) -> dict[str, Any]:
    """Saves, rewrites to its precision, reloads, verifies and writes the manifest into `path`; returns the manifest."""
    _save(prepared, path)
    try:
        rewrite = reduced_precision.rewrite_saved_model(path, tolerance.precision)
    except reduced_precision.PrecisionError as e:
        raise ExportError(str(e)) from e
    loaded = modules.load(path)
    verification = {**_verify(prepared, loaded, probes, tolerance), "probe": probe_record(probes)}
    compute = {"compute": tolerance.precision}
    if tolerance.precision != reduced_precision.FLOAT32:
        compute.update(rewrite.to_dict())
        # What the cosines were measured against: the float32 model, or a source already in bfloat16.
        source = tolerance.precision if rewrite.already else reduced_precision.FLOAT32
        verification["reference"] = f"the {source} source, in memory"
    info = modules.inspect_loaded(loaded, handles.ResolvedModule(path, path, handles.fingerprint_dir(path)))
    manifest = _manifest(name, version, info, prepared, parent, verification, compute, extra, batch_size)
    _write_json(os.path.join(path, handles.MANIFEST_NAME), manifest)
    return manifest


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.export",
        description="Export a SavedModel or Keras model file as a verified, reusable TF Hub module version.",
    )
    parser.add_argument(
        "--source",
        required=True,
        help="SavedModel directory (TF2, or TF1 Hub format: migrated), .keras (Keras 3) or .h5 (tf_keras) file",
    )
    parser.add_argument("--root", required=True, help="modules root; the module is written to ROOT/NAME/VERSION")
    parser.add_argument("--name", required=True, help="module name")
    parser.add_argument("--version", type=int, help="version to write (default: next free one)")
    parser.add_argument(
        "--batch-size", type=int, help="rows per call to recommend to embedding jobs (module.json serving.batch_size)"
    )
    parser.add_argument("--pack", action="store_true", help="also write ROOT/NAME/VERSION.tar.gz")
    add_precision_flags(parser)
    console.add_verbose_flag(parser)
    return parser.parse_args(argv)


def add_precision_flags(parser: argparse.ArgumentParser) -> None:
    """`--precision`, `--min-cosine` and `--min-agreement`, for every command that exports a module."""
    parser.add_argument(
        "--precision",
        default=reduced_precision.FLOAT32,
        help=f"precision of the heavy ops ({', '.join(reduced_precision.PRECISIONS)}; default: %(default)s); "
        "a reduced one is verified against the float32 source by cosine",
    )
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=reduced_precision.DEFAULT_MIN_COSINE,
        help="reduced precision: smallest cosine per output vector against the float32 source (default: %(default)s)",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=reduced_precision.DEFAULT_MIN_AGREEMENT,
        help="reduced precision: smallest share of equal elements in each non-float output "
        "(ids, masks, an argmax) against the float32 source (default: %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints `<path> <fingerprint>` (and the archive path when packed)."""
    args = _parse_args(argv)
    try:
        result = export_module(
            args.source,
            args.root,
            args.name,
            version=args.version,
            batch_size=args.batch_size,
            pack=args.pack,
            precision=args.precision,
            min_cosine=args.min_cosine,
            min_agreement=args.min_agreement,
        )
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{result.path} {result.fingerprint}")
    if result.tar_path:
        print(result.tar_path)
    return 0
