# caffelike: the two set-up commands of the README, and friends.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
# OpenCV 4.x: the benchmarks compare against cv2.dnn.readNetFromCaffe, which OpenCV 5 dropped.
OPENCV_PIN := opencv-python-headless==4.14.0.94
GPU ?=

.PHONY: test demo install bench clean

$(VENV)/.installed: setup.py pyproject.toml
	@# Graphviz's dot: caffelike.draw and Caffe's own test_draw.py render with it (Debian package graphviz)
	@if ! command -v dot >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "==> installing Graphviz (apt-get install graphviz)"; \
		( DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz >/dev/null 2>&1 || \
		  ( apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz >/dev/null 2>&1 ) ) || \
		echo "==> could not install Graphviz: the draw tests will report themselves skipped"; \
	fi
	@echo "==> creating $(VENV) and installing caffelike (torch pinned to $(TORCH_PIN))"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN) $(OPENCV_PIN)
	$(PY) -m pip install -q -e ".[test]"
	@echo "==> creating $(VENV)-protoc (the pinned caffe_pb2 generator, checked by the tests)"
	$(PYTHON) -m venv $(VENV)-protoc
	$(VENV)-protoc/bin/python -m pip install -q grpcio-tools==1.62.3
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

# ---- benchmarks: ratios against baselines measured in the same run (bench/RESULTS.md) ----
bench: $(VENV)/.installed
	$(PY) bench/run.py --markdown bench/last_run.md

clean:
	rm -rf $(VENV) $(VENV)-protoc runs

# ---- the main job: the book's mouth Simpleconv3, end to end on the bundled data ----------------
# make demo            (CPU)      make demo GPU=0      (first GPU)
DEMO_DIR := runs/mouth
DEMO_SOLVER := models/mouth/simpleconv3/solver.prototxt
DEMO_WEIGHTS := $(DEMO_DIR)/simpleconv3_iter_400.caffemodel
GPU_FLAG := $(if $(GPU),-gpu $(GPU),)

demo: $(VENV)/.installed
	@echo "==> [1/4] environment ready in $(VENV)"
	@mkdir -p $(DEMO_DIR)
	@echo "==> [2/4] training Simpleconv3 on data/mouth: log $(DEMO_DIR)/log.txt, snapshots $(DEMO_DIR)/"
	@( $(VENV)/bin/caffelike train -solver $(DEMO_SOLVER) $(GPU_FLAG) 2>&1; echo $$? > $(DEMO_DIR)/.train_rc ) \
		| tee $(DEMO_DIR)/log.txt
	@exit $$(cat $(DEMO_DIR)/.train_rc)
	@echo "==> [3/4] plotting the training curves: $(DEMO_DIR)/curves.png"
	$(VENV)/bin/caffelike plot $(DEMO_DIR)/log.txt -o $(DEMO_DIR)/curves.png --smooth 3
	@echo "==> [4/4] inference with deploy.prototxt + $(DEMO_WEIGHTS) on the 100 val images"
	$(PY) models/mouth/simpleconv3/infer.py --weights $(DEMO_WEIGHTS) $(GPU_FLAG) --crop --min-accuracy 0.90
	$(PY) models/mouth/simpleconv3/infer.py --weights $(DEMO_WEIGHTS) $(GPU_FLAG)
