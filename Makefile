# Two commands: `make demo` (set up, train a small CEN, run the node over a recorded
# sequence) and `make test` (set up, run every test). Both create .venv from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# ROS 2 launch and command-line tools as wheels (not on the package index): installed when
# they are there, so that the tests that run `ros2 launch` can (they skip without them).
LAUNCH_WHEELS := ../shared/ros2-launch

# Keep DDS traffic on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): requirements-dev.txt requirements-launch.txt setup.py dev/pyproject.toml \
          training/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -e ".[onnxruntime,bag]" -e dev -e "training[test,bag]"
	if [ -d $(LAUNCH_WHEELS) ]; then \
	  $(PY) -m pip install --quiet -r requirements-launch.txt && \
	  $(PY) -m pip install --quiet --no-deps $(LAUNCH_WHEELS)/*.whl; \
	else echo "no $(LAUNCH_WHEELS): the ros2 launch tests will skip"; fi
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py --out demo_output

clean:
	rm -rf $(VENV) demo_output
