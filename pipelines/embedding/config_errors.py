"""The error of an invalid job configuration, and the "did you mean" hint its messages give."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """An invalid job configuration; the message names the value and the valid ones."""


def suggest(value: str, valid: Sequence[str]) -> str:
    """`did you mean 'x'? ` for the closest of `valid` to a mistyped `value`, else an empty string."""
    close = difflib.get_close_matches(value, valid, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def type_error(key: str, expected: str, value: Any) -> ConfigError:
    """The error of a value of the wrong type, naming the key, what it must be and what it got."""
    return ConfigError(f"{key} must be {expected}, got {value!r} ({type(value).__name__}).")
