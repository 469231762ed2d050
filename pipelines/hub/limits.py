"""Limits on what fetching and unpacking a module may consume, each with its flag."""

from __future__ import annotations

import dataclasses

GiB = 1 << 30

# Below this many unpacked bytes the compression ratio is not checked: small, very compressible
# modules (a vocabulary, zero-initialized variables) are harmless whatever their ratio.
RATIO_FLOOR_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one module may cost to fetch and unpack; exceeding any limit stops the fetch at once.

    The defaults are far above what real modules need. Each field has a flag
    of the same name (`max_download_bytes` is `--max-download-bytes`).

    Attributes:
      max_download_bytes: bytes downloaded for one module (an archive, or a
        directory's objects), counted as they arrive.
      max_unpacked_bytes: bytes an archive unpacks to (its tar stream,
        headers included), counted as they are read.
      max_archive_members: entries in one archive, or objects in one module
        directory on gs:// or s3://.
      max_member_path_length: UTF-8 bytes in one entry's or object's path.
      max_compression_ratio: unpacked bytes over compressed bytes read so far,
        checked once `RATIO_FLOOR_BYTES` have been unpacked.
    """

    max_download_bytes: int = 20 * GiB
    max_unpacked_bytes: int = 20 * GiB
    max_archive_members: int = 1_000_000
    max_member_path_length: int = 1024
    max_compression_ratio: float = 200.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{flag(field.name)} must be a positive number, got {value!r}.")

    def exceeded(self, name: str, subject: str, seen: str) -> str:
        """The one-line message for `subject` going over the limit `name`.

        Args:
          name: the field, e.g. "max_unpacked_bytes".
          subject: what went over it, e.g. "Module archive https://host/m.tar.gz".
          seen: what was seen, e.g. "more than 1,048,576 bytes".
        """
        value = getattr(self, name)
        shown = f"{value:g}:1" if name == "max_compression_ratio" else f"{value:,}"
        return f"{subject} exceeds {flag(name)} ({shown}): {seen}; raise the limit if the module is genuine."


DEFAULT_LIMITS = Limits()


def flag(name: str) -> str:
    """The command-line flag of a limit: `max_download_bytes` -> `--max-download-bytes`."""
    return "--" + name.replace("_", "-")


class LimitExceeded(ValueError):
    """A module went over one of its `Limits`; the message names the limit and its flag."""
