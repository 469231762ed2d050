"""Data shipped with the package: the sample corpus (`sample.txt`, see `build_sample`)."""
