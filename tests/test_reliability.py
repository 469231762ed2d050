"""Reliability: bad input records of every kind, through the real command line, with nothing lost.

Each bad record must end as a dead-letter row with its stage and reason, and
`_SUCCESS` must say `rows_in == rows_embedded + rows_failed` with the table and
the dead letters holding exactly those rows. Several bad records share one run
(a run costs seconds); each record's outcome is asserted on its own.

Policies these tests pin down:

* Empty and whitespace-only texts (any Unicode whitespace, any format) are
  dead-lettered at stage `validate` ("empty or whitespace-only text"). A blank
  *line* of a JSONL file holds no record and is not counted; a blank line of a
  txt file is a record (an empty text). NUL and other control characters are
  text: they are embedded as they are, even a text of NULs only.
* Texts up to `--max-text-bytes` (default 1 MiB) UTF-8 bytes are embedded;
  longer ones are dead-lettered (`validate`).
* Inputs are UTF-8. A line that is not valid UTF-8 (Latin-1, cp1252, stray
  bytes, overlong forms, encoded surrogates) is dead-lettered (`read`); the
  other lines of the file are embedded. A JSON string escape that makes a lone
  surrogate (e.g. half an emoji, `\\ud83d`) is not text either (`read`). A
  UTF-8 byte-order mark at the start of a file is dropped; a file with a
  UTF-16 byte-order mark is read as UTF-16.
* Duplicate ids: the first record of an id (by file path, then position) is
  kept, every later one is dead-lettered (`dedupe`) naming the kept record.

Cases covered elsewhere (not repeated here):

* tests/test_pipeline_e2e.py::test_images_any_mode_and_the_bad_ones — truncated
  JPEG, PNG with a .jpg extension, zero-byte file, an image over
  --max-image-pixels, CMYK / grayscale / alpha images, end to end.
* tests/test_pipeline_e2e.py::test_dead_letters_counts_and_the_error_budget —
  NaN rows, a module that rejects some inputs (bisected), --max-error-fraction.
* tests/test_pipeline_e2e.py::test_an_output_dimension_that_changes_fails_the_run.
* tests/test_pipeline_e2e.py::test_config_and_module_errors_exit_2_before_running —
  a missing output key and a missing module, through the command line.
* tests/test_handles.py — 404, hang (timeout), truncated and non-gzip archives,
  unsafe archives (`..`, absolute paths, symlinks and hard links out) at the
  resolver level; concurrent resolves and a killed download.
* tests/test_config.py::test_bad_yaml_is_a_clear_error / test_bad_flags_are_clear_errors /
  test_check_paths — unknown keys, wrong types, output inside the input glob,
  output that exists without --overwrite, output under a file.
* tests/test_sources.py — each reader's bad records (unit level).
* tests/security/test_module_refusal.py — bad modules and module URLs, through the command line.
* tests/security/test_no_code_from_data.py, tests/security/test_credentials_unwritten.py —
  YAML tags, unsafe calls in the product code, credentials never written.
* tests/test_output_paths.py — an output the input glob matches, or reached through a symlink.
"""

from __future__ import annotations

import codecs
import json

import numpy as np
import pytest

from tests.fixtures import reliability as rel
from tests.fixtures.reliability import INF_MARK, NAN_MARK, run

EMPTY = "empty or whitespace-only text"
NOT_FINITE = "embedding has NaN or inf values"


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> str:
    return rel.build_marker_module(str(tmp_path_factory.mktemp("modules") / "marker"))


def assert_embedded(run_: rel.Run, module: str, expected: dict[str, str]) -> None:
    """Each id's stored embedding equals the module's output for that text alone."""
    rows = run_.rows()
    ids = list(expected)
    vectors = rel.module_output(module, [expected[i] for i in ids])
    for key, vector in zip(ids, vectors):
        assert key in rows, f"{key!r} was not embedded"
        np.testing.assert_allclose(np.asarray(rows[key]["embedding"], np.float32), vector, rtol=1e-6, err_msg=key)


def assert_dead(run_: rel.Run, expected: dict[str, tuple[str, str]], key: str = "id") -> None:
    """Each id (or source) is a dead letter with this stage and an error containing this text."""
    errors = run_.errors(key)
    for name, (stage, reason) in expected.items():
        assert name in errors, f"{name!r} is not a dead letter; dead letters: {sorted(errors)}"
        assert (errors[name]["stage"], reason in errors[name]["error"]) == (stage, True), (name, errors[name])


# --------------------------------------------------------------------------- text files


def test_bad_text_lines_are_dead_letters_and_the_rest_is_embedded(marker, tmp_path):
    big = ("lorem ipsum " * 100_000)[:1_000_000]
    too_big = "x" * ((1 << 20) + 1)
    lines: list[bytes] = [
        b"plain ascii line",  # 1
        "café naïve — “quotes” 日本語 🙂".encode(),  # 2
        b"caf\xe9 in Latin-1",  # 3: mixed encodings in one file
        b"\x93smart quotes\x94 in cp1252",  # 4
        b"a stray \xff byte",  # 5
        b"overlong \xc0\xaf slash",  # 6
        b"encoded surrogate \xed\xa0\x80",  # 7
        b"cut multibyte \xe2\x82",  # 8
        b"",  # 9
        b"  \t  ",  # 10
        "\u00a0\u3000\u2003\u2028".encode(),  # 11: Unicode whitespace only
        b"nul\x00inside",  # 12
        b"\x00\x00",  # 13: NULs only are text, not whitespace
        big.encode(),  # 14: a 1 MB record
        too_big.encode(),  # 15
        f"poisoned {NAN_MARK} row".encode(),  # 16
        f"{INF_MARK} too".encode(),  # 17
        b"crlf line\r",  # 18
    ]
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    result = run(tmp_path / "out", "--input", src, "--module", marker, "--batch-size", "4", "--max-error-fraction", "1")
    assert result.rc == 0
    result.assert_balanced(rows_in=len(lines))
    at = lambda n: f"{src}:{n}"  # noqa: E731
    assert_embedded(
        result,
        marker,
        {
            at(1): "plain ascii line",
            at(2): lines[1].decode(),
            at(12): "nul\x00inside",
            at(13): "\x00\x00",
            at(14): big,
            at(18): "crlf line",
        },
    )
    assert result.rows()[at(14)]["embedding"][0] == 1_000_000
    assert_dead(
        result,
        {
            at(3): ("read", "can't decode byte 0xe9"),
            at(4): ("read", "can't decode byte 0x93"),
            at(5): ("read", "can't decode byte 0xff"),
            at(6): ("read", "can't decode byte 0xc0"),
            at(7): ("read", "can't decode byte 0xed"),
            at(8): ("read", "unexpected end of data"),
            at(9): ("validate", EMPTY),
            at(10): ("validate", EMPTY),
            at(11): ("validate", EMPTY),
            at(15): ("validate", "text is 1048577 bytes, over max_text_bytes=1048576"),
            at(16): ("embed", NOT_FINITE),
            at(17): ("embed", NOT_FINITE),
        },
    )
    assert result.counts["failed_by_stage"] == {"embed": 2, "read": 6, "validate": 4}


def _jsonl_lines() -> list[str]:
    deep = "[" * 100_000 + "]" * 100_000
    return [
        json.dumps({"id": "ok", "text": "a fine record", "lang": "en"}),  # 1
        '{"id": "broken", "text": ',  # 2
        "[1, 2]",  # 3
        json.dumps({"id": "no-text"}),  # 4
        json.dumps({"id": "null-text", "text": None}),  # 5
        json.dumps({"id": "int-text", "text": 42}),  # 6
        json.dumps({"id": "list-text", "text": ["a"]}),  # 7
        json.dumps({"id": "empty", "text": ""}),  # 8
        json.dumps({"id": "blank", "text": " \n\t\u3000"}),  # 9
        '{"id": "half-emoji", "text": "smile \\ud83d cut"}',  # 10: a lone surrogate escape
        '{"id": "bad-id-\\udc00", "text": "fine text"}',  # 11
        '{"id": "bad-lang", "text": "fine text", "lang": "\\udfff"}',  # 12
        deep,  # 13: nested too deep for the JSON parser
        json.dumps({"id": "after-deep", "text": "the line after the deep one"}),  # 14
        json.dumps({"id": "dup", "text": "first of two"}),  # 15
        json.dumps({"id": "dup", "text": "second of two"}),  # 16
        json.dumps({"id": "nul", "text": "a\u0000b"}),  # 17
        json.dumps({"text": "no id"}),  # 18
        json.dumps({"id": 5, "text": "an integer id"}),  # 19
        json.dumps({"id": "nan", "text": NAN_MARK}),  # 20
        "",  # 21: a blank line holds no record
        '{"id": "cut", "text": "the file ends mid-rec',  # 22: no newline after it
    ]


def test_bad_jsonl_records_byte_order_marks_and_duplicates(marker, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    main = src / "a.jsonl"
    main.write_text("\n".join(_jsonl_lines()))
    # Windows tools write byte-order marks: UTF-8 (Notepad, Excel) and UTF-16 ("Unicode" in Notepad).
    (src / "b-utf8-bom.jsonl").write_bytes(codecs.BOM_UTF8 + b'{"id": "bom8", "text": "after a UTF-8 BOM"}\n')
    utf16 = '{"id": "bom16-1", "text": "UTF-16 café"}\r\n{"id": "bom16-2", "text": "second line"}\r\n'
    (src / "c-utf16.jsonl").write_bytes(utf16.encode("utf-16"))
    result = run(
        tmp_path / "out",
        "--input",
        src / "*.jsonl",
        "--module",
        marker,
        "--id-field",
        "id",
        "--passthrough",
        "lang",
        "--batch-size",
        "4",
        "--max-error-fraction",
        "1",
    )
    assert result.rc == 0, result.err
    result.assert_balanced(rows_in=len(_jsonl_lines()) - 1 + 3)
    assert_embedded(
        result,
        marker,
        {
            "ok": "a fine record",
            "after-deep": "the line after the deep one",
            "dup": "first of two",
            "nul": "a\x00b",
            "5": "an integer id",
            "bom8": "after a UTF-8 BOM",
            "bom16-1": "UTF-16 café",
            "bom16-2": "second line",
        },
    )
    assert len(result.rows()) == 8
    assert result.rows()["ok"]["lang"] == "en"
    at = lambda n: f"{main}:{n}"  # noqa: E731
    assert_dead(
        result,
        {
            at(2): ("read", "not a JSON line"),
            at(3): ("read", "JSON line is list, not an object"),
            at(4): ("read", "text field 'text' is missing"),
            at(5): ("read", "text field 'text' is null, not a string"),
            at(6): ("read", "text field 'text' is int, not a string"),
            at(7): ("read", "text field 'text' is list, not a string"),
            at(8): ("validate", EMPTY),
            at(9): ("validate", EMPTY),
            at(10): ("read", "text field 'text' is not valid Unicode"),
            at(11): ("read", "id field 'id' is not valid Unicode"),
            at(12): ("read", "passthrough field 'lang' is not valid Unicode"),
            at(13): ("read", "not a JSON line: RecursionError"),
            at(16): ("dedupe", f"duplicate id; the record at {at(15)} is kept"),
            at(18): ("read", "id field 'id' is missing"),
            at(20): ("embed", NOT_FINITE),
            at(22): ("read", "not a JSON line"),
        },
        key="source",
    )
    assert result.errors("source")[at(16)]["id"] == "dup"


def test_csv_from_excel_and_the_empty_text_policy_in_another_format(marker, tmp_path):
    src = tmp_path / "in.csv"
    # Excel's "CSV UTF-8" export starts the file with a byte-order mark, before the header.
    body = (
        'id,text\r\nc1,"a, quoted\nmulti-line text"\r\nc2,\r\nc3,"   "\r\nc4,nul\x00inside\r\nc5,caf\xe9\r\nc6,ok\r\n'
    )
    src.write_bytes(codecs.BOM_UTF8 + body.encode("latin-1"))
    result = run(tmp_path / "out", "--input", src, "--module", marker, "--id-field", "id", "--max-error-fraction", "1")
    assert result.rc == 0, result.err
    result.assert_balanced(rows_in=6)
    assert_embedded(result, marker, {"c1": "a, quoted\nmulti-line text", "c4": "nul\x00inside", "c6": "ok"})
    assert_dead(result, {"c2": ("validate", EMPTY), "c3": ("validate", EMPTY)})
    assert_dead(result, {f"{src}:5": ("read", "invalid UTF-8 in the row")}, key="source")


# --------------------------------------------------------------------------- images


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns; the pipeline refuses it
def test_image_edge_cases_beyond_the_e2e_set(tiny, tmp_path):
    from PIL import Image

    src = tmp_path / "images"
    src.mkdir()
    (src / "bomb.png").write_bytes(rel.png_bomb(10_000, 10_000))  # 100 Mpx in a few KB
    (src / "bigger-bomb.png").write_bytes(rel.png_bomb(20_000, 20_000))  # past Pillow's own bomb limit
    (src / "gray16.png").write_bytes(rel.image_bytes("I;16", 0x8080))  # 16-bit grayscale at half intensity
    (src / "float.tif").write_bytes(rel.image_bytes("F", 0.5, fmt="TIFF"))
    (src / "bilevel.png").write_bytes(rel.image_bytes("1", 1))
    (src / "gray-alpha.png").write_bytes(rel.image_bytes("LA", (0, 0)))  # fully transparent: white
    palette = Image.new("P", (12, 9), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    palette.info["transparency"] = 0
    palette.save(src / "palette-transparent.png")
    (src / "jpeg-named.png").write_bytes(rel.image_bytes("RGB", (0, 255, 0), fmt="JPEG"))
    (src / "text-named.jpg").write_bytes(b"just some text, not an image\n")
    png = rel.image_bytes("RGB", (10, 20, 30), size=(64, 64))
    (src / "truncated.png").write_bytes(png[: len(png) // 2])
    result = run(
        tmp_path / "out",
        "--input",
        src / "*",
        "--input-format",
        "image",
        "--module",
        tiny.image,
        "--max-error-fraction",
        "1",
    )
    assert result.rc == 0, result.err
    result.assert_balanced(rows_in=10)

    import tensorflow as tf

    loaded = tf.saved_model.load(tiny.image)

    def expected(rgb):
        pixels = np.full((1, 8, 8, 3), np.asarray(rgb, np.float32), np.float32)
        return loaded.signatures["default"](images=tf.constant(pixels))["default"].numpy()[0]

    rows = result.rows()
    for name, rgb, atol in [
        ("gray16.png", (0x8080 / 65535,) * 3, 1e-5),  # not clipped to white
        ("bilevel.png", (1, 1, 1), 1e-5),
        ("gray-alpha.png", (1, 1, 1), 1e-5),  # transparency over white
        ("palette-transparent.png", (1, 1, 1), 1e-5),
        ("jpeg-named.png", (0, 1, 0), 0.05),  # lossy: near green
    ]:
        np.testing.assert_allclose(rows[str(src / name)]["embedding"], expected(rgb), atol=atol, err_msg=name)
    assert_dead(
        result,
        {
            str(src / "bomb.png"): ("decode", "10000x10000 = 100000000 pixels, over max_image_pixels=50000000"),
            str(src / "bigger-bomb.png"): ("decode", "DecompressionBombError"),
            str(src / "float.tif"): ("decode", "mode F images (32-bit float samples)"),
            str(src / "text-named.jpg"): ("decode", "UnidentifiedImageError"),
            str(src / "truncated.png"): ("decode", "OSError"),
        },
    )
