"""`python -m benchmarks.probes.op_profile`: where a module's time goes, per op type, in each precision.

    python -m benchmarks.probes.op_profile [--modules DIR ...] [--rows 1000]

One `default` call of each module on the first N texts of the corpus under
TensorFlow's profiler, the trace's time summed per op type; the report goes to
`benchmarks/results/op_profile.json` (`--json`).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from typing import Any

from benchmarks import corpus, harness
from benchmarks.tables import markdown_table

DEFAULT_MODULES = ("build/modules/all-minilm-l6-v2/1", "build/modules/all-minilm-l6-v2-bf16/1")
BENCHMARK = "op_profile"
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


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """The table's rows, header first: op type, then ms and share of op time per module; totals last."""
    ops: dict[str, float] = collections.Counter()
    for result in results:
        for op, ms in result["op_ms"].items():
            ops[op] = max(ops[op], ms)
    top = [op for op, _ in sorted(ops.items(), key=lambda kv: -kv[1])[:TOP_OPS]]
    rows = [["op"] + [f"{r['precision']} ms (share)" for r in results]]
    for op in top:
        cells = [op]
        for result in results:
            total = sum(result["op_ms"].values()) or 1.0
            ms = result["op_ms"].get(op, 0.0)
            cells.append(f"{ms:8.0f} ({100 * ms / total:4.1f}%)")
        rows.append(cells)
    rows.append(["all ops"] + [f"{sum(r['op_ms'].values()):8.0f}" for r in results])
    rows.append(["wall, rows/s"] + [f"{r['wall_s'] * 1000:.0f} ms, {r['rows_per_s']:.1f}" for r in results])
    return rows


def render(results: list[dict[str, Any]]) -> str:
    """A table: op type, then ms and share of op time per module."""
    rows = table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def markdown(report: dict[str, Any]) -> str:
    """The report's table in Markdown."""
    results = report["results"]
    modules = ", ".join(f"`{r['module']}` ({r['precision']})" for r in results)
    header, *rows = table_rows(results)
    cells = [[f"`{row[0]}`", *(" ".join(cell.split()) for cell in row[1:])] for row in rows[:-2]]
    cells += [[row[0], *(" ".join(cell.split()) for cell in row[1:])] for row in rows[-2:]]
    return f"{results[0]['rows']} texts; modules {modules}.\n\n" + markdown_table(header, cells)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.probes.op_profile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--modules", nargs="+", default=list(DEFAULT_MODULES))
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument(
        "--json", default=harness.result_path(BENCHMARK), help="write the report here (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    # The benchmarks' threads, before TensorFlow starts (unless already set).
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    meta = {
        **harness.machine(),
        "corpus": args.corpus,
        "rows": args.rows,
        "tf_threads": {
            "intra_op": os.environ["TF_NUM_INTRAOP_THREADS"],
            "inter_op": os.environ["TF_NUM_INTEROP_THREADS"],
        },
        "command": harness.command_line("benchmarks.probes.op_profile", argv),
    }
    texts = corpus.read_texts(args.corpus, args.rows)
    results = [profile(module, texts) for module in args.modules]
    harness.finish(meta)
    print(harness.cpu_line(meta))
    print(render(results))
    harness.write_result(BENCHMARK, {"results": results, "meta": meta}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
