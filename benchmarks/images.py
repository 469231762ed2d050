"""`python -m benchmarks.images`: the image pipeline's speed against its raw module loop.

    python -m benchmarks.images [--images 320] [--repeats 3] [--only raw,pipeline,...] [--module DIR] [--json OUT]

The image set: `--images` distinct JPEGs (quality 90) cut from the bundled
photos (`pipelines/data/images/`): photo `i mod 5`, a seeded random crop of
60-100% of each side, resized so its long side is 480-640 pixels (the size of
the photos themselves). Every file's content differs, so the pipeline's
one-call-per-content deduplication does not help it.

Six contenders, each in a process of its own, with TensorFlow at 2 intra-op /
1 inter-op threads (`benchmarks.run.contender_env`) unless said otherwise:

* `raw`: every image decoded **once** beforehand, exactly as the pipeline
  decodes (`preprocess.decode_image`: RGB, bilinear resize to 224x224, [0, 1];
  timed apart as `decode_s`), then the module's `default` signature called on
  batches of `RAW_BATCH_SIZE` (32) after a warm-up call: for its two-thread
  calls at least as fast as the module's recommended 8 (the pipeline's), so
  the stronger baseline. The ceiling: no Beam, no file reads, no decoding in
  the timed part.
* `pipeline`: `pipelines.embed`'s job on DirectRunner in one process, from the
  image files to the committed Parquet table (reading, hashing, decoding and
  resizing every file included; the module's calls run side by side in one
  thread per core, `--decode-threads`' default in one process, each decoding
  its own images, with TensorFlow's threads as the pipeline sets them); the
  workers' model load is subtracted as in `benchmarks.contenders`.
* `pipeline_mp`: the same job with two DirectRunner worker processes
  (`--direct_num_workers=2 --direct_running_mode=multi_processing`, one
  TensorFlow thread and one decoding thread each): one process decodes while
  the other runs the module. Worker start-up and model load are excluded likewise.
* `pipeline_serial_decode`: `pipeline` with `--decode-threads 1`: calls in
  turn, each image decoded after the other (the threads' gain, `parallel_decode_gain`).
* `raw_decoding`: the raw loop, but each batch's files are read and decoded
  (one thread per core) just before its call: the ceiling of a one-process
  pipeline that decodes between module calls of TensorFlow's two threads, as
  the pipeline did before its calls ran side by side (`raw_decoding_vs_raw`).
* `raw_side_by_side`: the raw loop as one thread per core, side by side, each
  reading and decoding its own batch just before its call, with TensorFlow at 1
  intra-op thread and one inter-op thread per core (`raw_side_by_side_vs_raw`):
  no op then waits for a thread whose core a decoder took. The one-process
  pipeline's way of calling the module, without Beam: its ceiling here.

The contenders run `--repeats` times each, alternating (raw, pipeline, raw,
...), so load from elsewhere on the machine hits both alike; each one's median
images/s is reported. Reported: images/s of each (median, and every run's),
`<contender>_vs_raw` (the median of each round's contender / raw ratio, so load that
drifts between rounds cancels out), `pipeline_best_vs_raw` (the best of the pipeline's
configurations; the target, >= 0.85, names each configuration that meets it), the raw loop's
decode time per image, the pipeline's time outside its module calls per image,
`pipeline_vs_raw_side_by_side` (the pipeline against the side-by-side loop, round by
round: the same decoding and module calls without Beam, so this is what Beam costs),
and the smallest cosine between the two contenders' vectors (the same pixels
go in, so it should be 1). Where that loop without Beam is below the target
itself, the report says so: decoding on the module's cores then keeps any
one-process pipeline from it on this machine.

And what the machine allows: `one_process_ceiling_vs_raw`, the most of raw's
rate that a single process that decodes, calling the module as raw does, could
reach here. Raw records the
CPU its module calls use (`raw_cores_busy` of the cores) and the CPU that
decoding each image takes (`decode_pixels`, one thread); a process doing both
needs their sum, spread over the cores at best. Where the module already keeps
the cores busy, the decoding's CPU is what the ceiling loses, before any of
Beam's own work.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from benchmarks import contenders
from benchmarks import run as bench_run
from benchmarks.run import REPO_ROOT, contender_env

DEFAULT_MODULE = os.path.join("build", "modules", "efficientnet-lite0", "1")
DEFAULT_IMAGES = 320
DEFAULT_REPEATS = 3
TARGET = 0.85
# Raw's and the decoding raw loop's call size (two TensorFlow threads per call); the side-by-side
# raw loop calls as the pipeline does, at the module's recommendation (8 for EfficientNet-Lite0).
RAW_BATCH_SIZE = 32
LONG_SIDE = (480, 640)
CROP_FRACTION = (0.6, 1.0)
RESULT_FILE = "result.json"


def make_image_set(directory: str, count: int, seed: int = 0) -> list[str]:
    """Writes `count` distinct JPEGs cut from the bundled photos; returns their paths, in order.

    Raises:
      RuntimeError: two files came out identical (the set would be deduplicated).
    """
    import hashlib

    from PIL import Image

    from pipelines.models import photos

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


# --------------------------------------------------------------------------- contenders (one process each)


def raw(
    paths: list[str],
    module: str,
    workdir: str,
    batch_size: int,
    threads: tuple[int, int] | None = (2, 1),
    decode_threads: int = 0,
    calls: int = 1,
) -> dict:
    """Decode every image once, then time the module's calls alone (see the module docstring).

    `threads` (intra-op, inter-op) configures TensorFlow first; None leaves it as it is.
    `decode_threads` > 0: the timed loop decodes each batch itself first, in that many
    threads, then calls the module (`raw_decoding`). `calls` > 1: that many threads
    side by side, each decoding its own batch and then calling the module (`raw_side_by_side`).
    """
    if threads:
        contenders.configure_tf_threads(*threads)
    import tensorflow as tf

    from pipelines.embedding.config import PreprocessConfig
    from pipelines.embedding.preprocess import decode_image, decode_pixels, unit_scale
    from pipelines.hub import binding, loading, module_info

    loaded, load_s = contenders.timed(lambda: loading.load(module))
    signature = loaded.signatures[module_info.DEFAULT_SIGNATURE]
    (name,) = signature.structured_input_signature[1]
    height, width = signature.structured_input_signature[1][name].shape[1:3]
    max_pixels = PreprocessConfig().max_image_pixels

    def decode(path: str) -> np.ndarray:
        with open(path, "rb") as f:
            return decode_image(f.read(), (height, width), max_pixels)

    def decode_all() -> tuple[np.ndarray, float]:
        """Every image, and the CPU seconds `decode_pixels` took for them (what the pipeline's decode threads do)."""
        pixels, cpu_s = np.empty((len(paths), height, width, 3), np.float32), 0.0
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                data = f.read()
            start = time.thread_time()
            decoded = decode_pixels(data, (height, width), max_pixels)
            cpu_s += time.thread_time() - start
            pixels[i] = unit_scale(decoded)
        return pixels, cpu_s

    call = binding.bind(loaded)
    starts = range(0, len(paths), batch_size)
    pool_threads = calls if calls > 1 else decode_threads  # the calls' threads, or the decoding's
    pool = concurrent.futures.ThreadPoolExecutor(pool_threads) if pool_threads else None
    if calls > 1:  # raw_side_by_side: each call's thread decodes its own batch just before the call

        def batch(start: int) -> np.ndarray:
            return np.stack([decode(path) for path in paths[start : start + batch_size]])

        decode_s = decode_cpu_s = None
    elif decode_threads:  # raw_decoding: each batch decoded just before its call, in the pool

        def batch(start: int) -> np.ndarray:
            return np.stack(list(pool.map(decode, paths[start : start + batch_size])))

        decode_s = decode_cpu_s = None
    else:  # raw: every image decoded once, before the clock starts
        (images, decode_cpu_s), decode_s = contenders.timed(decode_all)

        def batch(start: int) -> np.ndarray:
            return images[start : start + batch_size]

    _, first_call_s = contenders.timed(lambda: call({name: tf.constant(batch(0))}))

    def embed(start: int) -> np.ndarray:
        return np.asarray(call({name: tf.constant(batch(start))}))

    def loop() -> np.ndarray:
        return np.concatenate(list(pool.map(embed, starts)) if calls > 1 else [embed(start) for start in starts])

    cpu_before = _process_cpu_s()
    embeddings, seconds = contenders.timed(loop)
    cpu_s = _process_cpu_s() - cpu_before
    if pool is not None:
        pool.shutdown()
    np.save(os.path.join(workdir, contenders.EMBEDDINGS_FILE), embeddings.astype(np.float32))
    return {
        "rows": len(paths),
        "seconds": seconds,
        "cpu_s": cpu_s,
        "cores": len(os.sched_getaffinity(0)),
        "load_s": load_s,
        "first_call_s": first_call_s,
        "decode_s": decode_s,
        "decode_cpu_s": decode_cpu_s,
        "batch_size": batch_size,
    }


def _process_cpu_s() -> float:
    """CPU seconds this process has used so far, all threads (user + system)."""
    times = os.times()
    return times.user + times.system


def one_process_ceiling(raw_result: dict[str, Any]) -> float | None:
    """The most of raw's rate that a process that also decodes, calling the module as raw does, could reach here.

    Such a process needs the CPU of raw's module calls plus that of decoding
    every image (`decode_cpu_s`), on `cores` cores: its time is at least
    their sum over the cores, and at least raw's own time. Beam's work, and
    what sharing the cores costs the module's threads, come on top, so a
    pipeline stays below it. Calls with other thread settings use other CPU
    (`raw_side_by_side`'s single-threaded calls use less, and can pass it). None
    when the run lacks the figures.
    """
    if not raw_result.get("cpu_s") or raw_result.get("decode_cpu_s") is None or not raw_result.get("cores"):
        return None
    seconds = raw_result["seconds"]
    return seconds / max(seconds, (raw_result["cpu_s"] + raw_result["decode_cpu_s"]) / raw_result["cores"])


def pipeline(
    paths: list[str], module: str, workdir: str, threads: tuple[int, int] | None = None, beam_args: tuple[str, ...] = ()
) -> dict:
    """`pipelines.embed` on the image files, DirectRunner (see the module docstring).

    `threads` (intra-op, inter-op) configures TensorFlow first; None (the default) leaves it to
    the pipeline, which sets its own (one intra-op thread per call when its calls run side by
    side); where it sets none, the contender's environment gives 2 intra-op / 1 inter-op.
    `beam_args`: Beam options, e.g. `contenders.MP_BEAM_ARGS` for two worker processes.
    """
    if threads:
        contenders.configure_tf_threads(*threads)
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.embedding import config, sinks
    from pipelines.embedding import pipeline as embed_pipeline

    output = os.path.join(workdir, "table")
    pattern = os.path.join(os.path.dirname(paths[0]), "*.jpg")
    cfg = config.load(
        ["--input", pattern, "--input-format", "image", "--module", module, "--output", output, *beam_args]
    )
    config.check_paths(cfg)
    job, prepare_s = contenders.timed(lambda: embed_pipeline.prepare(cfg))
    p = embed_pipeline.new_pipeline(PipelineOptions(list(cfg.beam_args)))
    embed_pipeline.build_pipeline(p, cfg, job)
    result, run_s = contenders.run_beam(p)
    manifest = sinks.read_manifest(output)
    if manifest is None or manifest["run_id"] != job.run_id:
        raise RuntimeError(f"the pipeline did not commit a table at {output} (state {result.state})")
    ids = [os.path.abspath(path) for path in paths]
    embeddings = contenders.table_embeddings(sinks.read_table(output), ids)
    np.save(os.path.join(workdir, contenders.EMBEDDINGS_FILE), embeddings)
    times = contenders.runinference_times(result)
    worker_load_s = times.pop("load_s")
    seconds = run_s - worker_load_s - times["worker_startup_s"]
    return {
        "rows": len(paths),
        "seconds": seconds,
        "run_s": run_s,
        "prepare_s": prepare_s,
        "load_s": prepare_s + worker_load_s + times["worker_startup_s"],
        "worker_load_s": worker_load_s,
        "outside_inference_s": seconds - times["inference_s"],
        "counts": manifest["counts"],
        "batch_size": job.spec.batch_size,
        **times,
    }


def pipeline_mp(paths: list[str], module: str, workdir: str, threads: tuple[int, int] | None = None) -> dict:
    """The pipeline with two DirectRunner worker processes (1 TensorFlow thread each): one decodes while the other
    runs the module. Their start-up and model load (TensorFlow's import included) are excluded, as in
    `benchmarks.contenders`."""
    return pipeline(paths, module, workdir, threads, contenders.MP_BEAM_ARGS)


def pipeline_serial_decode(paths: list[str], module: str, workdir: str, threads: tuple[int, int] | None = None) -> dict:
    """The one-process pipeline with `--decode-threads 1`: its images decoded one after another, as before
    decoding ran side by side, so that the threads' gain is measured in the same run."""
    return pipeline(paths, module, workdir, threads, ("--decode-threads", "1"))


def raw_decoding(
    paths: list[str], module: str, workdir: str, batch_size: int, threads: tuple[int, int] | None = (2, 1)
) -> dict:
    """The raw loop that decodes each batch (one thread per core) just before its call: no Beam.

    The ceiling of a one-process pipeline that decodes between module calls of TensorFlow's two threads.
    """
    # One process's default of `pipelines.embedding.pipeline.decode_threads`: every core.
    return raw(paths, module, workdir, batch_size, threads, decode_threads=os.cpu_count() or 1)


def raw_side_by_side(
    paths: list[str], module: str, workdir: str, batch_size: int, threads: tuple[int, int] | None = (2, 1)
) -> dict:
    """The raw loop as one thread per core side by side, each decoding its own batch just before its call: no Beam.

    Each call runs on one TensorFlow thread (intra-op 1, inter-op one per core; `threads`
    None leaves TensorFlow as it is), so no op waits for a thread whose core a decoder
    took: the one-process pipeline's way of calling the module, without Beam.
    """
    cores = os.cpu_count() or 1
    return raw(paths, module, workdir, batch_size, (1, cores) if threads else None, calls=cores)


CONTENDERS = {
    "raw": raw,
    "pipeline": pipeline,
    "pipeline_mp": pipeline_mp,
    "pipeline_serial_decode": pipeline_serial_decode,
    "raw_decoding": raw_decoding,
    "raw_side_by_side": raw_side_by_side,
}
# The raw loop's variants that decode in the timed loop, each measured against raw.
RAW_DECODING = ("raw_decoding", "raw_side_by_side")
# The pipeline's configurations, each measured against raw.
PIPELINES = ("pipeline", "pipeline_mp", "pipeline_serial_decode")


def run_contender(name: str, image_dir: str, module: str, workdir: str, timeout: float) -> dict[str, Any]:
    """Runs one contender in its own process; returns its result (with `images_per_s`) or `{"error": ...}`."""
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "log.txt")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.images",
        "--contender",
        name,
        "--image-dir",
        image_dir,
        "--module",
        module,
        "--workdir",
        workdir,
    ]
    steal_before = bench_run.steal_seconds()
    try:
        with open(log_path, "w") as log:
            status = subprocess.run(
                cmd,
                cwd=REPO_ROOT,
                env=contender_env(2, 1),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            ).returncode
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s (log {log_path})"}
    result_path = os.path.join(workdir, RESULT_FILE)
    if status != 0 or not os.path.exists(result_path):
        with open(log_path, errors="replace") as f:
            return {"error": f"exit status {status}; log:\n{''.join(f.readlines()[-20:])}"}
    with open(result_path) as f:
        result = json.load(f)
    result["images_per_s"] = result["rows"] / result["seconds"]
    steal_after = bench_run.steal_seconds()
    result["steal_s"] = None if steal_before is None or steal_after is None else steal_after - steal_before
    return result


def _min_cosine(a_path: str, b_path: str) -> float:
    a, b = (np.load(path).astype(np.float64) for path in (a_path, b_path))
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _paired_ratios(runs: dict[str, list[dict[str, Any]]], name: str, base: str) -> list[float]:
    """`name`'s images/s over `base`'s, round by round (run i of each ran back to back, so load that drifts
    between rounds cancels out); rounds where either failed are left out."""
    return [
        a["images_per_s"] / b["images_per_s"]
        for a, b in zip(runs.get(name, []), runs.get(base, []))
        if "error" not in a and "error" not in b
    ]


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
    median = {name: _median([r["images_per_s"] for r in rs]) for name, rs in good.items()}
    report: dict[str, Any] = {f"{name}_images_per_s": median.get(name) for name in CONTENDERS}
    raw_r = good.get("raw") or []
    report["raw_decode_ms_per_image"] = _median([r["decode_s"] / r["rows"] * 1e3 for r in raw_r])
    report["raw_decode_cpu_ms_per_image"] = _median(
        [r["decode_cpu_s"] / r["rows"] * 1e3 for r in raw_r if r.get("decode_cpu_s") is not None]
    )
    report["raw_cores_busy"] = _median([r["cpu_s"] / r["seconds"] for r in raw_r if r.get("cpu_s")])
    report["one_process_ceiling_vs_raw"] = _median([c for c in map(one_process_ceiling, raw_r) if c is not None])
    for name in PIPELINES:
        rs = good.get(name) or []
        pairs = _paired_ratios(runs, name, "raw")
        report[f"{name}_vs_raw"] = _median(pairs)
        report[f"{name}_vs_raw_per_round"] = pairs
        # Two processes embed side by side: their summed inference time is no part of one wall clock.
        report[f"{name}_outside_inference_ms_per_image"] = (
            _median([r["outside_inference_s"] / r["rows"] * 1e3 for r in rs]) if name != "pipeline_mp" else None
        )
        last_ok = (
            runs.get(name) and "error" not in runs[name][-1] and runs.get("raw") and "error" not in runs["raw"][-1]
        )
        report[f"min_cosine_{name}_vs_raw"] = (
            _min_cosine(*(os.path.join(workdirs[n], contenders.EMBEDDINGS_FILE) for n in ("raw", name)))
            if last_ok
            else None
        )
    for name in RAW_DECODING:
        ratios = _paired_ratios(runs, name, "raw")
        report[f"{name}_vs_raw"] = _median(ratios)
        report[f"{name}_vs_raw_per_round"] = ratios
    # Beam's share: the one-process pipeline against the same decoding and calls without Beam, round by round.
    beam = _paired_ratios(runs, "pipeline", "raw_side_by_side")
    report["pipeline_vs_raw_side_by_side"] = _median(beam)
    report["pipeline_vs_raw_side_by_side_per_round"] = beam
    gains = _paired_ratios(runs, "pipeline", "pipeline_serial_decode")
    report["parallel_decode_gain"] = _median(gains)  # pipeline / 1 decode thread
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

    def fmt(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    meta = report.get("meta")
    lines = (
        [
            f"hub-embed image benchmark, {meta['date']}, load average {meta['load_average_at_start']:.2f} at start",
            bench_run.cpu_line(meta),
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
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: the whole benchmark, or (`--contender`) one contender's process."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="images in the set (default %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help="runs of each contender (default %(default)s)"
    )
    parser.add_argument("--module", default=os.path.join(REPO_ROOT, DEFAULT_MODULE))
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument(
        "--only",
        default=",".join(CONTENDERS),
        help="contenders to run, comma-separated (default %(default)s; raw is always run)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per contender")
    parser.add_argument("--contender", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--image-dir", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender:
        paths = sorted(os.path.join(args.image_dir, n) for n in os.listdir(args.image_dir) if n.endswith(".jpg"))
        if args.contender in ("raw", *RAW_DECODING):
            size = _batch_size(args.module) if args.contender == "raw_side_by_side" else RAW_BATCH_SIZE
            result = CONTENDERS[args.contender](paths, args.module, args.workdir, batch_size=size)
        else:
            result = CONTENDERS[args.contender](paths, args.module, args.workdir)
        with open(os.path.join(args.workdir, RESULT_FILE), "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
        return 0
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
    meta = machine_meta(args)
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
    report["meta"] = {**meta, "load_average_at_end": os.getloadavg()[0]}
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True, default=str)
    return 1 if report["errors"] else 0


def machine_meta(args: argparse.Namespace) -> dict[str, Any]:
    """Where and how the benchmark ran (taken before it starts)."""
    from pipelines.embedding import preprocess

    return {
        **bench_run.machine(),
        "images": args.images,
        "repeats": args.repeats,
        "module": args.module,
        "tf_threads": {"intra_op": 2, "inter_op": 1},
        "pillow": preprocess.pillow_build(),  # Pillow-SIMD resizes in a fifth of Pillow's time
        "command": " ".join(["python -m benchmarks.images", *sys.argv[1:]]),
    }


def _batch_size(module: str) -> int:
    """The pipeline's call size for this module: its `serving.batch_size`, else the image default."""
    from pipelines.embedding import config
    from pipelines.hub.module_manifest import read_module_manifest

    return (read_module_manifest(module).get("serving") or {}).get("batch_size") or config.DEFAULT_BATCH_SIZE["image"]


if __name__ == "__main__":
    sys.exit(main())
