# The whole set-up. Each target installs what it needs first, so on a fresh clone
# `make demo` alone and `make test` alone each work.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# two test processes: the tests of one shared stack stay in one of them (tests/integration/conftest.py)
PYTEST_WORKERS ?= 2
# Where torch 2.13.0 comes from (docs/install.md): empty takes it as pip finds it (the CPU build on local
# disk on the development machines, the CUDA build from PyPI on an ordinary Linux x86_64 machine);
# https://download.pytorch.org/whl/cpu takes the CPU build.
TORCH_INDEX_URL ?=

.PHONY: install browser demo up test lint format clean lock

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first and pinned, so that the extras' requirement finds it installed: which build that is
	@# depends on where it comes from (TORCH_INDEX_URL above, docs/install.md), not on the order
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The gallery's browser tests drive Debian's chromium (never a downloaded browser build): installed here
# when missing and allowed (root with apt-get), otherwise one line says what to run.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the gallery's browser tests"; \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
	      >/tmp/atelier-chromium-install.log 2>&1 \
	      || { echo "installing chromium failed: see /tmp/atelier-chromium-install.log" >&2; exit 1; }; \
	  else \
	    echo "make test needs Debian's chromium for the gallery's browser tests: sudo apt-get install chromium" >&2; \
	    exit 1; \
	  fi; }

demo: install
	$(BIN)/atelier demo

up: install
	$(BIN)/atelier up --data-dir .atelier --port 8000

test: install browser
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# The images' lock files (exact versions and hashes for Linux x86_64, Python 3.11) from pyproject.toml.
lock: install
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra api --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header -o docker/api.lock
	$(BIN)/uv pip compile pyproject.toml --extra api --extra worker --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header -o docker/worker.lock
