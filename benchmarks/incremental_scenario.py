"""The incremental benchmark's scenario: run 1's texts and run 2's changes to them, built from the corpus."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Sequence

from benchmarks import corpus

SEED = 13
ID_PREFIX = "inc-"
CHANGED_FRACTION = REMOVED_FRACTION = ADDED_FRACTION = 0.01
DUPLICATE_FRACTION = 0.02
# The manifest counts a run is checked on.
COUNT_KEYS = (
    "rows_in",
    "rows_written",
    "rows_embedded",
    "rows_reused",
    "rows_deduplicated",
    "contents_embedded",
    "rows_failed",
)
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
    """The incremental scenario on N rows.

    Run 1 is the sequence's first N texts; run 2 leaves 1% of them out,
    edits 1% once more, appends 1% new ones and makes 2% of the rest
    duplicates, half of unchanged rows and half of changed or added ones
    (docs/benchmarks.md describes it in full).
    """
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
    return list(dict.fromkeys(corpus.iter_texts(path)))


def write_rows(rows: Iterable[tuple[str, str]], path: str) -> str:
    corpus.write_jsonl(({"id": i, "text": t} for i, t in rows), path)
    return path
