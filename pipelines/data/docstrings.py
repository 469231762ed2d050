"""A labeled text set built offline from real text: standard-library docstrings labeled by package.

The texts come from the benchmark corpus `benchmarks/data/docstrings.jsonl`
(built by `python -m benchmarks.corpus` from the standard library's source:
prose paragraphs of module, class and function docstrings, shuffled with a
fixed seed, each with its qualified `source` name). A paragraph whose source
lies in one of `PACKAGES` is labeled with that top-level package (`asyncio`,
`email`, `http`, ...): real English written by people, and a real topic
signal. Nothing is downloaded and the set is the same on every machine.

`python -m pipelines.data.docstrings --output PATH [--per-label N]` writes it
as `.jsonl` rows `{"text": ..., "label": ...}`, the format
`python -m pipelines.finetune` reads.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from collections.abc import Sequence

CORPUS = os.path.normpath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "benchmarks", "data", "docstrings.jsonl")
)
PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "unittest", "xml")


def examples(
    corpus: str = CORPUS, packages: Sequence[str] = PACKAGES, per_label: int | None = None
) -> list[dict[str, str]]:
    """Labels the corpus paragraphs of `packages`.

    Args:
      corpus: the docstring corpus (JSONL with `text` and `source`).
      packages: top-level standard-library packages; each is one label.
      per_label: keep the first this many paragraphs of each package (the corpus is shuffled).

    Returns:
      Rows `{"text", "label"}` in corpus order.
    """
    wanted = set(packages)
    counts: collections.Counter[str] = collections.Counter()
    rows = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            package = record["source"].split(".")[0]
            if package in wanted and (per_label is None or counts[package] < per_label):
                counts[package] += 1
                rows.append({"text": record["text"], "label": package})
    return rows


def write_jsonl(path: str, rows: Sequence[dict[str, str]]) -> str:
    """Writes rows as JSON lines (creating the directory); returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the number of rows per label."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.docstrings", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="the .jsonl file to write")
    parser.add_argument("--corpus", default=CORPUS, help="docstring corpus (default: the benchmark corpus)")
    parser.add_argument("--per-label", type=int, help="at most this many examples per label")
    args = parser.parse_args(argv)
    rows = examples(args.corpus, per_label=args.per_label)
    write_jsonl(args.output, rows)
    counts = collections.Counter(row["label"] for row in rows)
    print(", ".join(f"{package}: {counts[package]}" for package in PACKAGES))
    print(f"wrote {len(rows)} rows to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
