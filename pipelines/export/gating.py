"""The op gate applied by the export tool: to a source module directory before it loads, and to what it writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipelines.export.errors import ExportError
from pipelines.hub import op_gate
from pipelines.hub.op_verdict import OpGateError


def check_ops(
    module_dir: str, allow_ops: Iterable[str] = (), trust: bool = False, fingerprint: str | None = None
) -> dict[str, Any]:
    """The op gate's verdict on a module directory, as a manifest records it (`Verdict.as_manifest()`).

    Args:
      module_dir: a SavedModel or TF1 Hub-format module directory.
      allow_ops: op names let through deliberately (`--allow-ops`).
      trust: let every op through (`--trust-module`).
      fingerprint: the module's fingerprint: the verdict is then cached under
        it in the module cache, so the module is not scanned again (by an
        embedding job, say).

    Raises:
      ExportError: the module holds ops the gate refuses; the message names
        each op and the function that holds it.
    """
    try:
        verdict = op_gate.check(module_dir, allow_ops=allow_ops, trust=trust, fingerprint=fingerprint)
    except OpGateError as e:
        raise ExportError(str(e)) from None
    return verdict.as_manifest()
