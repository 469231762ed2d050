"""Paths: local or remote, made absolute for workers, shown relative to the working directory."""

from __future__ import annotations

from pipelines.embedding import paths


def test_display_shows_paths_inside_the_working_directory_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.display(f"{tmp_path}/output/sample") == "output/sample"
    assert paths.display("/elsewhere/table") == "/elsewhere/table"
    assert paths.display(f"{tmp_path}x/table") == f"{tmp_path}x/table"  # a sibling whose name starts alike
    assert paths.display("gs://b/t") == "gs://b/t"


def test_absolute_is_against_the_working_directory_or_the_base_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.absolute("corpus/*.txt") == f"{tmp_path}/corpus/*.txt"
    assert paths.absolute("corpus/") == f"{tmp_path}/corpus/"  # a directory's files: the slash is kept
    assert paths.absolute("configs/../out", "/project") == "/project/out"
    assert paths.absolute("/data/in.txt", "/project") == "/data/in.txt"
    for handle in ("gs://b/in/*.txt", "s3://b/out", "https://example.com/m.tar.gz", "file:///m"):
        assert paths.absolute(handle) == paths.absolute(handle, "/project") == handle


def test_absolute_beam_paths_rewrites_only_the_file_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--temp_location=tmp", "--setup_file", "setup.py", "--runner=DirectRunner", "--job_name=x"]
    assert paths.absolute_beam_paths(flags) == (
        f"--temp_location={tmp_path}/tmp",
        "--setup_file",
        f"{tmp_path}/setup.py",
        "--runner=DirectRunner",
        "--job_name=x",
    )
