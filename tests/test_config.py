"""Config: YAML + flags, types, every validation rule, and path checks."""

from __future__ import annotations

import os

import pytest

from pipelines.embedding import config
from pipelines.embedding.config import ConfigError


def _yaml(tmp_path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return str(path)


def test_no_arguments_is_the_bundled_sample_job():
    cfg = config.load([])
    assert cfg.source.input == config.SAMPLE_INPUT and os.path.isfile(cfg.source.input)
    assert cfg.source.input_format == "txt"
    assert cfg.sink.output == os.path.abspath(config.SAMPLE_OUTPUT) and cfg.sink.overwrite  # `make run` can run again
    assert cfg.model.module == os.path.abspath(config.DEFAULT_MODULE)
    assert cfg.model.batch_size is None  # decided with the module: see test_batch_size_*
    with open(cfg.source.input) as f:
        lines = f.read().splitlines()
    assert 300 <= len(lines) <= 500 and all(line.strip() for line in lines)


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    path = _yaml(
        tmp_path,
        "input: data/*.jsonl\noutput: out/a\nbatch_size: 64\npassthrough: [title, url]\n"
        "beam:\n  runner: DirectRunner\n  direct_num_workers: 2\n",
    )
    cfg = config.load(["--config", path, "--output", "out/b", "--direct_running_mode=multi_processing"])
    assert cfg.sink.output == os.path.abspath("out/b")
    assert cfg.model.batch_size == 64
    assert cfg.source.passthrough == ("title", "url")
    assert cfg.source.input_format == "jsonl"
    assert cfg.beam_args == (
        "--runner=DirectRunner",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )


def test_schedule_section_is_left_to_airflow(tmp_path):
    path = _yaml(tmp_path, "input: in.txt\noutput: out\nschedule:\n  cron: '@daily'\n  runner: DirectRunner\n")
    cfg = config.load(["--config", path])
    assert cfg.sink.output == os.path.abspath("out") and "schedule" not in cfg.to_dict()


def test_flags_parse_values_and_accept_underscore_spelling():
    cfg = config.load(
        [
            "--input",
            "x.csv",
            "--output",
            "o",
            "--batch_size",
            "8",
            "--passthrough",
            "a, b",
            "--image-size",
            "32x48",
            "--max-error-fraction",
            "0.5",
            "--overwrite",
        ]
    )
    assert (cfg.model.batch_size, cfg.source.passthrough, cfg.preprocess.image_size) == (8, ("a", "b"), (32, 48))
    assert cfg.sink.max_error_fraction == 0.5 and cfg.sink.overwrite is True


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "outptu: x\n",
            "Unknown config key 'outptu' in .*did you mean 'output'.*valid keys: allow_insecure_http, allow_ops, batch_size",
        ),
        ("batch_size: many\n", "batch_size must be an integer, got 'many'"),
        ("batch_size: true\n", "batch_size must be an integer, got True"),
        ("overwrite: 'yes'\n", "overwrite must be true or false"),
        ("passthrough: [1, 2]\n", "passthrough must be a list of strings"),
        ("image_size: [1, 2, 3]\n", "image_size must be HEIGHT,WIDTH"),
        ("max_error_fraction: lots\n", "max_error_fraction must be a number"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("input: [unclosed\n", "not valid YAML"),
        ("beam:\n  use_public_ips: false\n", "false is ambiguous"),
        ("!!python/object/apply:os.system ['echo hacked']\n", "not valid YAML"),
        ("schedule: daily\n", "'schedule' .* must be a mapping"),
    ],
)
def test_bad_yaml_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        config.load(["--config", _yaml(tmp_path, text)])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ouput", "x"], r"Unknown flag --ouput.*did you mean 'output'"),
        (["--batch-size", "x"], "batch_size must be an integer, got 'x'"),
        (["--input", "x.bin", "--output", "o"], "Cannot tell the input format of 'x.bin'.*txt, jsonl, csv, parquet"),
        (["--input", "x.txt", "--output", "o", "--input-format", "jsonn"], "did you mean 'jsonl'.*valid formats"),
        (["--input", "x.txt", "--output", "o", "--id-field", "id"], "id_field does not apply to txt input"),
        (["--input", "x.jpg", "--output", "o", "--passthrough", "a"], "passthrough does not apply to image input"),
        (["--input", "x.csv", "--output", "o", "--passthrough", "id"], "clashes with the table's own columns"),
        (["--input", "x.csv", "--output", "o", "--passthrough", "a,a"], "passthrough lists a column twice"),
        (["--input", "x.csv"], "output is required"),
        (["--input", "x.csv", "--output", "o", "--batch-size", "0"], "batch_size must be a positive integer"),
        (
            ["--input", "x.jpg", "--output", "o", "--decode-threads", "0"],
            "decode_threads must be a positive integer, got 0",
        ),
        (
            ["--input", "x.csv", "--output", "o", "--max-error-fraction", "2"],
            "max_error_fraction must be between 0 and 1",
        ),
        (["--input", "x.csv", "--output", "o", "--signature", " "], "signature must not be empty"),
        # Beam's `*` does not cross "/": data/out/part-*.parquet is not matched by data/*, data/part-*.parquet is.
        (
            ["--input", "data/*", "--input-format", "image", "--output", "data"],
            "output 'data' is inside the input 'data/\\*'",
        ),
        (
            ["--input", "corpus/**", "--input-format", "jsonl", "--output", "corpus/2026/embedded"],
            "is inside the input",
        ),
    ],
)
def test_bad_flags_are_clear_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        config.load(argv)


def test_format_is_inferred_through_compression_suffixes():
    assert config.infer_format("gs://b/docs-*.jsonl.gz") == "jsonl"
    assert config.infer_format("photos/*.JPEG") == "image"
    assert config.infer_format("data/part-*.tfrecords") == "tfrecord"
    assert config.infer_format("notes") is None


def test_output_beside_input_is_fine():
    cfg = config.load(["--input", "data/*.jsonl", "--output", "data/embeddings"])
    assert cfg.sink.output == os.path.abspath("data/embeddings")


def test_local_paths_are_made_absolute_at_launch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(
        [
            "--input",
            "corpus/*.jsonl",
            "--output",
            "tables/out",
            "--module",
            "models/enc/3",
            "--reuse",
            "../old",
            "--temp_location",
            "tmp",
            "--setup_file=./pyproject.toml",
            "--runner",
            "DirectRunner",
        ]
    )
    assert cfg.source.input == f"{tmp_path}/corpus/*.jsonl"  # the glob is kept, made absolute
    assert cfg.sink.output == f"{tmp_path}/tables/out"
    assert cfg.model.module == f"{tmp_path}/models/enc/3"
    assert cfg.sink.reuse == str(tmp_path.parent / "old")
    assert cfg.beam_args == (
        "--temp_location",
        f"{tmp_path}/tmp",
        f"--setup_file={tmp_path}/pyproject.toml",
        "--runner",
        "DirectRunner",
    )
    assert cfg.to_dict()["input"] == cfg.source.input  # what the manifest records, and what workers get
    assert (
        config.load(["--input", "corpus/", "--input-format", "txt", "--output", "o"]).source.input
        == f"{tmp_path}/corpus/"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the same flags from another directory name other files
    assert config.load(["--input", "corpus/*.jsonl", "--output", "o"]).source.input == f"{elsewhere}/corpus/*.jsonl"


@pytest.mark.parametrize(
    "handle",
    [
        "gs://b/models/enc/3/",
        "s3://b/enc-3.tar.gz",
        "https://user:pw@host/enc-3.tar.gz?x=1",
        "http://host/m/3",
        "file:///models/enc/3",
    ],
)
def test_remote_and_file_url_handles_are_untouched(handle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(
        ["--input", "gs://b/in/*.txt", "--output", "s3://b/out", "--module", handle, "--reuse", "gs://b/old"]
    )
    assert (cfg.source.input, cfg.sink.output, cfg.model.module, cfg.sink.reuse) == (
        "gs://b/in/*.txt",
        "s3://b/out",
        handle,
        "gs://b/old",
    )


def test_relative_paths_are_still_checked_by_the_launcher(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    config.check_paths(config.load(["--input", "corpus/*.txt", "--output", "out"]))
    with pytest.raises(ConfigError, match=f"input '{tmp_path}/missing/\\*.txt' matches no files"):
        config.check_paths(config.load(["--input", "missing/*.txt", "--output", "out"]))
    with pytest.raises(ConfigError, match="is inside the input"):
        config.load(["--input", "corpus/**", "--input-format", "txt", "--output", f"{tmp_path}/corpus/out"])


def test_config_hash_ignores_where_the_table_goes():
    a = config.from_dict({"input": "x.txt", "output": "o1"})
    b = config.from_dict({"input": "x.txt", "output": "o2", "overwrite": True})
    c = config.from_dict({"input": "x.txt", "output": "o1", "batch_size": 3})
    d = config.from_dict({"input": "x.txt", "output": "o1", "decode_threads": 5})  # how fast, not what
    assert a.config_hash() == b.config_hash() == d.config_hash() != c.config_hash()


def test_to_dict_drops_secrets_from_the_module_handle():
    cfg = config.from_dict({"module": "https://user:pw@example.com/m.tar.gz?token=s3cret", "output": "o"})
    assert cfg.to_dict()["module"] == "https://example.com/m.tar.gz"


# --------------------------------------------------------------------------- file system


def test_check_paths(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("hello\n")
    out = tmp_path / "out"
    cfg = config.from_dict({"input": str(tmp_path / "in" / "*.txt"), "output": str(out)})
    config.check_paths(cfg)  # new output

    out.mkdir()
    (out / ".tmp-20260101T000000Z-dead").mkdir()
    (out / "part-00000-20260101T000000Z-dead.parquet").write_bytes(b"")
    config.check_paths(cfg)  # only what an interrupted run leaves

    (out / "_SUCCESS").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a table.*--overwrite"):
        config.check_paths(cfg)
    config.check_paths(config.from_dict({**cfg.to_dict(), "overwrite": True}))

    (out / "notes.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"not part of an embedding table: \['notes.md'\]"):
        config.check_paths(config.from_dict({**cfg.to_dict(), "overwrite": True}))

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot be a directory: '.*file' is a file"):
        config.check_paths(config.from_dict({**cfg.to_dict(), "output": str(tmp_path / "file" / "out")}))
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / "locked").mkdir(mode=0o555)
        with pytest.raises(ConfigError, match="cannot be written"):
            config.check_paths(config.from_dict({**cfg.to_dict(), "output": str(tmp_path / "locked" / "out")}))

    with pytest.raises(ConfigError, match="matches no files"):
        config.check_paths(config.from_dict({"input": str(tmp_path / "in" / "*.csv"), "output": str(tmp_path / "o2")}))


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(os.path.dirname(__file__), "..", "configs"))))
def test_every_shipped_config_is_valid(name):
    cfg = config.load(["--config", os.path.join(os.path.dirname(__file__), "..", "configs", name)])
    assert cfg.sink.output and cfg.source.input_format in config.FORMATS
