"""The incremental-embedding benchmark (issue 13): a second run that reuses the first run's table.

    python -m benchmarks.incremental --corpus benchmarks/data/docstrings.jsonl --rows 2000 [--small-rows 0]

(`python -m benchmarks.run --only incremental --incremental-rows N` runs the
same and adds it to the benchmark report.)

The scenario, built deterministically from the corpus (`build_scenario`):

* **Run 1's input: N texts.** Text i is corpus paragraph `i mod P` (P = 9,796
  paragraphs in `benchmarks/data/docstrings.jsonl`) in copy `k = i div P`.
  Copy 0 is the paragraph as it is; copy k >= 1 is the paragraph with one
  small edit, the kind of change a revised docstring gets, drawn with a
  generator seeded by (seed, k, paragraph): two adjacent letters of a word
  swapped (a typo), one word deleted, one word inserted (an adverb such as
  "also", "usually"), one word replaced by a near-synonym ("returns" ->
  "gives", "the" -> "this", ...), or a short sentence appended ("See the
  module documentation for details.", ...). An edit that gives a text already
  in the sequence is drawn again, so all texts are distinct. Ids are
  `inc-<i, 7 digits>`: the same text has the same id in every run and at every N.
* **Run 2's input:** run 1's rows in the same order, with, chosen by a
  seeded shuffle of the N rows:
  - `removed` = round(1% N) rows left out;
  - `changed` = round(1% N) rows whose text gets one more small edit (same
    kinds as above, distinct from every text of both runs), same id;
  - `added` = round(1% N) new rows, appended: texts N ... N + added - 1 of the
    same sequence (unseen paragraphs while N + added <= P, else new edited
    copies), ids `inc-<N ...>`;
  - `duplicates` = round(2% of the N - removed remaining rows): rows whose
    text is replaced by another row's text, same id. Half of them (rounded
    down) copy an unchanged row's text (content run 1 has: reused), the
    other half copy a changed or added row's text (content new in run 2: one
    module call for the pair). Sources are distinct, never duplicates themselves.
* **Expected counts** (`Scenario.expected_run2`): `rows_in` = N - removed +
  added; `rows_reused` = unchanged rows + duplicates of unchanged rows;
  `rows_embedded` = changed + added + duplicates of changed/added rows;
  `contents_embedded` = changed + added; `rows_deduplicated` = duplicates
  (every row whose content equals an earlier row's in the same run, reused
  or not); `rows_failed` = 0.

What is measured (`run_incremental`), each whole command
`python -m pipelines.embed --input X --id-field id --output OUT [--reuse PREV]`
timed from outside (`time.monotonic()` around the subprocess; DirectRunner,
in-process, TensorFlow 2 intra-op / 1 inter-op threads):

* The fixed cost: what a command costs whatever its size (interpreter and
  imports, module load and warm-up, graph construction, the reuse table's
  manifest and footers, commit), as the wall time of the same command on a
  1-row input: `fixed_full_s`, run 1's command (text A, no `--reuse`);
  `fixed_reuse_s`, run 2's command (text B, `--reuse` of that 1-row table:
  one miss, so the module is loaded and called, as in run 2);
  `fixed_reuse_hit_s`, the all-reused command (text A, `--reuse` of that
  table: the row is reused and no module call is needed; the pipeline then
  does not load the module). Each is measured at the start and at the end of
  the benchmark and the smaller value is used.
* `incremental_vs_full_wall` = run 1's wall / run 2's wall.
* `incremental_vs_full_work` = (run 1 - fixed_full) / (run 2 - fixed_reuse).
* `incremental_us_per_unchanged_row`: run 1's input again with `--reuse` of
  run 1's table (every row reused: read, hash, join with the reuse table,
  write): (wall - fixed_reuse_hit) / N. The same at the small N (default
  10,000, with its own run 1) is `..._small`, and the marginal cost between
  the two, (wall_N - wall_small) / (N - small), which no fixed cost enters,
  is `..._marginal`. `..._run2` estimates the same from run 2: (run 2 -
  fixed_reuse - contents_embedded x run 1's work per row) / unchanged rows.
* Checks: the manifests' counts against the expected ones, for every run;
  every run-2 row whose text run 1 embedded has exactly run 1's float32
  bytes for that text (reused, bit-identical); rows with equal texts in run 2
  have equal bytes; every changed, added or duplicate-of-new row has cosine
  >= 0.99999 to a fresh embedding of its text (one more run, without
  `--reuse`, over exactly those texts), and how many are bit-identical is
  reported; `content_hash` is SHA-256 of each row's UTF-8 text.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from benchmarks import corpus

SEED = 13
ID_PREFIX = "inc-"
CHANGED_FRACTION = REMOVED_FRACTION = ADDED_FRACTION = 0.01
DUPLICATE_FRACTION = 0.02
DEFAULT_ROWS = 50_000
DEFAULT_SMALL_ROWS = 10_000
MIN_FRESH_COSINE = 0.99999
LOG_TAIL_LINES = 15
# Words an edit may insert, and near-synonyms an edit may put in a word's place.
_ADVERBS = ("also", "now", "only", "usually", "always", "then", "still", "actually", "currently", "normally")
_SYNONYMS = {
    "the": "this",
    "a": "one",
    "is": "will be",
    "are": "will be",
    "returns": "gives",
    "Return": "Give",
    "Returns": "Gives",
    "return": "give",
    "object": "instance",
    "objects": "instances",
    "value": "result",
    "values": "results",
    "function": "callable",
    "method": "function",
    "list": "sequence",
    "string": "str",
    "file": "stream",
    "name": "identifier",
    "number": "count",
    "used": "needed",
    "must": "should",
    "may": "can",
    "can": "may",
    "if": "when",
    "when": "if",
    "new": "fresh",
    "given": "specified",
    "specified": "given",
    "default": "standard",
    "data": "content",
    "argument": "parameter",
    "arguments": "parameters",
    "create": "make",
    "Create": "Make",
    "set": "assign",
    "get": "fetch",
}
_SENTENCES = (
    "See the module documentation for details.",
    "This may change in a future release.",
    "New in this version.",
    "Changed in this version.",
    "The default is usually sufficient.",
    "This is an implementation detail.",
    "Thread safety is not guaranteed.",
    "Use with care.",
)
_EDIT_KINDS = ("typo", "delete", "insert", "replace", "append")


# --------------------------------------------------------------------------- the scenario


def _edit_once(text: str, kind: str, rng: random.Random) -> str | None:
    """One small edit of `kind` to `text`, or None when it does not apply to this text."""
    words = text.split(" ")
    inner = [i for i in range(1, len(words) - 1) if words[i]]  # the first and last words stay
    if kind == "typo":
        candidates = [
            (i, j)
            for i, w in enumerate(words)
            if len(w) >= 4 and w.isalpha()
            for j in range(1, len(w) - 2)
            if w[j] != w[j + 1]
        ]
        if not candidates:
            return None
        i, j = rng.choice(candidates)
        w = words[i]
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif kind == "delete":
        if len(inner) < 3:
            return None
        del words[rng.choice(inner)]
    elif kind == "insert":
        if not inner:
            return None
        words.insert(rng.choice(inner), rng.choice(_ADVERBS))
    elif kind == "replace":
        candidates = [i for i, w in enumerate(words) if w in _SYNONYMS]
        if not candidates:
            return None
        i = rng.choice(candidates)
        words[i] = _SYNONYMS[words[i]]
    elif kind == "append":
        words.append(rng.choice(_SENTENCES))
    else:
        raise ValueError(f"unknown edit kind {kind!r}")
    return " ".join(words)


def small_edit(text: str, key: str, taken: Callable[[str], bool]) -> str:
    """A small, deterministic edit of `text`, seeded by `key`, giving a text for which `taken` is False.

    Raises:
      RuntimeError: no such edit was found in 100 draws (never seen on the corpus).
    """
    for attempt in range(100):
        rng = random.Random(f"{key}:{attempt}")
        kinds = list(_EDIT_KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            edited = _edit_once(text, kind, rng)
            if edited is not None and edited != text and not taken(edited):
                return edited
    raise RuntimeError(f"no new small edit of {text[:60]!r} (key {key})")


def sequence_texts(paragraphs: Sequence[str], count: int, seed: int = SEED) -> list[str]:
    """The first `count` texts of the scenario's sequence: paragraph `i mod P`, copy `i div P` edited once.

    Text i depends only on i (and the corpus and seed), not on `count`.
    """
    if not paragraphs:
        raise ValueError("the corpus holds no text")
    seen = set(paragraphs)
    texts = []
    for i in range(count):
        copy, j = divmod(i, len(paragraphs))
        if copy == 0:
            text = paragraphs[j]
        else:
            text = small_edit(paragraphs[j], f"{seed}:copy:{copy}:{j}", seen.__contains__)
            seen.add(text)
        texts.append(text)
    return texts


def row_id(i: int) -> str:
    return f"{ID_PREFIX}{i:07d}"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Run 1's and run 2's inputs, and what run 2 must report.

    Attributes:
      run1: (id, text) rows of run 1.
      run2: (id, text) rows of run 2.
      removed, changed, added: ids of those rows.
      duplicates: id -> the id whose (run-2) text it copies.
      duplicates_of_unchanged: the ids in `duplicates` whose source is unchanged.
    """

    run1: tuple[tuple[str, str], ...]
    run2: tuple[tuple[str, str], ...]
    removed: frozenset[str]
    changed: frozenset[str]
    added: frozenset[str]
    duplicates: dict[str, str]
    duplicates_of_unchanged: frozenset[str]

    @property
    def unchanged(self) -> int:
        """Run-2 rows with run 1's id and text."""
        return len(self.run1) - len(self.removed) - len(self.changed) - len(self.duplicates)

    def sizes(self) -> dict[str, int]:
        return {
            "run1_rows": len(self.run1),
            "run2_rows": len(self.run2),
            "unchanged": self.unchanged,
            "removed": len(self.removed),
            "changed": len(self.changed),
            "added": len(self.added),
            "duplicates": len(self.duplicates),
            "duplicates_of_unchanged": len(self.duplicates_of_unchanged),
            "duplicates_of_new": len(self.duplicates) - len(self.duplicates_of_unchanged),
        }

    def expected_run1(self) -> dict[str, int]:
        n = len(self.run1)
        return _counts(rows_in=n, reused=0, embedded=n, deduplicated=0, contents=n)

    def expected_run2(self) -> dict[str, int]:
        fresh = len(self.changed) + len(self.added)
        dup_new = len(self.duplicates) - len(self.duplicates_of_unchanged)
        return _counts(
            rows_in=len(self.run2),
            reused=self.unchanged + len(self.duplicates_of_unchanged),
            embedded=fresh + dup_new,
            deduplicated=len(self.duplicates),
            contents=fresh,
        )

    def expected_all_reused(self) -> dict[str, int]:
        n = len(self.run1)
        return _counts(rows_in=n, reused=n, embedded=0, deduplicated=0, contents=0)

    def fresh_texts(self) -> list[str]:
        """Run 2's texts that run 1 does not hold (changed and added rows), in run-2 order."""
        old = {text for _, text in self.run1}
        return list(dict.fromkeys(text for _, text in self.run2 if text not in old))


def _counts(rows_in: int, reused: int, embedded: int, deduplicated: int, contents: int) -> dict[str, int]:
    return {
        "rows_in": rows_in,
        "rows_written": rows_in,
        "rows_embedded": embedded,
        "rows_reused": reused,
        "rows_deduplicated": deduplicated,
        "contents_embedded": contents,
        "rows_failed": 0,
    }


def build_scenario(paragraphs: Sequence[str], n: int, seed: int = SEED) -> Scenario:
    """The incremental scenario on N rows (see the module docstring)."""
    if n < 4:
        raise ValueError(f"the incremental scenario needs at least 4 rows, got {n}")
    removed_n = changed_n = added_n = max(1, round(CHANGED_FRACTION * n))
    dup_n = max(2, round(DUPLICATE_FRACTION * (n - removed_n)))
    texts = sequence_texts(paragraphs, n + added_n, seed)
    run1 = [(row_id(i), texts[i]) for i in range(n)]
    order = list(range(n))
    random.Random(f"{seed}:select:{n}").shuffle(order)
    removed = order[:removed_n]
    changed = order[removed_n : removed_n + changed_n]
    targets = order[removed_n + changed_n : removed_n + changed_n + dup_n]
    unchanged = order[removed_n + changed_n + dup_n :]
    if len(unchanged) < dup_n:
        raise ValueError(f"{n} rows are too few for the scenario")
    rng = random.Random(f"{seed}:edits:{n}")
    taken = set(texts)
    new_text: dict[int, str] = {}
    for i in changed:
        new_text[i] = small_edit(texts[i], f"{seed}:change:{n}:{i}", taken.__contains__)
        taken.add(new_text[i])
    added = list(range(n, n + added_n))
    fresh = changed + added  # run-2 rows whose content run 1 does not have
    dup_unchanged_n = dup_n // 2
    sources = rng.sample(unchanged, dup_unchanged_n) + rng.sample(fresh, min(dup_n - dup_unchanged_n, len(fresh)))
    if len(sources) < dup_n:
        raise ValueError(f"{n} rows are too few for {dup_n} duplicates")
    text_of = lambda i: new_text.get(i, texts[i])  # noqa: E731
    duplicates = dict(zip(targets, sources))
    for target, source in duplicates.items():
        new_text[target] = text_of(source)
    gone = set(removed)
    run2 = [(row_id(i), text_of(i)) for i in range(n) if i not in gone]
    run2 += [(row_id(i), texts[i]) for i in added]
    return Scenario(
        run1=tuple(run1),
        run2=tuple(run2),
        removed=frozenset(map(row_id, removed)),
        changed=frozenset(map(row_id, changed)),
        added=frozenset(map(row_id, added)),
        duplicates={row_id(t): row_id(s) for t, s in duplicates.items()},
        duplicates_of_unchanged=frozenset(row_id(t) for t, s in duplicates.items() if s < n and s not in new_text),
    )


def read_paragraphs(path: str) -> list[str]:
    """The corpus's distinct texts, in file order."""
    return list(dict.fromkeys(corpus._records(path)))


def write_rows(rows: Iterable[tuple[str, str]], path: str) -> str:
    corpus.write_jsonl(({"id": i, "text": t} for i, t in rows), path)
    return path


# --------------------------------------------------------------------------- running the commands


def embed_command(python: str, input_path: str, output: str, module: str, reuse: str | None = None) -> list[str]:
    """The whole command of one run (DirectRunner, in-process)."""
    cmd = [
        python,
        "-m",
        "pipelines.embed",
        "--input",
        input_path,
        "--id-field",
        "id",
        "--output",
        output,
        "--module",
        module,
    ]
    return cmd + (["--reuse", reuse] if reuse else [])


class CommandError(RuntimeError):
    pass


def _tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:]).strip()


def timed_command(cmd: list[str], env: dict[str, str], cwd: str, log_path: str, timeout: float) -> float:
    """Runs a whole command; returns its wall seconds.

    Raises:
      CommandError: it failed or timed out (with the tail of its log).
    """
    with open(log_path, "w") as log:
        start = time.monotonic()
        try:
            status = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            raise CommandError(f"{' '.join(cmd[1:4])} timed out after {timeout}s; log:\n{_tail(log_path)}") from None
        seconds = time.monotonic() - start
    if status != 0:
        raise CommandError(f"exit status {status} of {' '.join(cmd[3:])}; log:\n{_tail(log_path)}")
    return seconds


@dataclasses.dataclass(frozen=True)
class TableView:
    """A committed table, read back: ids, content hashes, float32 vectors (row order), manifest."""

    ids: list[str]
    hashes: list[str]
    vectors: np.ndarray
    manifest: dict[str, Any]

    def rows(self) -> dict[str, int]:
        return {row: i for i, row in enumerate(self.ids)}


def read_back(output: str) -> TableView:
    import pyarrow as pa

    from pipelines.embedding import sinks

    table = sinks.read_table(output)
    column = table.column("embedding").combine_chunks()
    values = column.values if pa.types.is_fixed_size_list(column.type) else column.flatten()
    vectors = np.asarray(values.to_numpy(zero_copy_only=False), np.float32).reshape(len(column), -1)
    hashes = table.column("content_hash").to_pylist() if "content_hash" in table.column_names else [None] * len(column)
    return TableView(table.column("id").to_pylist(), hashes, vectors, sinks.read_manifest(output) or {})


def _counts_of(view: TableView) -> dict[str, Any]:
    counts = view.manifest.get("counts", {})
    return {key: counts.get(key) for key in (*_counts(0, 0, 0, 0, 0), "balanced")}


def _count_mismatches(view: TableView, expected: dict[str, int]) -> dict[str, dict[str, Any]]:
    counts = _counts_of(view)
    wrong = {k: {"expected": v, "got": counts.get(k)} for k, v in expected.items() if counts.get(k) != v}
    if counts.get("balanced") is not True:
        wrong["balanced"] = {"expected": True, "got": counts.get("balanced")}
    if len(view.ids) != expected["rows_written"]:
        wrong["table_rows"] = {"expected": expected["rows_written"], "got": len(view.ids)}
    return wrong


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _bits(matrix: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(matrix, np.float32).view(np.uint32)


def verify(
    rows: Sequence[tuple[str, str]],
    view: TableView,
    reference: TableView,
    reference_rows: Sequence[tuple[str, str]],
    fresh: TableView | None,
    fresh_rows: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """Checks a reuse run's vectors.

    Every row whose text the reference run (run 1) embedded must hold exactly
    the reference's float32 bytes for that text; rows with equal texts must
    hold equal bytes; every other row is compared with a fresh embedding of
    its text (cosine, and bit-identity counted).
    """
    text_of = dict(rows)
    position = view.rows()
    missing = [r for r, _ in rows if r not in position]
    ref_position = reference.rows()
    ref_by_text = {text: ref_position[r] for r, text in reference_rows}
    old, new = [], []
    for r, text in rows:
        if r in position:
            (old if text in ref_by_text else new).append(r)
    mine = _bits(view.vectors)
    theirs = _bits(reference.vectors)
    old_rows = np.array([position[r] for r in old], np.int64)
    old_ref = np.array([ref_by_text[text_of[r]] for r in old], np.int64)
    identical = (mine[old_rows] == theirs[old_ref]).all(axis=1) if old else np.zeros(0, bool)
    by_text: dict[str, list[int]] = {}
    for r, text in rows:
        if r in position:
            by_text.setdefault(text, []).append(position[r])
    groups = [g for g in by_text.values() if len(g) > 1]
    equal_groups = sum(bool((mine[g] == mine[g[0]]).all()) for g in groups)
    result: dict[str, Any] = {
        "rows_missing": len(missing),
        "reused_rows_checked": len(old),
        "reused_rows_bit_identical": int(identical.sum()),
        "duplicate_groups": len(groups),
        "duplicate_groups_bit_identical": int(equal_groups),
        "content_hash_mismatches": sum(
            h != text_sha256(text_of[r]) for r, h in zip(view.ids, view.hashes) if r in text_of
        ),
        "new_rows_checked": 0,
        "new_rows_min_cosine": None,
        "new_rows_bit_identical": None,
    }
    if new and fresh is not None:
        fresh_position = fresh.rows()
        fresh_by_text = {text: fresh_position[r] for r, text in fresh_rows if r in fresh_position}
        new = [r for r in new if text_of[r] in fresh_by_text]
        a = view.vectors[[position[r] for r in new]]
        b = fresh.vectors[[fresh_by_text[text_of[r]] for r in new]]
        cos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        result.update(
            new_rows_checked=len(new),
            new_rows_min_cosine=float(cos.min()) if len(new) else None,
            new_rows_bit_identical=int((_bits(a) == _bits(b)).all(axis=1).sum()),
        )
    return result


def _verdict(check: dict[str, Any], new_expected: int) -> bool:
    return (
        check["rows_missing"] == 0
        and check["reused_rows_bit_identical"] == check["reused_rows_checked"]
        and check["duplicate_groups_bit_identical"] == check["duplicate_groups"]
        and check["content_hash_mismatches"] == 0
        and check["new_rows_checked"] == new_expected
        and (new_expected == 0 or (check["new_rows_min_cosine"] or 0) >= MIN_FRESH_COSINE)
    )


# --------------------------------------------------------------------------- the benchmark


def run_incremental(
    paragraphs: Sequence[str],
    n: int,
    small_n: int,
    module: str,
    workdir: str,
    env: dict[str, str],
    cwd: str,
    python: str = sys.executable,
    timeout: float = 3600,
    fixed_repeats: int = 2,
    log: Callable[[str], None] | None = None,
    launch: Callable[[list[str], str], float] | None = None,
) -> dict[str, Any]:
    """Runs the incremental scenario at N (and the all-reused comparison at `small_n`, 0: none).

    Args:
      paragraphs: the corpus's distinct texts (`read_paragraphs`).
      n, small_n: the scenario's sizes.
      module: the module directory.
      workdir: an empty directory for inputs, tables and logs.
      env, cwd, python, timeout: how the commands run.
      fixed_repeats: how many times the 1-row commands run (at the start, then at the end).
      log: progress messages (default: stderr).
      launch: runs one command (argv, log path) and returns its seconds; default: a
        subprocess timed from outside (`timed_command`). Tests pass an in-process one.

    Returns:
      The result: `metrics` (the report's keys), `scenario` sizes, `commands`
      (each command's wall seconds and counts), `fixed_s`, `checks`, `ok`.
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    launch = launch or (lambda cmd, log_path: timed_command(cmd, env, cwd, log_path, timeout))
    commands: dict[str, dict[str, Any]] = {}
    fixed: dict[str, list[float]] = {"full": [], "reuse": [], "reuse_hit": []}

    def run(name: str, rows: Sequence[tuple[str, str]], reuse: str | None = None) -> tuple[TableView, float]:
        base = os.path.join(workdir, name)
        input_path = write_rows(rows, base + ".jsonl")
        cmd = embed_command(python, input_path, base + "-table", module, reuse)
        log(f"  incremental: {name} ({len(rows)} rows{', reuse' if reuse else ''}) ...")
        seconds = launch(cmd, base + ".log")
        view = read_back(base + "-table")
        commands[name] = {
            "rows": len(rows),
            "wall_s": seconds,
            "counts": _counts_of(view),
            "reuse": view.manifest.get("reuse"),
        }
        log(f"  incremental: {name} took {seconds:.2f}s")
        return view, seconds

    def measure_fixed(tag: str) -> None:
        a, b = [(row_id(0), paragraphs[0])], [(row_id(0), paragraphs[1])]
        _, full = run(f"fixed-full-{tag}", a)
        table = os.path.join(workdir, f"fixed-full-{tag}-table")
        _, miss = run(f"fixed-reuse-{tag}", b, reuse=table)
        _, hit = run(f"fixed-reuse-hit-{tag}", a, reuse=table)
        fixed["full"].append(full)
        fixed["reuse"].append(miss)
        fixed["reuse_hit"].append(hit)

    scenario = build_scenario(paragraphs, n)
    small = build_scenario(paragraphs, small_n) if small_n else None
    checks: dict[str, Any] = {}
    counts_ok: dict[str, bool] = {}

    def check_counts(name: str, view: TableView, expected: dict[str, int]) -> None:
        wrong = _count_mismatches(view, expected)
        checks[f"{name}_counts"] = {"expected": expected, "wrong": wrong}
        counts_ok[name] = not wrong

    if fixed_repeats:
        measure_fixed("start")
    runs = [("", scenario)] + ([("small-", small)] if small else [])
    views: dict[str, TableView] = {}
    for prefix, sc in runs:
        run1, _ = run(f"{prefix}run1", sc.run1)
        run1_dir = os.path.join(workdir, f"{prefix}run1-table")
        run2, _ = run(f"{prefix}run2", sc.run2, reuse=run1_dir)
        again, _ = run(f"{prefix}all-reused", sc.run1, reuse=run1_dir)
        check_counts(f"{prefix}run1", run1, sc.expected_run1())
        check_counts(f"{prefix}run2", run2, sc.expected_run2())
        check_counts(f"{prefix}all-reused", again, sc.expected_all_reused())
        views.update({f"{prefix}run1": run1, f"{prefix}run2": run2, f"{prefix}all-reused": again})
    # One fresh run (no reuse) over the texts that run 2 embedded, of both scenarios.
    fresh_rows = [
        (f"fresh-{i:07d}", text)
        for i, text in enumerate(dict.fromkeys(text for _, sc in runs for text in sc.fresh_texts()))
    ]
    fresh, _ = run("fresh", fresh_rows)
    for prefix, sc in runs:
        old_texts = {text for _, text in sc.run1}
        for name, rows in (("run2", sc.run2), ("all-reused", sc.run1)):
            check = verify(rows, views[prefix + name], views[prefix + "run1"], sc.run1, fresh, fresh_rows)
            check["ok"] = _verdict(check, sum(text not in old_texts for _, text in rows))
            checks[f"{prefix}{name}_vectors"] = check
    for repeat in range(fixed_repeats - 1):
        measure_fixed(f"end-{repeat}")
    result = {
        "rows": n,
        "small_rows": small_n or None,
        "seed": SEED,
        "scenario": scenario.sizes(),
        "small_scenario": small.sizes() if small else None,
        "fixed_s": fixed,
        "commands": commands,
        "checks": checks,
        "counts_ok": all(counts_ok.values()),
        "bit_identical": all(c["ok"] for k, c in checks.items() if k.endswith("_vectors")),
    }
    result["metrics"] = metrics(result)
    return result


def metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The report's incremental keys from a `run_incremental` result (None where not measured)."""
    wall = {name: c["wall_s"] for name, c in result.get("commands", {}).items()}
    fixed_full = min(result["fixed_s"]["full"], default=None)
    fixed_reuse = min(result["fixed_s"]["reuse"], default=None)
    fixed_hit = min(result["fixed_s"].get("reuse_hit", []), default=None)
    n, small_n = result["rows"], result.get("small_rows")

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def sub(a: float | None, b: float | None) -> float | None:
        return a - b if a is not None and b is not None else None

    run1, run2 = wall.get("run1"), wall.get("run2")
    work1, work2 = sub(run1, fixed_full), sub(run2, fixed_reuse)
    per_row = div(sub(wall.get("all-reused"), fixed_hit), n)
    per_row_small = div(sub(wall.get("small-all-reused"), fixed_hit), small_n)
    marginal = None
    if small_n and "all-reused" in wall and "small-all-reused" in wall and n != small_n:
        marginal = (wall["all-reused"] - wall["small-all-reused"]) / (n - small_n)
    sizes = result.get("scenario") or {}
    from_run2 = None
    if work1 is not None and work2 is not None and sizes.get("unchanged"):
        contents = sizes["changed"] + sizes["added"]
        from_run2 = (work2 - contents * work1 / n) / sizes["unchanged"]
    us = lambda seconds: seconds * 1e6 if seconds is not None else None  # noqa: E731
    return {
        "incremental_vs_full_wall": div(run1, run2),
        "incremental_vs_full_work": div(work1, work2) if work2 and work2 > 0 else None,
        "incremental_us_per_unchanged_row": us(per_row),
        "incremental_us_per_unchanged_row_small": us(per_row_small),
        "incremental_us_per_unchanged_row_marginal": us(marginal),
        "incremental_us_per_unchanged_row_run2": us(from_run2),
        "incremental_fixed_full_s": fixed_full,
        "incremental_fixed_reuse_s": fixed_reuse,
        "incremental_fixed_reuse_hit_s": fixed_hit,
        "incremental_run1_s": run1,
        "incremental_run2_s": run2,
        "incremental_counts_ok": result.get("counts_ok"),
        "incremental_bit_identical": result.get("bit_identical"),
    }


def format_lines(result: dict[str, Any]) -> list[str]:
    """The printed part of the report: commands, counts and checks."""
    if "metrics" not in result:
        return [f"incremental: failed: {result.get('error', '?').splitlines()[0]}"]
    m = result["metrics"]
    lines = [
        f"incremental scenario, N = {result['rows']}: {json.dumps(result['scenario'])}",
        "",
        f"{'command':<22}{'rows':>8}{'wall s':>9}{'embedded':>10}{'reused':>9}{'dedup':>7}{'contents':>10}",
    ]
    for name, c in result["commands"].items():
        k = c["counts"]
        lines.append(
            f"{name:<22}{c['rows']:>8}{c['wall_s']:>9.2f}{_s(k.get('rows_embedded')):>10}{_s(k.get('rows_reused')):>9}"
            f"{_s(k.get('rows_deduplicated')):>7}{_s(k.get('contents_embedded')):>10}"
        )
    for key, check in result["checks"].items():
        if key.endswith("_counts") and check["wrong"]:
            lines.append(f"  {key}: WRONG {json.dumps(check['wrong'])}")
        elif key.endswith("_vectors"):
            cos = check["new_rows_min_cosine"]
            lines.append(
                f"  {key}: reused {check['reused_rows_bit_identical']}/{check['reused_rows_checked']} bit-identical, "
                f"duplicate groups {check['duplicate_groups_bit_identical']}/{check['duplicate_groups']} equal, new rows "
                f"{check['new_rows_checked']} (min cos {'-' if cos is None else f'{cos:.6f}'}, "
                f"{_s(check['new_rows_bit_identical'])} bit-identical to a fresh run), "
                f"content_hash mismatches {check['content_hash_mismatches']}: {'ok' if check['ok'] else 'FAILED'}"
            )
    lines.append(
        f"  fixed cost (1-row command, min of {len(result['fixed_s']['full'])}): full {_f(m['incremental_fixed_full_s'], 2)}s, "
        f"with --reuse {_f(m['incremental_fixed_reuse_s'], 2)}s (1 miss), {_f(m['incremental_fixed_reuse_hit_s'], 2)}s "
        f"(1 hit); counts {'ok' if result['counts_ok'] else 'WRONG'}, "
        f"vectors {'ok' if result['bit_identical'] else 'FAILED'}"
    )
    for key in (
        "incremental_us_per_unchanged_row_small",
        "incremental_us_per_unchanged_row_marginal",
        "incremental_us_per_unchanged_row_run2",
    ):
        lines.append(f"  {key}: {_f(m[key], 1)}")
    return lines


def _s(value: Any) -> str:
    return "-" if value is None else str(value)


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    from benchmarks import run as bench_run
    from pipelines.embedding.config import DEFAULT_MODULE

    parser = argparse.ArgumentParser(prog="python -m benchmarks.incremental", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=corpus.DEFAULT_OUTPUT)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--small-rows", type=int, default=DEFAULT_SMALL_ROWS, help="0: no comparison run")
    parser.add_argument("--module", default=DEFAULT_MODULE)
    parser.add_argument("--json", default=None)
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="hub-embed-incremental-")
    try:
        result = run_incremental(
            read_paragraphs(args.corpus),
            args.rows,
            args.small_rows,
            os.path.abspath(args.module),
            workdir,
            bench_run.contender_env(2, 1),
            bench_run.REPO_ROOT,
        )
    finally:
        if not args.keep_workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(format_lines(result)))
    print(json.dumps(result["metrics"], indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["counts_ok"] and result["bit_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
