"""The fine-tuning tool's error."""

from __future__ import annotations


class FinetuneError(ValueError):
    """A fine-tuning run that cannot start: bad module, task or hyperparameters."""
