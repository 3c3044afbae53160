# Two commands on a fresh machine:  `make run` (set up, then train the book's model)
# and `make test` (set up, then run the test suite). Both are idempotent.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: run test setup installed data bytecode browser bench bench-quick docs clean help

help:
	@echo "make run    set up everything, then train the book's model (fmnist train)"
	@echo "make test   set up everything, then run the test suite"
	@echo "make bench  benchmark fmnist against the book's plain Keras script"
	@echo "make docs   rerun the README's examples and write their output into it"

run: setup
	$(BIN)/fmnist train $(ARGS)

test: setup browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/bench.py $(ARGS)

docs: setup
	$(BIN)/python docs/examples.py

setup: $(STAMP) installed data bytecode

# A checkout moved or copied to another folder keeps a working .venv/bin/python, but its `fmnist`
# script names the old folder's interpreter on its first line and the editable install imports the
# old folder's code: then the package is installed again, from here (a few seconds).
installed: $(STAMP)
	@if $(BIN)/python -I -c "$$CHECK_INSTALLED" $(BIN) 2>/dev/null; then :; \
	else echo "The checkout has moved: installing fmnist again from here."; \
	  $(BIN)/python -m pip install --quiet -e '.[jax,dev,tensorboard,ray]'; fi

# The editable install imports this folder's fmnist_cli, and the `fmnist` script's interpreter is in
# this venv (a script pip wrote as a /bin/sh trampoline, for a long path, cannot be read: it passes).
define CHECK_INSTALLED
import os, sys, fmnist_cli
venv_bin = os.path.realpath(sys.argv[1])
with open(os.path.join(venv_bin, "fmnist")) as fh:
    interpreter = fh.readline()[2:].strip()
ours = os.path.dirname(os.path.realpath(fmnist_cli.__file__)) == os.path.realpath("fmnist_cli")
script = not interpreter.startswith("/") or interpreter.endswith("/sh") \
    or os.path.realpath(os.path.dirname(interpreter)) == venv_bin
sys.exit(not (ours and script))
endef
export CHECK_INSTALLED

# The package's compiled bytecode, as a regular (non-editable) install writes it: an environment with
# PYTHONDONTWRITEBYTECODE=1 would otherwise compile fmnist's modules at every command (about 40 ms of
# `fmnist data`'s 0.2 s). Quick, and only what changed is compiled again.
bytecode: $(STAMP) installed
	$(BIN)/python -m compileall -q fmnist_cli

# The virtual environment with the package, the JAX extra (so both backends are tested), TensorBoard
# (its writer for --tensorboard; its server for a test), Ray (so the Ray executor is tested on a real
# local cluster) and test tools.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[jax,dev,tensorboard,ray]'
	touch $(STAMP)

# The data: nothing to do when fmnist finds and verifies the files; else Debian's package where
# apt-get exists (no download needed on machines with a Debian mirror), else Keras's downloader.
data: $(STAMP) installed
	@if $(BIN)/fmnist data >/dev/null 2>&1; then echo "Fashion-MNIST: found and verified."; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
	    || $(BIN)/fmnist data --download; \
	  $(BIN)/fmnist data >/dev/null; \
	else $(BIN)/fmnist data --download; fi

# Headless Chromium, for the test that renders `fmnist report`'s HTML in a real browser: Debian's
# package where apt-get exists (sudo when not root, never asking for a password); elsewhere, or when
# that fails, the test is skipped and says why.
BROWSERS = chromium chromium-browser google-chrome google-chrome-stable
browser:
	@if (for b in $(BROWSERS); do command -v $$b >/dev/null 2>&1 && exit 0; done; exit 1); then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  echo "Installing Debian's chromium (about 330 MB) for the browser test..."; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
	    || { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium >/dev/null 2>&1; } \
	    || echo "Could not install chromium: the browser test will be skipped."; \
	else echo "No Chromium and no apt-get: the browser test will be skipped."; fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
