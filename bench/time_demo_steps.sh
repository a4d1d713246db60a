#!/bin/bash
# `make demo`'s steps one by one, each timed (wall, user, sys, peak RSS) with the load average at its start.
#   bash bench/time_demo_steps.sh                      # configs/sample.toml into work/sample, log in work/demo_steps.log
#   CONFIG=configs/sample-minilm.toml WORK=work/sample-minilm PY=.venv/bin/python bash bench/time_demo_steps.sh
# Start from a fresh WORK folder to time everything (a second run reuses the teacher cache and cached embeddings).
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python}
C=${CONFIG:-configs/sample.toml}
W=${WORK:-work/sample}
LOG=${LOG:-work/demo_steps.log}
mkdir -p "$(dirname "$LOG")"
step() {
  name=$1; shift
  echo "== $name load: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$LOG"
  /usr/bin/time -f "$name wall %e user %U sys %S maxrss %MkB" -a -o "$LOG" nice -n 10 "$@" >"$LOG.$name.out" 2>&1 \
    || echo "$name FAILED (see $LOG.$name.out)" >>"$LOG"
}
start=$(date +%s)
step prepare $PY -m mimo_cli prepare --config $C
step teacher-cache $PY -m mimo_cli teacher-cache --config $C
step verify $PY -m mimo_cli cache verify $W/teacher_cache.zarr
step stage1 $PY -m mimo_cli stage1 --config $C
step stage2 $PY -m mimo_cli stage2 --config $C
for m in infonce xlco lakda; do step stage2-$m $PY -m mimo_cli stage2 --config $C method=$m init= out_dir=$W/stage2-$m; done
step sweep $PY -m mimo_cli sweep --config $C
step eval $PY -m mimo_cli eval --config $C sweep_dir=$W/sweep
echo "total wall $(( $(date +%s) - start )) s" >>"$LOG"
