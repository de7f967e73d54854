#!/usr/bin/env bash
# Stop what scripts/slurm-up.sh started, by PID file only (job state is kept in SLURM_BASE).
set -u
BASE=${SLURM_BASE:-/var/tmp/slurm-ci}
stop() {  # $1 = pid file
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}
stop "$BASE/run/slurmd.pid"
stop "$BASE/run/slurmctld.pid"
stop "$BASE/run/slurmdbd.pid"
stop "$BASE/run/mysql/mysqld.pid"
stop /run/munge/munged.pid
echo "slurm down"
