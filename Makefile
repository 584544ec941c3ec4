# crelu-repro: every command a user needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON   ?= $(shell if [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi)
PROFILE  ?= paper          # paper (the paper's schedules, for GPUs) | smoke (tiny, same code path, CPU minutes)
LAUNCHER ?= basic          # basic (sequential) | joblib (local parallel) | slurm (submitit)
DRY_RUN  ?=                # DRY_RUN=1: print the job list and a GPU-hours estimate instead of running
ARGS     ?=                # extra Hydra overrides for every job, e.g. ARGS="logger=wandb train.seed=1"
SEEDS    ?=                # SEEDS=3: every job for train.seed=0,1,2 (cells: mean ± 95% CI over seeds)
SEED_ARG  = $(if $(strip $(SEEDS)),train.seed=$(shell seq -s, 0 $$(( $(strip $(SEEDS)) - 1 ))),)
FOLDS_paper := 10
FOLDS_smoke := 3
PROFILE_ := $(strip $(PROFILE))
FOLDS    := $(or $(FOLDS_$(PROFILE_)),10)
JOBS     := single,$(shell seq -s, -f 'fold%g' 0 $$(( $(FOLDS) - 1 )))
RUNS     := results/runs/$(PROFILE_)
TABLES   := $(if $(filter paper,$(PROFILE_)),results,results/$(PROFILE_))
# Smoke runs read generated data unless you point them elsewhere (CIFAR-10 may be the real subset).
SMOKE_DATA ?= data/generated
# CIFAR-100 follows CRELU_DATA_ROOT when CRELU_CIFAR100_ROOT is unset (as the dataset code does).
SMOKE_C100 = $${CRELU_CIFAR100_ROOT:-$${CRELU_DATA_ROOT:-$(SMOKE_DATA)}}
SMOKE_ENV = CRELU_DATA_ROOT=$${CRELU_DATA_ROOT:-$(SMOKE_DATA)} CRELU_CIFAR100_ROOT=$(SMOKE_C100)
RUN_ENV  = $(if $(filter smoke,$(PROFILE_)),$(SMOKE_ENV),)

.PHONY: help install venv test test-slow test-all lint format params table1 table2 table4 table5 tables smoke-data \
        figures stress clean _imagenet_table report

help: ## list every target
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=paper|smoke  LAUNCHER=basic|joblib|slurm  SEEDS=N  DRY_RUN=1  ARGS='hydra overrides'"

install: ## install the package, pinned torch/torchvision and dev tools into the active Python (or .venv)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -e ".[dev]"
	@$(PYTHON) -c "import torch, torchvision, hydra, crelu; print('installed: torch', torch.__version__, '| torchvision', torchvision.__version__, '| hydra', hydra.__version__, '| crelu', crelu.__version__)"

venv: ## create .venv (later targets use it automatically); then run `make install`
	python3 -m venv .venv

test: ## the test suite without the slow end-to-end tests, and the linter (CPU, under 5 min on 2 idle cores)
	$(PYTHON) -m pytest -q -m "not slow and not slurm"
	$(PYTHON) -m ruff check src tests scripts benchmarks

test-slow: ## the slow end-to-end tests: real kills, sweeps, report in a browser, real data (CPU, CI runs them)
	$(PYTHON) -m pytest -q -m "slow and not slurm"

test-all: test test-slow ## everything CI runs except the SLURM cluster tests (make slurm-up && make test-slurm)

lint: ## ruff
	$(PYTHON) -m ruff check src tests scripts benchmarks

format: ## ruff --fix
	$(PYTHON) -m ruff check --fix src tests scripts benchmarks

params: ## parameter count of every paper model vs the paper -> results/params.{csv,md}
	$(PYTHON) -m crelu.tables params --out results

smoke-data: ## generate CIFAR-10/100 copies in the official layout under data/generated (for PROFILE=smoke)
	$(PYTHON) scripts/make_fake_cifar.py --out $(SMOKE_DATA)

table1: ## Table 1 (ConvPool-CNN-C, CIFAR-10/100): sweep + aggregation -> results/table1.{md,csv,tex}
	@$(MAKE) --no-print-directory _table T=table1

table2: ## Table 2 (VGG, CIFAR-10/100): sweep + aggregation -> results/table2.{md,csv,tex}
	@$(MAKE) --no-print-directory _table T=table2

_table:
ifeq ($(strip $(DRY_RUN)),1)
	$(PYTHON) scripts/plan_sweep.py $(T) --profile $(PROFILE_) --jobs $(JOBS) $(if $(strip $(SEEDS)),--seeds $(strip $(SEEDS)),) $(ARGS)
else
	$(if $(filter smoke,$(PROFILE_)),@[ -d "$${CRELU_DATA_ROOT:-$(SMOKE_DATA)}/cifar-10-batches-py" ] && [ -d "$(SMOKE_C100)/cifar-100-python" ] || $(MAKE) --no-print-directory smoke-data,)
	@if [ -f "$(TUNED)" ]; then echo "learning rates: picked on validation, $(TUNED)"; else \
	    echo "learning rates: the rows' configured optim.lr (no $(TUNED); \`make tune T=$(T)\` picks them on validation as the paper did)"; fi
	$(RUN_ENV) $(PYTHON) -m crelu.train -m table=$(T) profile=$(PROFILE_) protocol.job=$(JOBS) $(SEED_ARG) \
	    $(if $(wildcard $(TUNED)),optim.lr_from=$(TUNED),) hydra/launcher=$(strip $(LAUNCHER)) $(ARGS)
	$(PYTHON) -m crelu.tables $(T) --profile $(PROFILE_) --runs $(RUNS) --out $(TABLES)
endif

# Learning rates picked on the Single hold-out (never the test set): every row x dataset x optim.lr_grid value.
# TUNED is read by the table targets above; LR_GRID=a,b,c overrides the rows' grid.
TUNED = $(TABLES)/tuning/$(T).csv
LR_GRID ?=
.PHONY: tune
tune: ## pick each row's learning rate on validation from optim.lr_grid (T=table1) -> results/[PROFILE/]tuning/T.csv
	@[ -n "$(T)" ] || { echo "make tune: say which table, e.g. make tune T=table1"; exit 2; }
	$(if $(filter smoke,$(PROFILE_)),@[ -d "$${CRELU_DATA_ROOT:-$(SMOKE_DATA)}/cifar-10-batches-py" ] && [ -d "$(SMOKE_C100)/cifar-100-python" ] || $(MAKE) --no-print-directory smoke-data,)
	@grid="$(LR_GRID)"; [ -n "$$grid" ] || grid=$$($(PYTHON) -m crelu.protocols.tuning grid $(T)) || exit 2; \
	echo "tuning $(T) over optim.lr=$$grid on the hold-out split"; \
	$(RUN_ENV) $(PYTHON) -m crelu.train -m table=$(T) profile=$(PROFILE_) protocol.job=tune \
	    optim.lr=$$grid hydra/launcher=$(strip $(LAUNCHER)) $(ARGS)
	$(PYTHON) -m crelu.protocols.tuning summarize $(T) --profile $(PROFILE_) --runs $(RUNS) --out $(TABLES)/tuning

# ImageNet tables (protocol full, no folds).  PROFILE=smoke runs profile=smoke_imagenet on a tiny generated
# ImageFolder (scripts/make_tiny_imagenet.py, written on first use) unless CRELU_IMAGENET_ROOT is set.
SMOKE_IMAGENET ?= $(SMOKE_DATA)/imagenet
IMAGENET_PROFILE = $(if $(filter smoke,$(PROFILE_)),smoke_imagenet,$(PROFILE_))
IMAGENET_ENV = $(if $(filter smoke,$(PROFILE_)),CRELU_IMAGENET_ROOT=$${CRELU_IMAGENET_ROOT:-$(SMOKE_IMAGENET)},)

table4: ## Table 4 (All-CNN-B rows, ImageNet; multi-GPU: see crelu.training.distributed) -> results/table4.*
	@$(MAKE) --no-print-directory _imagenet_table T=table4

table5: ## Table 5 (ImageNet comparison; reuses the Table 4 runs) -> results/table5.{md,csv,tex}
	@$(MAKE) --no-print-directory _imagenet_table T=table5

_imagenet_table:
ifeq ($(strip $(DRY_RUN)),1)
	$(PYTHON) scripts/plan_sweep.py $(T) --profile $(IMAGENET_PROFILE) $(if $(strip $(SEEDS)),--seeds $(strip $(SEEDS)),) $(ARGS)
else
	$(if $(filter smoke,$(PROFILE_)),@[ -n "$${CRELU_IMAGENET_ROOT}" ] || [ -d "$(SMOKE_IMAGENET)/val" ] || \
	    $(PYTHON) scripts/make_tiny_imagenet.py --out $(SMOKE_IMAGENET),)
	$(IMAGENET_ENV) $(PYTHON) -m crelu.train -m table=$(T) profile=$(IMAGENET_PROFILE) $(SEED_ARG) \
	    hydra/launcher=$(strip $(LAUNCHER)) $(ARGS)
	$(PYTHON) -m crelu.tables $(T) --profile $(PROFILE_) --runs $(RUNS) --out $(TABLES)
endif

report: ## one static HTML page: tables ± 95% CI, claims with verdicts, curves, tuning, params, figures -> $(TABLES)/report.html
	$(PYTHON) -m crelu.report --profile $(PROFILE_) --runs $(RUNS) --results $(TABLES)

tables: ## rebuild every table from the run records on disk (no training)
	$(PYTHON) -m crelu.tables all --profile $(PROFILE_) --runs $(RUNS) --out $(TABLES)

FIGURE_ARGS_smoke := --inv-images 300 --inv-top 20 --recon-images 1 --cg-iters 60

figures: ## the paper's figures and Table 6 from finished checkpoints -> results/figures/, results/table6.md
	$(RUN_ENV) $(PYTHON) -m crelu.analysis all --profile $(PROFILE_) --runs $(RUNS) --out $(TABLES)/figures \
	    --results $(TABLES) $(FIGURE_ARGS_$(PROFILE_))

# KILLS: SIGKILLs in total; JOBS (a number here, unlike the table targets' job list): jobs running at once.
KILLS ?= 12
STRESS_JOBS = $(if $(filter $(strip $(JOBS)),$(shell seq 1 64)),$(strip $(JOBS)),4)
stress: ## chaos test: concurrent jobs SIGKILLed at random points end bit-identical (KILLS=12 JOBS=4; CPU, minutes)
	$(PYTHON) scripts/stress.py --kills $(KILLS) --jobs $(STRESS_JOBS)

# SLURM on one machine (Debian, as root): a real single-node cluster for LAUNCHER=slurm and its tests.
.PHONY: slurm-up slurm-down test-slurm
SLURM_DIR ?= /tmp/crelu-slurm
slurm-up: ## (root) start a single-node SLURM cluster here: munged, slurmctld, slurmd; state in SLURM_DIR
	CRELU_SLURM_DIR=$(SLURM_DIR) scripts/slurm_up.sh

slurm-down: ## (root) cancel its jobs and stop the daemons slurm-up started
	CRELU_SLURM_DIR=$(SLURM_DIR) scripts/slurm_down.sh

test-slurm: ## SLURM tests against the running cluster: sweep, preemption/requeue/time limit (a few minutes)
	CRELU_SLURM_DIR=$(SLURM_DIR) CRELU_REQUIRE_SLURM=1 $(PYTHON) -m pytest -q -m slurm tests/test_slurm.py

.PHONY: bench
BENCH_ARGS ?=
bench: ## img/s, TFLOP/s, MFU: suite vs plain loop, packed vs sequential -> results/bench/cifar.json (BENCH_ARGS=)
	$(PYTHON) benchmarks/bench_cifar.py $(BENCH_ARGS)

# GPU evidence kit (scripts/gpu_check.py): bench at full width, profile, real-data lr grid, GPU-hours, in one
# command of at most GPU_BUDGET seconds.  GPU_CHECK_DRY=1 runs it on the CPU at tiny sizes.
.PHONY: gpu-check gpu-carry
GPU_OUT    ?=
GPU_BUDGET ?=
gpu-check: ## GPU evidence kit -> GPU_OUT or results/gpu/<date>-<device>/ (GPU_CHECK_DRY=1: CPU, tiny, ~1 min)
	$(PYTHON) scripts/gpu_check.py $(if $(GPU_OUT),--out $(GPU_OUT),) $(if $(GPU_BUDGET),--budget-s $(GPU_BUDGET),)

gpu-carry: ## gpu_carry/: wheels + re-packed CIFAR-10 (from CRELU_DATA_ROOT) for a lent GPU; prints the device call
	$(PYTHON) scripts/prepare_gpu_carry.py $(if $(CRELU_DATA_ROOT),--data-root $(CRELU_DATA_ROOT),)

# Everything the suite writes that is not a paper-profile result: Hydra logs, smoke/test outputs, the chaos test,
# offline wandb runs of other profiles, generated smoke data and caches.  Kept: tracked files, results/runs/paper,
# what is built from it (tables, figures, tuning, bench measurements) and the paper profile's offline wandb runs.
clean: ## remove Hydra logs, smoke/stress outputs, non-paper wandb runs, caches (keeps paper runs, tracked files)
	rm -rf results/hydra results/smoke results/stress outputs multirun wandb data/generated .pytest_cache .ruff_cache
	@[ ! -d results/wandb ] || $(PYTHON) scripts/wandb_sync.py --dir results/wandb --clean-keep paper
	find results/runs -mindepth 1 -maxdepth 1 ! -name paper -exec rm -rf {} + 2>/dev/null || true
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

.PHONY: wandb-sync
wandb-sync: ## upload every offline wandb run of PROFILE (wandb login first; DRY_RUN=1 only lists them)
	$(PYTHON) scripts/wandb_sync.py --profile $(PROFILE_) $(if $(filter 1,$(strip $(DRY_RUN))),--dry-run,)
