# One-command set-up and checks. `make test` and `make demo` run `make setup` first (idempotent).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints/linux-x86_64-py311.txt
APT_PKGS := gcc libc6-dev libopencv-dev libturbojpeg0-dev pkg-config dataset-fashion-mnist
STAMP := $(VENV)/.setup-stamp
PYTEST_ARGS ?=

.PHONY: setup apt venv test lint demo demo-dvs clean-venv

setup: apt $(STAMP)

# Debian packages that ffcv's build, the event-driven convolution kernels (gcc) and the demo need; apt is
# only touched when one is missing.
apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $$missing; \
	fi

# The venv is rebuilt only when pyproject or the pins change.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q -c $(CONSTRAINTS) torch torchvision
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[ffcv,dali,dev]'
	$(BIN)/python -c "import torch, torchvision, spikingjelly, timm, accelerate, tonic, ffcv, nvidia.dali, safetensors; print('setup ok: torch', torch.__version__)"
	$(BIN)/python -c "from models import lif_cpu as l, spike_conv as s; [m.library() or exit(m.__name__ + ': ' + str(m.unavailable_reason())) for m in (l, s)]"
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Real training on the embedded default (Fashion-MNIST), then a summary; see README "Quick start".
demo: setup
	$(BIN)/python -m tools.demo

# The CIFAR10-DVS transfer walk-through on a small recorded tree (README "CIFAR10-DVS transfer"), ~5 min.
DVS_WORK ?= runs/demo-dvs
demo-dvs: setup
	$(BIN)/python -m tools.demo_dvs --work $(DVS_WORK)

clean-venv:
	rm -rf $(VENV)
