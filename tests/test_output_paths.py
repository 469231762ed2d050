"""Output paths: an output the input glob would match, or that reaches into the input through a symlink, is refused.

Through `pipelines.embedding.config.load` and `check_paths`, on real paths for the
symlink. The other output checks (a table already there, an output under a file)
are in tests/test_config.py::test_check_paths.
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "pattern, output, inside",
    [
        ("corpus/*.parquet", "corpus/embeddings", False),  # Beam's `*` stays within a directory
        ("corpus/*.parquet", "corpus", True),  # parts would land in corpus/part-*.parquet
        ("corpus/*", "corpus/out", False),
        ("corpus/**", "corpus/2026/out", True),
        ("corpus/**.parquet", "corpus/out", True),
        ("corpus/*/*.parquet", "corpus/out", True),  # out/part-*.parquet
        ("corpus/part-*.parquet", "corpus", True),
        ("corpus/docs-*.parquet", "corpus", False),
        ("gs://b/corpus/*.parquet", "gs://b/corpus/embeddings", False),
        ("gs://b/corpus/**", "gs://b/corpus/embeddings", True),
    ],
)
def test_output_inside_the_input_glob_means_what_beam_would_match(pattern, output, inside):
    from pipelines.embedding import config, paths

    argv = ["--input", pattern, "--input-format", "parquet", "--output", output]
    if inside:
        with pytest.raises(config.ConfigError, match="is inside the input"):
            config.load(argv)
    else:
        assert config.load(argv).sink.output == paths.absolute(output)


def test_an_output_reached_through_a_symlink_into_the_input_is_refused(tmp_path):
    from pipelines.embedding import config

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.parquet").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "corpus")
    cfg = config.load(["--input", str(tmp_path / "corpus" / "*.parquet"), "--output", str(tmp_path / "link")])
    with pytest.raises(config.ConfigError, match="is inside the input"):
        config.check_paths(cfg)
