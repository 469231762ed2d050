"""The op gate's findings: a refused op, a verdict, and the error a refusal raises."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.hub.errors import ModuleError


class OpGateError(ModuleError):
    """A module holds ops the gate refuses (or its graphs cannot be read)."""


@dataclasses.dataclass(frozen=True)
class RefusedOp:
    """One op the gate refuses, with the function (or graph) that holds it."""

    op: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op} ({self.reason}) in {self.where}"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the gate found in a module and what the caller let through."""

    refused: tuple[RefusedOp, ...]
    allowed_ops: tuple[str, ...] = ()
    trusted: bool = False

    @property
    def blocking(self) -> tuple[RefusedOp, ...]:
        """The refused ops neither `allowed_ops` nor `trusted` let through."""
        if self.trusted:
            return ()
        return tuple(r for r in self.refused if r.op not in self.allowed_ops)

    @property
    def passed(self) -> bool:
        return not self.blocking

    def summary(self) -> str:
        """One line for `inspect` and logs."""
        if not self.refused:
            return "passed: every op is one a module may run"
        ops = ", ".join(sorted({r.op for r in self.refused}))
        if self.trusted:
            return f"trusted module (--trust-module): gate not applied; it holds {ops}"
        if self.passed:
            return f"passed with --allow-ops {','.join(self.allowed_ops)}: it holds {ops}"
        return "refused: " + "; ".join(str(r) for r in self.blocking)

    def as_manifest(self) -> dict[str, Any]:
        """What the embedding manifest records about the gate."""
        return {
            "passed": self.passed,
            "trusted": self.trusted,
            "allowed_ops": sorted({r.op for r in self.refused if r.op in self.allowed_ops}),
            "refused_ops": sorted({r.op for r in self.refused}),
        }
