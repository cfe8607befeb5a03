# Two commands: `make demo` trains and evaluates on the shipped sample; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_RUN ?= runs/demo

.PHONY: demo test lint sample bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/signlab train --out $(DEMO_RUN) --overwrite
	$(BIN)/signlab evaluate $(DEMO_RUN) --data src/signlab/sample/heldout --report $(DEMO_RUN)/report-heldout

# The suite runs twice: as on a machine with bf16 arithmetic (signlab then trains in bf16 by itself) and as on
# one without; SIGNLAB_BF16 stands in for the hardware, so either machine checks both paths.
test: $(STAMP)
	SIGNLAB_BF16=on $(BIN)/python -m pytest
	SIGNLAB_BF16=off $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

sample: $(STAMP)
	$(BIN)/python scripts/make_sample.py --source ../shared/datasets/GTSRB/Final_Training

clean:
	rm -rf $(VENV) runs .cache
