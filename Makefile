# Two commands do all the set-up on a fresh machine:
#   make run    install everything, then serve the API on the embedded defaults (SQLite, models_store/, in-process runner)
#   make test   install everything (redis-server and postgresql too), then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install system-packages run test test-fast lint bench clean

install: $(VENV)/.installed

# torch first, pinned: this machine has the CPU build of 2.13.0 on disk; an unpinned torch would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $@

# The integration tests need a real redis-server and PostgreSQL (the production database), the browser tests
# (tests/browser, issue 10) Debian's chromium; install them with apt when they are missing (needs root).
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: install
	$(BIN)/steph serve --host $(HOST) --port $(PORT)

test: install system-packages
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not integration and not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app workers

bench: install
	$(BIN)/python -m bench.reproduction

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
