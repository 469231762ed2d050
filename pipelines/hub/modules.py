"""Loading TF Hub modules, describing their signatures and selecting an output.

One place for "what does this module offer and how do I call it":

* `load(path)` loads a TF2 SavedModel or a TF1 Hub-format module as
  `hub.load` does, importing `tensorflow_text` first so modules whose graphs use
  its ops load (otherwise TensorFlow fails with "Op type not registered").
* `describe(handle)` resolves a module and reports its format, signatures
  (inputs and outputs with dtype and shape), and whether it is a
  reusable/trainable module. It loads the module the first time only: the
  description is cached under the module's fingerprint.
* `select(info, signature, output_key)` validates a signature and output key
  against that description; `bind(loaded, signature, output_key)` returns a
  function from a batch of inputs to a NumPy array.

TensorFlow is imported lazily so that callers that only need the dataclasses
(DAG files, config validation) stay light.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from pipelines.hub import handles

DEFAULT_SIGNATURE = "default"
DEFAULT_OUTPUT_KEY = "default"


class ModuleError(ValueError):
    """A module that cannot be loaded, or a signature/output key it does not have."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and shape of one signature input or output (None = any size)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _names(items: tuple[TensorInfo, ...]) -> str:
    return ", ".join(repr(t.name) for t in items) or "none"


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """One signature: its inputs and its outputs (named by output key)."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def input(self, name: str) -> TensorInfo:
        """Returns the input called `name`, or raises ModuleError listing the valid ones."""
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise ModuleError(f"Signature {self.name!r} has no input {name!r}; valid inputs: {_names(self.inputs)}.")

    def output(self, key: str) -> TensorInfo:
        """Returns the output called `key`, or raises ModuleError listing the valid ones."""
        for tensor in self.outputs:
            if tensor.name == key:
                return tensor
        raise ModuleError(
            f"Output key {key!r} not found in signature {self.name!r}; valid output keys: {_names(self.outputs)}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclasses.dataclass(frozen=True)
class ModuleInfo:
    """What a module is and offers.

    Attributes:
      handle: the handle as given.
      path: local directory of the resolved module.
      fingerprint: content hash of the module's files.
      format: "tf2" (TF2 SavedModel) or "tf1_hub" (TF1 Hub format, tfhub_module.pb).
      signatures: signature name -> SignatureInfo.
      reusable: exposes `variables`, `trainable_variables` and a callable `__call__`.
      trainable: reusable and has at least one trainable variable.
      num_variables: number of variables.
      num_trainable_variables: number of trainable variables.
      name: module name from its module.json manifest, if any.
      version: module version from its module.json manifest, if any.
      recommended_batch_size: rows per call its manifest recommends
        (`serving.batch_size`), if any.
      precision: what its heavy ops compute in, from its manifest
        (`precision.compute`, e.g. "bfloat16"); "float32" for a manifest
        written before precisions existed; None without a manifest.
    """

    handle: str
    path: str
    fingerprint: str
    format: str
    signatures: dict[str, SignatureInfo]
    reusable: bool
    trainable: bool
    num_variables: int
    num_trainable_variables: int
    name: str | None = None
    version: int | None = None
    recommended_batch_size: int | None = None
    precision: str | None = None

    def signature(self, name: str) -> SignatureInfo:
        """Returns the signature called `name`, or raises ModuleError listing the valid ones."""
        if name not in self.signatures:
            valid = ", ".join(repr(s) for s in sorted(self.signatures)) or "none"
            raise ModuleError(
                f"Signature {name!r} not found in module {handles.redact(self.handle)!r}; valid signatures: {valid}."
            )
        return self.signatures[name]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["handle"] = handles.redact(self.handle)
        data["signatures"] = {k: v.to_dict() for k, v in sorted(self.signatures.items())}
        return data


def import_tf():
    """Imports TensorFlow with tensorflow_text's ops registered, and returns it.

    A module whose graph uses tensorflow_text ops (e.g. an in-graph tokenizer)
    only loads once those ops are registered ("Op type not registered" otherwise).
    """
    import tensorflow as tf

    importlib.import_module("tensorflow_text")
    return tf


def module_format(path: str) -> str:
    """Returns "tf1_hub" for a TF1 Hub-format module directory, else "tf2"."""
    return "tf1_hub" if os.path.isfile(os.path.join(path, "tfhub_module.pb")) else "tf2"


def load(path: str) -> Any:
    """Loads a local module directory (TF2 SavedModel or TF1 Hub format).

    It does what `hub.load(path)` does for a local directory (TF1 Hub-format
    modules with the empty tag set; the result's `_is_hub_module_v1` set, as
    `hub.KerasLayer` reads it), without importing `tensorflow_hub`, whose
    import pulls in tf_keras and pkg_resources (≈0.8 s) that loading does not need.

    Args:
      path: a resolved, local module directory (see `handles.resolve`).

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


def _dtype_name(dtype: Any) -> str:
    return getattr(dtype, "name", str(dtype))


def _shape(shape: Any) -> tuple[int | None, ...]:
    if shape.rank is None:
        return ()
    return tuple(shape.as_list())


def _signature_info(name: str, fn: Any) -> SignatureInfo:
    tf = import_tf()
    _, kwargs = fn.structured_input_signature
    inputs = tuple(TensorInfo(key, _dtype_name(spec.dtype), _shape(spec.shape)) for key, spec in sorted(kwargs.items()))
    outputs_struct = fn.structured_outputs
    if not isinstance(outputs_struct, Mapping):
        outputs_struct = {DEFAULT_OUTPUT_KEY: outputs_struct}
    outputs = tuple(
        TensorInfo(key, _dtype_name(t.dtype), _shape(t.shape))
        for key, t in sorted(outputs_struct.items())
        if isinstance(t, (tf.Tensor, tf.TensorSpec)) or hasattr(t, "dtype")
    )
    return SignatureInfo(name, inputs, outputs)


def read_manifest(path: str) -> dict[str, Any]:
    """Returns a module directory's `module.json` manifest, or {} if it has none (or an unreadable one)."""
    try:
        with open(os.path.join(path, handles.MANIFEST_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def inspect_loaded(loaded: Any, resolved: handles.ResolvedModule) -> ModuleInfo:
    """Describes an already loaded module (see `describe`)."""
    signatures = {name: _signature_info(name, fn) for name, fn in loaded.signatures.items()}
    variables = getattr(loaded, "variables", None)
    if variables is None:  # A non-reusable SavedModel: count what its signatures capture.
        variables = {id(v): v for fn in loaded.signatures.values() for v in fn.variables}.values()
    trainable_vars = getattr(loaded, "trainable_variables", None)
    reusable = trainable_vars is not None and hasattr(loaded, "variables") and callable(loaded)
    num_trainable = len(trainable_vars) if trainable_vars is not None else 0
    return _with_manifest(
        resolved, signatures, bool(reusable), bool(reusable and num_trainable > 0), len(variables), num_trainable
    )


def _with_manifest(
    resolved: handles.ResolvedModule,
    signatures: dict[str, SignatureInfo],
    reusable: bool,
    trainable: bool,
    num_variables: int,
    num_trainable_variables: int,
) -> ModuleInfo:
    """A module's description: what its loaded object says, plus its files' format and `module.json`."""
    manifest = read_manifest(resolved.path)
    return ModuleInfo(
        handle=resolved.handle,
        path=resolved.path,
        fingerprint=resolved.fingerprint,
        format=module_format(resolved.path),
        signatures=signatures,
        reusable=reusable,
        trainable=trainable,
        num_variables=num_variables,
        num_trainable_variables=num_trainable_variables,
        name=manifest.get("name"),
        version=manifest.get("version"),
        recommended_batch_size=_recommended_batch_size(manifest),
        precision=_precision(manifest),
    )


def is_batch_size(value: Any) -> bool:
    """True for a usable rows-per-call value: a positive int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _precision(manifest: dict[str, Any]) -> str | None:
    if not manifest:
        return None
    recorded = manifest.get("precision")
    compute = recorded.get("compute") if isinstance(recorded, dict) else None
    return compute if isinstance(compute, str) else "float32"


def _recommended_batch_size(manifest: dict[str, Any]) -> int | None:
    serving = manifest.get("serving")
    size = serving.get("batch_size") if isinstance(serving, dict) else None
    return size if is_batch_size(size) else None


# Bump when what `inspect_loaded` reports changes: older cached descriptions are then described afresh.
DESCRIPTION_VERSION = 1
_DESCRIPTION = "description"


def _tf_version() -> str | None:
    """The installed TensorFlow's version, without importing it (descriptions are TensorFlow's reading)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        return None


def _signature_from_dict(name: str, data: Mapping[str, Any]) -> SignatureInfo:
    def tensors(items: Any) -> tuple[TensorInfo, ...]:
        return tuple(
            TensorInfo(str(t["name"]), str(t["dtype"]), tuple(None if d is None else int(d) for d in t["shape"]))
            for t in items
        )

    return SignatureInfo(name, tensors(data["inputs"]), tensors(data["outputs"]))


def _cached_description(resolved: handles.ResolvedModule) -> ModuleInfo | None:
    """The description stored for this module's fingerprint, or None (none, stale or corrupt)."""
    record = handles.read_record(resolved.fingerprint, _DESCRIPTION)
    if record is None or record.get("version") != DESCRIPTION_VERSION or record.get("tensorflow") != _tf_version():
        return None
    try:
        counts = {key: record[key] for key in ("num_variables", "num_trainable_variables")}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()):
            return None
        signatures = {str(name): _signature_from_dict(str(name), sig) for name, sig in record["signatures"].items()}
        reusable, trainable = record["reusable"], record["trainable"]
        if not isinstance(reusable, bool) or not isinstance(trainable, bool):
            return None
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return _with_manifest(resolved, signatures, reusable, trainable, **counts)


def _store_description(info: ModuleInfo) -> None:
    handles.write_record(
        info.fingerprint,
        _DESCRIPTION,
        {
            "version": DESCRIPTION_VERSION,
            "tensorflow": _tf_version(),
            "signatures": {name: sig.to_dict() for name, sig in info.signatures.items()},
            "reusable": info.reusable,
            "trainable": info.trainable,
            "num_variables": info.num_variables,
            "num_trainable_variables": info.num_trainable_variables,
        },
    )


def describe_resolved(
    resolved: handles.ResolvedModule, loader: Callable[[handles.ResolvedModule], Any] | None = None
) -> ModuleInfo:
    """Describes a resolved module, loading it only when no description is cached for its fingerprint.

    A module's signatures, variables and trainability follow from its files,
    so they are stored under its fingerprint (their content hash; see
    `handles.write_record`) the first time it is described, and read back
    afterwards instead of loading the module (seconds for a large one). Its
    name, version, recommended batch size and precision come from `module.json`, which
    the fingerprint leaves out, and are read afresh each time. An entry that
    is unreadable, corrupt, or written by another description version or
    TensorFlow version is ignored and rewritten.

    Args:
      resolved: the module (see `handles.resolve`).
      loader: loads the module when it must be (default: `load(resolved.path)`).

    Raises:
      ModuleError: the module cannot be loaded.
    """
    info = _cached_description(resolved)
    if info is None:
        info = inspect_loaded(loader(resolved) if loader else load(resolved.path), resolved)
        _store_description(info)
    return info


def describe(handle: str) -> ModuleInfo:
    """Resolves a module and describes it (loading it unless its description is cached).

    Args:
      handle: any handle `handles.resolve` accepts.

    Returns:
      The module's description.

    Raises:
      handles.HandleError: the handle cannot be resolved.
      ModuleError: the module cannot be loaded.
    """
    return describe_resolved(handles.resolve(handle))


def select(info: ModuleInfo, signature: str = DEFAULT_SIGNATURE, output_key: str = DEFAULT_OUTPUT_KEY) -> SignatureInfo:
    """Validates a signature and output key against a module's description.

    Returns:
      The selected signature.

    Raises:
      ModuleError: naming the bad signature or output key and listing the valid ones.
    """
    sig = info.signature(signature)
    sig.output(output_key)
    return sig


def _signature_fn(loaded: Any, signature: str) -> Any:
    if signature not in loaded.signatures:
        valid = ", ".join(repr(s) for s in sorted(loaded.signatures)) or "none"
        raise ModuleError(f"Signature {signature!r} not found; valid signatures: {valid}.")
    return loaded.signatures[signature]


def as_output_dict(outputs: Any) -> Mapping[str, Any]:
    """Treats a single-tensor result as `{"default": tensor}`; dicts pass through."""
    return outputs if isinstance(outputs, Mapping) else {DEFAULT_OUTPUT_KEY: outputs}


def bind_outputs(loaded: Any, signature: str, output_keys: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """Returns `fn(inputs) -> {key: np.ndarray}` calling one signature once for several outputs.

    Args:
      loaded: a module returned by `load`.
      signature: signature name.
      output_keys: keys of the outputs to return. A signature that returns a
        single tensor is treated as returning `{"default": tensor}`.

    Raises:
      ModuleError: the signature or an output key does not exist (listing the valid ones).
    """
    fn = _signature_fn(loaded, signature)
    info = _signature_info(signature, fn)
    for key in output_keys:
        info.output(key)

    def call(inputs: Mapping[str, Any]) -> dict[str, Any]:
        outputs = as_output_dict(fn(**inputs))
        return {key: outputs[key].numpy() for key in output_keys}

    return call


def bind(loaded: Any, signature: str = DEFAULT_SIGNATURE, output_key: str = DEFAULT_OUTPUT_KEY) -> Callable[..., Any]:
    """Returns `fn(inputs) -> np.ndarray` calling one signature and picking one output."""
    call_outputs = bind_outputs(loaded, signature, (output_key,))
    return lambda inputs: call_outputs(inputs)[output_key]


def call_default(loaded: Any, *args: Any, **kwargs: Any) -> Any:
    """Calls a reusable module object; a dict result yields its `default` output."""
    outputs = loaded(*args, **kwargs)
    if isinstance(outputs, Mapping):
        if DEFAULT_OUTPUT_KEY not in outputs:
            raise ModuleError(
                f"Module call returned outputs {sorted(outputs)} without a {DEFAULT_OUTPUT_KEY!r} key; "
                "pick one with an output key."
            )
        return outputs[DEFAULT_OUTPUT_KEY]
    return outputs
