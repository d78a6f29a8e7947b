# The two commands of the README.  `make demo` installs, trains the tiny headless encoder and its
# vanilla twin on the embedded default corpus and prints what they learned (headless/demo.py);
# `make test` installs the test extras and runs the suite.
PYTHON ?= python3

.PHONY: install install-dev demo test

# On machines without an NVIDIA GPU take the CPU build of torch (a plain `torch` would pull CUDA).
install:
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		$(PYTHON) -m pip install -q "torch==2.13.0" || $(PYTHON) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PYTHON) -m pip install -q -e .

install-dev: install
	$(PYTHON) -m pip install -q -e ".[dev,eval]"

demo: install
	$(PYTHON) -m headless.demo

test: install-dev
	$(PYTHON) -m pytest -q -n auto --maxprocesses=4 --durations=15
