"""A vector as pgvector's psycopg adapter sends it, and the digest the server computes of the same bytes."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from pgvector import HalfVector, Vector


def vector_value(vector_type: str, values: np.ndarray) -> Any:
    """A row's vector as pgvector's adapter sends it: a float32 array for `vector`, a `HalfVector` for `halfvec`."""
    return HalfVector(values) if vector_type == "halfvec" else np.asarray(values, np.float32)


def vector_digest(vector_type: str, values: np.ndarray) -> bytes:
    """SHA-256 of the vector's binary form, as the server's `sha256(<type>_send(embedding))` computes it."""
    value = HalfVector(values) if vector_type == "halfvec" else Vector(values)
    return hashlib.sha256(value.to_binary()).digest()
