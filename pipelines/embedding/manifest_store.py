"""An output's `_SUCCESS` manifest, read with its version and replaced only while that version stands.

Locally the caller holds the output's commit lock (`output_locks.commit_lock`)
and the manifest is renamed into place. On `gs://` the write carries the
generation read (`if_generation_match`, 0 for "no manifest yet"); on `s3://`
the ETag read (`IfMatch`), or `IfNoneMatch: *` when there was none. The store
refuses the write when another run's manifest came in between.
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.parse
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.embedding.config import SUCCESS_FILE
from pipelines.embedding.paths import is_local, normalize
from pipelines.hub.beam_filesystems import ensure_filesystem_options


class ManifestChanged(RuntimeError):
    """Another run's manifest replaced the one read before this write."""


@dataclasses.dataclass(frozen=True)
class StoredManifest:
    """An output's manifest as read, with the version a replacement must still find.

    Attributes:
      manifest: the parsed manifest; None when the output holds no committed table.
      version: the store's version of it: the generation on `gs://` (0: none),
        the ETag on `s3://` (None: none); None locally (the lock guards it).
    """

    manifest: dict[str, Any] | None
    version: Any = None

    @property
    def run_id(self) -> str | None:
        """The run id of the committed table, or None."""
        return self.manifest.get("run_id") if self.manifest else None


def read(output: str) -> StoredManifest:
    """Reads the manifest of `output` (local, `gs://` or `s3://`) with its version."""
    scheme = urllib.parse.urlsplit(output).scheme
    if scheme == "gs":
        return _read_gcs(output)
    if scheme == "s3":
        return _read_s3(output)
    path = FileSystems.join(output, SUCCESS_FILE)
    if not FileSystems.exists(path):
        return StoredManifest(None)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return StoredManifest(json.loads(f.read()))


def replace(output: str, data: bytes, seen: StoredManifest, staging_dir: str) -> None:
    """Writes `data` as the manifest of `output`, unless it changed since `seen` was read.

    Args:
      output: the table directory.
      data: the new manifest's bytes.
      seen: what `read` returned (under the same commit lock, locally).
      staging_dir: a directory of this run's own in the output, where a local
        manifest is written before it is renamed into place.

    Raises:
      ManifestChanged: on `gs://` or `s3://`, another manifest was written since `seen`.
    """
    scheme = urllib.parse.urlsplit(output).scheme
    if scheme == "gs":
        _replace_gcs(output, data, seen)
    elif scheme == "s3":
        _replace_s3(output, data, seen)
    else:
        staged = FileSystems.join(staging_dir, SUCCESS_FILE)
        with FileSystems.create(staged, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(data)
        if is_local(output):
            os.replace(normalize(staged), normalize(FileSystems.join(output, SUCCESS_FILE)))
        else:  # another Beam file system: no conditional write to use
            FileSystems.rename([staged], [FileSystems.join(output, SUCCESS_FILE)])


def _beam_options(path: str) -> Any:
    """The pipeline options Beam's own file system for `path` uses (its endpoint, credentials, region)."""
    ensure_filesystem_options()
    filesystem = FileSystems.get_filesystem(path)
    # Beam keeps them in a private attribute, named differently per file system.
    return getattr(filesystem, "_pipeline_options", None) or getattr(filesystem, "_options", None)


# --------------------------------------------------------------------------- gs://


def _gcs_blob(output: str) -> Any:
    from apache_beam.io.gcp import gcsio  # Beam's GCS client: only for gs:// outputs

    path = FileSystems.join(output, SUCCESS_FILE)
    bucket, name = gcsio.parse_gcs_path(path)
    return gcsio.GcsIO(pipeline_options=_beam_options(path)).client.bucket(bucket).blob(name)


def _read_gcs(output: str) -> StoredManifest:
    from google.api_core import exceptions

    blob = _gcs_blob(output)
    try:
        blob.reload()
        generation = blob.generation  # read first: a download may reset it from headers a server leaves out
        data = blob.download_as_bytes(if_generation_match=generation)
    except exceptions.NotFound:
        return StoredManifest(None, 0)
    return StoredManifest(json.loads(data), generation)


def _replace_gcs(output: str, data: bytes, seen: StoredManifest) -> None:
    from google.api_core import exceptions

    try:
        _gcs_blob(output).upload_from_string(
            data, content_type="application/json", if_generation_match=seen.version or 0
        )
    except exceptions.PreconditionFailed as e:
        raise ManifestChanged(str(e)) from e


# --------------------------------------------------------------------------- s3://


def _s3_client(output: str) -> tuple[Any, str, str]:
    from apache_beam.io.aws import s3io  # Beam's S3 client: only for s3:// outputs

    path = FileSystems.join(output, SUCCESS_FILE)
    bucket, key = s3io.parse_s3_path(path)
    return s3io.S3IO(options=_beam_options(path)).client.client, bucket, key


def _read_s3(output: str) -> StoredManifest:
    from botocore.exceptions import ClientError

    client, bucket, key = _s3_client(output)
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return StoredManifest(None, None)
        raise
    return StoredManifest(json.loads(answer["Body"].read()), answer["ETag"])


def _replace_s3(output: str, data: bytes, seen: StoredManifest) -> None:
    from botocore.exceptions import ClientError

    client, bucket, key = _s3_client(output)
    condition = {"IfMatch": seen.version} if seen.version else {"IfNoneMatch": "*"}
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json", **condition)
    except ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            raise ManifestChanged(str(error.get("Message", e))) from e
        raise
