"""A vector as pgvector's psycopg adapter sends it: float32 for `vector`, `HalfVector` for `halfvec`."""

from __future__ import annotations

from typing import Any

import numpy as np
from pgvector import HalfVector


def vector_value(vector_type: str, values: np.ndarray) -> Any:
    """A row's vector as pgvector's adapter sends it: a float32 array for `vector`, a `HalfVector` for `halfvec`."""
    return HalfVector(values) if vector_type == "halfvec" else np.asarray(values, np.float32)
