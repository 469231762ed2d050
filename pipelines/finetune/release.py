"""Release a fine-tuned module version: run the fine-tuning, validate the version against its parent, publish it.

The `finetune_and_reexport` DAG calls these, one per task; they work without
Airflow too. Only `publish` moves `<root>/<name>/latest`, only forward and
only after `validate` passed; `reject` moves a version that failed aside.
Layout of a module root: docs/design/orchestration.md.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines import export
from pipelines.finetune import labeled
from pipelines.finetune.errors import FinetuneError
from pipelines.finetune.trainable import module_input
from pipelines.finetune.training import probe_accuracy
from pipelines.hub import (
    archives,
    binding,
    description,
    fingerprints,
    loading,
    locks,
    module_dirs,
    module_info,
    registry,
)
from pipelines.hub.beam_filesystems import ensure_filesystem_options
from pipelines.hub.errors import HandleError, ModuleError
from pipelines.hub.module_manifest import read_module_manifest
from pipelines.hub.redaction import redact

LATEST = "latest"
REJECTED_PREFIX = ".rejected-"
DEFAULT_TOLERANCE = 0.02
EMBED_BATCH = 64
_PUBLISH_LOCK = ".publish.lock"
_LOG = logging.getLogger(__name__)


class ReleaseError(RuntimeError):
    """A release step failed; the message says which and why."""


class ValidationError(ReleaseError):
    """The new version must not be published: it does not load, differs from its parent, or is worse."""


class PublishError(ReleaseError):
    """The version cannot be published (e.g. a newer one already is)."""


# --------------------------------------------------------------------------- fine-tune


def finetune_command(
    module: str,
    data: str,
    output_root: str,
    *,
    name: str | None = None,
    task: str = "classification",
    steps: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    python: str | None = None,
) -> list[str]:
    """The `python -m pipelines.finetune` command line for these arguments."""
    cmd = [
        python or sys.executable,
        "-m",
        "pipelines.finetune",
        "--module",
        module,
        "--data",
        data,
        "--task",
        task,
        "--output-root",
        output_root,
    ]
    for flag, value in (("--name", name), ("--steps", steps), ("--epochs", epochs), ("--seed", seed)):
        if value is not None and value != "":
            cmd += [flag, str(value)]
    return cmd


def run_finetune(cmd: Sequence[str]) -> str:
    """Runs a fine-tune command (see `finetune_command`), streaming its output to the log.

    Returns:
      The exported version's directory: the `path` of the JSON summary the
      command prints last (or a last line that is a directory).

    Raises:
      ReleaseError: the command failed or printed no version path.
    """
    _LOG.info("Running %s", " ".join(cmd))
    tail: collections.deque[str] = collections.deque(maxlen=200)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            _LOG.info("%s", line.rstrip())
            tail.append(line.strip())
    if proc.returncode != 0:
        raise ReleaseError(f"Fine-tuning failed (exit {proc.returncode}): " + " | ".join(list(tail)[-5:]))
    for line in reversed(tail):
        path = _version_path(line)
        if path:
            return path
    raise ReleaseError("Fine-tuning succeeded but printed no exported version path.")


def _version_path(line: str) -> str | None:
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            path = json.loads(line).get("path")
            return path if isinstance(path, str) and os.path.isdir(path) else None
    return line if line and os.path.isdir(line) and module_dirs.is_module_dir(line) else None


# --------------------------------------------------------------------------- validate


def _manifest(path: str) -> dict[str, Any]:
    manifest = read_module_manifest(path)
    missing = [k for k in ("name", "version", "fingerprint") if not manifest.get(k)]
    if missing:
        raise ValidationError(f"{path}: module.json is missing or lacks {missing}.")
    return manifest


def _load(handle: str, what: str) -> tuple[Any, module_info.ModuleInfo]:
    try:
        resolved = registry.resolve(handle)
        loaded = loading.load(resolved.path)
        return loaded, description.describe_loaded(loaded, resolved)
    except (HandleError, ModuleError) as e:
        raise ValidationError(f"The {what} module {redact(handle)!r} does not load: {e}") from e


def compare_signatures(parent: module_info.ModuleInfo, child: module_info.ModuleInfo) -> None:
    """Checks that every parent signature exists in the child with the same inputs and output dims.

    Raises:
      ValidationError: naming the first difference.
    """
    for name, before in sorted(parent.signatures.items()):
        after = child.signatures.get(name)
        if after is None:
            raise ValidationError(
                f"Signature {name!r} of the parent is missing; the new version has {sorted(child.signatures)}."
            )
        if sorted(before.inputs, key=lambda t: t.name) != sorted(after.inputs, key=lambda t: t.name):
            raise ValidationError(
                f"Signature {name!r} inputs changed: {[t.to_dict() for t in before.inputs]} -> "
                f"{[t.to_dict() for t in after.inputs]}."
            )
        outputs = {t.name: t for t in after.outputs}
        for out in before.outputs:
            new = outputs.get(out.name)
            if (
                new is None
                or new.dtype != out.dtype
                or len(new.shape) != len(out.shape)
                or new.shape[-1:] != out.shape[-1:]
            ):
                shown = new.to_dict() if new else None
                raise ValidationError(f"Signature {name!r} output {out.name!r} changed: {out.to_dict()} -> {shown}.")


def check_finite(loaded: Any) -> None:
    """Calls every signature on synthetic probe inputs; all float outputs must be finite.

    Raises:
      ValidationError: naming the signature and output with NaN or Inf values.
    """
    import tensorflow as tf  # when validating, not at this module's import

    for name, fn in sorted(loaded.signatures.items()):
        specs = fn.structured_input_signature[1]
        probe = {k: tf.constant(v) for k, v in export.synthetic_probe(specs).items()}
        for key, value in binding.as_output_dict(fn(**probe)).items():
            _require_finite(np.asarray(value), f"Signature {name!r} output {key!r} on probe inputs")


def _require_finite(values: np.ndarray, what: str) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        raise ValidationError(f"{what} has {int(np.sum(~np.isfinite(values)))} NaN/Inf values.")


def _embed(loaded: Any, info: module_info.ModuleInfo, inputs: np.ndarray) -> np.ndarray:
    import tensorflow as tf  # when validating, not at this module's import

    call = binding.bind(loaded)
    input_name = info.signature(module_info.DEFAULT_SIGNATURE).inputs[0].name
    batches = [call({input_name: tf.constant(inputs[i : i + EMBED_BATCH])}) for i in range(0, len(inputs), EMBED_BATCH)]
    return np.concatenate(batches).astype(np.float64)


def probe_metric(
    parent: tuple[Any, module_info.ModuleInfo],
    child: tuple[Any, module_info.ModuleInfo],
    probe_data: str,
    holdout_fraction: float,
    seed: int,
) -> dict[str, Any]:
    """Held-out accuracy of the same closed-form ridge probe on each module's embeddings of labeled data.

    The probe is `training.probe_accuracy`, the split `labeled.split`.
    """
    try:
        kind = module_input(child[1])
        examples = labeled.read(probe_data, kind.kind, kind.image_size)
        train, holdout = labeled.split(examples, holdout_fraction, seed)
    except (FinetuneError, labeled.DataError) as e:
        raise ValidationError(f"Probe data {probe_data!r} cannot be used: {e}") from e
    scores = {}
    for which, (loaded, info) in (("parent", parent), ("new", child)):
        embeddings = _embed(loaded, info, examples.inputs)
        _require_finite(embeddings, f"The {which} module's embeddings of the probe data")
        scores[which] = probe_accuracy(
            embeddings[train],
            examples.labels[train],
            embeddings[holdout],
            examples.labels[holdout],
            len(examples.classes),
        )
    return {
        "name": "probe_holdout_accuracy",
        "data": probe_data,
        "examples": len(examples),
        "parent": scores["parent"],
        "new": scores["new"],
    }


def validate(
    path: str,
    *,
    parent: str | None = None,
    probe_data: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Checks an exported version before it may be published.

    1. Its `module.json` names it and its files still have the recorded fingerprint.
    2. It loads; so does its parent (`parent`, else the manifest's parent handle),
       and the parent is the one it was fine-tuned from (same fingerprint).
    3. Every parent signature exists with the same inputs and output dims (`compare_signatures`).
    4. Every signature's outputs are finite on probe inputs (`check_finite`).
    5. With `probe_data`: the probe metric (`probe_metric`) of the new version is
       at least the parent's minus `tolerance`.

    Returns:
      A report: name, version, fingerprint, parent {handle, fingerprint}, metric (or None).

    Raises:
      ValidationError: the first failed check.
    """
    manifest = _manifest(path)
    actual = fingerprints.fingerprint_dir(path)
    if actual != manifest["fingerprint"]:
        raise ValidationError(
            f"{path}: files changed since export (fingerprint {actual} != {manifest['fingerprint']})."
        )
    recorded_parent = manifest.get("parent") or {}
    parent = parent or recorded_parent.get("handle")
    if not parent:
        raise ValidationError(f"{path}: no parent to validate against (none given, none in module.json).")
    child = _load(path, "new")
    before = _load(parent, "parent")
    if recorded_parent.get("fingerprint") and recorded_parent["fingerprint"] != before[1].fingerprint:
        raise ValidationError(
            f"The parent {redact(parent)!r} is no longer the module this version was fine-tuned from "
            f"(fingerprint {before[1].fingerprint} != {recorded_parent['fingerprint']})."
        )
    compare_signatures(before[1], child[1])
    check_finite(child[0])
    metric = None
    if probe_data:
        metric = probe_metric(before, child, probe_data, holdout_fraction, seed)
        metric["tolerance"] = tolerance
        if metric["new"] < metric["parent"] - tolerance:
            raise ValidationError(
                f"Probe accuracy dropped from {metric['parent']:.4f} (parent) to {metric['new']:.4f}, "
                f"more than the tolerance {tolerance}."
            )
    return {
        "path": path,
        "name": manifest["name"],
        "version": manifest["version"],
        "fingerprint": manifest["fingerprint"],
        "parent": {"handle": redact(parent), "fingerprint": before[1].fingerprint},
        "metric": metric,
    }


def reject(path: str) -> str:
    """Moves a version that failed validation aside, to `<root>/<name>/.rejected-<version>-<UTC time>`."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
    target = os.path.join(os.path.dirname(path), f"{REJECTED_PREFIX}{os.path.basename(path)}-{stamp}")
    os.rename(path, target)
    return target


# --------------------------------------------------------------------------- publish


def published_version(root: str, name: str) -> int | None:
    """The version `<root>/<name>/latest` points at, or None."""
    try:
        target = os.readlink(os.path.join(root, name, LATEST))
    except OSError:
        return None
    return int(os.path.basename(target.rstrip("/"))) if os.path.basename(target.rstrip("/")).isdigit() else None


def point_latest(root: str, name: str, version: int) -> None:
    """Atomically points `<root>/<name>/latest` at `<version>` (a relative symlink, swapped with rename)."""
    name_dir = os.path.join(root, name)
    tmp = os.path.join(name_dir, f".{LATEST}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    os.symlink(str(version), tmp)
    os.replace(tmp, os.path.join(name_dir, LATEST))


def upload(local_path: str, url: str) -> str:
    """Copies a local file to a gs://, s3:// (or local) URL through Beam's filesystems; returns `url`."""
    # Beam is imported when uploading, not at this module's import.
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    ensure_filesystem_options()
    if not FileSystems.get_scheme(url):
        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
    try:
        with (
            open(local_path, "rb") as src,
            FileSystems.create(url, compression_type=CompressionTypes.UNCOMPRESSED) as out,
        ):
            shutil.copyfileobj(src, out, 1 << 20)
    except Exception as e:  # Beam wraps backend errors in many types.
        raise PublishError(f"Upload of {local_path} to {redact(url)} failed: {type(e).__name__}: {e}") from e
    return url


def publish(path: str, *, upload_root: str | None = None) -> dict[str, Any]:
    """Publishes a validated version: optional upload of its archive, then the `latest` pointer.

    Args:
      path: `<root>/<name>/<version>`.
      upload_root: gs:// or s3:// (or local) folder; the archive goes to
        `<upload_root>/<name>/<version>.tar.gz` and becomes the published handle.

    Returns:
      The module Asset event's extra: name, version, fingerprint, handle.

    Raises:
      PublishError: a newer version is already published, or the upload failed.
    """
    manifest = _manifest(path)
    name, version = manifest["name"], int(manifest["version"])
    name_dir = os.path.dirname(os.path.abspath(path))
    root = os.path.dirname(name_dir)
    if os.path.basename(name_dir) != name or os.path.basename(path.rstrip("/")) != str(version):
        raise PublishError(f"{path} is not laid out as <root>/{name}/{version}.")
    handle = os.path.abspath(path)
    if upload_root:
        archive = os.path.join(name_dir, f"{version}.tar.gz")
        if not os.path.exists(archive):
            archives.pack_dir(path, archive)
        handle = upload(archive, f"{upload_root.rstrip('/')}/{name}/{version}.tar.gz")
    with locks.file_lock(os.path.join(name_dir, _PUBLISH_LOCK)):
        current = published_version(root, name)
        if current is not None and current > version:
            raise PublishError(
                f"Version {current} of {name!r} is already published; not moving latest back to {version}."
            )
        if current != version:
            point_latest(root, name, version)
    return {"name": name, "version": version, "fingerprint": manifest["fingerprint"], "handle": handle}
