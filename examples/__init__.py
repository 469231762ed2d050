"""Worked examples built on hub-embed, run from a checkout (not part of the installed package)."""
