"""The resolver contract: what a resolver answers, and the resolved module it returns."""

from __future__ import annotations

import dataclasses

# Network timeout for a remote handle when the caller names none.
DEFAULT_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class ResolvedModule:
    """A module available on local disk.

    Attributes:
      handle: the handle as given.
      path: local directory holding the module.
      fingerprint: `sha256:<hex>` content hash of the module's files.
    """

    handle: str
    path: str
    fingerprint: str


class Resolver:
    """Turns the handles of one family into local module directories.

    The protocol of `tensorflow_hub.resolver.Resolver`, except that `__call__`
    returns a `ResolvedModule` (path and fingerprint) rather than a path.
    """

    def is_supported(self, handle: str) -> bool:
        """Returns True when this resolver handles `handle`."""
        raise NotImplementedError

    def __call__(self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ResolvedModule:
        """Resolves `handle` (one that `is_supported` accepts) to a local module directory.

        Raises:
          HandleError: the handle names no usable module, or it could not be fetched.
        """
        raise NotImplementedError
