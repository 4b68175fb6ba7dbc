# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_CORE := $(VENV)/.core-installed
STAMP_TEST := $(VENV)/.test-installed
STAMP_BENCH := $(VENV)/.bench-installed

.PHONY: demo test browser lint bench infinity gpu gpu-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# ONNX Runtime comes from an extra: [cpu] here, unless `make gpu` already put the GPU build in
# this venv (the two ship one `onnxruntime/` folder and must never sit side by side).
HAS_GPU_ORT = $(BIN)/python -m pip show -q onnxruntime-gpu >/dev/null 2>&1

$(STAMP_CORE): pyproject.toml | $(BIN)/python
	if $(HAS_GPU_ORT); then $(BIN)/pip install -q -e ".[serve]"; else $(BIN)/pip install -q -e ".[cpu,serve]"; fi
	touch $@

# Tests compare against the reference frameworks (paddle, paddlenlp, PyTorch,
# transformers) running the same weights, so they need every extra but gpu.
$(STAMP_TEST): pyproject.toml | $(BIN)/python
	if $(HAS_GPU_ORT); then $(BIN)/pip install -q -e ".[dev,serve,paddle,hf,ray]"; \
	else $(BIN)/pip install -q -e ".[cpu,dev,serve,paddle,hf,ray]"; fi
	touch $(STAMP_CORE) $@

demo: $(STAMP_CORE)
	$(BIN)/python tools/demo.py

test: $(STAMP_TEST) browser
	$(BIN)/python -m pytest -q

# The playground's browser test drives Debian's chromium headless through chromedriver; as root,
# install them (and CJK / emoji fonts for its screenshots) when missing. Where they cannot be
# installed the test skips and says why.
BROWSER_PKGS := chromium chromium-driver fonts-wqy-zenhei fonts-noto-color-emoji
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(BROWSER_PKGS) for the playground browser test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			$(BROWSER_PKGS) >/dev/null; } \
		|| echo "note: apt-get could not install $(BROWSER_PKGS): the browser test will skip."; \
	else echo "note: chromium and chromedriver are missing and only root can install them" \
		"(apt-get install $(BROWSER_PKGS)): the browser test will skip."; fi

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests infer.py tools benchmarks
	$(BIN)/mypy

# Benchmarks (not part of `make test`): the test environment plus sentence-transformers,
# pinned so pip keeps the CPU torch and transformers 4.x (an unpinned resolve would pull
# transformers 5 and a CUDA torch). Bounded to 20 minutes; writes benchmarks/RESULTS.md.
# `make bench BENCH_ARGS=--quick` is a smoke run into .cache/bench/RESULTS-quick.md.
BENCH_ARGS ?=
$(STAMP_BENCH): $(STAMP_TEST)
	$(BIN)/pip install -q "sentence-transformers>=5,<6" "torch==2.13.0" "transformers>=4.40,<5" "huggingface-hub<1.0"
	touch $@

bench: $(STAMP_BENCH) infinity
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# The serving peer of benchmarks/serve_load.py: Infinity in a venv of its own (its torch,
# transformers and onnxruntime pins must not move ours). Pins as measured in FIELD-NOTES.md
# (torch 2.13.0 as the bench venv pins it). If it cannot be installed, `make bench` goes on
# and the serve section says why Infinity was not run.
INFINITY_VENV := .cache/infinity-venv
INFINITY_PINS := "infinity-emb[server,optimum]==0.0.78" "optimum==2.1.0" "optimum-onnx[onnxruntime]==0.1.0" \
	"onnxruntime==1.32.0" "torch==2.13.0"
$(INFINITY_VENV)/bin/infinity_emb:
	$(PY) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/pip install -q --upgrade pip
	$(INFINITY_VENV)/bin/pip install -q $(INFINITY_PINS)

infinity:
	@$(MAKE) --no-print-directory $(INFINITY_VENV)/bin/infinity_emb \
		|| echo "note: Infinity could not be installed into $(INFINITY_VENV): serve_load runs ours only and says why."

# CUDA: onnxruntime-gpu replaces onnxruntime (both ship the `onnxruntime` module, so the CPU
# build is removed first; core does not depend on it, so nothing brings it back).
# `make gpu GPU_EXTRA=gpu-cu12` for NVIDIA drivers older than 580 (CUDA 12).
GPU_EXTRA ?= gpu
gpu: $(STAMP_CORE)
	$(BIN)/pip uninstall -q -y onnxruntime onnxruntime-gpu
	$(BIN)/pip install -q -e ".[$(GPU_EXTRA)]"

# The GPU check (not a test; no network needed): on a machine with an NVIDIA GPU, it installs
# the onnxruntime-gpu wheel brought along into .cache/gpu-check/venv (beside the system's
# packages, never over them) and proves fp16 / TensorRT / IO binding there, in <= 5 minutes.
# make gpu-check WHEEL=/path/to/onnxruntime_gpu-....whl   (python3 benchmarks/gpu_check.py --help)
WHEEL ?=
gpu-check:
	$(PY) benchmarks/gpu_check.py --wheel "$(WHEEL)"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info src/*.egg-info
