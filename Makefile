# Two commands do all the set-up: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow bench-ingest bench-niah clean-sample

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hico sample-video sample/demo.mp4
	$(BIN)/hico probe sample/demo.mp4
	test -d sample/frames || $(BIN)/hico frames sample/demo.mp4 --out sample/frames --num-frames 8

test: $(STAMP)
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

bench-niah: $(STAMP)
	cd bench && ../$(BIN)/python niah.py

clean-sample:
	rm -rf sample
