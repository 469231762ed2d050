"""Job files read within bounds: an alias bomb and an oversized file are refused at once, in one line, exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from pipelines.embedding import config, job_yaml
from pipelines.orchestration import discovery
from tests.fixtures import reliability as rel


def alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" job file: under `beam:`, each level lists the one below nine times (9**9 values)."""
    lines = [
        "input: corpus.txt",
        "output: out",
        "beam:",
        '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ]
    for level in range(1, levels):
        below = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"  l{level}: &l{level} [{below}]")
    return "\n".join(lines) + "\n"


# Loads the job file in a process of its own and prints how long that took, whatever the outcome.
TIMED_LOAD = """
import sys, time
from pipelines.embedding import config
start = time.monotonic()
try:
    config.load(["--config", sys.argv[1]])
except config.ConfigError as e:
    print("refused:", e)
print(f"seconds: {time.monotonic() - start:.3f}")
"""


def test_a_nine_level_alias_bomb_under_beam_is_refused_in_well_under_a_second(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    done = subprocess.run(
        [sys.executable, "-c", TIMED_LOAD, str(path)], cwd=rel.REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    refused, seconds = done.stdout.strip().splitlines()
    assert "uses an anchor (&l0) at line 4; anchors and aliases are not allowed" in refused, refused
    assert float(seconds.split()[1]) < 0.5, seconds


def test_the_command_exits_2_in_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.embed", "--config", str(path)],
        cwd=rel.REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("hub-embed:")]
    assert lines == [
        f"hub-embed: error: Config file {str(path)!r} uses an anchor (&l0) at line 4; anchors and aliases are not "
        "allowed in job files (write each value out)."
    ], done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - start < 120


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("input: &here corpus.txt\noutput: out\n", "uses an anchor (&here) at line 1"),
        ("defaults: &d {a: 1}\nbeam:\n  <<: *d\n", "uses an anchor (&d) at line 1"),
        ("beam:\n  flags: [*undefined]\n", "uses an alias (*undefined) at line 2"),
    ],
)
def test_anchors_are_refused_too(tmp_path, text, what):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=re.escape(f"{what}; anchors and aliases are not allowed")):
        config.load(["--config", str(path)])


def test_a_job_file_over_the_size_cap_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("input: corpus.txt\n# " + "x" * job_yaml.MAX_BYTES + "\n")
    with pytest.raises(config.ConfigError, match=rf"larger than {job_yaml.MAX_BYTES:,} bytes, the limit of a job file"):
        config.load(["--config", str(path)])
    path.write_text("input: corpus.txt\n# " + "x" * (job_yaml.MAX_BYTES - 100) + "\n")
    assert job_yaml.read(str(path)) == {"input": "corpus.txt"}  # just under the cap: read


def test_the_message_names_the_line_not_its_text(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("module: &m https://user:s3cret@example.com/m.tar.gz\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(["--config", str(path)])
    assert "line 1" in str(e.value) and "s3cret" not in str(e.value)


def test_dag_discovery_reads_scheduled_configs_within_the_same_bounds(tmp_path):
    """The DAG processor parses every config of the folder: a bomb there is an import error at once, not minutes."""
    (tmp_path / "bomb.yaml").write_text(alias_bomb() + "schedule:\n  cron: '@daily'\n")
    started = time.monotonic()
    with pytest.raises(
        discovery.ConfigDiscoveryError, match=r"bomb\.yaml: cannot be read as YAML: .*anchors and aliases"
    ):
        discovery.discover(str(tmp_path))
    assert time.monotonic() - started < 1.0
