"""HubModelHandler: Beam's `ModelHandler` that embeds batches of records with a TF Hub module's signature.

Used through `Embed` (RunInference, then each content's vector fanned out to
its rows). Why it batches, threads and trims as it does: docs/design/embedding.md.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from pipelines.embedding import token_trim, worker
from pipelines.embedding.config import PreprocessConfig
from pipelines.embedding.image_batches import image_batch
from pipelines.embedding.loaded_modules import LazyModule, LoadedModule, ensure_loaded, load_module
from pipelines.embedding.model_spec import ModelSpec
from pipelines.embedding.preprocess import decode_content
from pipelines.embedding.records import FAILURES, METRICS_NAMESPACE, TALLIES, ContentGroup, Stage, tally
from pipelines.embedding.runtime import HeapTrimmer, configure_threads
from pipelines.hub import binding, fingerprint_records, registry
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import ResolveOptions

# Texts: module calls per window; a window is sorted by length, then cut into calls.
WINDOW_BATCHES = 8
# Image calls side by side (`calls` > 1): about this many images per call thread in a window, in whole calls.
WINDOW_ROWS_PER_THREAD = 512
_DIMS = "dims"  # the fingerprint-keyed record of probed output dimensions
# Warm-up inputs: texts of a few lengths (the module's first call builds and optimizes its graph).
WARMUP_TEXTS = tuple(" ".join(["warm-up text"] * n) for n in (1, 4, 16, 64))
# Images are warmed up at the call size, at most this many: CPU kernels are set up per input shape.
MAX_WARMUP_IMAGES = 64
PROGRESS_INTERVAL_S = 30.0
MODEL_LOAD_METRIC = "model_load_ms"
_LOG = logging.getLogger(__name__)


class OutputShapeError(RuntimeError):
    """The module returned an output whose shape differs from its described signature."""


class ModuleChangedError(RuntimeError):
    """The module a worker resolved is not the one that was checked at launch."""


class EmbedFailure(NamedTuple):
    """The inference result of a row the module could not embed."""

    error: str


class DecodeFailure(NamedTuple):
    """The inference result of an image the handler's call thread could not decode."""

    error: str


def _report_worker_startup() -> None:
    """Reports this worker process's start-up time (`pipelines.embedding.worker`) once, as a Beam distribution."""
    seconds = worker.take_startup_s()
    if seconds is not None:
        beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "worker_startup_ms").update(round(seconds * 1000))


def calls_per_thread(batch_size: int) -> int:
    """Calls per call thread in a window of image calls side by side: `WINDOW_ROWS_PER_THREAD` images, at least one call."""
    return max(1, WINDOW_ROWS_PER_THREAD // batch_size)


@functools.cache
def _call_pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool of `threads` threads for image calls side by side (made once, kept for the process)."""
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="hub-embed-call")


class _Progress:
    """Logs rows embedded and rows/s at most every `PROGRESS_INTERVAL_S` seconds."""

    def __init__(self) -> None:
        self._start = self._last = time.monotonic()
        self._rows = 0

    def add(self, rows: int) -> None:
        self._rows += rows
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            _LOG.info(
                "hub_embed: %d rows embedded by this worker, %.1f rows/s", self._rows, self._rows / (now - self._start)
            )


class HubModelHandler(ModelHandler[ContentGroup, PredictionResult, LazyModule]):
    """Embeds `ContentGroup`s (payload: text, decoded image, or image file path) with one signature output
    of a TF Hub module.

    Each `PredictionResult` carries the group as its example and, as its
    inference, a float32 `[D]` vector (`[T, D]` for per-token outputs), an
    `EmbedFailure`, or for a file path that cannot be decoded a
    `DecodeFailure`. Any element with a `payload` will do.
    """

    def __init__(
        self,
        handle: str,
        signature: str,
        fingerprint: str,
        spec: ModelSpec,
        tf_threads: int | None = None,
        calls: int = 1,
        max_image_pixels: int | None = None,
        resolve_options: ResolveOptions | None = None,
    ):
        """Initializes the handler.

        Args:
          handle: module handle, resolved on each worker.
          signature: signature to call.
          fingerprint: the module's fingerprint at launch; workers refuse another.
          spec: how to call the signature (see `model_spec.for_module`).
          tf_threads: TensorFlow intra-op threads per process; None leaves TF's default.
          calls: image calls run side by side per process, each on one TensorFlow thread,
            each thread decoding its own call's images (payloads that are still paths).
          max_image_pixels: the decompression-bomb limit for the images it decodes
            (default: `PreprocessConfig`'s).
          resolve_options: the limits and trust each worker resolves the handle with
            (default: `pipelines.hub.registry.resolve`'s).
        """
        if spec.kind == "text":
            window = spec.batch_size * WINDOW_BATCHES
        else:
            window = spec.batch_size * (calls * calls_per_thread(spec.batch_size) if calls > 1 else 1)
        super().__init__(min_batch_size=window, max_batch_size=window)
        self._handle = handle
        self._signature = signature
        self._fingerprint = fingerprint
        self._spec = spec
        self._tf_threads = tf_threads
        self._calls = calls if spec.kind == "image" else 1
        self._max_image_pixels = max_image_pixels or PreprocessConfig().max_image_pixels
        self._resolve_options = resolve_options
        self._progress: _Progress | None = None
        self._trimmer = HeapTrimmer()

    def load_model(self) -> LazyModule:
        """Resolves the module and checks it is the one described at launch; loads it on the first batch.

        RunInference calls this in its DoFn's setup, on every worker, whether
        rows reach it or not (in a run whose rows are all reused, none do). So
        only the cheap part happens here: resolving the handle (from the cache
        once a worker has fetched it) and refusing a module whose fingerprint
        changed since launch. TensorFlow's set-up, loading the SavedModel,
        binding the signature and the warm-up call wait for the first batch;
        their real duration is reported as the `hub_embed/model_load_ms`
        distribution (Beam's own `load_model_latency_milli_secs` now only
        times this check).

        Raises:
          ModuleChangedError: the module's fingerprint differs from the one at launch.
        """
        resolved = registry.resolve(self._handle, options=self._resolve_options)
        if resolved.fingerprint != self._fingerprint:
            raise ModuleChangedError(
                f"Module {redact(self._handle)!r} changed since the job was launched: fingerprint "
                f"{resolved.fingerprint}, expected {self._fingerprint}."
            )
        return LazyModule(functools.partial(self._load, resolved))

    def _load(self, resolved: Any) -> LoadedModule:
        """Loads the module (once per process), binds the signature, warms it up; reports the time taken."""
        start = time.monotonic()
        configure_threads(self._tf_threads, self._calls)
        module = load_module(resolved)
        trim_output = self._spec.trim.output if self._spec.trim else None
        keys = (self._spec.output_key,) + ((trim_output,) if trim_output else ())
        model = LoadedModule(module, binding.bind_outputs(module, self._signature, keys))
        self._warm_up(model)
        elapsed_ms = round((time.monotonic() - start) * 1000)
        beam.metrics.Metrics.distribution(METRICS_NAMESPACE, MODEL_LOAD_METRIC).update(elapsed_ms)
        _LOG.debug("hub_embed: module %s loaded in %d ms", resolved.path, elapsed_ms)
        return model

    def _warm_up(self, model: LoadedModule) -> None:
        """Calls the signature once on a few probe rows, so that its one-time graph set-up
        (seconds for a large module) happens while loading, not in the first batch.

        A probe the module rejects is no error here: real rows get their own verdict.
        """
        spec = self._spec
        if spec.kind == "image":
            if not spec.image_size:
                return
            probes: list[Any] = [np.zeros((*spec.image_size, 3), np.uint8)] * min(spec.batch_size, MAX_WARMUP_IMAGES)
        else:
            probes = list(WARMUP_TEXTS)
        try:
            model.call(self._inputs(probes)[0])
        except Exception as e:  # noqa: BLE001
            _LOG.debug("hub_embed: warm-up call failed (%s: %s); the first batch warms up instead", type(e).__name__, e)

    def run_inference(
        self,
        batch: Sequence[ContentGroup],
        model: LazyModule | LoadedModule,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        model = ensure_loaded(model)
        results: list[Any] = [None] * len(batch)
        order = np.arange(len(batch))
        if self._spec.kind == "text":
            order = np.argsort(np.fromiter((len(r.payload) for r in batch), np.int64, len(batch)), kind="stable")
        size = self._spec.batch_size
        calls = [[int(i) for i in order[start : start + size]] for start in range(0, len(batch), size)]
        if self._calls > 1 and len(calls) > 1:
            list(_call_pool(self._calls).map(lambda rows: self._decode_and_embed(batch, rows, model, results), calls))
        else:
            for rows in calls:
                self._decode_and_embed(batch, rows, model, results)
        self._trimmer.maybe_release()
        if self._progress is None:
            self._progress = _Progress()
            _report_worker_startup()
        self._progress.add(len(batch))
        return [PredictionResult(record, result) for record, result in zip(batch, results)]

    def _decode_and_embed(
        self, batch: Sequence[ContentGroup], rows: list[int], model: LoadedModule, results: list[Any]
    ) -> None:
        """One call's rows: images that are still paths are decoded here first (a `DecodeFailure` each that cannot be)."""
        payloads = {i: batch[i].payload for i in rows}
        if self._spec.kind == "image":
            for i in rows:
                if isinstance(payloads[i], str):
                    try:
                        payloads[i] = decode_content(batch[i], self._spec.resize_to, self._max_image_pixels)
                    except Exception as e:  # Pillow raises many types for bad files; each is this content's failure.
                        results[i] = DecodeFailure(f"{type(e).__name__}: {e}")
            rows = [i for i in rows if results[i] is None]
        if rows:
            self._embed(payloads, rows, model, results)

    def _embed(self, payloads: dict[int, Any], rows: list[int], model: LoadedModule, results: list[Any]) -> None:
        """Fills `results[i]` for `rows`, halving the call until a failing row stands alone."""
        inputs, lengths = self._inputs([payloads[i] for i in rows])
        try:
            outputs = model.call(inputs)
        except Exception as e:  # The module rejected some input in this call.
            if len(rows) == 1:
                results[rows[0]] = EmbedFailure(f"{type(e).__name__}: {e}")
                return
            half = len(rows) // 2
            self._embed(payloads, rows[:half], model, results)
            self._embed(payloads, rows[half:], model, results)
            return
        embeddings = self._check_shape(outputs[self._spec.output_key], len(rows))
        if self._spec.sequence:
            try:
                vectors = token_trim.cut(self._spec.trim, embeddings, outputs, lengths)
            except ValueError as e:
                raise OutputShapeError(
                    f"Output {self._spec.output_key!r} of {self._signature!r} cannot be cut per row: {e}."
                ) from None
        else:
            vectors = list(embeddings)
        for i, row in zip(rows, vectors):
            results[i] = row if np.isfinite(row).all() else EmbedFailure("embedding has NaN or inf values")

    def _inputs(self, payloads: list[Any]) -> tuple[dict[str, Any], list[int] | None]:
        """The signature's keyword inputs for a call, and the token counts of tokenized text."""
        import tensorflow as tf  # TensorFlow: heavy, imported with the module's load

        spec = self._spec
        if spec.kind == "image":
            return {spec.inputs[0]: image_batch(payloads)}, None
        if not spec.tokenized:
            return {spec.inputs[0]: tf.constant(payloads, dtype=tf.string)}, None
        tokens = [text.split() for text in payloads]
        lengths = [len(t) for t in tokens]
        width = max(lengths)
        padded = [t + [""] * (width - len(t)) for t in tokens]
        return {
            spec.inputs[0]: tf.constant(padded, dtype=tf.string),
            spec.inputs[1]: tf.constant(lengths, dtype=spec.input_dtypes[1]),
        }, lengths

    def _check_shape(self, embeddings: np.ndarray, rows: int) -> np.ndarray:
        rank = 3 if self._spec.sequence else 2
        if embeddings.ndim != rank or embeddings.shape[0] != rows or embeddings.shape[-1] != self._spec.dim:
            expected = f"[{rows}, {'T, ' if self._spec.sequence else ''}{self._spec.dim}]"
            raise OutputShapeError(
                f"Output {self._spec.output_key!r} of {self._signature!r} has shape {list(embeddings.shape)}, "
                f"expected {expected}: the module's output changed its dimension or rank."
            )
        return embeddings.astype(np.float32, copy=False)

    def probe_dim(self, example: Any) -> int:
        """Returns the size of the output's last axis, calling the module on one example the first time.

        For signatures whose spec leaves the embedding dimension open. The
        answer is cached under the module's fingerprint (see
        `fingerprint_records.write_record`), per signature, output and input, so a later
        launch with the same module does not load it.
        """
        key = self._probe_key()
        stored = (fingerprint_records.read_record(self._fingerprint, _DIMS) or {}).get("dims")
        dims: dict[str, Any] = stored if isinstance(stored, dict) else {}
        dim = dims.get(key)
        if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
            return dim
        model = self.load_model()
        inputs, _ = self._inputs([example])
        dim = int(model.call(inputs)[self._spec.output_key].shape[-1])
        fingerprint_records.write_record(self._fingerprint, _DIMS, {"dims": {**dims, key: dim}})
        return dim

    def _probe_key(self) -> str:
        spec = self._spec
        return json.dumps(
            [self._signature, spec.output_key, spec.kind, spec.inputs, spec.input_dtypes, spec.image_size]
        )

    def get_num_bytes(self, batch: Sequence[ContentGroup]) -> int:
        if self._spec.kind == "image":
            return sum(r.payload.nbytes if isinstance(r.payload, np.ndarray) else len(r.payload) for r in batch)
        return sum(len(r.payload) for r in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


_FAILURE_STAGES: dict[type, Stage] = {EmbedFailure: Stage.EMBED, DecodeFailure: Stage.DECODE}


class _SplitResults(beam.DoFn):
    """Each embedded `ContentGroup` gives its vector to every one of its rows; a failure fails them all."""

    def process(self, result: PredictionResult) -> Iterable[Any]:
        group = cast(ContentGroup, result.example)  # what `HubModelHandler` is given
        inference: Any = result.inference
        stage = _FAILURE_STAGES.get(type(inference))
        if stage is not None:
            yield from group.failed(stage, inference.error)
            return
        rows = len(group.rows)
        yield tally("rows_embedded", rows)
        yield tally("contents_embedded", 1)
        if rows > 1:
            yield tally("rows_deduplicated", rows - 1)
        yield from group.embedded(inference)


class Embed(beam.PTransform):
    """RunInference with a `HubModelHandler` on `ContentGroup`s, fanned out to their rows.

    Returns:
      A `DoOutputsTuple`: `.records` (`Record`s whose payload is the
      embedding), `.failures` and `.tallies` (`rows_embedded`,
      `contents_embedded`, `rows_deduplicated`).
    """

    def __init__(self, handler: HubModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, groups: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            groups
            | "RunInference" >> RunInference(self._handler)
            | "Split" >> beam.ParDo(_SplitResults()).with_outputs(FAILURES, TALLIES, main="records")
        )
