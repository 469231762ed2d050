"""`python -m benchmarks.images`: the image pipeline's speed against its raw module loop.

    python -m benchmarks.images --images 1000 --repeats 3 [--only raw,pipeline,...] [--module DIR]

Every contender embeds the same set of distinct JPEGs cut from the bundled
photos, in a process of its own (`benchmarks.image_contenders`), round after
round; the report goes to `benchmarks/results/images.json` (`--json`).
docs/benchmarks.md says what each contender and each figure is.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
from PIL import Image

from benchmarks import harness
from benchmarks.image_contenders import CONTENDERS, PIPELINES, RAW_DECODING, one_process_ceiling
from benchmarks.pipeline_runs import EMBEDDINGS_FILE
from benchmarks.tables import fmt, markdown_table
from pipelines.models import photos

BENCHMARK = "images"
DEFAULT_MODULE = os.path.join("build", "modules", "efficientnet-lite0", "1")
DEFAULT_IMAGES = 320
DEFAULT_REPEATS = 3
TARGET = 0.85
LONG_SIDE = (480, 640)
CROP_FRACTION = (0.6, 1.0)


def make_image_set(directory: str, count: int, seed: int = 0) -> list[str]:
    """Writes `count` distinct JPEGs cut from the bundled photos; returns their paths, in order.

    Raises:
      RuntimeError: two files came out identical (the set would be deduplicated).
    """
    rng = np.random.default_rng(seed)
    sources = photos.photo_paths()
    images = []
    for path in sources:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    os.makedirs(directory, exist_ok=True)
    paths, digests = [], set()
    for i in range(count):
        image = images[i % len(images)]
        w, h = image.size
        cw, ch = (int(round(side * rng.uniform(*CROP_FRACTION))) for side in (w, h))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((left, top, left + cw, top + ch))
        scale = rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1) / max(cw, ch)
        crop = crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.BICUBIC)
        path = os.path.join(directory, f"img-{i:05d}.jpg")
        crop.save(path, quality=90)
        with open(path, "rb") as f:
            digests.add(hashlib.sha256(f.read()).hexdigest())
        paths.append(path)
    if len(digests) != count:
        raise RuntimeError(f"{count - len(digests)} of {count} generated images are duplicates")
    return paths


def run_contender(name: str, image_dir: str, module: str, workdir: str, timeout: float) -> dict[str, Any]:
    """Runs one contender in its own process; returns its result (with `images_per_s`) or `{"error": ...}`."""
    cmd = [sys.executable, "-m", "benchmarks.image_contenders", name, "--image-dir", image_dir]
    cmd += ["--module", module, "--workdir", workdir]
    result = harness.run_contender_process(cmd, workdir, harness.contender_env(2, 1), timeout)
    if "error" not in result:
        result["images_per_s"] = result["rows"] / result["seconds"]
    return result


def _min_cosine(workdirs: dict[str, str], name: str, base: str) -> float:
    """The smallest cosine between two contenders' saved embeddings."""
    a, b = (np.load(os.path.join(workdirs[n], EMBEDDINGS_FILE)) for n in (name, base))
    return harness.min_cosine(a, b)


def _paired_ratios(runs: dict[str, list[dict[str, Any]]], name: str, base: str) -> list[float]:
    """`name`'s images/s over `base`'s, round by round (`harness.paired_ratios`)."""
    return harness.paired_ratios(runs, name, base, "images_per_s")


def summarize(runs: dict[str, list[dict[str, Any]]], workdirs: dict[str, str]) -> dict[str, Any]:
    """The report's metrics from every contender's runs (None where one failed or did not run).

    Args:
      runs: contender -> its results, in run order (each with `images_per_s`, or `error`).
      workdirs: contender -> the workdir of its last run (holding its embeddings).

    Returns:
      `<name>_images_per_s` (median), `<pipeline>_vs_raw` (median of the rounds' ratios; every
      round's in `<pipeline>_vs_raw_per_round`),
      `min_cosine_<pipeline>_vs_raw` (last runs), the raw decode and the
      pipelines' time outside module calls per image, `parallel_decode_gain` (median of
      the rounds' pipeline / pipeline_serial_decode), `pipeline_best_vs_raw`, `target`
      (`best`, `met`, `met_by`), `raw_cores_busy` and `raw_decode_cpu_ms_per_image` (raw's module
      calls' CPU over their wall time, and its decoding's CPU per image) with the
      `one_process_ceiling_vs_raw` they give (see `one_process_ceiling`),
      `pipeline_vs_raw_side_by_side` (median of the rounds' pipeline / side-by-side loop: the
      same decoding and calls without Beam, so what Beam costs), `target.out_of_reach_without_beam`
      (that loop itself below the target), `contenders`, `errors`.
    """
    errors = {f"{name}[{i}]": r["error"] for name, rs in runs.items() for i, r in enumerate(rs) if "error" in r}
    good = {name: [r for r in rs if "error" not in r] for name, rs in runs.items()}
    median = {name: harness.median([r["images_per_s"] for r in rs]) for name, rs in good.items()}
    report: dict[str, Any] = {f"{name}_images_per_s": median.get(name) for name in CONTENDERS}
    raw_r = good.get("raw") or []
    report["raw_decode_ms_per_image"] = harness.median([r["decode_s"] / r["rows"] * 1e3 for r in raw_r])
    report["raw_decode_cpu_ms_per_image"] = harness.median(
        [r["decode_cpu_s"] / r["rows"] * 1e3 for r in raw_r if r.get("decode_cpu_s") is not None]
    )
    report["raw_cores_busy"] = harness.median([r["cpu_s"] / r["seconds"] for r in raw_r if r.get("cpu_s")])
    report["one_process_ceiling_vs_raw"] = harness.median([c for c in map(one_process_ceiling, raw_r) if c is not None])
    for name in PIPELINES:
        rs = good.get(name) or []
        pairs = _paired_ratios(runs, name, "raw")
        report[f"{name}_vs_raw"] = harness.median(pairs)
        report[f"{name}_vs_raw_per_round"] = pairs
        # Two processes embed side by side: their summed inference time is no part of one wall clock.
        report[f"{name}_outside_inference_ms_per_image"] = (
            harness.median([r["outside_inference_s"] / r["rows"] * 1e3 for r in rs]) if name != "pipeline_mp" else None
        )
        last_ok = (
            runs.get(name) and "error" not in runs[name][-1] and runs.get("raw") and "error" not in runs["raw"][-1]
        )
        report[f"min_cosine_{name}_vs_raw"] = _min_cosine(workdirs, "raw", name) if last_ok else None
    for name in RAW_DECODING:
        ratios = _paired_ratios(runs, name, "raw")
        report[f"{name}_vs_raw"] = harness.median(ratios)
        report[f"{name}_vs_raw_per_round"] = ratios
    # Beam's share: the one-process pipeline against the same decoding and calls without Beam, round by round.
    beam = _paired_ratios(runs, "pipeline", "raw_side_by_side")
    report["pipeline_vs_raw_side_by_side"] = harness.median(beam)
    report["pipeline_vs_raw_side_by_side_per_round"] = beam
    gains = _paired_ratios(runs, "pipeline", "pipeline_serial_decode")
    report["parallel_decode_gain"] = harness.median(gains)  # pipeline / 1 decode thread
    ratios = {name: report[f"{name}_vs_raw"] for name in PIPELINES if report[f"{name}_vs_raw"] is not None}
    best = max(ratios, key=ratios.get) if ratios else None
    report["pipeline_best_vs_raw"] = ratios.get(best)
    loop = report["raw_side_by_side_vs_raw"]
    report["target"] = {
        "vs_raw": TARGET,
        "best": best,
        "met": None if best is None else ratios[best] >= TARGET,
        "met_by": [name for name, ratio in ratios.items() if ratio >= TARGET],
        "out_of_reach_without_beam": None if loop is None else loop < TARGET,
    }
    report["contenders"] = runs
    report["errors"] = errors
    return report


LABELS = {
    "raw": "raw module loop (decoded once)",
    "pipeline": "pipeline, DirectRunner",
    "pipeline_mp": "pipeline, 2 worker processes",
    "pipeline_serial_decode": "pipeline, 1 decode thread",
    "raw_decoding": "raw loop decoding each batch",
    "raw_side_by_side": "raw loop, calls side by side",
}


def format_report(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    meta = report.get("meta")
    lines = (
        [
            f"hub-embed image benchmark, {meta['date']}, load average {meta['load_average_at_start']:.2f} at start",
            harness.cpu_line(meta),
            f"images decoded and resized by {meta['pillow']}",
        ]
        if meta
        else []
    )
    lines += [f"{'contender':<31} {'images/s':>9} {'vs raw':>7} {'outside ms/img':>15}  runs (images/s)"]
    for name, label in LABELS.items():
        if name not in report["contenders"]:
            continue
        rates = [fmt(r.get("images_per_s")) for r in report["contenders"][name]]
        lines.append(
            f"{label:<31} {fmt(report[f'{name}_images_per_s']):>9} {fmt(report.get(f'{name}_vs_raw'), 3):>7} "
            f"{fmt(report.get(f'{name}_outside_inference_ms_per_image'), 2):>15}  {', '.join(rates)}"
        )
    return "\n".join(lines + summary_lines(report))


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report's lines after its table: the target, Beam's cost, decoding, the ceiling, host steal, errors."""
    lines = []
    target = report["target"]
    verdict = ("met by " + ", ".join(LABELS[n] for n in target["met_by"])) if target["met_by"] else "not met"
    lines.append(
        f"target vs raw >= {TARGET}: {verdict}; best {fmt(report['pipeline_best_vs_raw'], 3)}"
        + (f" ({LABELS[target['best']]})" if target["best"] else "")
    )
    if report["pipeline_vs_raw_side_by_side"] is not None:
        lines.append(
            f"pipeline / raw loop, calls side by side (the same decoding and calls without Beam): "
            f"{fmt(report['pipeline_vs_raw_side_by_side'], 3)}"
        )
    if target["out_of_reach_without_beam"]:
        lines.append(
            f"the raw loop with calls side by side, which decodes as the pipeline does but without Beam, "
            f"reached {fmt(report['raw_side_by_side_vs_raw'], 3)} of raw: below the target itself on this machine"
        )
    cosines = ", ".join(
        f"{LABELS[n].removeprefix('pipeline, ')} {fmt(report[f'min_cosine_{n}_vs_raw'], 7)}"
        for n in PIPELINES
        if n in report["contenders"]
    )
    lines.append(
        f"raw decode {fmt(report['raw_decode_ms_per_image'], 2)} ms/image; "
        f"parallel decode gain (pipeline / 1 decode thread) {fmt(report['parallel_decode_gain'], 3)}; "
        f"min cosine vs raw: {cosines}"
    )
    if report["one_process_ceiling_vs_raw"] is not None:
        cores = next(r["cores"] for r in report["contenders"]["raw"] if r.get("cores"))
        lines.append(
            f"one-process ceiling {fmt(report['one_process_ceiling_vs_raw'], 3)}: raw's module calls keep "
            f"{fmt(report['raw_cores_busy'], 2)} of {cores} cores busy, and decoding takes "
            f"{fmt(report['raw_decode_cpu_ms_per_image'], 2)} ms of CPU per image"
        )
    steals = {name: [r.get("steal_s") for r in rs] for name, rs in report["contenders"].items()}
    if any(s is not None for rs in steals.values() for s in rs):
        lines.append(
            "CPU seconds the host gave other guests (steal) during each contender process, start-up included: "
            + "; ".join(f"{name} {', '.join(fmt(s) for s in rs)}" for name, rs in steals.items())
        )
    for name, error in report["errors"].items():
        lines.append(f"{name}: {error}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report in Markdown: a table of the contenders, then the summary lines."""
    meta = report["meta"]
    parts = [f"{meta['images']} images, {meta['repeats']} rounds."]
    rows = [
        [
            label,
            fmt(report[f"{name}_images_per_s"]),
            fmt(report.get(f"{name}_vs_raw"), 3),
            fmt(report.get(f"{name}_outside_inference_ms_per_image"), 2),
            ", ".join(fmt(r.get("images_per_s")) for r in report["contenders"][name]),
        ]
        for name, label in LABELS.items()
        if name in report["contenders"]
    ]
    header = ["contender", "images/s (median)", "vs raw (median of rounds)", "outside module calls, ms/image"]
    parts.append(markdown_table([*header, "rounds, images/s"], rows))
    parts.append("\n".join(f"- {line.splitlines()[0]}" for line in summary_lines(report)))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 1 when a contender failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="images in the set (default %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help="runs of each contender (default %(default)s)"
    )
    parser.add_argument("--module", default=os.path.join(harness.REPO_ROOT, DEFAULT_MODULE))
    parser.add_argument(
        "--json", default=harness.result_path(BENCHMARK), help="write the report here (default: %(default)s)"
    )
    parser.add_argument(
        "--only",
        default=",".join(CONTENDERS),
        help="contenders to run, comma-separated (default %(default)s; raw is always run)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per contender")
    args = parser.parse_args(argv)
    for flag in ("images", "repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; valid: {', '.join(CONTENDERS)}")
    if not os.path.isfile(os.path.join(args.module, "module.json")):
        print(f"error: module {args.module!r} is not built; run `make setup`", file=sys.stderr)
        return 2
    meta = machine_meta(args, argv)
    with tempfile.TemporaryDirectory(prefix="bench-images-") as workdir:
        image_dir = os.path.join(workdir, "images")
        start = time.monotonic()
        make_image_set(image_dir, args.images)
        print(f"wrote {args.images} images in {time.monotonic() - start:.1f}s", file=sys.stderr)
        names = ["raw", *(n for n in CONTENDERS if n != "raw" and n in only)]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        workdirs = {}
        for i in range(args.repeats):
            for name in names:
                workdirs[name] = os.path.join(workdir, f"{name}-{i}")
                runs[name].append(run_contender(name, image_dir, args.module, workdirs[name], args.timeout))
        report = summarize(runs, workdirs)
    report["meta"] = harness.finish(meta)
    print(format_report(report))
    harness.write_result(BENCHMARK, report, args.json)
    return 1 if report["errors"] else 0


def machine_meta(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Where and how the benchmark ran (taken before it starts)."""
    return {
        **harness.machine(),
        "images": args.images,
        "repeats": args.repeats,
        "module": args.module,
        "tf_threads": {"intra_op": 2, "inter_op": 1},
        "command": harness.command_line("benchmarks.images", argv),
    }


if __name__ == "__main__":
    sys.exit(main())
