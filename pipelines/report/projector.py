"""A table's sample as TensorBoard Embedding Projector files: `tensorboard --logdir DIR` shows it in the projector.

The directory gets `tensors.tsv` (one vector a line), `metadata.tsv` (the id and the chosen fields),
`sprite.png` for an image table, and `projector_config.pbtxt` (TensorBoard's own `ProjectorConfig`), all
named relative to the directory, so it can be moved. No checkpoint is needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from google.protobuf import text_format
from tensorboard.plugins.projector import projector_config_pb2

from pipelines.embedding.paths import is_local
from pipelines.report.errors import ReportError
from pipelines.report.sprites import write_sprite
from pipelines.report.table_sample import TableSample, read_sample

CONFIG_FILE = "projector_config.pbtxt"  # the name the projector plugin looks for in a logdir
TENSORS_FILE = "tensors.tsv"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
DEFAULT_ROWS = 5000
MAX_FIELD_CHARS = 500


def write_projector(
    table: str, directory: str, *, fields: Sequence[str] | None = None, rows: int = DEFAULT_ROWS
) -> str:
    """Writes a sample of `table` into `directory` as Embedding Projector files.

    Args:
      table: the committed table's directory.
      directory: a local directory (made if missing); its projector files are replaced.
      fields: the columns labelling each point beside its id (passthrough columns or `content_hash`);
        default: every passthrough column.
      rows: the most rows to sample (bottom-k by `sha256(id)`, as the report samples).

    Returns:
      The path of the `projector_config.pbtxt` written.

    Raises:
      ReportError: the table cannot be read, a field is not one of its columns, `rows` < 1, or `directory`
        is not a local directory; nothing is written then.
    """
    if not is_local(directory) or directory.startswith("file:"):
        raise ReportError(f"--projector {directory!r}: give a local directory (TensorBoard's --logdir).")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ReportError(f"--projector {directory!r} exists and is not a directory.")
    sample = read_sample(table, rows=rows)
    chosen = _fields(sample, fields)
    os.makedirs(directory, exist_ok=True)
    np.savetxt(os.path.join(directory, TENSORS_FILE), sample.vectors, fmt="%.8g", delimiter="\t")
    with open(os.path.join(directory, METADATA_FILE), "w", encoding="utf-8", newline="\n") as f:
        f.write(metadata_tsv(sample.ids, {name: sample.fields[name] for name in chosen}))
    config = projector_config_pb2.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = os.path.basename(sample.table.path.rstrip("/")) or "embedding"
    embedding.tensor_path = TENSORS_FILE
    embedding.tensor_shape.extend(sample.vectors.shape)
    embedding.metadata_path = METADATA_FILE
    if sample.table.config.get("input_format") == "image":
        size = write_sprite(sample.ids, os.path.join(directory, SPRITE_FILE))
        embedding.sprite.image_path = SPRITE_FILE
        embedding.sprite.single_image_dim.extend([size, size])
    path = os.path.join(directory, CONFIG_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(config))
    os.replace(path + ".tmp", path)  # written last, whole: the projector sees all files or none
    return path


def metadata_tsv(ids: Sequence[str], fields: dict[str, list]) -> str:
    """The projector's metadata file: a header and one line per point, or bare ids when there are no fields.

    The projector reads a one-column file without a header, and a file of several columns with one.
    Tabs, newlines and carriage returns in values become spaces; a value is cut at 500 characters;
    a missing value is empty.
    """
    columns = {"id": list(ids), **fields}
    lines = ["\t".join(columns)] if len(columns) > 1 else []
    lines += ["\t".join(_cell(values[i]) for values in columns.values()) for i in range(len(ids))]
    return "".join(line + "\n" for line in lines)


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"


def _fields(sample: TableSample, fields: Sequence[str] | None) -> list[str]:
    """The fields to write, checked against the table's columns."""
    available = ["id", *sample.table.passthrough, "content_hash"]
    if fields is None:
        return list(sample.table.passthrough)
    for name in fields:
        if name not in available:
            raise ReportError(
                f"projector field {name!r} is not a column of table {sample.table.display!r}; "
                f"its columns are {available}."
            )
    return [name for name in dict.fromkeys(fields) if name != "id"]  # the id is always the first column
