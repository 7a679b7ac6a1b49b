# replaybuf: `make demo` and `make test` each build .venv from nothing (python3 is all they need).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test proto venv clean bench-log

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) tools/bootstrap_venv.py $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: a CPU build on this machine's disk (a range would pull CUDA wheels).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,torch,demo,export]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m replaybuf_client.demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Regenerate the protobuf/gRPC Python code from proto/ (tests fail when it is stale).
proto: $(STAMP)
	$(BIN)/python tools/gen_proto.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
