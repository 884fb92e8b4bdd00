# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EMPLOYEES ?= 20
ROUNDS ?= 10
DEPLOY_ROUNDS ?= 3
# Debian packages the real-component tests drive: an X server, a window manager,
# xdotool to send real input, and a browser for the dashboard.
SYSTEM_PACKAGES := xvfb openbox xdotool chromium xterm tmux

.PHONY: venv sysdeps lint test test-fast demo deploy-demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch lies on disk; install it first so nothing pulls CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

sysdeps:
	@missing=""; \
	for cmd in Xvfb:xvfb openbox:openbox xdotool:xdotool chromium:chromium; do \
	  command -v $${cmd%%:*} >/dev/null 2>&1 || missing="$$missing $${cmd##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m tests.architecture

# Two workers, one test file each at a time: the e2e files keep their module-scoped
# federations and X displays, and one file's waits overlap another's work.
test: venv sysdeps lint
	$(BIN)/pytest -q -ra -n 2 --dist loadfile

test-fast: venv
	$(BIN)/pytest -q -ra -m "not e2e and not slow"

demo: venv
	$(BIN)/hearth-sim demo --employees $(EMPLOYEES) --rounds $(ROUNDS)

# README's real deployment on 127.0.0.1: PKI, SuperLink, two laptops, a SecAgg+ campaign.
deploy-demo: venv
	$(BIN)/hearth-sim deploy-demo --rounds $(DEPLOY_ROUNDS)

bench: venv sysdeps
	$(BIN)/python -m simulations.bench --out bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
