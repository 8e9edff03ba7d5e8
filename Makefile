# Two commands: `make demo` (set up, train a small CEN, run the node over a recorded
# sequence) and `make test` (set up, run every test). Both create .venv from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Keep DDS traffic on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): requirements-dev.txt setup.py training/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -e ".[onnxruntime,tools]" -e "training[test,bag]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py --out demo_output

clean:
	rm -rf $(VENV) demo_output
