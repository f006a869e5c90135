# `make test` and `make demo` create .venv on first use and install everything they need.
VENV ?= .venv
PYTHON ?= python3
# Exact pins for this project's build machines (local wheels); pyproject keeps ranges.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# The oldest torch that pyproject admits: `make test-oldest` runs the suite on it in its own venv.
OLDEST_TORCH_PINS := torch==2.4.1 torchvision==0.19.1
BIN := $(VENV)/bin

.PHONY: test test-oldest demo demo-conditional install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[test,demo,mlflow,export]' $(TORCH_PINS)
	touch $@

test: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q

test-oldest:
	$(MAKE) test VENV=.venv-oldest TORCH_PINS="$(OLDEST_TORCH_PINS)"

demo: install
	$(BIN)/gantool run recipes/dcgan_mnist5k.toml --out runs/demo --overwrite
	@echo "sample grid: runs/demo/samples/final.png"

demo-conditional: install
	$(BIN)/gantool run recipes/cdcgan_mnist5k.toml --out runs/demo-conditional --overwrite
	$(BIN)/gantool sample runs/demo-conditional --class 7 --n 64
	@echo "one row per digit: runs/demo-conditional/samples/final.png"

clean:
	rm -rf $(VENV) .venv-oldest runs build *.egg-info
