# caffelike: the two set-up commands of the README, and friends.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
GPU ?=

.PHONY: test demo install bench clean

$(VENV)/.installed: setup.py pyproject.toml
	@echo "==> creating $(VENV) and installing caffelike (torch pinned to $(TORCH_PIN))"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test]"
	@echo "==> creating $(VENV)-protoc (the pinned caffe_pb2 generator, checked by the tests)"
	$(PYTHON) -m venv $(VENV)-protoc
	$(VENV)-protoc/bin/python -m pip install -q grpcio-tools==1.62.3
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(VENV)-protoc runs
