"""Writes the bundled sample corpus: first sentences of Python standard-library docstrings.

Run `python -m pipelines.data.build_sample` to regenerate `sample.txt`. The
sentences are real English written by people, which is what the default job
and its tests need, and the selection is deterministic for a Python version.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re

MODULES = (
    "argparse",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html.parser",
    "http.client",
    "http.cookiejar",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "traceback",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "zipfile",
    "zoneinfo",
)
MAX_SENTENCES = 400
_SENTENCE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'()\-]{30,180}[a-z0-9)]\.$")
OUTPUT = os.path.join(os.path.dirname(__file__), "sample.txt")


def first_sentence(doc: str) -> str | None:
    """The first sentence of a docstring's first paragraph, if it reads as plain prose."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=[a-z0-9)]\.)\s", paragraph)[0]
    return sentence if _SENTENCE.match(sentence) else None


def sentences() -> list[str]:
    """Unique first sentences of the public classes and functions of `MODULES`, in module order."""
    seen: dict[str, None] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            sentence = first_sentence(inspect.getdoc(obj) or "")
            if sentence:
                seen.setdefault(sentence)
    return list(seen)[:MAX_SENTENCES]


def main() -> None:
    lines = sentences()
    with open(OUTPUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} sentences to {OUTPUT}")


if __name__ == "__main__":
    main()
