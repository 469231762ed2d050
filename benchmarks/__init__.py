"""Benchmarks: the embedding pipeline against the raw module, sentence-transformers and stock Beam.

`python -m benchmarks.run --corpus benchmarks/data/docstrings.jsonl --rows 2000`
(see `benchmarks.run`); the corpus is built by `python -m benchmarks.corpus`.
"""
