"""Publishing committed embedding tables into PostgreSQL + pgvector collections.

`publish_table` (in `pipelines.publish.publishing`) loads a table, `build_publish_pipeline` adds the same work to a
Beam pipeline, and `python -m pipelines.publish` is the command line. See docs/publish.md.
"""
