# Shortcuts; the README's two commands are scripts/demo and scripts/test (no make needed).
.PHONY: setup demo test unit integration bench clean

setup:
	@./scripts/setup.sh

demo:
	@./scripts/demo

test:
	@./scripts/test

unit: setup
	@.venv/bin/python -m pytest -q -ra tests/unit

integration: setup
	@.venv/bin/python -m pytest -q -ra tests/integration

bench: setup
	@for b in bench/*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

clean:
	rm -rf .venv .pytest_cache build *.egg-info
