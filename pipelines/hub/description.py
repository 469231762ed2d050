"""Describing a module: its signatures, variables and manifest, remembered under its fingerprint."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from typing import Any

from pipelines.hub import fingerprint_records, loading, registry
from pipelines.hub.module_dirs import module_format
from pipelines.hub.module_info import DEFAULT_OUTPUT_KEY, ModuleInfo, SignatureInfo, TensorInfo
from pipelines.hub.module_manifest import compute_precision, read_module_manifest, recommended_batch_size
from pipelines.hub.resolver import ResolvedModule, ResolveOptions

# Bump when what `describe_loaded` reports changes: older stored descriptions are then described afresh.
DESCRIPTION_VERSION = 1
_DESCRIPTION = "description"


def _dtype_name(dtype: Any) -> str:
    return getattr(dtype, "name", str(dtype))


def _shape(shape: Any) -> tuple[int | None, ...]:
    if shape.rank is None:
        return ()
    return tuple(shape.as_list())


def signature_info(name: str, fn: Any) -> SignatureInfo:
    """Describes one loaded signature (a concrete function): its inputs and outputs.

    A signature that returns a single tensor is described as returning
    `{"default": tensor}`.
    """
    tf = loading.import_tf()
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


def describe_loaded(loaded: Any, resolved: ResolvedModule) -> ModuleInfo:
    """Describes an already loaded module (see `describe_resolved`)."""
    signatures = {name: signature_info(name, fn) for name, fn in loaded.signatures.items()}
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
    resolved: ResolvedModule,
    signatures: dict[str, SignatureInfo],
    reusable: bool,
    trainable: bool,
    num_variables: int,
    num_trainable_variables: int,
) -> ModuleInfo:
    """A module's description: what its loaded object says, plus its files' format and `module.json`."""
    manifest = read_module_manifest(resolved.path)
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
        recommended_batch_size=recommended_batch_size(manifest),
        precision=compute_precision(manifest),
    )


def _tf_version() -> str | None:
    """The installed TensorFlow's version, read without importing it (a description is TensorFlow's reading)."""
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


def _stored_description(resolved: ResolvedModule) -> ModuleInfo | None:
    """The description stored for this module's fingerprint, or None (none, stale or corrupt)."""
    record = fingerprint_records.read_record(resolved.fingerprint, _DESCRIPTION)
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
    fingerprint_records.write_record(
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


def describe_resolved(resolved: ResolvedModule, loader: Callable[[ResolvedModule], Any] | None = None) -> ModuleInfo:
    """Describes a resolved module, loading it only when no description is stored for its fingerprint.

    The signatures, variables and trainability are stored under the module's
    fingerprint the first time it is described (see `fingerprint_records`)
    and read back afterwards. The name, version, recommended batch size and
    precision come from `module.json`, which the fingerprint leaves out, and
    are read afresh each time. A stored description that is unreadable,
    corrupt, or written by another description version or TensorFlow version
    is ignored and rewritten.

    Args:
      resolved: the module (see `registry.resolve`).
      loader: loads the module when it must be (default: `loading.load(resolved.path)`).

    Raises:
      ModuleError: the module cannot be loaded.
    """
    info = _stored_description(resolved)
    if info is None:
        info = describe_loaded(loader(resolved) if loader else loading.load(resolved.path), resolved)
        _store_description(info)
    return info


def describe(handle: str, options: ResolveOptions | None = None) -> ModuleInfo:
    """Resolves a module and describes it (loading it unless its description is stored).

    Args:
      handle: any handle `registry.resolve` accepts.
      options: the limits and trust `registry.resolve` applies (default: its defaults).

    Returns:
      The module's description.

    Raises:
      HandleError: the handle cannot be resolved.
      ModuleError: the module cannot be loaded.
    """
    return describe_resolved(registry.resolve(handle, options=options))
