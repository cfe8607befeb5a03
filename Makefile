# Two commands: `make demo` trains and evaluates (on signlab's drawn signs, or on GTSRB when there is a copy);
# `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_RUN ?= runs/demo
# Real data for the demo: DATA=folder, else the copy `signlab download gtsrb` makes, else none (drawn signs).
DATA ?= $(wildcard data/GTSRB/Final_Training)
TEST_DATA ?= $(wildcard data/GTSRB/Final_Test)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Without real data: render the drawn-sign default set (once), train on it, evaluate on its held-out signs.
# With DATA: the fast preset on the real images, evaluated on their validation split (and the test set if any).
demo: $(STAMP)
ifeq ($(strip $(DATA)),)
	@echo "demo: signlab's drawn signs (pass DATA=GTSRB_FOLDER or run signlab download gtsrb for real data)"
	$(BIN)/signlab train --out $(DEMO_RUN) --overwrite
else
	@echo "demo: real data in $(DATA)"
	$(BIN)/signlab train --preset fast --data $(DATA) --out $(DEMO_RUN) --overwrite
endif
	$(BIN)/signlab evaluate $(DEMO_RUN) --report $(DEMO_RUN)/report
ifneq ($(strip $(TEST_DATA)),)
	$(BIN)/signlab evaluate $(DEMO_RUN) --data $(TEST_DATA) --report $(DEMO_RUN)/report-test
endif

# The suite runs twice: as on a machine with bf16 arithmetic (signlab then trains in bf16 by itself) and as on
# one without; SIGNLAB_BF16 stands in for the hardware, so either machine checks both paths.
test: $(STAMP)
	SIGNLAB_BF16=on $(BIN)/python -m pytest
	SIGNLAB_BF16=off $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) runs .cache
