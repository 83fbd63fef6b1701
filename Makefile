# tltk developer entry points.  `make demo` and `make test` are the two set-up commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_DIR ?= demo_run

.PHONY: demo test lint typecheck protos bench clean venv

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps "tensorrt-stubs>=10.8,<11"
	VENV=$(VENV) bash scripts/prepare_trt_stubs.sh $(VENV)/trt-stubs
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# `make demo`: quick mode (small images, short trainings that still detect); `make demo FULL=1`:
# the quality settings of the shipped specs (see scripts/demo.sh for times and accuracies).
demo: venv
	PATH=$(abspath $(VENV))/bin:$$PATH TF_CPP_MIN_LOG_LEVEL=2 FULL=$(FULL) bash scripts/demo.sh $(DEMO_DIR)

test: venv
	PATH=$(VENV)/bin:$$PATH TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -m "not gpu and not tensorrt" tests
	PATH=$(VENV)/bin:$$PATH $(PY) -m mypy tltk/tensorrt

lint: venv
	$(VENV)/bin/ruff check tltk tests

typecheck: venv
	$(PY) -m mypy tltk/tensorrt

protos: venv
	$(PY) scripts/compile_protos.py
	$(PY) scripts/gen_spec_reference.py
	$(PY) scripts/gen_cli_reference.py

bench: venv
	for f in benchmarks/*.py; do PATH=$(VENV)/bin:$$PATH $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
