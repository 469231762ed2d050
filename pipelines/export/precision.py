"""Reduced-precision module versions: a written SavedModel's heavy ops rewritten to compute in bfloat16.

`rewrite_saved_model(path, "bfloat16")` casts the inputs of matmuls and
convolutions, and the element-wise ops oneDNN fuses with them, to bfloat16;
variables, signatures and outputs stay float32. What is converted and why:
docs/design/export.md.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Mapping
from typing import Any

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
PRECISIONS = (FLOAT32, BFLOAT16)
# Verification of a reduced-precision version against its float32 source: min cosine per vector.
DEFAULT_MIN_COSINE = 0.999
# ... and the share of elements of each non-float output (ids, masks, an argmax) that must be equal:
# all of them unless told otherwise (an argmax can flip where bfloat16 rounds two close scores to a tie).
DEFAULT_MIN_AGREEMENT = 1.0

# Heavy ops -> their type attributes (all float32 for the op to be converted).
HEAVY_OPS: dict[str, tuple[str, ...]] = {
    "MatMul": ("T",),
    "BatchMatMulV2": ("T",),
    "BatchMatMulV3": ("Ta", "Tb", "Tout"),
    "Conv2D": ("T",),
    "DepthwiseConv2dNative": ("T",),
}
# Element-wise ops that stay in bfloat16 after a heavy op (attribute `T`), when every
# input is a bfloat16 result or a constant; BiasAdd's bias (input 1) may be anything.
FOLLOW_OPS = frozenset(
    {
        "BiasAdd",
        "Mul",
        "AddV2",
        "Add",
        "Sub",
        "Neg",
        "Erf",
        "Erfc",
        "Relu",
        "Relu6",
        "Tanh",
        "Sigmoid",
    }
)
_BIAS_INPUT = {"BiasAdd": 1}
_CAST_SUFFIX = {True: "/to_bf16", False: "/to_f32"}


class PrecisionError(ValueError):
    """A precision that does not exist, or a module that has nothing to run in it."""


@dataclasses.dataclass(frozen=True)
class RewriteResult:
    """What `rewrite_saved_model` did.

    Attributes:
      converted: heavy op type -> how many were converted to bfloat16.
      already: heavy ops that were bfloat16 already (a re-export of a bfloat16 module).
      elementwise: element-wise ops that run in bfloat16 with them.
    """

    converted: Mapping[str, int]
    already: int
    elementwise: int

    @property
    def heavy_ops(self) -> int:
        """Heavy ops that now run in bfloat16."""
        return sum(self.converted.values()) + self.already

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record of the rewrite (under `precision`)."""
        return {
            "converted": dict(sorted(self.converted.items())),
            "already_bfloat16": self.already,
            "elementwise_bfloat16": self.elementwise,
        }


def check_precision(precision: str) -> str:
    """Returns `precision` if it is one of `PRECISIONS`.

    Raises:
      PrecisionError: naming the bad value and the valid ones.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    return precision


def rewrite_saved_model(path: str, precision: str) -> RewriteResult:
    """Rewrites the SavedModel at `path` in place so its heavy ops compute in `precision`.

    Args:
      path: a SavedModel directory (its `saved_model.pb` is replaced, and its
        `fingerprint.pb` rewritten to match).
      precision: one of `PRECISIONS`; "float32" changes nothing, but checks
        that no heavy op computes in bfloat16 already (a module written from
        a bfloat16 one would then be recorded as float32).

    Returns:
      What was converted.

    Raises:
      PrecisionError: unknown precision, no float32 heavy op to convert, or
        bfloat16 heavy ops in what is meant to be float32.
    """
    check_precision(precision)
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(pb_path, "rb") as f:
        saved_model.ParseFromString(f.read())
    if precision == FLOAT32:
        already = sum(_count_bfloat16(f) for mg in saved_model.meta_graphs for f in mg.graph_def.library.function)
        if already:
            raise PrecisionError(
                f"The module computes {already} matmul/convolution ops in bfloat16 already (it was written from a "
                "bfloat16 module?); export it with precision bfloat16 so that its manifest says so."
            )
        return RewriteResult({}, 0, 0)
    results = [_rewrite_function(f) for mg in saved_model.meta_graphs for f in mg.graph_def.library.function]
    converted = sum((collections.Counter(r.converted) for r in results), collections.Counter())
    result = RewriteResult(dict(converted), sum(r.already for r in results), sum(r.elementwise for r in results))
    if not result.heavy_ops:
        raise PrecisionError(
            f"The module has no float32 {', '.join(sorted(HEAVY_OPS))} op to run in {precision}; export it in float32."
        )
    with open(pb_path, "wb") as out:
        out.write(saved_model.SerializeToString())
    _write_fingerprint(path)
    return result


def _write_fingerprint(path: str) -> None:
    """Rewrites `fingerprint.pb` for the edited `saved_model.pb` (TensorFlow records its checksum)."""
    from tensorflow.python.saved_model import fingerprinting_utils

    fingerprint = os.path.join(path, "fingerprint.pb")
    if os.path.exists(fingerprint):
        os.remove(fingerprint)
    fingerprinting_utils.write_fingerprint(path)


def _output_ref(node: Any) -> str:
    """`node:output_arg:0`, how a FunctionDef names a single-output node's result."""
    from tensorflow.python.framework import op_def_registry

    return f"{node.name}:{op_def_registry.get(node.op).output_arg[0].name}:0"


def _cast(name: str, source: str, to_bfloat16: bool) -> Any:
    from tensorflow.core.framework import node_def_pb2, types_pb2

    node = node_def_pb2.NodeDef(name=name, op="Cast", input=[source])
    f32, bf16 = types_pb2.DT_FLOAT, types_pb2.DT_BFLOAT16
    node.attr["SrcT"].type, node.attr["DstT"].type = (f32, bf16) if to_bfloat16 else (bf16, f32)
    node.attr["Truncate"].b = False
    return node


def _count_bfloat16(function: Any) -> int:
    """Heavy ops of a FunctionDef that compute in bfloat16."""
    from tensorflow.core.framework import types_pb2

    return sum(
        all(node.attr[a].type == types_pb2.DT_BFLOAT16 for a in HEAVY_OPS[node.op])
        for node in function.node_def
        if node.op in HEAVY_OPS
    )


class _Casts:
    """The Cast nodes of one direction added to a function: one per source ref."""

    def __init__(self, to_bfloat16: bool):
        self.to_bfloat16 = to_bfloat16
        self.nodes: list[Any] = []
        self._refs: dict[str, str] = {}

    def of(self, ref: str) -> str:
        """The ref of `ref` cast (added on first use)."""
        if ref not in self._refs:
            suffix = f"{_CAST_SUFFIX[True]}_{len(self.nodes)}" if self.to_bfloat16 else _CAST_SUFFIX[False]
            node = _cast(f"{ref.split(':')[0]}{suffix}", ref, self.to_bfloat16)
            self.nodes.append(node)
            self._refs[ref] = f"{node.name}:y:0"
        return self._refs[ref]


def _rewrite_function(function: Any) -> RewriteResult:
    """Converts one FunctionDef in place: its float32 heavy ops and the element-wise ops that join them."""
    from tensorflow.core.framework import types_pb2

    f32, bf16 = types_pb2.DT_FLOAT, types_pb2.DT_BFLOAT16
    nodes = {node.name: node for node in function.node_def}
    heavy = [node for node in function.node_def if node.op in HEAVY_OPS]
    already = _count_bfloat16(function)
    region = {node.name for node in heavy if all(node.attr[a].type == f32 for a in HEAVY_OPS[node.op])}
    converted = dict(collections.Counter(nodes[name].op for name in region))
    seeds = set(region)
    region |= _grow_region(function, nodes, region)
    region_refs = {_output_ref(nodes[name]) for name in region}
    to_bf16, to_f32 = _Casts(to_bfloat16=True), _Casts(to_bfloat16=False)
    for node in function.node_def:  # in graph order, so the cast names are the same on every export
        if node.name in region:
            for i, ref in enumerate(node.input):
                if not ref.startswith("^") and ref not in region_refs:
                    node.input[i] = to_bf16.of(ref)
            for attr in HEAVY_OPS.get(node.op, ("T",)):
                node.attr[attr].type = bf16
        else:
            for i, ref in enumerate(node.input):
                if ref in region_refs:
                    node.input[i] = to_f32.of(ref)
    for key, ref in sorted(function.ret.items()):
        if ref in region_refs:
            function.ret[key] = to_f32.of(ref)
    added = [*to_bf16.nodes, *to_f32.nodes]
    function.node_def.extend(added)
    return RewriteResult(converted, already, len(region) - len(seeds))


def _grow_region(function: Any, nodes: Mapping[str, Any], seeds: set[str]) -> set[str]:
    """The element-wise float32 ops that can join the bfloat16 ops `seeds` (see `FOLLOW_OPS`)."""
    from tensorflow.core.framework import types_pb2

    region = set(seeds)
    grew = True
    while grew:
        grew = False
        for node in function.node_def:
            if node.name in region or node.op not in FOLLOW_OPS or node.attr["T"].type != types_pb2.DT_FLOAT:
                continue
            producers = [ref.split(":")[0] for ref in node.input if not ref.startswith("^")]
            free = _BIAS_INPUT.get(node.op)

            def joins(i: int, producer: str) -> bool:
                return producer in region or i == free or getattr(nodes.get(producer), "op", None) == "Const"

            if any(p in region for p in producers) and all(joins(i, p) for i, p in enumerate(producers)):
                if free is not None and producers[0] not in region:
                    continue  # a bias added to float32 values: nothing to gain
                region.add(node.name)
                grew = True
    return region - seeds
