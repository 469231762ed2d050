"""What a report is asked to show: sample sizes, the map's method and colour, the near-duplicate threshold."""

from __future__ import annotations

import dataclasses

from pipelines.report.errors import ReportError

MAP_METHODS = ("pca", "umap")


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """A report's settings, checked by `check`.

    Attributes:
      sample_rows: rows sampled for the map and the near-duplicates (the ids that hash lowest).
      color_by: the passthrough column (or `content_hash`) colouring the map; None: one colour.
      map_method: "pca", or "umap" when umap-learn is installed.
      near_duplicate_threshold: the cosine similarity at or above which two sampled rows are near-duplicates.
      neighbour_rows: how many sampled rows show their nearest neighbours.
      neighbours: nearest neighbours shown per row (searched in the whole table).
      image_map_rows: the most points an image table's map shows (each carries a thumbnail).
      wall_s: the run's wall time when the caller measured it (else taken from the manifest's times).
    """

    sample_rows: int = 2000
    color_by: str | None = None
    map_method: str = "pca"
    near_duplicate_threshold: float = 0.95
    neighbour_rows: int = 6
    neighbours: int = 5
    image_map_rows: int = 500
    wall_s: float | None = None

    def check(self) -> ReportOptions:
        """Returns the options, or raises ReportError naming the bad value."""
        for name in ("sample_rows", "neighbour_rows", "neighbours", "image_map_rows"):
            if getattr(self, name) < 1:
                raise ReportError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.map_method not in MAP_METHODS:
            raise ReportError(f"map method {self.map_method!r} is not one of {', '.join(MAP_METHODS)}.")
        if not 0.0 < self.near_duplicate_threshold <= 1.0:
            raise ReportError(
                f"the near-duplicate threshold must be in (0, 1] (a cosine similarity), not {self.near_duplicate_threshold}."
            )
        return self


DEFAULT_OPTIONS = ReportOptions()
