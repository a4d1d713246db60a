#!/bin/bash
# `make demo`'s jobs as make runs them (DEMO_JOBS at a time), each timed (wall, user, sys), the load every 30 s.
#   PY=/path/to/.venv/bin/python bash bench/time_demo_jobs.sh     # configs/sample.toml into work/sample; logs in work/
# Start from a fresh WORK folder (a second run reuses the teacher cache, finished runs and cached embeddings);
# .models/ present (the first use rebuilds e5-small inside the teacher-cache job). bench/time_demo_steps.sh times
# the same steps one after another, as `make demo` ran them before.
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C=${CONFIG:-configs/sample.toml}
LOG=${LOG:-work/demo_jobs.log}
mkdir -p "$(dirname "$LOG")"
echo "start $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >"$LOG"
( while sleep 30; do echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$LOG.load"; done ) &
sampler=$!
/usr/bin/time -f "make wall %e user %U sys %S" -a -o "$LOG" make --no-print-directory -j"${DEMO_JOBS:-2}" demo-eval \
  CONFIG="$C" MIMO="/usr/bin/time -f '%C | wall %e user %U sys %S' -a -o $LOG nice -n 10 env HF_HUB_OFFLINE=1 PYTHONPATH=$PWD $PY -m mimo_cli" \
  >"$LOG.out" 2>&1
echo "end $(date +%T) rc $? load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$LOG"
kill $sampler
