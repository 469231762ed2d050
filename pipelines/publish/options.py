"""What a publish is asked to do: `PublishOptions` and `PublishConfig`, validated in one place (`__post_init__`).

Standard library and the target's parser only: a job config or an Airflow task can build and check one
without Beam, TensorFlow or a database.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from pipelines.embedding.paths import absolute
from pipelines.publish.errors import PublishError
from pipelines.publish.target import Target, parse_target

INDEX_METHODS = ("hnsw", "ivfflat", "none")
METRICS = ("cosine", "l2", "inner_product")
# The prefix of every table hub-embed keeps beside the collections (catalogue, work tables).
RESERVED_PREFIX = "hub_embed_"
# Derived names (`<collection>_embedding_idx_new`, 18 more characters) must fit PostgreSQL's 63 bytes.
MAX_COLLECTION_CHARS = 45
MAX_IDENTIFIER_CHARS = 63
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# A merge into an HNSW collection builds it beside the old one when it would write more than this share
# of its rows: an HNSW insert on disk costs several times a row of a build (see the architecture page;
# the publish benchmark measures where the two meet).
DEFAULT_REBUILD_ABOVE = 0.15


def check_identifier(kind: str, name: str, max_chars: int = MAX_IDENTIFIER_CHARS) -> str:
    """Returns `name` if it is a plain lowercase SQL identifier of at most `max_chars` characters.

    Plain lowercase names mean the same quoted or not, so the collection is the table
    `SELECT ... FROM name` finds.

    Raises:
      PublishError: naming the rule it breaks.
    """
    if not _IDENTIFIER.match(name or ""):
        raise PublishError(
            f"{kind} {name!r} is not a valid identifier: use lowercase letters, digits and underscores, "
            "starting with a letter or an underscore (e.g. 'docs_v1')."
        )
    if len(name) > max_chars:
        raise PublishError(f"{kind} {name!r} is {len(name)} characters long; at most {max_chars} are allowed.")
    return name


@dataclasses.dataclass(frozen=True)
class PublishOptions:
    """How to publish (every field has a default).

    Attributes:
      schema: the database schema of the collection; None: the database's default (`current_schema()`).
      halfvec: store `halfvec(D)` (16-bit floats, half the space) instead of `vector(D)`.
      index: "hnsw" (default), "ivfflat" or "none": the index built on `embedding` after loading.
      metric: "cosine" (default), "l2" or "inner_product": the index's distance and search's score.
      hnsw_m: HNSW's links per node (pgvector's default 16).
      hnsw_ef_construction: HNSW's candidate list while building (pgvector's default 64).
      ivfflat_lists: IVFFlat's lists; None: rows / 1000 (at least 1), sqrt(rows) above a million rows.
      keep_missing: keep rows whose id the table no longer has (default: delete them).
      rebuild_above: a merge into a collection with an HNSW index whose staged rows (new or changed)
        exceed this share of the collection's rows builds the merged collection beside the old one,
        with a new index, and swaps it in, instead of updating rows in place; None: always in place.
      replace: build the collection anew beside the old one and swap it in; required when the table's
        module, signature, output, dimension, columns or vector type differ from the collection's.
      connect_timeout_s: seconds to wait for the database to answer a connection.
      beam_args: Beam pipeline options, as command-line flags (`--direct_num_workers=4`, `--runner=...`).
    """

    schema: str | None = None
    halfvec: bool = False
    index: str = "hnsw"
    metric: str = "cosine"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    ivfflat_lists: int | None = None
    keep_missing: bool = False
    rebuild_above: float | None = DEFAULT_REBUILD_ABOVE
    replace: bool = False
    connect_timeout_s: int = 10
    beam_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.schema is not None:
            check_identifier("schema", self.schema)
        if self.index not in INDEX_METHODS:
            raise PublishError(f"index {self.index!r} is not one of {', '.join(INDEX_METHODS)}.")
        if self.metric not in METRICS:
            raise PublishError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}.")
        for name in ("hnsw_m", "hnsw_ef_construction", "connect_timeout_s"):
            if getattr(self, name) < 1:
                raise PublishError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.ivfflat_lists is not None and self.ivfflat_lists < 1:
            raise PublishError(f"ivfflat_lists must be a positive integer, got {self.ivfflat_lists}.")
        if not 2 <= self.hnsw_m <= 100:
            raise PublishError(f"hnsw_m must be between 2 and 100 (pgvector's limits), got {self.hnsw_m}.")
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            raise PublishError(
                f"hnsw_ef_construction must be at least 2 * hnsw_m = {2 * self.hnsw_m}, got {self.hnsw_ef_construction}."
            )
        if self.rebuild_above is not None and (
            isinstance(self.rebuild_above, bool)
            or not isinstance(self.rebuild_above, (int, float))
            or not 0 <= self.rebuild_above < float("inf")
        ):
            raise PublishError(
                f"rebuild_above must be a share of the collection's rows, 0 or more (or none: always in place), "
                f"got {self.rebuild_above!r}."
            )
        if self.replace and self.keep_missing:
            raise PublishError("--replace rebuilds the collection from the table alone; it cannot --keep-missing.")

    @property
    def vector_type(self) -> str:
        """The embedding column's type name: "vector" or "halfvec"."""
        return "halfvec" if self.halfvec else "vector"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PublishOptions:
        """Options from a mapping of field names (a job config's `publish:` section), checked.

        Raises:
          PublishError: an unknown key or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PublishError(f"unknown publish option(s) {unknown}; valid: {sorted(known)}.")
        values = dict(values)
        if "beam_args" in values:
            values["beam_args"] = tuple(values["beam_args"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class PublishConfig:
    """One publish: which table goes into which collection of which database, and how.

    Attributes:
      table: the committed table's directory (local paths made absolute; gs://, s3:// as given).
      target: the database (its password never shown: see `Target`).
      collection: the collection's name, a plain lowercase identifier.
      options: how.
    """

    table: str
    target: Target
    collection: str
    options: PublishOptions = PublishOptions()

    def __post_init__(self) -> None:
        if not self.table or not self.table.strip():
            raise PublishError("the table must name a committed table directory.")
        check_identifier("collection", self.collection, MAX_COLLECTION_CHARS)
        if self.collection.startswith(RESERVED_PREFIX):
            raise PublishError(
                f"collection {self.collection!r}: names starting with {RESERVED_PREFIX!r} are hub-embed's own."
            )

    @classmethod
    def create(
        cls, table: str, target: str | Target, collection: str, options: PublishOptions | None = None
    ) -> PublishConfig:
        """A checked config: the table path made absolute, the connection string parsed.

        Raises:
          PublishError: an invalid collection name, connection string or option.
        """
        parsed = target if isinstance(target, Target) else parse_target(target)
        return cls(absolute(table), parsed, collection, options or PublishOptions())
