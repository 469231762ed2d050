"""`export_module`: a source written, verified and published atomically as `<root>/<name>/<version>/`.

The module is written to a hidden directory beside its versions, reloaded
with `loading.load` and compared with the in-memory source on probe inputs;
only then is the directory renamed to its version, under the name's lock.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from pipelines.export import precision as reduced_precision
from pipelines.export.errors import ExportError
from pipelines.export.gating import check_ops
from pipelines.export.manifest import ModuleRef, build_manifest, write_manifest
from pipelines.export.probes import probe_record, probes_for
from pipelines.export.saving import save
from pipelines.export.sources import PreparedSource, prepare
from pipelines.export.verification import (
    DEFAULT_ATOL,
    Tolerance,
    checked_tolerance,
    verified_against_tf1_module,
    verify,
)
from pipelines.export.versions import check_name, choose_version, locked_name_dir, temp_dir, version_dir
from pipelines.hub import archives, description, fingerprints, loading, module_dirs, resolver
from pipelines.hub.module_manifest import is_batch_size


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """A published module version.

    Attributes:
      path: the version directory, `<root>/<name>/<version>`.
      version: the version number.
      fingerprint: `fingerprints.fingerprint_dir(path)`.
      manifest: the contents of its `module.json`.
      tar_path: `<root>/<name>/<version>.tar.gz` when packed, else None.
    """

    path: str
    version: int
    fingerprint: str
    manifest: dict[str, Any]
    tar_path: str | None = None


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
    allow_ops: Iterable[str] = (),
    trust_module: bool = False,
) -> ExportResult:
    """Exports `source` as a verified, reusable TF Hub module version `<root>/<name>/<version>/`.

    Args:
      source: a Keras 3 or tf_keras model, a `tf.Module`, a loaded SavedModel,
        or a path (SavedModel directory, TF1 Hub-format module directory,
        `.keras` or `.h5` file); see `pipelines.export.sources`. It must track every variable and resource its signatures use.
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
      allow_ops: ops the op gate lets through although they read or write
        files, list directories, run Python or reach the network.
      trust_module: let every op through the op gate.

    Returns:
      The published version. Its `module.json` holds: name, version,
      fingerprint, format, reusable, num_variables, num_trainable_variables,
      signatures (input/output specs as in `module_info.SignatureInfo.to_dict`),
      source {kind, description; for a TF1 Hub module also format, fingerprint,
      tag_sets, training_graph, initializers, attachments and verification
      against it}, parent {name, version, fingerprint, handle}
      or null, created_at (UTC ISO 8601), code_version {package, version,
      git_commit, git_dirty}, precision {compute; for bfloat16 also the ops
      converted}, verification {metric, probe {rows, sha256 per signature},
      max_abs_diff per signature and `__call__` (bfloat16: of float outputs); float32: atol; bfloat16:
      reference (the float32 source, or a bfloat16 one re-exported),
      min_cosine_required, min_cosine, mean_cosine, cosine per signature,
      min_agreement_required, agreement per non-float output}, serving {batch_size} (or {}),
      op_gate {passed, trusted, allowed_ops, refused_ops} (the written module's verdict), extra.

    The op gate checks a source module directory before it is loaded (or
    migrated), and the written module before it is loaded back to be verified.

    Raises:
      ExportError: bad source, signatures, name, version or probe inputs, or a
        source or written module holding ops the op gate refuses.
      ExportVerificationError: the reloaded module does not reproduce the
        source within `atol` (or `min_cosine`). No version is left behind (nor
        on any other error).
    """
    check_name(name)
    tolerance = checked_tolerance(precision, atol, min_cosine, min_agreement)
    if batch_size is not None and not is_batch_size(batch_size):
        raise ExportError(f"batch_size must be a positive integer, got {batch_size!r}.")
    allow_ops = tuple(allow_ops)
    if isinstance(source, (str, os.PathLike)) and module_dirs.is_module_dir(os.fspath(source)):
        check_ops(os.fspath(source), allow_ops, trust_module)  # before it is loaded or migrated
    prepared = prepare(source, signatures, source_description)
    probes = probes_for(prepared, probe_inputs)
    prepared = verified_against_tf1_module(prepared, probes, atol)
    with locked_name_dir(root, name) as name_dir:
        chosen = choose_version(root, name, version)
        temp = temp_dir(name_dir, chosen)
        try:
            manifest = _write_verified(
                prepared,
                temp,
                name,
                chosen,
                probes,
                parent,
                tolerance,
                extra_manifest,
                batch_size,
                allow_ops,
                trust_module,
            )
            final = version_dir(root, name, chosen)
            os.rename(temp, final)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        tar_path = archives.pack_dir(final, f"{final}.tar.gz") if pack else None
    return ExportResult(final, chosen, manifest["fingerprint"], manifest, tar_path)


def _write_verified(
    prepared: PreparedSource,
    path: str,
    name: str,
    version: int,
    probes: Mapping[str, Mapping[str, Any]],
    parent: ModuleRef | None,
    tolerance: Tolerance,
    extra: Mapping[str, Any] | None,
    batch_size: int | None,
    allow_ops: tuple[str, ...],
    trust_module: bool,
) -> dict[str, Any]:
    """Saves, rewrites to its precision, gates, reloads, verifies and writes the manifest into `path`; returns it."""
    save(prepared, path)
    try:
        rewrite = reduced_precision.rewrite_saved_model(path, tolerance.precision)
    except reduced_precision.PrecisionError as e:
        raise ExportError(str(e)) from e
    fingerprint = fingerprints.fingerprint_dir(path)
    op_gate = check_ops(path, allow_ops, trust_module, fingerprint)  # cached: embedding it later costs no scan
    loaded = loading.load(path)
    verification = {**verify(prepared, loaded, probes, tolerance), "probe": probe_record(probes)}
    compute = {"compute": tolerance.precision}
    if tolerance.precision != reduced_precision.FLOAT32:
        compute.update(rewrite.to_dict())
        # What the cosines were measured against: the float32 model, or a source already in bfloat16.
        source = tolerance.precision if rewrite.already else reduced_precision.FLOAT32
        verification["reference"] = f"the {source} source, in memory"
    info = description.describe_loaded(loaded, resolver.ResolvedModule(path, path, fingerprint))
    manifest = build_manifest(name, version, info, prepared, parent, verification, compute, extra, batch_size, op_gate)
    write_manifest(path, manifest)
    return manifest
