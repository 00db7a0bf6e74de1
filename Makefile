# Makefile: the contract's targets in Rust terms. `make help` lists them.
# Every target is a thin wrapper: the command it runs is the one you would type.
# See docs/OPERATIONS.md for the longer story (hot reload, containers, monitoring, Kubernetes).

CARGO ?= cargo
DOCKER ?= docker
# `docker compose` (v2 plugin) when it answers, else the standalone `docker-compose`.
# Recursive (=) so it is only worked out by the targets that use it.
COMPOSE ?= $(shell if $(DOCKER) compose version >/dev/null 2>&1; then echo "$(DOCKER) compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

.DEFAULT_GOAL := help
.PHONY: help build run run-user run-order run-audit dev-user dev-order dev-audit test test-user test-order test-audit \
	lint format vet api-test bench bench-smoke bench-cpu bench-scale bench-scale-smoke soak soak-smoke deps install-tools secrets docker-build docker-up docker-down docker-clean \
	validate-ops clean require-docker require-compose require-bacon require-clippy \
	require-rustfmt

help: ## Show all available commands
	@awk 'BEGIN {FS = ":.*## "} \
		/^## ---- / {t = $$0; gsub(/^## -+ | -+$$/, "", t); printf "\n%s:\n", t; next} \
		/^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

## ---- Build and run -------------------------------------------------------

build: ## Build the launcher and the service binaries (release, one build)
	$(CARGO) build --release --workspace

run: ## Run the whole system (every service, one process) on the embedded default
	$(CARGO) run --release

run-user: ## Run user service
	$(CARGO) run --release -p user-service

run-order: ## Run order service
	$(CARGO) run --release -p order-service

run-audit: ## Run audit-log service
	$(CARGO) run --release -p audit-log-service

dev-user: require-bacon ## Run user service with hot reload (bacon, see bacon.toml)
	bacon --headless user-service

dev-order: require-bacon ## Run order service with hot reload (bacon, see bacon.toml)
	bacon --headless order-service

dev-audit: require-bacon ## Run audit-log service with hot reload (bacon, see bacon.toml)
	bacon --headless audit-log-service

## ---- Quality -------------------------------------------------------------

test: ## Run all tests (needs PostgreSQL on 127.0.0.1:5432, see README)
	$(CARGO) test --workspace

test-user: ## Run user service tests
	$(CARGO) test -p user-service --locked

test-order: ## Run order service tests
	$(CARGO) test -p order-service --locked

test-audit: ## Run audit-log service tests (needs NATS on 127.0.0.1:4222 too)
	$(CARGO) test -p audit-log-service --locked

lint: require-clippy ## Run clippy with warnings as errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

format: require-rustfmt ## Format code
	$(CARGO) fmt --all

vet: require-clippy ## cargo check + clippy
	$(CARGO) check --workspace --all-targets
	$(CARGO) clippy --workspace --all-targets -- -D warnings

api-test: ## Contract fuzzing of both APIs with Schemathesis (scripts/api-test.sh)
	bash scripts/api-test.sh

bench: ## Benchmarks on PostgreSQL and SQLite, ratios to pgbench, and tracing's cost (docs/BENCHMARKS.md)
	bash bench/run.sh
	BENCH_SKIP_BUILD=1 bash bench/tracing.sh

bench-smoke: ## A few seconds per benchmark scenario, so the harness cannot rot (in CI)
	bash bench/run.sh --smoke
	BENCH_SKIP_BUILD=1 bash bench/tracing.sh --smoke
	BENCH_SKIP_BUILD=1 bash bench/cpu_split.sh --smoke

bench-cpu: ## Where a POST user's CPU goes: microseconds per request by process (bench/cpu_split.sh)
	bash bench/cpu_split.sh

bench-scale: ## Lists, search and counts at 10k and 1M rows, ratios (bench/scale.sh; seeds millions)
	bash bench/scale.sh

bench-scale-smoke: ## bench-scale for a few seconds at small sizes (in CI)
	bash bench/scale.sh --smoke

soak: ## 60 s mixed load on both services: 0 5xx, flat RSS, fds and DB sessions (scripts/soak.sh)
	bash scripts/soak.sh

soak-smoke: ## The soak test for 12 s (in CI)
	bash scripts/soak.sh --smoke

validate-ops: ## Check monitoring, compose and Kubernetes files against live services
	bash scripts/validate-ops.sh

## ---- Dependencies and tools ----------------------------------------------

deps: ## Download dependencies
	$(CARGO) fetch

install-tools: ## Install dev tools: bacon (hot reload, crates.io), clippy, rustfmt
	@if command -v rustup >/dev/null 2>&1; then \
		echo "rustup component add clippy rustfmt"; rustup component add clippy rustfmt; \
	else \
		echo "rustup not found: install clippy and rustfmt with your Rust toolchain's package manager"; \
	fi
	@if command -v bacon >/dev/null 2>&1; then \
		echo "bacon already installed: $$(bacon --version)"; \
	else \
		echo "$(CARGO) install --locked bacon"; $(CARGO) install --locked bacon; \
	fi
	@echo "validate-ops installs its own tools (promtool from Debian's 'prometheus' package,"
	@echo "PyYAML and kubernetes-validate from PyPI into a virtualenv) when they are missing."

## ---- Containers ----------------------------------------------------------

secrets: ## Once: a signing key in ./secrets and client secrets in ./.env (compose, Kubernetes)
	@mkdir -p secrets && chmod 700 secrets
	@test -f secrets/jwt-signing-key.pem || (umask 077 && openssl genpkey -algorithm ed25519 \
		-out secrets/jwt-signing-key.pem && echo "created secrets/jwt-signing-key.pem")
	@touch .env && chmod 600 .env
	@grep -q '^AUTH_CLIENT_SECRET=.' .env || (echo "AUTH_CLIENT_SECRET=$$(openssl rand -hex 24)" >> .env \
		&& echo "added AUTH_CLIENT_SECRET to .env")
	@grep -q '^AUTH_SERVICE_CLIENT_SECRET=.' .env || (echo "AUTH_SERVICE_CLIENT_SECRET=$$(openssl rand -hex 24)" >> .env \
		&& echo "added AUTH_SERVICE_CLIENT_SECRET to .env")

docker-build: require-docker ## Build the service images
	$(DOCKER) build -t user-service:latest --build-arg SERVICE=user-service --build-arg PORT=8081 .
	$(DOCKER) build -t order-service:latest --build-arg SERVICE=order-service --build-arg PORT=8082 .
	$(DOCKER) build -t audit-log-service:latest --build-arg SERVICE=audit-log-service --build-arg PORT=8083 .

docker-up: require-compose ## Start Docker containers (services, databases, NATS, Prometheus, Grafana)
	$(COMPOSE) up -d --build
	@echo "user-service  http://localhost:8081   order-service http://localhost:8082"
	@echo "audit-log-service http://localhost:8083   nats     nats://localhost:4222"
	@echo "prometheus    http://localhost:9090   grafana       http://localhost:3000 (admin/admin)"

docker-down: require-compose ## Stop Docker containers
	$(COMPOSE) down

docker-clean: require-compose ## Remove all Docker resources (containers, volumes, built images)
	$(COMPOSE) down --volumes --rmi local --remove-orphans

## ---- Housekeeping --------------------------------------------------------

clean: ## Clean build artifacts and the embedded databases
	$(CARGO) clean
	rm -rf data

# ---- Tool checks: each says which tool is missing and how to get it. ----------

require-docker:
	@command -v $(DOCKER) >/dev/null 2>&1 || { \
		echo "error: '$(DOCKER)' not found. Install Docker Engine (https://docs.docker.com/engine/install/)"; \
		echo "       or Docker Desktop, then retry. Without Docker use 'make run' (SQLite) instead."; \
		exit 1; } >&2

require-compose: require-docker
	@test -n "$(COMPOSE)" || { \
		echo "error: neither 'docker compose' (plugin) nor 'docker-compose' found."; \
		echo "       Install the Compose plugin (Debian/Ubuntu: apt-get install docker-compose-plugin"; \
		echo "       from Docker's apt repository) or 'apt-get install docker-compose'."; \
		exit 1; } >&2

require-bacon:
	@command -v bacon >/dev/null 2>&1 || { \
		echo "error: 'bacon' (hot reload) not found. Install it with 'make install-tools'"; \
		echo "       or 'cargo install --locked bacon' (from crates.io)."; \
		exit 1; } >&2

require-clippy:
	@$(CARGO) clippy --version >/dev/null 2>&1 || { \
		echo "error: clippy not found. Install it with 'rustup component add clippy' (or 'make install-tools')."; \
		exit 1; } >&2

require-rustfmt:
	@$(CARGO) fmt --version >/dev/null 2>&1 || { \
		echo "error: rustfmt not found. Install it with 'rustup component add rustfmt' (or 'make install-tools')."; \
		exit 1; } >&2
