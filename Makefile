# dropflow: the targets a newcomer can guess. `make demo` and `make test` set up everything.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
BIN := $(VENV)/bin
export SAM_CLI_TELEMETRY := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test unit lint format bench bench-quality bench-gpu bench-gpu-wheels build \
  bundle-check deploy clean venv sam-venv checkov-venv has-python312

# ---------------------------------------------------------------- environments
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/pip install -q -e '.[train,dev,bench]'
	touch $@

venv: $(VENV)/.installed

# aws-sam-cli pins boto3, pydantic and click: it lives in a venv of its own.
$(SAM_VENV)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q -U pip
	$(SAM_VENV)/bin/pip install -q -r requirements-sam.txt
	touch $@

sam-venv: $(SAM_VENV)/.installed

# checkov pins its own boto3 (and more), at odds with aws-sam-cli's: a venv of its own too.
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -U pip
	$(CHECKOV_VENV)/bin/pip install -q -r requirements-checkov.txt
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed

# ---------------------------------------------------------------- everyday
demo: venv
	$(BIN)/dropflow demo

test: lint
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q tests/unit tests/contract

# Performance targets, as ratios against a baseline measured in the same run (BENCHMARKS.md).
# bench/scale.py --baseline main puts today's code beside this tree's (BENCHMARKS.md, Data at
# scale); make bench measures this tree alone. Each part exits 1 when it misses a target: every
# part still runs, and make bench fails after the last one, naming those that missed.
# BENCH_PARTS="training_loop serving" runs some of them. media_serving: image and text models
# (issue 14), trained by the real job first (several minutes on a 2-core CPU).
BENCH_PARTS := training_loop serving media_serving scale
bench: venv
	@missed=""; \
	for part in $(BENCH_PARTS); do \
	  $(BIN)/python bench/$$part.py || missed="$$missed bench/$$part.py"; \
	done; \
	if [ -n "$$missed" ]; then echo "make bench: targets missed in$$missed"; exit 1; fi

# The large-model route on `dropflow local up` (issue 14): a BERT-base-sized text model (random
# weights saved under the bucket's weights/) trained, exported, promoted with route container
# and answered by the container process (exits 1 if not; not part of `make test`: a 415 MB
# model and minutes of CPU). ARGS: bench/text_large_local.py's options.
.PHONY: bench-text-large
bench-text-large: venv
	$(BIN)/python bench/text_large_local.py $(ARGS)

# Model quality: dropflow's default model through the real job and predict path against
# HistGradientBoosting and LightGBM defaults on 12 packaged datasets, with issue 13's verdict
# (exits 1 when a target is missed; not part of `make test`). ARGS=--quick: 3 small sets.
bench-quality: venv
	$(BIN)/python -m bench.quality $(ARGS)

# Fine-tuning throughput of the image and text families (BENCHMARKS.md, Fine-tuning
# throughput): every case that this machine can run (CUDA when torch sees a GPU, the CPU, DDP
# on all GPUs), within ARGS' --budget (default 300 s). Exits 0 unless a case failed.
# BENCH_PYTHON=python3: a GPU machine's own CUDA torch instead of the venv, with the wheels of
# `make bench-gpu-wheels` installed beside it (BENCHMARKS.md has the exact command).
BENCH_PYTHON ?= $(BIN)/python
bench-gpu: $(if $(filter $(BIN)/python,$(BENCH_PYTHON)),venv)
	PYTHONUNBUFFERED=1 $(BENCH_PYTHON) bench/finetune_throughput.py $(ARGS)

# What bench/finetune_throughput.py imports that a GPU machine's image (CUDA torch,
# transformers, numpy, Pillow, PyYAML, scikit-learn) lacks: the training bundle's pins of them
# (training/requirements.txt), as wheels for CPython 3.12 on x86_64 in .whl/ (git-ignored),
# for a machine that cannot reach a package index. The `# on torch` ones come without their
# dependencies, as in the bundle: the machine's torch satisfies them.
GPU_WHEELS := pydantic aws-lambda-powertools kornia_rs
GPU_WHEELS_ON_TORCH := kornia tabm rtdl_num_embeddings
GPU_PLATFORMS := $(foreach v,2014 _2_17 _2_24 _2_27 _2_28,--platform manylinux$(v)_x86_64)
pin = $(shell grep -E '^($(subst $(eval) ,|,$(1)))==' training/requirements.txt | cut -d' ' -f1)
bench-gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download -q --only-binary=:all: $(GPU_PLATFORMS) --implementation cp \
	  --python-version 3.12 -d .whl $(call pin,$(GPU_WHEELS))
	$(PYTHON) -m pip download -q --only-binary=:all: --no-deps $(GPU_PLATFORMS) \
	  --implementation cp --python-version 3.12 -d .whl $(call pin,$(GPU_WHEELS_ON_TORCH))
	@ls .whl; du -sh .whl

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# cfn-lint and checkov read the template SAM expands (tools/sam_transform.py). Any failed checkov
# check fails lint; one wrong for this design is skipped beside its resource in template.yaml
# (Metadata: checkov: skip, id and reason), which --pass-metadata carries onto what SAM
# generates. --skip-download: checkov fetches no guideline mappings over the network.
lint: venv sam-venv checkov-venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=. $(BIN)/lint-imports
	$(SAM_VENV)/bin/sam validate --lint --region us-east-1 --template template.yaml
	$(SAM_VENV)/bin/python tools/sam_transform.py lint-out/template.json --region us-east-1 \
	  --pass-metadata
	$(SAM_VENV)/bin/cfn-lint lint-out/template.json
	$(CHECKOV_VENV)/bin/checkov --file lint-out/template.json --framework cloudformation \
	  --quiet --compact --skip-download

# sam build builds the layers with the Lambda runtime's own python (3.12): the one on PATH
# if it runs, else pyenv's copy.
PY312_DIR := $(shell if python3.12 --version >/dev/null 2>&1; then \
  dirname "$$(command -v python3.12)"; \
  else for d in $$(pyenv root 2>/dev/null)/versions/3.12*/bin; do \
  if [ -x "$$d/python3.12" ]; then echo "$$d"; break; fi; done; fi)

has-python312:
	@test -n "$(PY312_DIR)"

build: sam-venv
	@if [ -z "$(PY312_DIR)" ]; then \
	  echo "make build: sam build needs python3.12 (the Lambda runtime) on PATH;" \
	    "install it (e.g. 'pyenv install 3.12') and run make build again." >&2; \
	  exit 1; \
	fi
	PATH="$(PY312_DIR):$$PATH" $(SAM_VENV)/bin/sam build

# The training bundle (.aws-sam/build/TrainingCodeLayer, training/Makefile) installs with no
# package index at all, as the instance installs it: proof that nothing comes from PyPI.
BUNDLE := .aws-sam/build/TrainingCodeLayer
bundle-check: build
	rm -rf .aws-sam/bundle-check
	"$(PY312_DIR)/python3.12" -m venv .aws-sam/bundle-check
	# The requirements marked `# on torch` need the AMI's torch, which this venv lacks (a CPU
	# torch for 3.12 is not on this machine): their wheels are installed without it.
	grep -v -E '^[^#].*# on torch$$' $(BUNDLE)/code/training/requirements.txt \
		> .aws-sam/bundle-check/requirements.txt
	.aws-sam/bundle-check/bin/pip install -q --no-index --find-links $(BUNDLE)/wheels \
		-r .aws-sam/bundle-check/requirements.txt
	.aws-sam/bundle-check/bin/pip install -q --no-index --find-links $(BUNDLE)/wheels --no-deps \
		$$(grep -E '^[^#].*# on torch$$' $(BUNDLE)/code/training/requirements.txt | cut -d' ' -f1)
	# Everything but torch and what is built on it, which need the AMI's torch.
	cd $(BUNDLE)/code && ../../../bundle-check/bin/python -c "import dropflow.wiring, \
		pydantic, yaml, aws_lambda_powertools, boto3, numpy, onnxruntime, onnx, onnxscript, \
		pyarrow, matplotlib, tokenizers, huggingface_hub, transformers, PIL, kornia_rs; \
		print('training bundle: installs offline and imports')"

deploy: build
	$(SAM_VENV)/bin/sam deploy --guided

clean:
	rm -rf .aws-sam build dist *.egg-info .pytest_cache .ruff_cache
