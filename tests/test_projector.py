"""TensorBoard Embedding Projector files of a table: written, served by a real TensorBoard, shown in Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector import projector_config_pb2

from pipelines.embedding import sinks
from pipelines.report.errors import ReportError
from pipelines.report.projector import metadata_tsv, write_projector
from pipelines.report.sprites import thumbnail_size

# The tests share a module fixture of real tables: under `--dist loadgroup` one worker builds it once.
pytestmark = pytest.mark.xdist_group("projector")

TEXTS = [f"text {i}:\twith a tab\nand a newline, about {'cars' if i % 2 else 'pears'}" for i in range(30)]


def color(i: int) -> tuple[int, int, int]:
    """Image `i`'s colour: 36 hues at three brightnesses, so the image module spreads them out."""
    hue = Image.new("HSV", (1, 1), (i * 7 % 36 * 7, 230, 255 - i % 3 * 70)).convert("RGB")
    return hue.getpixel((0, 0))


@pytest.fixture(scope="module")
def tables(tiny, tmp_path_factory):
    """A text table (ids, texts with tabs and newlines, a `lang` column) and a table of 36 coloured images."""
    from pipelines import embed

    root = tmp_path_factory.mktemp("projector")
    source = root / "texts.jsonl"
    rows = [{"id": f"t{i:02d}", "text": text, "lang": "en" if i % 3 else "fr"} for i, text in enumerate(TEXTS)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    text = str(root / "text-table")
    args = ["--input", str(source), "--id-field", "id", "--passthrough", "text,lang", "--module", tiny.text]
    assert embed.main([*args, "--output", text, "--no-report"]) == 0
    photos = root / "photos"
    photos.mkdir()
    for i in range(36):
        size = (12 + i % 5 * 4, 9 + i % 3 * 6)  # landscape and portrait, so thumbnails are letterboxed
        Image.new("RGB", size, color(i)).save(photos / f"img-{i:02d}.png")
    images = str(root / "image-table")
    assert (
        embed.main(["--input", str(photos / "*.png"), "--module", tiny.image, "--output", images, "--no-report"]) == 0
    )
    return {"text": text, "image": images}


def table_vectors(table: str) -> dict[str, np.ndarray]:
    read = sinks.read_table(table)
    return {
        i: np.asarray(v, np.float32)
        for i, v in zip(read.column("id").to_pylist(), read.column("embedding").to_pylist())
    }


def read_config(path: str) -> projector_config_pb2.ProjectorConfig:
    with open(path) as f:
        return text_format.Parse(f.read(), projector_config_pb2.ProjectorConfig())


@pytest.mark.slow
def test_text_table_files_hold_the_sample_with_escaped_metadata(tables, tmp_path):
    out = tmp_path / "logdir"
    config_path = write_projector(tables["text"], str(out), fields=["text", "lang"])
    assert config_path == str(out / "projector_config.pbtxt")
    (embedding,) = read_config(config_path).embeddings
    assert (embedding.tensor_path, embedding.metadata_path, list(embedding.tensor_shape)) == (
        "tensors.tsv",
        "metadata.tsv",
        [30, 8],
    )
    assert not embedding.sprite.image_path and sorted(os.listdir(out)) == [
        "metadata.tsv",
        "projector_config.pbtxt",
        "tensors.tsv",
    ]
    lines = (out / "metadata.tsv").read_text().split("\n")
    assert lines[0] == "id\ttext\tlang" and lines[-1] == "" and len(lines) == 32
    rows = [line.split("\t") for line in lines[1:-1]]
    assert all(len(row) == 3 for row in rows)
    by_id = {row[0]: row for row in rows}
    assert by_id["t03"] == ["t03", TEXTS[3].replace("\t", " ").replace("\n", " "), "fr"]
    tensors = np.loadtxt(out / "tensors.tsv", delimiter="\t", dtype=np.float32)
    vectors = table_vectors(tables["text"])
    np.testing.assert_allclose(tensors, np.stack([vectors[row[0]] for row in rows]), rtol=1e-6)


@pytest.mark.slow
def test_bad_fields_and_directories_are_refused_before_anything_is_written(tables, tmp_path):
    out = tmp_path / "logdir"
    with pytest.raises(
        ReportError, match=r"projector field 'colour' is not a column .*\['id', 'text', 'lang', 'content_hash'\]"
    ):
        write_projector(tables["text"], str(out), fields=["colour"])
    assert not out.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportError, match="exists and is not a directory"):
        write_projector(tables["text"], str(tmp_path / "file"))
    with pytest.raises(ReportError, match="give a local directory"):
        write_projector(tables["text"], "gs://bucket/logdir")


def test_metadata_of_ids_only_has_no_header_and_long_values_are_cut():
    assert metadata_tsv(["a", "b"], {}) == "a\nb\n"  # one column: the projector reads no header
    long = metadata_tsv(["a"], {"text": ["x" * 600], "n": [None]})
    header, row, _ = long.split("\n")
    assert header == "id\ttext\tn" and row == "a\t" + "x" * 499 + "…\t"
    assert thumbnail_size(36) == 64 and thumbnail_size(5000) == 64 and thumbnail_size(20_000) == 8192 // 142


# --------------------------------------------------------------------------- a real TensorBoard


@contextlib.contextmanager
def tensorboard(logdir: str, log_file: str):
    """`tensorboard --logdir LOGDIR` on 127.0.0.1 and a port of its choosing; yields its URL once it answers."""
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1", "--port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline, url = time.monotonic() + 60, None
        while url is None:
            assert process.poll() is None, open(log_file, errors="replace").read()
            assert time.monotonic() < deadline, "TensorBoard did not start:\n" + open(log_file, errors="replace").read()
            found = re.search(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/", open(log_file, errors="replace").read())
            url = found and found.group(1)
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.read()


@pytest.mark.slow
def test_tensorboard_serves_the_image_table_and_chromium_shows_its_points(tables, browser, tmp_path):
    logdir = tmp_path / "logdir"
    write_projector(tables["image"], str(logdir))
    (embedding,) = read_config(str(logdir / "projector_config.pbtxt")).embeddings
    assert embedding.sprite.image_path == "sprite.png" and list(embedding.sprite.single_image_dim) == [64, 64]
    ids = (logdir / "metadata.tsv").read_text().splitlines()
    assert len(ids) == 36 and all(i.endswith(".png") for i in ids)  # one column, the ids: no header
    with Image.open(logdir / "sprite.png") as sprite:
        assert sprite.size == (6 * 64, 6 * 64)
        for point, image in enumerate(
            ids
        ):  # point i's tile: column i % 6, row i // 6; the image scaled into its middle
            x, y = point % 6 * 64, point // 6 * 64
            assert sprite.getpixel((x + 32, y + 32)) == color(int(image[-6:-4])) and sprite.getpixel((x, y)) == (
                255,
                255,
                255,
            )

    with tensorboard(str(logdir), str(tmp_path / "tensorboard.log")) as url:
        runs = []
        deadline = time.monotonic() + 30
        while not runs and time.monotonic() < deadline:  # the plugin finds its config on a background thread
            runs = json.loads(get(f"{url}/data/plugin/projector/runs"))
            time.sleep(0.2)
        assert runs == ["."]
        name = embedding.tensor_name
        tensor = np.frombuffer(get(f"{url}/data/plugin/projector/tensor?run=.&name={name}"), np.float32)
        vectors = table_vectors(tables["image"])
        np.testing.assert_allclose(tensor.reshape(36, -1), np.stack([vectors[i] for i in ids]), rtol=1e-6)
        assert get(f"{url}/data/plugin/projector/metadata?run=.&name={name}").decode().splitlines() == ids
        assert (
            get(f"{url}/data/plugin/projector/sprite_image?run=.&name={name}") == (logdir / "sprite.png").read_bytes()
        )

        with browser.open(f"{url}/#projector") as (page, log):
            points = None
            deadline = time.monotonic() + 30
            while points in (None, "Points: 0") and time.monotonic() < deadline:
                for frame in page.frames:  # the projector draws inside its own iframe; it says 0 until loaded
                    label = frame.get_by_text(re.compile(r"Points: \d+"))
                    if label.count():
                        points = " ".join(label.first.inner_text().split())
                time.sleep(0.2)
            assert points == "Points: 36"
            page.wait_for_timeout(500)  # the sprites' texture is drawn just after the count
            if os.environ.get("HUB_EMBED_SCREENSHOTS"):
                page.screenshot(path=os.path.join(os.environ["HUB_EMBED_SCREENSHOTS"], "projector.png"))
            assert log.console_errors == [] and log.page_errors == []
            assert log.network_requests(allowed_prefixes=(url + "/",)) == []  # TensorBoard serves its own fonts
