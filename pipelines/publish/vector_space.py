"""A collection's vector space: which module, signature and output made its vectors, and how queries are embedded.

Two tables share a vector space when their module fingerprint, signature, output key and dimension
are equal: only then are their vectors comparable, and only then may one be merged into a
collection holding the other's. The rest (module handle, input kind, image size, limits) says how
search embeds a query the way the table's rows were embedded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.hub.redaction import redact

# What must be equal for vectors to be comparable.
IDENTITY = ("fingerprint", "signature", "output_key", "dimension")


@dataclasses.dataclass(frozen=True)
class VectorSpace:
    """The module output a collection's vectors come from.

    Attributes:
      module: the module handle, credentials removed.
      fingerprint: the module's content fingerprint.
      signature: the signature called.
      output_key: the output stored.
      dimension: the vectors' dimension.
      kind: "text" or "image": what the module embeds.
      image_size: (height, width) images are resized to (image modules).
      max_text_bytes: longer query texts are refused, as the table's longer texts were.
      max_image_pixels: larger query images are refused.
    """

    module: str
    fingerprint: str
    signature: str
    output_key: str
    dimension: int
    kind: str = "text"
    image_size: tuple[int, int] | None = None
    max_text_bytes: int | None = None
    max_image_pixels: int | None = None

    @classmethod
    def of_table(cls, metadata: dict[str, Any], config: dict[str, Any]) -> VectorSpace:
        """The space of a committed table, from its `hub_embed` metadata and its manifest's config."""
        size = config.get("image_size")
        return cls(
            module=redact(str(metadata.get("module") or config.get("module") or "")),
            fingerprint=str(metadata["fingerprint"]),
            signature=str(metadata.get("signature") or config.get("signature") or "default"),
            output_key=str(metadata.get("output_key") or config.get("output_key") or "default"),
            dimension=int(metadata["dimension"]),
            kind="image" if config.get("input_format") == "image" else "text",
            image_size=(int(size[0]), int(size[1])) if size else _scheme_size(metadata),
            max_text_bytes=config.get("max_text_bytes"),
            max_image_pixels=config.get("max_image_pixels"),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VectorSpace:
        """The space a catalogue entry records (see `to_dict`)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        if values.get("image_size"):
            values["image_size"] = tuple(values["image_size"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the catalogue's `space` column)."""
        data = dataclasses.asdict(self)
        data["image_size"] = list(self.image_size) if self.image_size else None
        return data

    def differences(self, other: VectorSpace) -> list[str]:
        """The identity fields (`IDENTITY`) whose values differ."""
        return [key for key in IDENTITY if getattr(self, key) != getattr(other, key)]

    def describe(self) -> str:
        """One line: module, fingerprint, signature/output and dimension."""
        return (
            f"module {self.module!r} (fingerprint {self.fingerprint}), signature {self.signature!r}, "
            f"output {self.output_key!r}, dimension {self.dimension}"
        )


def _scheme_size(metadata: dict[str, Any]) -> tuple[int, int] | None:
    """The image size an image table's content-hash scheme names (`... to HxW`), when its config has none."""
    preprocessing = str((metadata.get("content_hash") or {}).get("preprocessing") or "")
    size = preprocessing.rpartition(" to ")[2]
    height, _, width = size.partition("x")
    return (int(height), int(width)) if height.isdigit() and width.isdigit() else None
