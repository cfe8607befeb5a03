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

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

sample: $(STAMP)
	$(BIN)/python scripts/make_sample.py --source ../shared/datasets/GTSRB/Final_Training

clean:
	rm -rf $(VENV) runs .cache
