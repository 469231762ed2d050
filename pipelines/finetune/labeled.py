"""Labeled examples for fine-tuning: read, validate, hash and split.

Texts come from `.jsonl` or `.csv` (`text`, `label`), images from a folder
per label or a `.jsonl` (`path`, `label`); the formats and checks are
described in `read`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipelines.embedding.config import PreprocessConfig
from pipelines.embedding.preprocess import check_text, decode_image

KINDS = ("text", "image")
TEXT_SUFFIXES = (".jsonl", ".csv")
TEXT_FIELD, PATH_FIELD, LABEL_FIELD = "text", "path", "label"


class DataError(ValueError):
    """Labeled data that cannot be trained on; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class LabeledData:
    """Validated examples of one data set.

    Attributes:
      kind: "text" or "image".
      path: the file or directory read.
      inputs: texts (object array `[N]`) or images (float32 `[N, H, W, 3]` in [0, 1]).
      labels: int32 `[N]`, indices into `classes`.
      classes: the sorted distinct labels.
      content_hash: `sha256:<hex>` over every file read (relative path and bytes).
    """

    kind: str
    path: str
    inputs: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    content_hash: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns `(inputs, labels)` of the examples at `indices`."""
        return self.inputs[indices], self.labels[indices]


def read(path: str, kind: str, image_size: tuple[int, int] | None = None) -> LabeledData:
    """Reads and validates a labeled data set.

    Text: `.jsonl` (one object per line) or `.csv` (header row), each row with
    a `text` and a `label` field. Images: a directory with one sub-directory
    per label holding the images (hidden files are ignored), or a `.jsonl`
    with `path` (relative to the file's directory, or absolute) and `label`
    per line. Labels are strings (JSON numbers become strings); the classes are
    the sorted distinct labels. Everything is checked while reading, so bad
    data fails before any training: a missing or empty text or label, an
    unreadable image, an empty file, a single class. Images are decoded
    exactly as the embedding pipeline decodes them (`preprocess.decode_image`).

    Args:
      path: a `.jsonl`/`.csv` file (text), or a folder per label / `.jsonl` (images).
      kind: "text" or "image".
      image_size: (height, width) images are resized to; required for images.

    Raises:
      DataError: the data is missing, malformed, has an unreadable image, or fewer than two classes.
    """
    if kind not in KINDS:
        raise DataError(f"Unknown data kind {kind!r}; expected one of {KINDS}.")
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory.")
    if kind == "text":
        inputs, labels, files = _read_texts(path)
    else:
        if image_size is None:
            raise DataError("Reading images needs the module's image size.")
        inputs, labels, files = _read_images(path, image_size)
    if not labels:
        raise DataError(f"{path}: no examples (empty file or folder).")
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise DataError(f"{path}: every example has the label {classes[0]!r}; classification needs two labels or more.")
    index = {label: i for i, label in enumerate(classes)}
    return LabeledData(
        kind=kind,
        path=path,
        inputs=inputs,
        labels=np.array([index[label] for label in labels], dtype=np.int32),
        classes=classes,
        content_hash=_hash_files(path, files),
    )


def split(data: LabeledData, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split into train and held-out indices.

    Each label contributes `round(holdout_fraction * count)` examples (at least
    one, and at least one left for training) to the held-out set.

    Raises:
      DataError: a label has a single example while a held-out set is asked for.
    """
    if not 0 <= holdout_fraction < 1:
        raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}.")
    if holdout_fraction == 0:
        return np.arange(len(data)), np.array([], dtype=np.int64)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    holdout: list[int] = []
    for label, name in enumerate(data.classes):
        members = rng.permutation(np.flatnonzero(data.labels == label))
        if len(members) < 2:
            raise DataError(
                f"{data.path}: label {name!r} has a single example; a held-out split needs at least two per label "
                "(add examples or use a holdout fraction of 0)."
            )
        count = min(max(1, round(holdout_fraction * len(members))), len(members) - 1)
        holdout.extend(members[:count])
        train.extend(members[count:])
    return np.sort(np.array(train)), np.sort(np.array(holdout))


# --------------------------------------------------------------------------- text


def _read_texts(path: str) -> tuple[np.ndarray, list[str], list[str]]:
    if os.path.isdir(path) or not path.endswith(TEXT_SUFFIXES):
        raise DataError(f"{path}: text data must be a {' or '.join(TEXT_SUFFIXES)} file.")
    max_bytes = PreprocessConfig().max_text_bytes
    texts, labels = [], []
    for where, row in _rows(path):
        text = _field(row, TEXT_FIELD, where)
        problem = check_text(text, max_bytes)
        if problem:
            raise DataError(f"{where}: {problem}.")
        texts.append(text)
        labels.append(_field(row, LABEL_FIELD, where))
    return np.array(texts, dtype=object), labels, [os.path.basename(path)]


def _rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields `("<path>:<line>", row)` of a `.jsonl` or `.csv` file; blank jsonl lines are skipped."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.endswith(".csv"):
                reader = csv.DictReader(f)
                for row in reader:
                    yield f"{path}:{reader.line_num}", row
                return
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: not valid JSON ({e.msg}).") from None
                if not isinstance(row, dict):
                    raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}.")
                yield where, row
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e}).") from None


def _field(row: dict[str, Any], name: str, where: str) -> str:
    """A non-empty string field (numbers become strings)."""
    value = row.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is None or value == "":
        raise DataError(f"{where}: missing {name!r}.")
    if not isinstance(value, str):
        raise DataError(f"{where}: {name!r} must be a string, got {type(value).__name__}.")
    return value


# --------------------------------------------------------------------------- images


def _read_images(path: str, size: tuple[int, int]) -> tuple[np.ndarray, list[str], list[str]]:
    listing = list(_image_folder(path) if os.path.isdir(path) else _image_list(path))
    images = [_decode(os.path.join(_base(path), rel), where, size) for rel, _, where in listing]
    files = [rel for rel, _, _ in listing]
    if os.path.isfile(path):
        files.insert(0, os.path.basename(path))
    stacked = np.stack(images) if images else np.zeros((0, *size, 3), np.float32)
    return stacked, [label for _, label, _ in listing], files


def _base(path: str) -> str:
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def _image_folder(path: str) -> Iterator[tuple[str, str, str]]:
    """Yields `(relative path, label, where)` of a folder-per-label tree."""
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if entry.startswith("."):
            continue
        if not os.path.isdir(full):
            raise DataError(f"{full}: images must be in one sub-folder per label, not directly in {path}.")
        for name in sorted(os.listdir(full)):
            if not name.startswith("."):
                rel = os.path.join(entry, name)
                yield rel, entry, os.path.join(path, rel)


def _image_list(path: str) -> Iterator[tuple[str, str, str]]:
    """Yields `(path, label, where)` of a `.jsonl` image list."""
    if not path.endswith(".jsonl"):
        raise DataError(f"{path}: image data must be a folder per label or a .jsonl file with path and label.")
    for where, row in _rows(path):
        yield _field(row, PATH_FIELD, where), _field(row, LABEL_FIELD, where), where


def _decode(file: str, where: str, size: tuple[int, int]) -> np.ndarray:
    context = "" if where == file else f" (listed at {where})"
    try:
        with open(file, "rb") as f:
            data = f.read()
        return decode_image(data, size, PreprocessConfig().max_image_pixels)
    except Exception as e:  # Pillow raises many types for unreadable files.
        raise DataError(f"{file}{context}: unreadable image ({type(e).__name__}: {e}).") from None


def _hash_files(path: str, files: list[str]) -> str:
    """`sha256:<hex>` over each file's relative path and bytes, in the given order."""
    base = _base(path)
    digest = hashlib.sha256()
    for rel in files:
        with open(os.path.join(base, rel), "rb") as f:
            file_hash = hashlib.file_digest(f, "sha256").digest()
        digest.update(rel.replace(os.sep, "/").encode() + b"\0" + file_hash)
    return "sha256:" + digest.hexdigest()
