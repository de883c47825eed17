# lrid: set-up, main job, tests. Every target installs what it needs on a fresh machine.
#   make demo   the main job on embedded defaults
#   make test   every test (format, lints, unit, end-to-end)
#   make bench  benchmarks (prints numbers and ratios against the peer)

SHELL := /bin/bash
.DEFAULT_GOAL := demo

VENV      := $(CURDIR)/.venv
PYTHON    := $(VENV)/bin/python
TORCH_VERSION := 2.11.0
LRID      := $(CURDIR)/target/release/lrid

# tch builds against the venv's PyTorch (LIBTORCH_USE_PYTORCH=1 finds it through `python`).
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
CARGO := cargo

.PHONY: demo test build venv bench lint fmt clean plugins

# The venv holds PyTorch (libtorch for tch); numpy and pytest for the reference tests; the ADBC
# Flight SQL driver (with pyarrow) for the standard-client tests.
$(VENV)/.ready: Makefile
	@command -v python3 >/dev/null || { echo "python3 is needed (apt-get install python3 python3-venv)"; exit 1; }
	@command -v cargo >/dev/null || { echo "cargo is needed (rustup)"; exit 1; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==$(TORCH_VERSION) numpy pytest adbc-driver-flightsql==1.13.0 pyarrow==26.0.1
	touch $@

venv: $(VENV)/.ready

build: venv
	$(CARGO) build --release --workspace

# The built-in learning rules, into the default plugins folder of `lrid serve`.
BUILTIN_RULES := sgdm adam feedback_alignment information_alignment
plugins: build
	@mkdir -p lrid-data/plugins
	@for r in $(BUILTIN_RULES); do cp target/release/liblrid_rule_$$r.so lrid-data/plugins/$$r.so; done
	$(LRID) plugins --dir lrid-data/plugins

# The main job. For now: every observable statistic of a generated weight kernel and of a
# generated activation batch, and the learning-rule plugins that load.
demo: plugins
	@mkdir -p target/demo
	$(PYTHON) -c "import numpy as np; r = np.random.default_rng(0); \
	np.save('target/demo/conv_weights.npy', r.normal(0, 0.05, (64, 32, 3, 3)).astype(np.float32)); \
	np.save('target/demo/activations.npy', np.maximum(r.normal(0, 1, (32, 64, 8, 8)), 0).astype(np.float32))"
	$(LRID) --version
	$(LRID) stats target/demo/conv_weights.npy --measure weight
	$(LRID) stats target/demo/activations.npy --measure act --unit-fraction 0.1 --noise-std 0.05

lint: venv
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

test: build lint
	$(CARGO) test --release --workspace
	cd tests/python && $(PYTHON) -m pytest -q

bench: build
	$(VENV)/bin/pip install --quiet duckdb
	$(CARGO) bench -p lrid-stats --bench statistics
	$(CARGO) bench -p lrid-e2e --bench daemon

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)
