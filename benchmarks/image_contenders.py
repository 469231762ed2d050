"""The image benchmark's contenders, one per process: `python -m benchmarks.image_contenders NAME ...`.

Each embeds the image files of a directory with the image module and writes
its embeddings (file order) and a result JSON into its workdir. TensorFlow and
Beam are imported inside the contenders: the benchmark's own process, which
imports this module for their names, does not load them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
from typing import Any

import numpy as np

from benchmarks import harness, pipeline_runs

# Raw's and the decoding raw loop's call size (two TensorFlow threads per call); the side-by-side
# raw loop calls as the pipeline does, at the module's recommendation (8 for EfficientNet-Lite0).
RAW_BATCH_SIZE = 32


def raw(
    paths: list[str],
    module: str,
    workdir: str,
    batch_size: int,
    threads: tuple[int, int] | None = (2, 1),
    decode_threads: int = 0,
    calls: int = 1,
) -> dict:
    """The raw module loop: every image decoded once beforehand, then the module's calls alone are timed.

    The calls are the `default` signature on batches of `batch_size` after a
    warm-up call; the result records the CPU the calls used (`cpu_s`, all
    threads) and the CPU decoding took (`decode_cpu_s`, `decode_pixels` only).

    `threads` (intra-op, inter-op) configures TensorFlow first; None leaves it as it is.
    `decode_threads` > 0: the timed loop decodes each batch itself first, in that many
    threads, then calls the module (`raw_decoding`). `calls` > 1: that many threads
    side by side, each decoding its own batch and then calling the module (`raw_side_by_side`).
    """
    if threads:
        pipeline_runs.configure_tf_threads(*threads)
    import tensorflow as tf

    from pipelines.embedding.config import PreprocessConfig
    from pipelines.embedding.preprocess import decode_image, decode_pixels, unit_scale
    from pipelines.hub import binding, loading, module_info

    loaded, load_s = harness.timed(lambda: loading.load(module))
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
        (images, decode_cpu_s), decode_s = harness.timed(decode_all)

        def batch(start: int) -> np.ndarray:
            return images[start : start + batch_size]

    _, first_call_s = harness.timed(lambda: call({name: tf.constant(batch(0))}))

    def embed(start: int) -> np.ndarray:
        return np.asarray(call({name: tf.constant(batch(start))}))

    def loop() -> np.ndarray:
        return np.concatenate(list(pool.map(embed, starts)) if calls > 1 else [embed(start) for start in starts])

    cpu_before = _process_cpu_s()
    embeddings, seconds = harness.timed(loop)
    cpu_s = _process_cpu_s() - cpu_before
    if pool is not None:
        pool.shutdown()
    pipeline_runs.save_embeddings(workdir, embeddings)
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
    """`pipelines.embed` on the image files, DirectRunner: image files to a committed table.

    `threads` (intra-op, inter-op) configures TensorFlow first; None (the default) leaves it to
    the pipeline, which sets its own (one intra-op thread per call when its calls run side by
    side); where it sets none, the contender's environment gives 2 intra-op / 1 inter-op.
    `beam_args`: Beam options, e.g. `pipeline_runs.MP_BEAM_ARGS` for two worker processes.
    """
    if threads:
        pipeline_runs.configure_tf_threads(*threads)
    output = os.path.join(workdir, "table")
    pattern = os.path.join(os.path.dirname(paths[0]), "*.jpg")
    argv = ["--input", pattern, "--input-format", "image", "--module", module, "--output", output, *beam_args]
    ids = [os.path.abspath(path) for path in paths]
    return pipeline_runs.run_embed_job(argv, output, ids, workdir)


def pipeline_mp(paths: list[str], module: str, workdir: str, threads: tuple[int, int] | None = None) -> dict:
    """The pipeline with two DirectRunner worker processes (1 TensorFlow thread each): one decodes while the other
    runs the module. Their start-up and model load (TensorFlow's import included) are excluded, as in
    `pipeline_runs.run_embed_job`."""
    return pipeline(paths, module, workdir, threads, pipeline_runs.MP_BEAM_ARGS)


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


def pipeline_batch_size(module: str) -> int:
    """The pipeline's call size for this module: its `serving.batch_size`, else the image default."""
    from pipelines.embedding import config
    from pipelines.hub.module_manifest import read_module_manifest

    return (read_module_manifest(module).get("serving") or {}).get("batch_size") or config.DEFAULT_BATCH_SIZE["image"]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: runs one contender on the JPEGs of `--image-dir` and writes its result JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.image_contenders")
    parser.add_argument("name", choices=sorted(CONTENDERS))
    parser.add_argument("--image-dir", required=True)
    parser.add_argument("--module", required=True, help="the image module's directory")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    paths = sorted(os.path.join(args.image_dir, n) for n in os.listdir(args.image_dir) if n.endswith(".jpg"))
    if args.name in ("raw", *RAW_DECODING):
        size = pipeline_batch_size(args.module) if args.name == "raw_side_by_side" else RAW_BATCH_SIZE
        result = CONTENDERS[args.name](paths, args.module, args.workdir, batch_size=size)
    else:
        result = CONTENDERS[args.name](paths, args.module, args.workdir)
    with open(os.path.join(args.workdir, harness.RESULT_FILE), "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
