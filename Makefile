# Makefile: the contract's targets in Rust terms. `make help` lists them.
CARGO ?= cargo

.PHONY: help build run run-user run-order test test-user test-order lint format vet deps clean

help: ## Show all available commands
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

build: ## Build all services (release)
	$(CARGO) build --release --workspace

run: ## Run the whole system (both services) on the embedded default
	$(CARGO) run --release

run-user: ## Run user service
	$(CARGO) run --release -p user-service

test: ## Run all tests (needs PostgreSQL on 127.0.0.1:5432, see README)
	$(CARGO) test --workspace

test-user: ## Run user service tests
	$(CARGO) test -p user-service --locked

lint: ## Run clippy with warnings as errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

format: ## Format code
	$(CARGO) fmt --all

vet: ## cargo check + clippy
	$(CARGO) check --workspace --all-targets
	$(CARGO) clippy --workspace --all-targets -- -D warnings

deps: ## Download dependencies
	$(CARGO) fetch

clean: ## Clean build artifacts and the embedded databases
	$(CARGO) clean
	rm -rf data
