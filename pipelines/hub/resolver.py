"""The resolver contract: what a resolver answers, and the resolved module it returns."""

from __future__ import annotations

import dataclasses

from pipelines.hub.limits import DEFAULT_LIMITS, Limits

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


@dataclasses.dataclass(frozen=True)
class ResolveOptions:
    """How far a handle is trusted: the limits on fetching it, and what the cache must prove.

    Attributes:
      limits: what fetching and unpacking one module may cost (see `Limits`).
      allow_insecure_http: send `user:password@` credentials over plain
        `http://` (refused otherwise: they would cross the network in clear).
      verify_cache: re-hash a cached module's files on every use instead of
        comparing their sizes and modification times with those recorded
        when it was cached.
    """

    limits: Limits = DEFAULT_LIMITS
    allow_insecure_http: bool = False
    verify_cache: bool = False


DEFAULT_OPTIONS = ResolveOptions()


class Resolver:
    """Turns the handles of one family into local module directories.

    The protocol of `tensorflow_hub.resolver.Resolver`, except that `__call__`
    takes `ResolveOptions` and returns a `ResolvedModule` (path and
    fingerprint) rather than a path.
    """

    def is_supported(self, handle: str) -> bool:
        """Returns True when this resolver handles `handle`."""
        raise NotImplementedError

    def __call__(
        self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S, options: ResolveOptions = DEFAULT_OPTIONS
    ) -> ResolvedModule:
        """Resolves `handle` (one that `is_supported` accepts) to a local module directory.

        Args:
          handle: the module handle.
          timeout_s: the network timeout: for connecting, and for each read.
          options: the limits and the trust placed in the cache (see `ResolveOptions`).

        Raises:
          HandleError: the handle names no usable module, or it could not be fetched.
        """
        raise NotImplementedError
