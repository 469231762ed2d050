"""Searching a published collection (through its index) or a committed table (exactly), with the module that made it.

`python -m pipelines.search` is the command line; see docs/publish.md.
"""
