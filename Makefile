# The two commands: `make serve` and `make test`. Both build .venv from the pinned lock file
# when it is missing, so a fresh clone needs only Python 3.11, git and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test bench lint demo migrate clean

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/cbloop migrate
	$(BIN)/cbloop serve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check cbloop service pipeline cli migrations tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/cbloop bench

demo: $(STAMP)
	$(BIN)/cbloop simulate --world synthetic --out demo-out

clean:
	rm -rf $(VENV) data demo-out
