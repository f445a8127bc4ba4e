# One obvious command each. Every target installs what it needs first.
.PHONY: install local down lint test check bench

install:
	@scripts/install.sh

# Start Berth's embedded local cluster (control plane, KWOK GPU nodes, Redis) and list its nodes.
local: install
	.venv/bin/berth local up

down:
	.venv/bin/berth local down

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

test: install
	.venv/bin/pytest

# What CI runs: lint, then every test tier (pure and integration).
check: lint test

bench: install
	.venv/bin/python -m bench
