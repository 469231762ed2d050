"""Benchmarks of hub-embed, each writing `benchmarks/results/<name>.json`; docs/benchmarks.md renders them.

`benchmarks.text`, `benchmarks.images` and `benchmarks.incremental` are the
benchmarks, `benchmarks.probes` the probes, `benchmarks.harness` what they
share and `benchmarks.render` the page's tables.
"""
