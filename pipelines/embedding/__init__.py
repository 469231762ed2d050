"""Embedding jobs: config, sources, preprocessing, content keys and reuse, the Beam model handler, the table sink, the pipeline."""
