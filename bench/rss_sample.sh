#!/bin/bash
# usage: bench/rss_sample.sh LOG -- command...
# Runs the command (its output to LOG.out) and appends "<seconds> <VmRSS kB>" to LOG every 2 s while it runs
# (the VmRSS of its first child when the command is a wrapper such as nice).
log=$1; shift; shift
"$@" > "$log.out" 2>&1 &
pid=$!
start=$(date +%s)
while kill -0 $pid 2>/dev/null; do
  child=$(pgrep -P $pid | head -1); p=${child:-$pid}
  rss=$(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null)
  echo "$(( $(date +%s) - start )) ${rss:-0}" >> "$log"
  sleep 2
done
