"""Export any trained model as a verified, versioned, reusable TF Hub module.

`export_module(source, root, name)` writes a Keras model, a `tf.Module`, a
SavedModel or a TF1 Hub-format module as a reusable TF2 SavedModel at
`<root>/<name>/<version>/` with a `module.json`, after checking that the
written module reproduces the source. `python -m pipelines.export` does the
same from the command line. Design: docs/design/export.md.
"""

from pipelines.export.errors import ExportError, ExportVerificationError
from pipelines.export.manifest import ModuleRef, module_ref
from pipelines.export.probes import synthetic_probe
from pipelines.export.publish import ExportResult, export_module
from pipelines.export.sources import SOURCE_KINDS, Signature
from pipelines.export.versions import latest_version, list_versions, version_dir

__all__ = [
    "SOURCE_KINDS",
    "ExportError",
    "ExportResult",
    "ExportVerificationError",
    "ModuleRef",
    "Signature",
    "export_module",
    "latest_version",
    "list_versions",
    "module_ref",
    "synthetic_probe",
    "version_dir",
]
