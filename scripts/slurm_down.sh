#!/usr/bin/env bash
# Take down the cluster of scripts/slurm_up.sh: cancel its jobs, then stop the daemons it started (by the pids
# in $CRELU_SLURM_DIR, default /tmp/crelu-slurm) and remove its /etc/slurm/slurm.conf link. A munged that was
# already running before slurm-up is left running. Idempotent: with nothing up it only says so. Logs are kept
# in $CRELU_SLURM_DIR/log.
set -euo pipefail

DIR=${CRELU_SLURM_DIR:-/tmp/crelu-slurm}
CONF=$DIR/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$CONF

say() { echo "slurm-down: $*"; }
alive() {
  local pid
  [ -s "$1" ] && pid=$(cat "$1") && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}
stop() {  # stop NAME: SIGTERM the pid in $DIR/NAME.pid if it still runs NAME, SIGKILL after 20 s
  local pidfile=$DIR/$1.pid pid
  if alive "$pidfile" "$1"; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for _ in $(seq 200); do alive "$pidfile" "$1" || break; sleep 0.1; done
    if alive "$pidfile" "$1"; then kill -KILL "$pid"; sleep 0.2; fi
    say "stopped $1 (pid $pid)"
  fi
  rm -f "$pidfile"
}

[ "$(id -u)" = 0 ] || { echo "slurm-down: run as root" >&2; exit 1; }

if alive "$DIR/slurmctld.pid" slurmctld && alive "$DIR/slurmd.pid" slurmd; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 90); do  # job steps get SIGTERM, then SIGKILL after KillWait (30 s)
      [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING,CONFIGURING -o %A 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
fi
stop slurmd
stop slurmctld
stop munged
if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
  rm -f "$SYSTEM_CONF"
fi
rm -rf "$DIR/state" "$DIR/spool" "$CONF"
say "down (logs kept in $DIR/log)"
