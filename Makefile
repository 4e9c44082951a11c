# modeconn: setup, build, run and test. Every target is idempotent.
#
#   make run    # first command on a fresh machine: setup + the quick experiment end to end
#   make test   # second command: setup + every test
#   make gpu    # full CUDA libtorch (NVIDIA machines), then rebuild
#
# libtorch comes from PyPI (torch==2.13.0, the version tch 0.26 expects) into
# a project-local venv; build.rs embeds its path as an rpath, so the binary
# runs with no environment variables. The same venv gets a working `import
# torch` (torch with its dependencies, about 4.8 GB), torchvision and
# safetensors: python/modeconn_export.py turns PyTorch networks into the
# TorchScript archives of --arch torchscript, and the tests run it.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
TORCH_DIR := $(CURDIR)/$(VENV)/lib/python3.11/site-packages/torch
TORCH_STAMP := $(VENV)/.torch-2.13.0-torchvision-0.28.0
BIN := target/release/modeconn

.PHONY: setup run test gpu build data slurm bench clean-build

setup: $(TORCH_STAMP) data build

$(TORCH_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 torchvision==0.28.0 \
		safetensors nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
	touch $@

# Fashion-MNIST from Debian when apt is available and the dataset is missing.
data:
	@if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -e data/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -e data/fashion-mnist/train-images-idx3-ubyte ]; then \
		echo "fashion-mnist: present"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "fashion-mnist missing and no apt-get: run 'target/release/modeconn download fashion-mnist' after the build"; \
	fi

# Slurm and munge from Debian for tests/slurm.rs (a one-node cluster on this
# machine), when apt is available and we are root; elsewhere the test skips, saying
# why, without them.
slurm:
	@if command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then \
		echo "slurm: present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) \
			|| echo "slurm: could not be installed; the Slurm test will skip (and fail in CI)"; \
	else \
		echo "slurm: not installed (as root: apt-get install slurm-wlm munge); the Slurm test will skip (and fail in CI)"; \
	fi

build: $(TORCH_STAMP)
	LIBTORCH=$$($(VENV)/bin/python -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/torch \
		cargo build --release --locked

run: setup
	$(BIN) run --preset quick

# Lints first (warnings are errors; clippy is installed when missing, never
# skipped), then every test; `cargo test` also builds examples/, which
# tests/example.rs runs.
test: setup slurm
	cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
	export LIBTORCH=$$($(VENV)/bin/python -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/torch; \
	cargo clippy --release --locked --all-targets -- -D warnings && cargo test --release --locked

# GPU machines: setup already installs the full CUDA stack; relink with libtorch_cuda.
gpu: $(TORCH_STAMP)
	touch build.rs
	LIBTORCH=$$($(VENV)/bin/python -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/torch \
		MODECONN_CUDA=1 cargo build --release --locked

# Benchmarks (on demand; see benches/README.md).
bench: setup
	LIBTORCH=$$($(VENV)/bin/python -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/torch \
		cargo bench --locked
