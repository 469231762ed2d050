"""The vector index on a collection's `embedding` column: which one, its parameters, its SQL, and its search settings."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from psycopg import sql

from pipelines.publish.errors import PublishError
from pipelines.publish.options import PublishOptions

# Distance operators, and operator class suffixes, per metric (pgvector).
OPERATORS = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}
_OPCLASS_SUFFIX = {"cosine": "cosine_ops", "l2": "l2_ops", "inner_product": "ip_ops"}
# pgvector indexes at most this many dimensions per type.
MAX_INDEX_DIMENSIONS = {"vector": 2000, "halfvec": 4000}
# HNSW's candidate list at search time: pgvector's default is 40; 100 keeps recall@10 high (docs/publish.md).
DEFAULT_EF_SEARCH = 100


@dataclasses.dataclass(frozen=True)
class IndexSpec:
    """An index on `embedding`.

    Attributes:
      method: "hnsw", "ivfflat" or "none".
      metric: "cosine", "l2" or "inner_product".
      vector_type: "vector" or "halfvec".
      m: HNSW's links per node.
      ef_construction: HNSW's build-time candidate list.
      lists: IVFFlat's lists.
      lists_requested: whether `lists` was asked for (else derived from the row count).
    """

    method: str
    metric: str
    vector_type: str
    m: int = 16
    ef_construction: int = 64
    lists: int = 1
    lists_requested: bool = False

    @property
    def opclass(self) -> str:
        """The operator class: `vector_cosine_ops`, `halfvec_l2_ops`, ..."""
        return f"{self.vector_type}_{_OPCLASS_SUFFIX[self.metric]}"

    @property
    def build_params(self) -> dict[str, int]:
        """The index's `WITH (...)` parameters."""
        if self.method == "hnsw":
            return {"m": self.m, "ef_construction": self.ef_construction}
        if self.method == "ivfflat":
            return {"lists": self.lists}
        return {}

    @property
    def search_settings(self) -> dict[str, int]:
        """The settings a search through this index uses (`SET LOCAL`): `hnsw.ef_search` or `ivfflat.probes`."""
        if self.method == "hnsw":
            return {"hnsw.ef_search": DEFAULT_EF_SEARCH}
        if self.method == "ivfflat":
            return {"ivfflat.probes": max(1, round(math.sqrt(self.lists)))}
        return {}

    def rebuild_needed(self, built: IndexSpec | None) -> bool:
        """Whether an index built as `built` differs from this one in what was asked for."""
        if built is None:
            return self.method != "none"
        fields = ["method", "metric", "vector_type"]
        fields += ["m", "ef_construction"] if self.method == "hnsw" else []
        fields += ["lists"] if self.method == "ivfflat" and self.lists_requested else []
        return any(getattr(self, f) != getattr(built, f) for f in fields)

    def create_sql(self, schema: str, table: str, name: str) -> sql.Composed:
        """`CREATE INDEX IF NOT EXISTS name ON schema.table USING method (embedding opclass) WITH (...)`."""
        params = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.SQL(k), sql.Literal(v)) for k, v in self.build_params.items()
        )
        return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} USING {} (embedding {}) WITH ({})").format(
            sql.Identifier(name),
            sql.Identifier(schema),
            sql.Identifier(table),
            sql.SQL(self.method),
            sql.SQL(self.opclass),
            params,
        )

    def to_dict(self) -> dict[str, Any]:
        """What the catalogue records: method, metric, vector type, operator class, build parameters, search settings."""
        return {
            "method": self.method,
            "metric": self.metric,
            "vector_type": self.vector_type,
            "opclass": self.opclass,
            "build_params": self.build_params,
            "lists_requested": self.lists_requested,
            "search_settings": self.search_settings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> IndexSpec | None:
        """The spec a catalogue entry records (None for none recorded)."""
        if not data or data.get("method", "none") == "none":
            return None
        params = data.get("build_params") or {}
        return cls(
            method=data["method"],
            metric=data["metric"],
            vector_type=data["vector_type"],
            m=int(params.get("m", 16)),
            ef_construction=int(params.get("ef_construction", 64)),
            lists=int(params.get("lists", 1)),
            lists_requested=bool(data.get("lists_requested", False)),
        )


def index_spec(options: PublishOptions, dimension: int, rows: int) -> IndexSpec:
    """The index `options` ask for on a collection of `rows` vectors of `dimension`.

    Raises:
      PublishError: pgvector cannot index vectors of this many dimensions with this type.
    """
    vector_type = options.vector_type
    if options.index != "none" and dimension > MAX_INDEX_DIMENSIONS[vector_type]:
        hint = " (--halfvec indexes up to 4000)" if vector_type == "vector" and dimension <= 4000 else ""
        raise PublishError(
            f"pgvector indexes {vector_type} columns of at most {MAX_INDEX_DIMENSIONS[vector_type]} dimensions; "
            f"the table's vectors have {dimension}: use --index none{hint}."
        )
    lists = options.ivfflat_lists or default_lists(rows)
    return IndexSpec(
        method=options.index,
        metric=options.metric,
        vector_type=vector_type,
        m=options.hnsw_m,
        ef_construction=options.hnsw_ef_construction,
        lists=lists,
        lists_requested=options.ivfflat_lists is not None,
    )


def default_lists(rows: int) -> int:
    """pgvector's advice for IVFFlat lists: rows / 1000 up to a million rows, sqrt(rows) above (at least 1)."""
    return max(1, rows // 1000 if rows <= 1_000_000 else round(math.sqrt(rows)))
