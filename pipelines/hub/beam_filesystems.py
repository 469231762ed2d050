"""Default options for Beam's filesystems (`gs://`, `s3://`) when no pipeline has set them."""

from __future__ import annotations


def ensure_filesystem_options() -> None:
    """Gives Beam's filesystems default options when no pipeline has set them yet.

    Beam's S3 filesystem refuses to work without options; a running pipeline
    sets its own (with e.g. `--s3_endpoint_url`) through `FileSystems.set_options`.
    Outside a pipeline, boto3 and google-cloud-storage read their settings from
    the environment (`AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`, credentials).
    """
    # Beam is imported here, not at the top, to keep it out of light import paths (DAG files, the CLI's help).
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    if getattr(FileSystems, "_pipeline_options", None) is None:
        FileSystems.set_options(PipelineOptions([]))
