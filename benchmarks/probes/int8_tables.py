"""The int8 probe's tables: printed, and in Markdown (no TensorFlow needed to read a result)."""

from __future__ import annotations

from typing import Any

from benchmarks.tables import fmt, markdown_table

M_TOKENS = 1280


def text_lines(results: dict[str, Any], threads: int, texts: int) -> list[str]:
    """The printed report: one section per part that ran (`texts`: how many the end-to-end parts embedded)."""
    lines = []
    if "micro" in results:
        lines.append(
            f"\n1. one dense layer, M={M_TOKENS} tokens (GFLOP/s median [range]; min cosine of rows vs float64)"
        )
        for row in results["micro"]:
            cos = "" if row["min_cos_rows"] is None else f"{row['min_cos_rows']:.5f}"
            lo, hi = row["gflops_range"]
            lines.append(
                f"  {row['shape']:14s} {row['variant']:40s} {row['median_s'] * 1e3:8.2f} ms "
                f"{row['gflops']:7.1f} [{lo:6.1f}-{hi:6.1f}]  {cos}"
            )
    if "e2e" in results:
        lines.append(f"\n2. MiniLM embed(), {texts} docstrings (rows/s median [range]; cosine vs float32)")
        for row in results["e2e"]:
            lo, hi = row["rows_per_s_range"]
            lines.append(
                f"  {row['variant']:40s} {row['rows_per_s']:7.1f} [{lo:6.1f}-{hi:6.1f}]  "
                f"min {row['min_cos']:.5f} mean {row['mean_cos']:.5f}"
            )
    if "tflite" in results:
        lines.append(f"\n3. TFLite encoder+pooling, {texts} docstrings, {threads} threads (not a SavedModel)")
        for row in results["tflite"]:
            if "error" in row:
                lines.append(f"  {row['variant']:40s} FAILED: {row['error']}")
                continue
            lo, hi = row["rows_per_s_range"]
            lines.append(
                f"  {row['variant']:40s} {row['rows_per_s']:7.1f} [{lo:6.1f}-{hi:6.1f}]  "
                f"min {row['min_cos']:.5f} mean {row['mean_cos']:.5f}  "
                + ("" if row["size_mb"] is None else f"{row['size_mb']:.1f} MB")
            )
    return lines


def _range(low_high: list[float], digits: int = 1) -> str:
    return f"{low_high[0]:.{digits}f}–{low_high[1]:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The report's tables in Markdown: one per part that ran."""
    meta = report["meta"]
    parts = [f"{meta['threads']} TensorFlow intra-op threads; oneDNN optimizations {meta['onednn_opts']}."]
    if "micro" in report:
        rows = [
            [
                row["shape"],
                row["variant"].strip(),
                fmt(row["median_s"] * 1e3, 2),
                fmt(row["gflops"]),
                _range(row["gflops_range"]),
                fmt(row["min_cos_rows"], 5),
            ]
            for row in report["micro"]
        ]
        header = ["shape", "variant", "ms (median)", "GFLOP/s", "GFLOP/s range", "min cos of rows vs float64"]
        parts.append(f"One dense layer, M = {M_TOKENS} tokens:\n\n" + markdown_table(header, rows))
    for part, title in (("e2e", "The MiniLM encoder, end to end"), ("tflite", "TFLite encoder and pooling")):
        if part not in report:
            continue
        rows = []
        for row in report[part]:
            if "error" in row:
                rows.append([row["variant"], "failed: " + row["error"].splitlines()[0], "", "", ""])
                continue
            rows.append(
                [
                    row["variant"],
                    fmt(row["rows_per_s"]),
                    _range(row["rows_per_s_range"]),
                    fmt(row["min_cos"], 5),
                    fmt(row["mean_cos"], 5),
                ]
            )
        header = ["variant", "rows/s (median)", "rows/s range", "min cos vs float32", "mean cos"]
        parts.append(f"{title}, {meta['rows']} docstrings:\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts)
