"""Probe inputs an export is verified on: given ones, or synthetic ones made from the input specs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipelines.export.errors import ExportError
from pipelines.export.sources import PreparedSource

# Synthetic probe inputs: strings cycle through these; unknown dimensions get PROBE_SIZE.
PROBE_TEXTS = ("The quick brown fox jumps over the lazy dog.", "", "naïve café, 東京 and emoji 🙂", "a")
PROBE_SIZE = 3


def synthetic_probe(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Deterministic probe values for input specs: texts, floats in [0, 1), ints/bools in {0, 1}.

    Unknown dimensions get size `PROBE_SIZE`.

    Raises:
      ExportError: an input of unknown rank or unsupported dtype (pass `probe_inputs`).
    """
    import tensorflow as tf  # imported on first use: importing the export tool does not import TensorFlow

    rng = np.random.default_rng(0)
    probe = {}
    for name, spec in inputs.items():
        if spec.shape.rank is None:
            raise ExportError(f"Input {name!r} has unknown rank; pass probe_inputs for it.")
        shape = [PROBE_SIZE if d is None else d for d in spec.shape.as_list()]
        if spec.dtype == tf.string:
            probe[name] = np.resize(np.array(PROBE_TEXTS, dtype=object), shape)
        elif spec.dtype.is_floating:
            probe[name] = rng.random(shape).astype(spec.dtype.as_numpy_dtype)
        elif spec.dtype.is_integer or spec.dtype == tf.bool:
            probe[name] = rng.integers(0, 2, shape).astype(spec.dtype.as_numpy_dtype)
        else:
            raise ExportError(f"No synthetic probe for input {name!r} of dtype {spec.dtype.name}; pass probe_inputs.")
    return probe


def probes_for(
    prepared: PreparedSource, probe_inputs: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """The probe inputs of every signature: those given, else `synthetic_probe` ones.

    Raises:
      ExportError: `probe_inputs` names a signature the source does not have.
    """
    given = dict(probe_inputs or {})
    unknown = set(given) - set(prepared.signatures)
    if unknown:
        raise ExportError(
            f"probe_inputs for unknown signatures {sorted(unknown)}; signatures: {sorted(prepared.signatures)}."
        )
    return {
        name: dict(given[name]) if name in given else synthetic_probe(endpoint.inputs)
        for name, endpoint in prepared.signatures.items()
    }


def probe_record(probes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the manifest records about the probe inputs: rows and a content hash per signature."""
    record = {}
    for name, inputs in sorted(probes.items()):
        digest = hashlib.sha256()
        rows = 0
        for key, value in sorted(inputs.items()):
            array = np.asarray(value)
            rows = max(rows, array.shape[0] if array.ndim else 1)
            digest.update(f"{key}|{array.dtype.kind}|{array.shape}|".encode())
            if array.dtype.kind in "OSU":
                for item in array.reshape(-1):
                    data = item if isinstance(item, bytes) else str(item).encode("utf-8")
                    digest.update(len(data).to_bytes(8, "little") + data)
            else:
                digest.update(np.ascontiguousarray(array).tobytes())
        record[name] = {"rows": rows, "sha256": digest.hexdigest()}
    return record
