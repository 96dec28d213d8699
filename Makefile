# ldm — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
# GPU users: make install TORCH_INDEX=https://download.pytorch.org/whl/cu128 (see README)
TORCH_INDEX ?=
ARGS ?=

.DEFAULT_GOAL := help
ABLATION_DIR ?= logs/ablation/autoencoders
# sweep jobs side by side, one per usable CPU (each job then runs 1 torch thread: ldm/runtime.py)
JOBS ?= $(shell nproc)

.PHONY: help install train test test-slow test-all lint ablation claims claims-hybrid claims-decisive claims-readme readme-train bench gpu-check clean clean-logs

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# TORCH_INDEX is part of the install: a different index (CPU -> CUDA) reinstalls, also after earlier targets
TORCH_INDEX_FILE := $(VENV)/.torch-index
$(TORCH_INDEX_FILE): FORCE
	@mkdir -p $(VENV); printf '%s\n' '$(TORCH_INDEX)' | cmp -s - $@ || printf '%s\n' '$(TORCH_INDEX)' > $@

FORCE:

$(STAMP): pyproject.toml $(CONSTRAINTS) $(TORCH_INDEX_FILE)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PY) -c "import sys; import torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null || \
		$(PY) -m pip install -q -c $(CONSTRAINTS) --force-reinstall torch --index-url $(TORCH_INDEX),)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev,data,diffusers]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install ldm with pinned versions (CPU torch by default)

train: $(STAMP) ## train on the bundled digits with the default config (extra Hydra overrides: ARGS="...")
	$(PY) train.py $(ARGS)

test: $(STAMP) ## run the fast test suite (includes a short end-to-end run)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff check and the import contracts (pyproject.toml); pre-commit runs the same
	$(VENV)/bin/ruff check ldm tests benchmarks train.py evaluate.py sample.py
	$(VENV)/bin/lint-imports pyproject.toml

test-slow: $(STAMP) ## run only the slow tier: subprocess CLI runs, SIGKILL + resume, DDP, sweeps
	$(PY) -m pytest -q -m slow $(ARGS)

test-all: $(STAMP) ## run every test, slow end-to-end ones included
	$(PY) -m pytest -q $(ARGS)

ablation: $(STAMP) ## round 1's headline table (docs/history.md): experiment=autoencoders x 5 seeds, then table.md/csv/tex
	$(PY) train.py experiment=autoencoders hydra.sweep.dir=$(ABLATION_DIR) hydra/launcher=joblib \
		hydra.launcher.n_jobs=$(JOBS) $(ARGS)
	$(PY) evaluate.py table.dir=$(ABLATION_DIR)

claims: $(STAMP) ## the claims report, quick profile: runs the sweeps it lacks, then logs/claims/quick/REPORT.md
	$(PY) evaluate.py claims=quick claims.run=true $(ARGS)

claims-hybrid: $(STAMP) ## claim C6 on textures (VAE + DDGAN vs VAE + diffusion): logs/claims/hybrid/REPORT.md
	$(PY) evaluate.py claims=hybrid claims.run=true $(ARGS)

claims-decisive: $(STAMP) ## the decisive profile, a campaign: runs the jobs without a record in results/decisive/, then its report
	$(PY) evaluate.py claims=decisive claims.run=true $(ARGS)

claims-readme: $(STAMP) ## the decisive report from its records; every report in logs/claims/ into docs/claims/; the README's verdicts
	$(PY) evaluate.py claims=decisive
	for p in quick hybrid decisive; do if [ -f logs/claims/$$p/REPORT.md ]; then \
		$(PY) -m ldm.analysis.claims.publish publish logs/claims/$$p docs/claims/$$p || exit 1; fi; done
	$(PY) -m ldm.analysis.claims.publish readme README.md docs/claims/decisive docs/claims/hybrid \
		--earlier docs/claims/quick docs/claims/hybrid

gpu-check: $(STAMP) ## on a GPU machine (<= 8 min): every row on the GPU, DDP, jobs per GPU, GPU-hours -> benchmarks/GPU.md
	$(PY) benchmarks/gpu_check.py $(ARGS)

bench: $(STAMP) ## benchmarks -> benchmarks/RESULTS.md (UNet vs diffusers, jobs, contention, plan); ARGS=--quick: 3 min
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[bench]"
	$(PY) benchmarks/bench.py $(ARGS)

clean-logs: ## delete logs/ (all runs!)
	rm -rf logs

clean: ## delete .venv and caches (keeps logs/)
	rm -rf $(VENV) .pytest_cache .cache build *.egg-info
