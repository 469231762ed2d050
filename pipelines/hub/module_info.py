"""What a module offers: its signatures' inputs and outputs, its variables and its manifest's facts."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.hub.errors import ModuleError
from pipelines.hub.redaction import redact

DEFAULT_SIGNATURE = "default"
DEFAULT_OUTPUT_KEY = "default"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and shape of one signature input or output (None = any size)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: name, dtype, and the shape as a list."""
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
        """The JSON form: lists of inputs and outputs."""
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
        without one; None without a manifest.
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
                f"Signature {name!r} not found in module {redact(self.handle)!r}; valid signatures: {valid}."
            )
        return self.signatures[name]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (as `inspect --json` prints it), with the handle redacted."""
        data = dataclasses.asdict(self)
        data["handle"] = redact(self.handle)
        data["signatures"] = {k: v.to_dict() for k, v in sorted(self.signatures.items())}
        return data
