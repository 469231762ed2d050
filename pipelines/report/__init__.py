"""What a run produced, to look at: a committed table's self-contained HTML report (`python -m pipelines.report`).

See docs/report.md.
"""
