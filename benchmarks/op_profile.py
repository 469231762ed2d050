"""`python -m benchmarks.op_profile`: where a module's time goes, per op type, in each precision.

    python -m benchmarks.op_profile [--modules DIR ...] [--rows 1000] [--json OUT]

Calls each module's `default` signature once on the first N texts of the
corpus (after two warm-up calls, one with all N texts so that every shape is
traced), under TensorFlow's profiler, and sums the time of each op type from
the trace (`*.xplane.pb`). Kernels of several threads overlap, so the op
times add up to more than the wall time; their shares are what compare. Run
with the benchmark's threads (`TF_NUM_INTRAOP_THREADS=2
TF_NUM_INTEROP_THREADS=1`, set here unless already set).

It answers "which ops take the time in each precision": on a CPU without AMX
the bfloat16 module's matmuls (oneDNN `_MklNativeFusedMatMul`, bias and GELU
fused) take about half their float32 time, while the float32 rest of each
layer (layer norm, softmax, residual adds, transposes) and the casts do not
shrink.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time
from typing import Any

DEFAULT_MODULES = ("build/modules/all-minilm-l6-v2/1", "build/modules/all-minilm-l6-v2-bf16/1")
DEFAULT_CORPUS = os.path.join("benchmarks", "data", "docstrings.jsonl")
TOP_OPS = 14
# Trace events that wrap others (the function call, the executor, profiler regions): not ops of the model.
_WRAPPERS = (
    "Process",
    "Run",
    "__inference",
    "__forward",
    "PartitionedCall",
    "StatefulPartitionedCall",
    "While",
    "Record",
    "StartRegion",
    "StopRegion",
)


def op_times(xspace_path: str) -> dict[str, float]:
    """Milliseconds per op type in a profiler trace (events named `node:OpType`), wrappers left out."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    totals: dict[str, float] = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name:
                    continue
                op = name.rsplit(":", 1)[1].strip()
                if op and not op.startswith(_WRAPPERS):
                    totals[op] += event.duration_ps / 1e9
    return dict(totals)


def profile(module: str, texts: list[str]) -> dict[str, Any]:
    """Profiles one `default` call of `module` on `texts`; returns wall seconds and op milliseconds."""
    from pipelines.hub import loading, module_info
    from pipelines.hub.module_manifest import read_module_manifest

    tf = loading.import_tf()
    serve = loading.load(module).signatures[module_info.DEFAULT_SIGNATURE]
    (name,) = serve.structured_input_signature[1]
    batch = tf.constant(texts)
    serve(**{name: batch[:64]})
    serve(**{name: batch})
    with tempfile.TemporaryDirectory(prefix="hub-embed-profile-") as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        serve(**{name: batch})
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        (trace,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        ops = op_times(trace)
    precision = read_module_manifest(module).get("precision", {}).get("compute", "float32")
    return {
        "module": module,
        "precision": precision,
        "rows": len(texts),
        "wall_s": wall,
        "rows_per_s": len(texts) / wall,
        "op_ms": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
    }


def render(results: list[dict[str, Any]]) -> str:
    """A table: op type, then ms and share of op time per module."""
    ops: dict[str, float] = collections.Counter()
    for result in results:
        for op, ms in result["op_ms"].items():
            ops[op] = max(ops[op], ms)
    top = [op for op, _ in sorted(ops.items(), key=lambda kv: -kv[1])[:TOP_OPS]]
    header = ["op"] + [f"{r['precision']} ms (share)" for r in results]
    rows = [header]
    for op in top:
        cells = [op]
        for result in results:
            total = sum(result["op_ms"].values()) or 1.0
            ms = result["op_ms"].get(op, 0.0)
            cells.append(f"{ms:8.0f} ({100 * ms / total:4.1f}%)")
        rows.append(cells)
    rows.append(["all ops"] + [f"{sum(r['op_ms'].values()):8.0f}" for r in results])
    rows.append(["wall, rows/s"] + [f"{r['wall_s'] * 1000:.0f} ms, {r['rows_per_s']:.1f}" for r in results])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.op_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(DEFAULT_MODULES))
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    from benchmarks import corpus, cpu

    texts = corpus.read_texts(args.corpus, args.rows)
    results = [profile(module, texts) for module in args.modules]
    model, flags = cpu.read_cpuinfo()
    print(cpu.summary(model, os.cpu_count(), cpu.features(flags)))
    print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
