"""HubModelHandler: runs a TF Hub module's signature on batches of records inside Beam's RunInference.

* `load_model` resolves the handle and checks the module is the one described
  at launch (same fingerprint); it returns a `LazyModule`, which loads the
  module and binds the signature when the first batch arrives, so a worker
  that gets no rows (every row reused) never loads it. RunInference holds the
  result in a process-wide `Shared` handle, so each worker process loads the
  module at most once, whatever the number of bundles or threads. The load
  ends with a warm-up call on a few probe rows, so the module's one-time graph
  set-up counts as load time (`hub_embed/model_load_ms`) rather than as the
  first batch's.
* Texts arrive in windows of `WINDOW_BATCHES * batch_size` records; each window
  is sorted by length and cut into module calls of `batch_size` rows, so rows
  of a call pad to similar lengths. Images are called `batch_size` at a time,
  stacked into a buffer each thread reuses (`stack_images`).
* Image calls side by side (`calls` > 1; one-process runs, see
  `pipeline.side_by_side_calls`): a window of `calls` x `calls_per_thread`
  calls (about `WINDOW_ROWS_PER_THREAD` images per thread) arrives as file
  paths, and `calls` threads take its calls from one queue, each reading and
  decoding its call's images (`preprocess.decode_content`) and then calling
  the module on one TensorFlow thread (intra-op 1, one inter-op thread per
  call). No op then waits for a thread whose core a decoder took, and the
  cores stay busy: the README's image benchmark. An image that cannot be
  decoded gets a `DecodeFailure` (dead-lettered at stage `decode`, as the
  `Decode` step would).
* A call that raises is split in halves until the failing rows are isolated:
  only the rows the module rejects (e.g. over-long inputs) are dead-lettered,
  with the module's error. Rows with NaN/inf values are dead-lettered too. An
  output whose rank or dimension differs from the one described at launch
  fails the run (`OutputShapeError`): it means the module is not what was checked.
* Per-token outputs `[N, T, D]` are cut to each row's own tokens (a mask or
  length output, or the token counts fed; see `pipelines.embedding.token_trim`), so a
  row's vectors do not depend on the rows it shares a call with.
* `tf_threads` caps TensorFlow's thread pools per process, so that several
  worker processes do not oversubscribe the machine's cores.
* After a window, at most every `TRIM_INTERVAL_S` seconds, the handler hands
  the C heap's free pages back to the system (glibc `malloc_trim`). Each
  window allocates tensors of new shapes; without the trim, glibc keeps the
  freed pages, scattered across its arenas, and a worker's RSS crept up window
  after window (+15% from 2,000 to 20,000 rows with the default module) though
  its live memory did not. Not after every window: image windows are small
  and frequent, and pages handed back are faulted in again by the next one.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from pipelines.embedding import token_trim
from pipelines.embedding.config import ModelSpec, PreprocessConfig
from pipelines.embedding.preprocess import decode_content, unit_scale
from pipelines.embedding.records import FAILURES, METRICS_NAMESPACE, TALLIES, ContentGroup, Stage, tally

WINDOW_BATCHES = 8
# Image calls side by side (`calls` > 1): a window holds about this many images per call thread, in
# whole calls, which the threads take one after another from a shared queue. Large, as its paths
# cost little memory: the threads wait for each other, and for Beam's work on the window's results,
# once per window (16 calls of 32 images, 64 of 8).
WINDOW_ROWS_PER_THREAD = 512
_DIMS = "dims"  # the fingerprint-keyed record of probed output dimensions
# Warm-up inputs: texts of a few lengths (the module's first call builds and optimizes its graph).
WARMUP_TEXTS = tuple(" ".join(["warm-up text"] * n) for n in (1, 4, 16, 64))
# Images are warmed up at the call size (at most this many): CPU kernels are set up per input
# shape, ≈0.25 s for EfficientNet-Lite0's first call of 32 images after one of 2.
MAX_WARMUP_IMAGES = 64
PROGRESS_INTERVAL_S = 30.0
TRIM_INTERVAL_S = 2.0
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


@dataclasses.dataclass
class LoadedModule:
    """A loaded module and its bound signature (the module object keeps the signature alive)."""

    module: Any
    call: Callable[[dict[str, Any]], dict[str, np.ndarray]]


_LOADED: dict[str, Any] = {}
_LOADED_LOCK = threading.Lock()
MODEL_LOAD_METRIC = "model_load_ms"


def load_module(resolved: Any) -> Any:
    """Loads a resolved module once per process, keyed by its content fingerprint.

    When the launcher has to load the module to describe it (its description
    is not cached yet), the in-process runner's workers reuse that copy
    instead of loading a second one.
    """
    from pipelines.hub import modules

    with _LOADED_LOCK:
        if resolved.fingerprint not in _LOADED:
            _LOADED[resolved.fingerprint] = modules.load(resolved.path)
        return _LOADED[resolved.fingerprint]


class LazyModule:
    """A worker's model, loaded on first use: a worker that gets no rows never loads it.

    It offers what `LoadedModule` does (`module`, `call`). The first use runs
    `load` once, under a lock, whichever thread comes first; the others wait
    for it. A load that fails raises to its caller and is tried again on the
    next use (a retried bundle).
    """

    def __init__(self, load: Callable[[], LoadedModule]):
        self._load = load
        self._lock = threading.Lock()
        self._model: LoadedModule | None = None

    @property
    def loaded(self) -> bool:
        """Whether the module has been loaded."""
        return self._model is not None

    def get(self) -> LoadedModule:
        """The loaded module, loading it first if needed."""
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    @property
    def module(self) -> Any:
        return self.get().module

    def call(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Calls the bound signature (loading the module on the first call)."""
        return self.get().call(inputs)


def loaded(model: LoadedModule | LazyModule) -> LoadedModule:
    """The loaded module behind `load_model`'s result, loading it now if it is not yet.

    `run_inference` starts with it, so that the load happens before any input
    tensor is built (the first of which imports TensorFlow: part of the load)
    and so that a load that fails fails the bundle, rather than each row's call.
    """
    return model.get() if isinstance(model, LazyModule) else model


def configure_threads(threads: int | None, calls: int = 1) -> None:
    """Sets this process's TensorFlow pools for the module's calls, before TensorFlow starts.

    Nothing when TensorFlow has already started here: its pools are then
    fixed. (A launcher that must load the module to describe it sets them
    first, as its in-process workers would: `pipeline.prepare`.)

    Args:
      threads: intra-op threads per call (inter-op: at most 2); None leaves TensorFlow's defaults.
      calls: calls side by side (> 1: one intra-op thread each, `calls` inter-op threads).
    """
    if not threads and calls < 2:
        return
    import tensorflow as tf

    intra, inter = (1, calls) if calls > 1 else (threads, min(threads, 2))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already started in this process (in-process runner): keep its pools.
        pass


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def _report_worker_startup() -> None:
    """Reports this worker process's start-up time (`pipelines.embedding.worker`) once, as a Beam distribution."""
    from pipelines.embedding import worker

    seconds = worker.take_startup_s()
    if seconds is not None:
        beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "worker_startup_ms").update(round(seconds * 1000))


class HeapTrimmer:
    """Calls `release_free_memory` when asked, at most once every `interval_s` seconds."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S):
        self._interval_s = interval_s
        self._last: float | None = None

    def maybe_release(self, now: float | None = None) -> bool:
        """Releases the heap's free pages unless that was done less than `interval_s` ago; True when it did."""
        now = time.monotonic() if now is None else now
        if self._last is not None and now - self._last < self._interval_s:
            return False
        self._last = now
        release_free_memory()
        return True


def calls_per_thread(batch_size: int) -> int:
    """Calls per call thread in a window of image calls side by side: `WINDOW_ROWS_PER_THREAD` images, at least one call."""
    return max(1, WINDOW_ROWS_PER_THREAD // batch_size)


@functools.cache
def _call_pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool of `threads` threads for image calls side by side (made once, kept for the process)."""
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="hub-embed-call")


_BATCH_BUFFERS = threading.local()


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """`np.stack(images)` into a buffer this thread reuses from call to call.

    `tf.constant` copies its input anyway; stacking into the same memory each
    time spares a fresh ≈19 MB array per call of 32 224x224 images, whose
    pages the kernel has to fault in and zero (≈9 ms a call, measured). The
    result is only valid until this thread's next call.
    """
    shape = (len(images), *images[0].shape)
    buffer = getattr(_BATCH_BUFFERS, "array", None)
    if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0] or buffer.dtype != images[0].dtype:
        buffer = _BATCH_BUFFERS.array = np.empty(shape, images[0].dtype)
    return np.stack(images, out=buffer[: shape[0]])


def image_batch(images: Sequence[np.ndarray]) -> Any:
    """The float32 `[N, H, W, 3]` tensor in [0, 1] of a call's images (`preprocess.decode_pixels` arrays).

    When every image is uint8, the bytes are stacked and divided by 255 in
    TensorFlow, for the whole call at once and on its threads: the same
    float32 values as `preprocess.unit_scale` (one correctly rounded
    division each), with a quarter of the memory stacked and copied.
    Otherwise each image is scaled on its own first.
    """
    import tensorflow as tf

    if all(image.dtype == np.uint8 for image in images):
        return tf.math.divide(tf.cast(tf.constant(stack_images(images)), tf.float32), tf.constant(255.0))
    return tf.constant(stack_images([unit_scale(image) for image in images]))


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


class HubModelHandler(ModelHandler[ContentGroup, PredictionResult, LoadedModule]):
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
    ):
        """Initializes the handler.

        Args:
          handle: module handle, resolved on each worker.
          signature: signature to call.
          fingerprint: the module's fingerprint at launch; workers refuse another.
          spec: how to call the signature (see `config.model_spec`).
          tf_threads: TensorFlow intra-op threads per process; None leaves TF's default.
          calls: image calls run side by side per process, each on one TensorFlow thread,
            each thread decoding its own call's images (payloads that are still paths).
          max_image_pixels: the decompression-bomb limit for the images it decodes
            (default: `PreprocessConfig`'s).
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
        from pipelines.hub import handles

        resolved = handles.resolve(self._handle)
        if resolved.fingerprint != self._fingerprint:
            raise ModuleChangedError(
                f"Module {handles.redact(self._handle)!r} changed since the job was launched: fingerprint "
                f"{resolved.fingerprint}, expected {self._fingerprint}."
            )
        return LazyModule(functools.partial(self._load, resolved))

    def _load(self, resolved: Any) -> LoadedModule:
        """Loads the module (once per process), binds the signature, warms it up; reports the time taken."""
        from pipelines.hub import modules

        start = time.monotonic()
        configure_threads(self._tf_threads, self._calls)
        module = load_module(resolved)
        trim_output = self._spec.trim.output if self._spec.trim else None
        keys = (self._spec.output_key,) + ((trim_output,) if trim_output else ())
        model = LoadedModule(module, modules.bind_outputs(module, self._signature, keys))
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
        self, batch: Sequence[ContentGroup], model: LoadedModule, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        model = loaded(model)
        results: list[Any] = [None] * len(batch)
        order = range(len(batch))
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
                        payloads[i] = decode_content(batch[i], self._spec.image_size, self._max_image_pixels)
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
        import tensorflow as tf

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
        `handles.write_record`), per signature, output and input, so a later
        launch with the same module does not load it.
        """
        from pipelines.hub import handles

        key = self._probe_key()
        record = handles.read_record(self._fingerprint, _DIMS) or {}
        dims = record.get("dims") if isinstance(record.get("dims"), dict) else {}
        dim = dims.get(key)
        if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
            return dim
        model = self.load_model()
        inputs, _ = self._inputs([example])
        dim = int(model.call(inputs)[self._spec.output_key].shape[-1])
        handles.write_record(self._fingerprint, _DIMS, {"dims": {**dims, key: dim}})
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


_FAILURE_STAGES = {EmbedFailure: Stage.EMBED, DecodeFailure: Stage.DECODE}


class _SplitResults(beam.DoFn):
    """Each embedded `ContentGroup` gives its vector to every one of its rows; a failure fails them all."""

    def process(self, result: PredictionResult) -> Iterable[Any]:
        group, inference = result.example, result.inference
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
