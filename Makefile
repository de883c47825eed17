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

.PHONY: demo test build venv bench lint fmt clean plugins python-client install system-packages

# The venv holds PyTorch (libtorch for tch); numpy and pytest for the reference tests; the ADBC
# Flight SQL driver (with pyarrow) for the standard-client tests; scikit-learn and pandas, the
# classifiers' reference; PyTorch Lightning and transformers for the Python client's callbacks;
# kubernetes-validate (the Kubernetes schemas, offline) for the deployment tests; moto's S3 server
# (with boto3) for the object-storage tests and benchmark.
$(VENV)/.ready: Makefile
	@command -v python3 >/dev/null || { echo "python3 is needed (apt-get install python3 python3-venv)"; exit 1; }
	@command -v cargo >/dev/null || { echo "cargo is needed (rustup)"; exit 1; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==$(TORCH_VERSION) numpy pytest adbc-driver-flightsql==1.13.0 pyarrow==26.0.1 scikit-learn==1.9.1 pandas==3.1.1 lightning==2.6.6 transformers==5.24.0 accelerate==1.15.0 kubernetes-validate==1.37.0 'moto[server]==5.2.5'
	touch $@

venv: $(VENV)/.ready

# The Python client (sdk/python, package `lrid`), installed into the venv as a user would
# (pip install ./sdk/python); its tests are in tests/python.
python-client: venv
	$(VENV)/bin/pip install --quiet ./sdk/python

# A cold build writes ~2.2 GB under target/; a full disk shows up only as a linker crash (SIGBUS).
build: venv
	@free=$$(df -Pk $(CURDIR) | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$free" -lt 4 ]; then echo "warning: only $$free GiB free on the disk of $(CURDIR); a cold build needs ~3 GiB under target/" >&2; fi
	$(CARGO) build --release --workspace

# The built-in learning rules and classifiers (listed in deploy/install.sh), into the default
# plugins folder of `lrid serve`.
plugins: build
	@deploy/install.sh --plugins lrid-data/plugins
	$(LRID) plugins --dir lrid-data/plugins

# An installed layout: PREFIX/bin/lrid, the built-in plugins in PREFIX/lib/lrid/plugins (loaded
# by `lrid serve` and `lrid train` without a plugins folder), config and SQL in PREFIX/share/lrid.
PREFIX ?= /usr/local
install: build
	deploy/install.sh $(PREFIX)

# The main job: the demo sweep (every built-in rule on two small networks, recorded into an
# embedded daemon; resumable, so a second `make demo` only summarises), what it stored, the
# identification experiments on it, then live identification: an identifier fitted on the
# corpus, and one more run of each rule (seeds the corpus never had) identified as it trains.
demo: plugins
	$(LRID) --version
	$(LRID) sweep run config/sweeps/demo.toml
	@mkdir -p target/demo
	@$(LRID) serve --listen 127.0.0.1:0 > target/demo/serve.out 2> target/demo/serve.log & pid=$$!; \
	for i in $$(seq 100); do grep -q listening target/demo/serve.out 2>/dev/null && break; sleep 0.1; done; \
	url=http://$$(awk '{print $$5; exit}' target/demo/serve.out); \
	$(LRID) sql "SELECT learning_rule, architecture, count(*) AS runs FROM runs WHERE starts_with(run_id, 'demo/') AND status = 'closed' GROUP BY learning_rule, architecture ORDER BY architecture, learning_rule" --server $$url; \
	$(LRID) sql "SELECT r.learning_rule, o.point, round(avg(o.weightabs_mean), 5) AS mean_abs_weight, round(avg(o.actraw_mean), 4) AS mean_act FROM observables o JOIN runs r ON o.run_id = r.run_id WHERE r.architecture = 'resnet18-v1' AND o.layer_name = 'dense' AND o.point IN (0, 10, 20) GROUP BY r.learning_rule, o.point ORDER BY r.learning_rule, o.point" --server $$url; \
	$(LRID) analyze --server $$url --name demo --where "starts_with(run_id, 'demo/')" --classifiers random-forest --experiments main,held-out,importances && \
	{ $(LRID) sql "SELECT name FROM identifiers WHERE name = 'demo'" --format csv --server $$url | grep -q demo || \
	  $(LRID) identify fit --name demo --server $$url --where "starts_with(run_id, 'demo/')"; } && \
	$(LRID) sweep run config/sweeps/demo-live.toml --server $$url && \
	echo "Live identification of runs the identifier never saw (predicted rule and its probability after k points):" && \
	$(LRID) sql "SELECT r.learning_rule AS trained_with, max(CASE WHEN i.point = 2 THEN concat(i.predicted, ' ', round(i.probability, 2)) END) AS k3, max(CASE WHEN i.point = 5 THEN concat(i.predicted, ' ', round(i.probability, 2)) END) AS k6, max(CASE WHEN i.point = 10 THEN concat(i.predicted, ' ', round(i.probability, 2)) END) AS k11, max(CASE WHEN i.point = 20 THEN concat(i.predicted, ' ', round(i.probability, 2)) END) AS k21 FROM identifications i JOIN runs r ON i.run_id = r.run_id WHERE starts_with(i.run_id, 'demo-live/') AND i.identifier = 'demo' AND i.layer_index IS NULL GROUP BY r.learning_rule ORDER BY r.learning_rule" --server $$url; \
	status=$$?; kill $$pid; wait $$pid; exit $$status

lint: venv
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# Debian packages the tests need: a real one-node Slurm cluster, which tests/slurm/cluster.sh
# starts without systemd (slurmctld, slurmd, the client commands, munge), and systemd-analyze
# (the systemd unit's check), openssl (the TLS tests' certificates). Installed with apt when a
# command is missing (~1 min).
SYSTEM_PACKAGES := slurmctld slurmd slurm-client munge systemd openssl
system-packages:
	@missing=; for c in slurmctld slurmd sbatch munged systemd-analyze openssl; do \
		command -v $$c >/dev/null || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for the tests (missing:$$missing)"; \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $(SYSTEM_PACKAGES); \
	fi

test: build lint python-client system-packages
	$(CARGO) test --release --workspace
	cd tests/python && $(PYTHON) -m pytest -q

bench: plugins python-client
	$(VENV)/bin/pip install --quiet duckdb
	@mkdir -p target/demo
	@if $(LRID) dataset export --where "starts_with(run_id, 'demo/')" --out target/demo/dataset.parquet; then \
		$(PYTHON) tests/python/bench_classifiers.py --dataset target/demo/dataset.parquet; \
		echo "lrid analyze --grid fast on the demo corpus (wall time):"; \
		$(LRID) analyze --name bench --where "starts_with(run_id, 'demo/')" --out target/demo/bench-report | tail -n 2; \
	else echo "no demo corpus (run make demo first): classifiers on the synthetic set only"; \
		$(PYTHON) tests/python/bench_classifiers.py; fi
	$(CARGO) bench -p lrid-stats --bench statistics
	$(CARGO) bench -p lrid-e2e --bench daemon
	$(CARGO) bench -p lrid-e2e --bench experiments
	$(CARGO) bench -p lrid-e2e --bench identify
	$(CARGO) build --release -p lrid-sdk --example record_npy
	$(PYTHON) tests/python/bench_python_client.py

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)
