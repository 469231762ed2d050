"""`publish_table` and `build_publish_pipeline`: a committed table into a pgvector collection, as a Beam pipeline.

    SetUp (work tables) ─▶ chunks ─▶ Spread ─▶ Stage (COPY, each chunk once) ─┐
    Snapshot (a merge: the collection's id and content digests) ──▲───────────┤
    CommitTrigger ───────────────────────────────────────────────────────────▶ Commit (one transaction)

Step labels are stable: `SetUp`, `Spread`, `Snapshot`, `Stage`, `CommitTrigger`, `Commit`. `publish_table` checks
everything first (`plan.prepare`), holds the collection's publish lock while the pipeline runs, and
returns what the commit did.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.embedding.pipeline import new_pipeline
from pipelines.publish import catalogue, database, snapshot, work
from pipelines.publish.commit import PublishResult, commit
from pipelines.publish.errors import PublishFailed
from pipelines.publish.options import PublishConfig, PublishOptions
from pipelines.publish.plan import BUILD, PublishPlan, prepare
from pipelines.publish.snapshot import Snapshot
from pipelines.publish.source import Chunk
from pipelines.publish.staging import StageChunks, StagedChunk
from pipelines.publish.target import Target

_LOG = logging.getLogger("hub_embed")
_ERROR_LINE = re.compile(r"^\s*[\w.]*(Error|Exception|Failed): ")


class _SetUp(beam.DoFn):
    """Creates the work tables (dropping stale ones), then hands on the table's chunks."""

    def __init__(self, plan: PublishPlan):
        self._plan = plan

    def process(self, _: Any) -> Iterator[Chunk]:
        plan = self._plan
        with database.connect(plan.cfg.target, plan.cfg.options.connect_timeout_s) as conn:
            staged = work.set_up(conn, plan)
        if staged:
            _LOG.info("%d of %d chunks were staged by an earlier run of this publish", staged, len(plan.chunks))
        yield from plan.chunks


class _Snapshot(beam.DoFn):
    """Reads the collection's snapshot for a merge (None for a build)."""

    def __init__(self, plan: PublishPlan):
        self._plan = plan

    def process(self, _: Any) -> Iterator[Snapshot | None]:
        plan = self._plan
        if plan.mode == BUILD:
            yield None
            return
        with database.connect(plan.cfg.target, plan.cfg.options.connect_timeout_s) as conn:
            yield snapshot.read(conn, plan.layout)


class _Commit(beam.DoFn):
    """Runs the commit once every chunk is staged (they arrive as a side input); outputs the `PublishResult`."""

    def __init__(self, plan: PublishPlan):
        self._plan = plan

    def process(self, _: Any, staged: list[StagedChunk], base: Snapshot | None) -> Iterator[PublishResult]:
        plan = self._plan
        _LOG.info("%d chunks staged (%d rows to write); committing", len(staged), sum(s.changed for s in staged))
        seen = np.concatenate([s.seen for s in staged if s.seen is not None] or [np.zeros(0, snapshot.DIGEST_DTYPE)])
        before = {"stage": sum(s.seconds for s in staged), **({"snapshot": base.read_s} if base else {})}
        with database.connect(plan.cfg.target, plan.cfg.options.connect_timeout_s) as conn:
            try:
                yield commit(conn, plan, np.unique(seen), base, before)
            except Exception as e:
                if isinstance(e, PublishFailed):
                    raise
                raise PublishFailed(plan.cfg.target.scrub(f"committing {plan.collection} failed: {e}")) from None


def build_publish_pipeline(p: beam.Pipeline, cfg: PublishConfig, plan: PublishPlan | None = None) -> beam.PCollection:
    """Adds a publish to `p`.

    The pipeline takes no lock: a publish committed by another run in between makes this one fail at
    its commit, unchanged (see `pipelines.publish.commit`); `publish_table` also holds the publish lock.

    Args:
      p: the pipeline.
      cfg: a checked config (`PublishConfig.create`).
      plan: the result of `prepare(cfg)`; prepared here (checks, no writes) when absent.

    Returns:
      The PCollection holding the `PublishResult` (one element).

    Raises:
      PublishError: from `prepare`, when `plan` is absent.
    """
    plan = plan or prepare(cfg)
    base = p | "SnapshotTrigger" >> beam.Create([None]) | "Snapshot" >> beam.ParDo(_Snapshot(plan))
    staged = (
        p
        | "Start" >> beam.Create([None])
        | "SetUp" >> beam.ParDo(_SetUp(plan))
        | "Spread" >> beam.Reshuffle()
        | "Stage" >> beam.ParDo(StageChunks(plan), beam.pvalue.AsSingleton(base))
    )
    return (
        p
        | "CommitTrigger" >> beam.Create([None])
        | "Commit" >> beam.ParDo(_Commit(plan), beam.pvalue.AsList(staged), beam.pvalue.AsSingleton(base))
    )


def publish_table(
    table: str, target: str | Target, collection: str, options: PublishOptions | None = None
) -> PublishResult:
    """Publishes a committed table into a collection: checks, stages with Beam, commits in one transaction.

    Args:
      table: the committed table's directory (local, gs://, s3://).
      target: the database: a libpq connection string (password best from `PGPASSWORD`, `~/.pgpass`
        or a service file), or a `Target`.
      collection: the collection's name.
      options: how (schema, vector type, index, metric, missing rows, replace, Beam flags).

    Returns:
      What the publish did.

    Raises:
      PublishError: refused before any write (bad table, database, credentials, collection or options).
      PublishFailed: it failed while running; the collection is as it was, and the same call completes it.
    """
    return run(PublishConfig.create(table, target, collection, options))


def run(cfg: PublishConfig, plan: PublishPlan | None = None) -> PublishResult:
    """Runs a publish of a checked config (see `publish_table`)."""
    options = PipelineOptions(list(cfg.options.beam_args))
    FileSystems.set_options(options)  # the launcher reads the table with the job's file-system options
    plan = plan or prepare(cfg)
    with _publish_lock(plan):
        p = new_pipeline(options)
        build_publish_pipeline(p, cfg, plan)
        try:
            p.run().wait_until_finish()
        except Exception as e:  # a runner reports a failed job by raising: say why in one line
            raise PublishFailed(
                cfg.target.scrub(f"publishing into {plan.collection} failed: {root_cause(e)}")
            ) from None
    with database.connect(cfg.target, cfg.options.connect_timeout_s) as conn:
        entry = catalogue.read(conn, plan.layout.schema, plan.layout.collection)
    if entry is None or entry.publish_run != plan.publish_run:
        raise PublishFailed(f"the publish into {plan.collection} ended without committing.")
    return PublishResult.from_entry(entry, plan.layout.schema)


@contextlib.contextmanager
def _publish_lock(plan: PublishPlan) -> Iterator[None]:
    """Holds the collection's publish lock (a session advisory lock) while the publish runs.

    Raises:
      PublishFailed: another publish of the collection holds it.
    """
    with database.connect(plan.cfg.target, plan.cfg.options.connect_timeout_s, autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [plan.lock_key]).fetchone()
        if not row or not row[0]:
            raise PublishFailed(f"another publish into {plan.collection} is running; try again when it has ended.")
        yield


def root_cause(error: BaseException) -> str:
    """The last `SomeError: message` line of a failure (runners wrap worker errors in long traces)."""
    text = f"{type(error).__name__}: {error}"
    causes = [line.strip() for line in text.splitlines() if _ERROR_LINE.match(line)]
    return causes[-1] if causes else text.splitlines()[0]
