# fastdipole: the two set-up commands of the README.
#   make demo   create .venv, install torch + fastdipole, train on the bundled QM9 sample, evaluate it
#   make test   same install with the test extras, then run the test suite
# TORCH_SPEC picks the torch build (default: CPU torch 2.13.0), e.g. make demo TORCH_SPEC='torch==2.14.1'.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
RUN        ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
BIN        := $(VENV)/bin
BUILD_TOOLS := scikit-build-core pybind11 ninja "cmake>=3.26"

.PHONY: demo test install install-test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(BUILD_TOOLS)

# --no-build-isolation: the extension must be compiled against the torch installed in this venv.
install: venv
	$(BIN)/pip install -q --no-build-isolation .

install-test: venv
	$(BIN)/pip install -q --no-build-isolation ".[test]"

demo: install
	OMP_NUM_THREADS=1 $(BIN)/fastdipole train --out $(RUN)
	OMP_NUM_THREADS=1 $(BIN)/fastdipole evaluate --model $(RUN) --split test

test: install-test
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

clean:
	rm -rf build $(VENV)
