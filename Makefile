# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   create .venv, install the locked packages, run every notebook of the demo profile
#   make test   the same set-up if needed, then the test suite
# A second run reuses .venv; it reinstalls only when requirements.lock or pyproject.toml changed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check gpu readme clean-results

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mlsp run --profile demo --jobs 2
	$(BIN)/mlsp check --profile demo

# Two pytest workers: much of the suite is single-threaded Python (kernels starting, graphs tracing),
# so a second worker fills the other core; work stealing lets it take what the first has queued.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal

check: $(STAMP)
	$(BIN)/mlsp check --profile demo

# GPU machines: swap the CPU build of TensorFlow for the CUDA one (same version).
gpu: $(STAMP)
	$(BIN)/python -m pip uninstall --yes tensorflow-cpu
	$(BIN)/python -m pip install "tensorflow[and-cuda]==$$(grep -i '^tensorflow[-_]cpu==' requirements.lock | cut -d= -f3)"

readme: $(STAMP)
	$(BIN)/mlsp readme --profile demo
