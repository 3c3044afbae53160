# Two commands on a fresh machine:  `make run` (set up, then train the book's model)
# and `make test` (set up, then run the test suite). Both are idempotent.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: run test setup data bench bench-quick clean help

help:
	@echo "make run    set up everything, then train the book's model (fmnist train)"
	@echo "make test   set up everything, then run the test suite"
	@echo "make bench  benchmark fmnist against the book's plain Keras script"

run: setup
	$(BIN)/fmnist train $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/bench.py $(ARGS)

setup: $(STAMP) data

# The virtual environment with the package, the JAX extra (so both backends are tested), Ray (so the
# Ray executor is tested on a real local cluster) and test tools.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[jax,ray,dev]'
	touch $(STAMP)

# The data: nothing to do when fmnist finds and verifies the files; else Debian's package where
# apt-get exists (no download needed on machines with a Debian mirror), else Keras's downloader.
data: $(STAMP)
	@if $(BIN)/fmnist data >/dev/null 2>&1; then echo "Fashion-MNIST: found and verified."; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
	    || $(BIN)/fmnist data --download; \
	  $(BIN)/fmnist data >/dev/null; \
	else $(BIN)/fmnist data --download; fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
