# Flywheel — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export BENTOML_DO_NOT_TRACK := true
export PATH := $(HOME)/.local/bin:$(PATH)
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
KAFKA_PORT ?= 9092

help: ## List the targets with one line each
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n\n"} /^[a-zA-Z_-]+:.*##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

install: ## Install uv if missing, then every package from the lock file (uv.lock)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-packages

up: install ## The closed-loop demo: five services, drift → retrain → canary → promote, live view, report
	$(RUN) flywheel up $(UP_ARGS)

up-explore: install ## The demo, then keep the stack up with the commands to explore it (Ctrl-C stops)
	$(RUN) flywheel up --keep-running $(UP_ARGS)

kafka: install ## Start a local Kafka 4.x broker (KRaft) on 127.0.0.1:$(KAFKA_PORT), jars from Maven Central
	$(RUN) python -m flywheel_devkit.kafka start --port $(KAFKA_PORT)

kafka-stop: install ## Stop the local Kafka broker
	$(RUN) python -m flywheel_devkit.kafka stop

ingest: install ## Run the ingest service in the foreground (needs Kafka)
	$(RUN) python -m flywheel_ingest

registry: install ## Run the registry in the foreground on :8100 (needs Kafka; SQLite in .flywheel/)
	$(RUN) python -m flywheel_registry

monitor: install ## Run a monitor worker (faust) in the foreground on :8400 (needs Kafka and the registry)
	$(RUN) python -m flywheel_monitor

serving: install ## Run serving (BentoML) in the foreground on :8000 (needs the registry; Kafka for events)
	$(RUN) python -m flywheel_serving

test: install ## Run lint, type checks, the schema check, unit and integration tests (real Kafka)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy shared/src services/ingest/src services/trainer/src services/registry/src services/serving/src services/monitor/src examples/fraud/src deploy/local/src deploy/devkit/src
	$(RUN) flywheel schemas --check
	$(RUN) pytest -m "not integration"
	$(RUN) pytest -m "integration and not kube and not faults"
	$(RUN) pytest -m faults
	@echo "make test: the monitor's drift tests again, with the optional alibi-detect backend (BSL-1.1) installed"
	$(UV) sync --frozen --all-packages --extra alibi
	$(RUN) pytest services/monitor/tests/test_drift.py services/monitor/tests/test_drift_alibi.py
	$(UV) sync --frozen --all-packages

faults: install ## The fault suite: the closed loop under load while each service, a worker, Kafka, the registry and the store fail in turn
	$(RUN) pytest -m faults

unit: install ## Run the unit tests only (no network)
	$(RUN) pytest -m "not integration"

lint: install ## Lint and check formatting
	$(RUN) ruff check .
	$(RUN) ruff format --check .

fmt: install ## Format the code and apply safe lint fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

schemas: install ## Regenerate the JSON Schema of every event into shared/schemas/
	$(RUN) flywheel schemas

deploy-check: install ## Check every deploy file with the real tools (helm, kubeconform, promtool, kube-apiserver); installs them
	bash deploy/check.sh

images: install ## Build the five service images flywheel/<service>:<version> from uv.lock (Docker; starts dockerd if needed)
	bash deploy/images/build.sh $(IMAGES)

images-smoke: install ## The built images together on a real broker: spec → data → train v1 → serve → flywheel status
	bash deploy/images/smoke.sh

audit: install ## Check the lock file against a vulnerability database (says so when it cannot reach one)
	$(RUN) python .ci/audit.py

observability: install ## Check the Prometheus rules (promtool) and the Grafana dashboards
	$(RUN) python deploy/checks/observability.py
	$(RUN) pytest -p no:cacheprovider deploy/checks/test_observability.py

bench: install ## Benchmark ingest against a raw Kafka producer (measures; gates nothing)
	$(RUN) python bench/ingest.py

bench-monitor: install ## Benchmark the monitor: throughput, drift detection delay, false alarms, alert latency
	$(UV) sync --frozen --all-packages --extra alibi
	$(RUN) python bench/monitor.py

clean: ## Remove local state (.flywheel/: broker data, datasets, logs)
	rm -rf .flywheel

.PHONY: help install up up-explore deploy-check observability kafka kafka-stop ingest registry monitor serving test unit lint fmt schemas bench bench-monitor clean
