# The two README commands: `make demo` and `make test`. Both set up first (idempotent).
.PHONY: setup demo test unit integration bench clean

setup:
	@./scripts/setup.sh

demo: setup
	@.venv/bin/python -m cnm.demo

test: setup
	@.venv/bin/python -m pytest -q -ra tests

unit: setup
	@.venv/bin/python -m pytest -q -ra tests/unit

integration: setup
	@.venv/bin/python -m pytest -q -ra tests/integration

bench: setup
	@for b in bench/*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

clean:
	rm -rf .venv .pytest_cache build *.egg-info
