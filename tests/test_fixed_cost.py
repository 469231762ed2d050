"""A run's fixed cost: module descriptions cached by fingerprint, workers that load the module on first use.

Real tiny modules (copied into the test's own directory when a test changes
them), real Beam pipelines on the DirectRunner, and `loading.load` replaced by
a spy, or by a function that raises, to see when a module is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import inspect as inspect_cli
from pipelines.embedding import config, loaded_modules, model_handler, model_spec, pipeline, sinks
from pipelines.embedding.records import METRICS_NAMESPACE
from pipelines.hub import binding, cache_files, description, loading, module_info, registry
from pipelines.hub.module_manifest import MANIFEST_NAME
from tests.fixtures.reliability import run


class Loads:
    """The paths `loading.load` was called with; after `forbid()`, a call fails the test."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.forbidden = False

    def __len__(self) -> int:
        return len(self.paths)

    def forbid(self) -> None:
        self.forbidden = True


@pytest.fixture
def loads(monkeypatch):
    """Spies on `loading.load`, starting from a process without loaded modules."""
    spy, real = Loads(), loading.load

    def load(path: str):
        if spy.forbidden:
            raise AssertionError(f"the module at {path} was loaded")
        spy.paths.append(path)
        return real(path)

    monkeypatch.setattr(loading, "load", load)
    monkeypatch.setattr(loaded_modules, "_LOADED", {})  # no copy left by another test's in-process run
    return spy


@pytest.fixture
def text_module(tiny, tmp_path):
    """A private copy of the tiny text module (tests may change its files)."""
    return shutil.copytree(tiny.text, tmp_path / "text-module")


def description_path(fingerprint: str) -> str:
    return os.path.join(cache_files.cache_dir(), "by-fingerprint", fingerprint.replace(":", "-") + ".description.json")


# --------------------------------------------------------------------------- descriptions


def test_a_second_describe_reads_the_cache_and_does_not_load(text_module, loads):
    first = description.describe(str(text_module))
    assert len(loads) == 1 and os.path.isfile(description_path(first.fingerprint))
    loads.forbid()
    second = description.describe(str(text_module))
    assert second == first
    assert second.signature("tokens").output("elmo").shape == (None, None, 8)


def test_a_cached_description_reads_module_json_afresh(parent_root, tmp_path, loads):
    module = shutil.copytree(os.path.join(parent_root, "tiny", "1"), tmp_path / "tiny-1")
    first = description.describe(str(module))
    manifest_path = module / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["version"], manifest["serving"] = 7, {"batch_size": 64}
    manifest_path.write_text(json.dumps(manifest))  # module.json is outside the fingerprint
    loads.forbid()
    second = description.describe(str(module))
    assert second.fingerprint == first.fingerprint
    assert (second.version, second.recommended_batch_size) == (7, 64)
    assert second.signatures == first.signatures


def test_a_changed_module_is_described_afresh(tiny, text_module, loads):
    before = description.describe(str(text_module))
    shutil.rmtree(text_module)
    shutil.copytree(tiny.image, text_module)  # same path, other files: a new fingerprint
    after = description.describe(str(text_module))
    assert after.fingerprint != before.fingerprint and len(loads) == 2
    assert list(after.signatures) == ["default"]
    assert after.signature("default").inputs[0] == module_info.TensorInfo("images", "float32", (None, 8, 8, 3))


@pytest.mark.parametrize(
    "entry",
    [
        "{not json",
        "[]",
        '{"fingerprint": "FP", "version": 1, "signatures": 5}',
        '{"fingerprint": "sha256:' + "0" * 64 + '"}',  # another module's entry under this name
        "VALID-BUT-OLD",  # a description written by another description version
    ],
)
def test_a_corrupt_or_stale_entry_is_ignored_and_rewritten(text_module, loads, entry):
    resolved = registry.resolve(str(text_module))
    expected = description.describe_resolved(resolved)
    path = description_path(resolved.fingerprint)
    if entry == "VALID-BUT-OLD":
        stored = json.loads(open(path).read())
        entry = json.dumps({**stored, "version": description.DESCRIPTION_VERSION - 1})
    with open(path, "w") as f:
        f.write(entry.replace("FP", resolved.fingerprint))
    assert description.describe_resolved(resolved) == expected
    assert len(loads) == 2  # described afresh ...
    loads.forbid()
    assert description.describe_resolved(resolved) == expected  # ... and the entry rewritten


def build_open_dim_module(path: str) -> str:
    """A text module whose output's last axis is open in its signature: `[N, ?]`, 5 wide when called."""

    class OpenDim(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, text):
            width = tf.strings.length(tf.constant("abcde"))  # not a static shape
            return {"default": tf.ones([tf.shape(text)[0], width], tf.float32)}

    module = OpenDim()
    tf.saved_model.save(module, path, signatures={"default": module.serve})
    return path


def test_prepare_probes_an_open_dimension_once(tmp_path, loads):
    module = build_open_dim_module(str(tmp_path / "open-dim"))
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    cfg = config.load(["--input", str(src), "--output", str(tmp_path / "out"), "--module", module])
    assert pipeline.prepare(cfg).spec.dim == 5 and len(loads) == 1
    loads.forbid()
    loaded_modules._LOADED.clear()
    assert pipeline.prepare(cfg).spec.dim == 5


def test_describing_a_cached_module_does_not_import_tensorflow(tiny, module_cache):
    """`python -m pipelines.inspect` on a module described (and its ops gated) before: no TensorFlow, no SavedModel load."""
    assert inspect_cli.main([tiny.text]) == 0  # describes it and stores the op gate's verdict under its fingerprint
    script = (
        "import sys; from pipelines import inspect; inspect.main([sys.argv[1]]); print('tensorflow' in sys.modules)"
    )
    env = {**os.environ, "HUB_EMBED_CACHE_DIR": str(module_cache)}
    done = subprocess.run(
        [sys.executable, "-c", script, tiny.text], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "default    output  default       float32  [?, 8]" in done.stdout
    assert done.stdout.strip().endswith("False")


# --------------------------------------------------------------------------- lazy loading in workers


def handler_for(module_path: str, tf_threads: int | None = None) -> model_handler.HubModelHandler:
    cfg = config.load(
        ["--input", __file__, "--input-format", "txt", "--output", "/nonexistent/out", "--module", module_path]
    )
    info = description.describe(module_path)
    return model_handler.HubModelHandler(
        module_path, "default", info.fingerprint, model_spec.for_module(cfg, info), tf_threads
    )


class _Row:
    """What the handler needs of an element: a payload."""

    def __init__(self, payload: str):
        self.payload = payload


def test_load_model_does_not_load_until_the_first_batch(text_module, loads):
    handler = handler_for(str(text_module))
    assert len(loads) == 1  # describing it (the description was not cached yet)
    loaded_modules._LOADED.clear()
    model = handler.load_model()
    assert isinstance(model, loaded_modules.LazyModule) and not model.loaded and len(loads) == 1
    texts = ["the quick brown fox", "jumps"]
    first = handler.run_inference([_Row(t) for t in texts], model)
    handler.run_inference([_Row("again")], model)
    assert model.loaded and len(loads) == 2  # loaded once, on the first batch
    np.testing.assert_allclose(
        np.stack([r.inference for r in first]),
        binding.bind(loading.load(str(text_module)))({"text": tf.constant(texts)}),
        atol=1e-6,
    )


def test_an_image_module_is_warmed_up_at_its_call_size(tiny, tmp_path, monkeypatch):
    """CPU kernels are set up per input shape: the warm-up call has as many images as a real call."""
    calls: list[tuple[int, ...]] = []
    bind_outputs = binding.bind_outputs

    def spying(*args, **kwargs):
        call = bind_outputs(*args, **kwargs)
        return lambda inputs: calls.append(tuple(inputs["images"].shape)) or call(inputs)

    monkeypatch.setattr(binding, "bind_outputs", spying)
    (tmp_path / "a.png").write_bytes(b"")
    cfg = config.load(
        [
            "--input",
            str(tmp_path / "*.png"),
            "--output",
            str(tmp_path / "out"),
            "--module",
            tiny.image,
            "--batch-size",
            "5",
        ]
    )
    info = description.describe(tiny.image)
    handler = model_handler.HubModelHandler(
        tiny.image, "default", info.fingerprint, model_spec.for_module(cfg, info), None
    )
    loaded_modules._LOADED.clear()
    loaded_modules.ensure_loaded(handler.load_model())
    assert calls == [(5, 8, 8, 3)]


def test_a_worker_refuses_a_changed_module_before_any_batch(tiny, text_module, loads):
    handler = handler_for(str(text_module))
    shutil.rmtree(text_module)
    shutil.copytree(tiny.plain, text_module)
    with pytest.raises(model_handler.ModuleChangedError, match="changed since the job was launched"):
        handler.load_model()


def distribution(result, name: str):
    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))["distributions"]
    return [r.committed for r in found if r.committed is not None and r.committed.count]


def run_pipeline(cfg) -> tuple:
    job = pipeline.prepare(cfg)
    p = pipeline.new_pipeline(PipelineOptions(list(cfg.beam_args)))
    pipeline.build_pipeline(p, cfg, job)
    result = p.run()
    result.wait_until_finish()
    return job, result


def test_a_run_whose_rows_are_all_reused_never_loads_the_module(text_module, tmp_path, loads):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "text": f"text number {i}"}) + "\n" for i in range(20)))
    args = ["--input", str(src), "--id-field", "id", "--module", str(text_module)]
    first_cfg = config.load([*args, "--output", str(tmp_path / "first")])
    _, first = run_pipeline(first_cfg)
    (load_ms,) = distribution(first, model_handler.MODEL_LOAD_METRIC)
    assert load_ms.count == 1 and load_ms.max > 0  # the real load, reported by the worker that did it
    loaded_modules._LOADED.clear()
    loads.forbid()
    second = run(tmp_path / "second", *args, "--reuse", str(tmp_path / "first"))
    assert second.rc == 0
    counts = sinks.read_table_manifest(str(tmp_path / "second"))["counts"]
    assert counts["rows_reused"] == 20 and counts["rows_embedded"] == 0
