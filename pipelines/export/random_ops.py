"""The stateful random ops of TensorFlow: a graph with them gives other outputs on every call."""

from __future__ import annotations

STATEFUL_RANDOM_OPS = frozenset(
    {
        "Multinomial",
        "ParameterizedTruncatedNormal",
        "RandomGamma",
        "RandomPoisson",
        "RandomPoissonV2",
        "RandomShuffle",
        "RandomStandardNormal",
        "RandomUniform",
        "RandomUniformInt",
        "TruncatedNormal",
    }
)
"""Op types that draw from a random seed when `seed` and `seed2` are both 0 (dropout, random init)."""
