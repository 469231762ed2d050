"""The benchmark corpus: English prose paragraphs from the Python standard library's docstrings.

`python -m benchmarks.corpus` rebuilds `benchmarks/data/docstrings.jsonl` (one
`{"id", "text", "source"}` per line, shuffled with a fixed seed); `read_texts`
reads a corpus for the benchmarks.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import random
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator

DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "data", "docstrings.jsonl")
DEFAULT_MAX_ROWS = 10_000
SEED = 0
MIN_WORDS = 4
MIN_CHARS = 20
MAX_CHARS = 2_000
MIN_LETTER_FRACTION = 0.8
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
_NOT_PROSE_LINE = re.compile(r"^\s*(>>>|\.\.\.|[-=~*+#|]{3,}|:\w+|\.\. |[-*+] )")
_SENTENCE_END = re.compile(r"[.!?:]\)?$")


def stdlib_files(root: str) -> Iterator[str]:
    """Yields the standard library's `.py` files under `root`, sorted, tests and vendored code left out."""
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def docstrings(path: str, root: str) -> Iterator[tuple[str, str]]:
    """Yields (qualified name, cleaned docstring) for a file's module, classes and functions."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    module = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__")
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if isinstance(node, nodes):
            text = ast.get_docstring(node, clean=True)
            if text:
                name = module if isinstance(node, ast.Module) else f"{module}.{node.name}"
                yield name, text


def is_prose(text: str) -> bool:
    """True for a paragraph that reads as English sentences (not code, tables or lists of names)."""
    words = text.split()
    if len(words) < MIN_WORDS or not MIN_CHARS <= len(text) <= MAX_CHARS:
        return False
    if not (text[0].isupper() and _SENTENCE_END.search(text)):
        return False
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    return letters >= MIN_LETTER_FRACTION * len(visible)


def paragraphs(docstring: str) -> Iterator[str]:
    """Splits a docstring at blank lines; yields its prose paragraphs as single lines."""
    for block in re.split(r"\n\s*\n", docstring):
        lines = block.strip("\n").splitlines()
        if not lines or any(_NOT_PROSE_LINE.match(line) for line in lines):
            continue
        if any(line[:1].isspace() for line in lines):  # indented: code, a definition list or a table
            continue
        text = " ".join(line.strip() for line in lines)
        if is_prose(text):
            yield text


def build(root: str, max_rows: int = DEFAULT_MAX_ROWS, seed: int = SEED) -> list[dict[str, str]]:
    """The corpus records: unique prose paragraphs of the docstrings under `root`, shuffled.

    Code examples, tables, field lists and other non-prose blocks are dropped
    and lines joined; the shuffle makes any prefix mix short and long texts
    from many modules.

    Args:
      root: the standard library directory.
      max_rows: keep at most this many paragraphs.
      seed: shuffling seed.

    Returns:
      Records with `id`, `text` and `source` (the docstring's qualified name).
    """
    seen: set[str] = set()
    found = []
    for path in stdlib_files(root):
        for name, docstring in docstrings(path, root):
            for text in paragraphs(docstring):
                if text not in seen:
                    seen.add(text)
                    found.append((name, text))
    random.Random(seed).shuffle(found)
    return [
        {"id": f"docstrings-{i:05d}", "text": text, "source": name} for i, (name, text) in enumerate(found[:max_rows])
    ]


def write_jsonl(records: Iterable[dict[str, str]], path: str) -> int:
    """Writes records as JSON lines (UTF-8); returns how many."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def iter_texts(path: str) -> Iterator[str]:
    """The texts of a corpus file, in file order."""
    jsonl = path.endswith(JSONL_SUFFIXES)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not jsonl:
                yield line.rstrip("\r\n")
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{number}: a JSONL corpus record needs a string 'text' field")
            yield record["text"]


def read_texts(path: str, rows: int) -> list[str]:
    """Reads `rows` texts from a corpus, repeating it from the start when it holds fewer.

    Args:
      path: JSONL (`.jsonl`, `.ndjson`, `.json`) with a `text` field, or plain
        text with one record per non-empty line.
      rows: how many texts to return.

    Raises:
      ValueError: the corpus holds no text or a JSONL record has no `text`.
    """
    texts = list(itertools.islice(iter_texts(path), rows))
    if not texts:
        raise ValueError(f"corpus {path} holds no text")
    return list(itertools.islice(itertools.cycle(texts), rows))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: rebuilds the corpus file; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"], help="standard library directory")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSONL file to write (default: %(default)s)")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="default: %(default)s")
    args = parser.parse_args(argv)
    records = build(args.stdlib, args.max_rows)
    count = write_jsonl(records, args.output)
    chars = sorted(len(r["text"]) for r in records)
    print(
        f"{args.output}: {count} paragraphs from {args.stdlib} "
        f"(characters: median {chars[len(chars) // 2]}, max {chars[-1]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
