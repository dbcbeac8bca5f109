# `make demo` and `make test` work on a fresh machine with nothing but python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= runs/demo

.PHONY: demo test test-fast test-compile venv clean

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	touch $@

# Train a small U-Net on the built-in synthetic dataset, evaluate it on the test split, write predictions.
demo: venv
	$(BIN)/pixelwise train --config configs/unet_synthetic.yaml --out $(DEMO) --quiet
	$(BIN)/pixelwise eval --checkpoint $(DEMO)/best.pt --data synthetic --split test --json $(DEMO)/test_metrics.json --quiet
	$(BIN)/pixelwise datasets write-synthetic $(DEMO)/synthetic --splits test --num-images 8
	$(BIN)/pixelwise predict --checkpoint $(DEMO)/best.pt $(DEMO)/synthetic/images/test --out $(DEMO)/predictions --quiet
	@$(BIN)/python -c "import json; m = json.load(open('$(DEMO)/test_metrics.json')); print(f\"demo: test mIoU {100 * m['mIoU']:.2f} %, pixel accuracy {100 * m['pixel_accuracy']:.2f} %; predictions in $(DEMO)/predictions\")"

# Tests run in PYTEST_JOBS processes of one thread each (pytest-xdist): on 2 cores that beats one process of 2 threads,
# since most tests are too small for intra-op threads to pay.
PYTEST_JOBS ?= 2
test: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(PYTEST_JOBS) --dist worksteal

test-fast: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(PYTEST_JOBS) --dist worksteal -m "not slow"

# Inductor-compiles every model and compares with eager (minutes; `make test` checks graph capture only).
test-compile: venv
	$(BIN)/python -m pytest -q --compile -m compile

clean:
	rm -rf $(VENV) runs .pytest_cache
