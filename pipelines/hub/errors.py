"""The errors of this package: a handle that cannot be resolved, a module that cannot be used."""

from __future__ import annotations


class HandleError(ValueError):
    """A handle that cannot be resolved; the message says why."""


class ModuleError(ValueError):
    """A module that cannot be loaded, or a signature/output key it does not have."""
