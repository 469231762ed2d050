"""Verifying a written module against its in-memory source on the probe inputs, before it is published.

float32 modules must reproduce every output within an absolute tolerance;
reduced-precision ones are compared by cosine per vector and by the share of
equal elements in non-float outputs. A migrated TF1 module is also compared
with the TF1 module itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipelines.export import comparison, tf1_migrate
from pipelines.export import precision as reduced_precision
from pipelines.export.errors import ExportError, ExportVerificationError
from pipelines.export.sources import DEFAULT_OUTPUT_KEY, DEFAULT_SIGNATURE, PreparedSource, pack_inputs

DEFAULT_ATOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How closely a written module must reproduce its source on the probe inputs.

    Attributes:
      precision: the module's compute precision (`pipelines.export.precision.PRECISIONS`).
      atol: float32: the largest absolute difference allowed in any output.
      min_cosine: reduced precision: the smallest cosine allowed between a
        source vector and the module's (`comparison.cosine_stats`).
      min_agreement: reduced precision: the smallest share of equal elements
        in each non-float output (`comparison.agreement`).
    """

    precision: str = reduced_precision.FLOAT32
    atol: float = DEFAULT_ATOL
    min_cosine: float = reduced_precision.DEFAULT_MIN_COSINE
    min_agreement: float = reduced_precision.DEFAULT_MIN_AGREEMENT


def checked_tolerance(precision: str, atol: float, min_cosine: float, min_agreement: float) -> Tolerance:
    """Checks the verification settings an export was given and returns them as a `Tolerance`.

    Raises:
      ExportError: an unknown precision, or a `min_cosine` outside (0, 1] or
        `min_agreement` outside [0, 1].
    """
    try:
        reduced_precision.check_precision(precision)
    except reduced_precision.PrecisionError as e:
        raise ExportError(str(e)) from e
    _check_fraction("min_cosine", min_cosine, zero_allowed=False)
    _check_fraction("min_agreement", min_agreement, zero_allowed=True)
    return Tolerance(precision, atol, min_cosine, min_agreement)


def _check_fraction(name: str, value: Any, zero_allowed: bool) -> None:
    """Raises ExportError unless `value` is a number in [0, 1] (or (0, 1])."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not ((value >= 0 if zero_allowed else value > 0) and value <= 1):
        raise ExportError(f"{name} must be a number in {'[' if zero_allowed else '('}0, 1], got {value!r}.")


def _tf():
    # Imported on first use: importing the export tool does not import TensorFlow.
    import tensorflow as tf

    return tf


def _same_keys(what: str, expected: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    if set(expected) != set(actual):
        raise ExportVerificationError(f"{what}: reloaded outputs {sorted(actual)} differ from {sorted(expected)}.")


def _outputs_side_by_side(
    prepared: PreparedSource, loaded: Any, probes: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """(source outputs, reloaded outputs) per signature and for `__call__`, on the probe inputs."""
    tf = _tf()
    pairs = {}
    for name, endpoint in prepared.signatures.items():
        probe = {k: tf.constant(v) for k, v in probes[name].items()}
        expected, actual = endpoint.call(probe, False), loaded.signatures[name](**probe)
        _same_keys(f"Signature {name!r}", expected, actual)
        pairs[name] = (expected, actual)
    call_probe = {k: tf.constant(v) for k, v in probes[DEFAULT_SIGNATURE].items()}
    expected = prepared.call.call(call_probe, False)[DEFAULT_OUTPUT_KEY]
    pairs["__call__"] = ({DEFAULT_OUTPUT_KEY: expected}, {DEFAULT_OUTPUT_KEY: loaded(pack_inputs(call_probe))})
    return pairs


def verify(
    prepared: PreparedSource, loaded: Any, probes: Mapping[str, Mapping[str, Any]], tolerance: Tolerance
) -> dict[str, Any]:
    """Compares every reloaded signature and `__call__` with the in-memory source.

    Returns:
      The manifest's `verification` entry: max abs difference per signature
      (and `__call__`); for a reduced precision also the cosine per signature
      and its overall min and mean.

    Raises:
      ExportVerificationError: outside `tolerance`, or different outputs.
    """
    pairs = _outputs_side_by_side(prepared, loaded, probes)
    floats_only = tolerance.precision != reduced_precision.FLOAT32  # then other outputs are compared by agreement
    diffs = {
        name: max(
            (comparison.max_abs_diff(e[k], a[k]) for k in e if not floats_only or comparison.is_float(e[k])),
            default=0.0,
        )
        for name, (e, a) in pairs.items()
    }
    if tolerance.precision == reduced_precision.FLOAT32:
        failed = {k: v for k, v in diffs.items() if not v <= tolerance.atol}
        if failed:
            raise ExportVerificationError(
                f"The reloaded module does not reproduce the model (max abs diff must be <= {tolerance.atol:g}): "
                + ", ".join(f"{k}: {v:.3g}" for k, v in sorted(failed.items()))
            )
        return {"metric": "max_abs_diff", "atol": tolerance.atol, "max_abs_diff": dict(sorted(diffs.items()))}
    cosines, agreements = {}, {}
    for name, (expected, actual) in pairs.items():
        stats = []
        for key in expected:
            if comparison.is_float(expected[key]):
                stats.append(comparison.cosine_stats(expected[key], actual[key]))
            else:
                agreements[f"{name}/{key}"] = comparison.agreement(expected[key], actual[key])
        cosines[name] = comparison.combine_cosine_stats(stats)
    low = {k: v["min"] for k, v in cosines.items() if not v["min"] >= tolerance.min_cosine}
    unequal = {k: v for k, v in agreements.items() if not v["share"] >= tolerance.min_agreement}
    if unequal or low:
        hint = (
            (
                " (an integer output computed from scores, such as an argmax, changes where bfloat16 rounds two "
                "close scores to a tie; --min-agreement, or min_agreement=, accepts a share)"
            )
            if unequal
            else ""
        )
        raise ExportVerificationError(
            f"The {tolerance.precision} module does not reproduce its source (min cosine per vector must "
            f"be >= {tolerance.min_cosine:g}, share of equal elements per other output >= {tolerance.min_agreement:g}): "
            + ", ".join(
                [
                    *(f"{k}: min cosine {v:.6f}" for k, v in sorted(low.items())),
                    *(f"{k}: {v['equal']} of {v['elements']} elements equal" for k, v in sorted(unequal.items())),
                ]
            )
            + hint
        )
    overall = comparison.combine_cosine_stats(list(cosines.values()))
    return {
        "metric": "cosine",
        "reference": "the source, in memory",
        "min_cosine_required": tolerance.min_cosine,
        "min_cosine": overall["min"],
        "mean_cosine": overall["mean"],
        "cosine": dict(sorted(cosines.items())),
        "min_agreement_required": tolerance.min_agreement,
        "agreement": {k: v["share"] for k, v in sorted(agreements.items())},
        "max_abs_diff": dict(sorted(diffs.items())),
    }


def verified_against_tf1_module(
    prepared: PreparedSource, probes: Mapping[str, Mapping[str, Any]], atol: float
) -> PreparedSource:
    """Verifies a migrated TF1 module against the TF1 module itself; records the differences in its source info.

    Raises:
      ExportVerificationError: the migration does not reproduce the TF1 module within `atol`.
    """
    if prepared.source_check is None:
        return prepared
    try:
        result = prepared.source_check(probes, atol)
    except tf1_migrate.SourceMismatchError as e:
        raise ExportVerificationError(str(e)) from e
    info = {**prepared.source_info, "verification": {"atol": atol, **result}}
    return dataclasses.replace(prepared, source_info=info)
