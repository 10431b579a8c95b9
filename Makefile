# The two set-up commands of the README. Each creates .venv and installs what it needs.
.PHONY: demo test lint env

env:
	bash scripts/setup_env.sh

demo: env
	.venv/bin/mfm demo --out outputs/demo

test: env
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q tests

lint: env
	.venv/bin/ruff check .
